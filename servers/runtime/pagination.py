"""Keyset pagination, written once: the token, the predicate and the slice.

Every time-ordered listing here walks its table in ``(time, id)`` order: newest first
for RunHistory's runs and Insight's signals, oldest first for Insight's watches. A
page token (AIP-158) is opaque: URL-safe base64 of a small JSON object holding the
last row's position and naming the listing it belongs to, so a token from another
listing or filter is refused instead of misread.

- :func:`decode_position` turns a token into the position (or None for page one);
- :func:`after` is the SQL predicate "strictly after that position" and :func:`order`
  the ORDER BY it goes with;
- :func:`keyset_page` slices ``limit + 1`` fetched rows into the page and next token
  (:func:`page` does the same for a listing ordered by one text key, like the
  Registry's workflows by id, whose tokens :func:`encode_key` / :func:`decode_key` make
  and read).
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from neuralops.servers.runtime.db import as_datetime
from neuralops.servers.runtime.errors import InvalidArgument

T = TypeVar("T")
# A row's place in a newest-first listing: its time, then its row id (a UUID).
Position = tuple[datetime, str]
NOT_OURS = "is not a token this service issued"


MAX_TOKEN_LENGTH = 4096


def encode(scope: str, position: dict[str, Any]) -> str:
    raw = json.dumps({"s": scope, **position}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _load(token: str) -> dict[str, Any]:
    """The JSON object a token carries; ValueError when it carries none (or NUL)."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise ValueError("too long")
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, UnicodeDecodeError, RecursionError) as exc:
        raise ValueError(str(exc)) from exc
    if not isinstance(data, dict) or "\\u0000" in json.dumps(data):
        raise ValueError("not an object")
    try:  # a lone surrogate would reach SQL as text no database takes
        json.dumps(data, ensure_ascii=False).encode()
    except UnicodeEncodeError as exc:
        raise ValueError("not UTF-8") from exc
    return data


def _instant(value: Any) -> datetime | None:
    """A token's time; ValueError when it is not one a database takes (a time near year
    1 or 9999 whose offset moves it out of range in UTC)."""
    at = as_datetime(value)
    if at is not None and at.tzinfo is not None:
        try:
            at.astimezone(UTC)
        except OverflowError as exc:
            raise ValueError("out of range") from exc
    return at


def well_formed(token: str) -> bool:
    """Whether ``token`` could be one of ours: an object whose time (``t``) and id (``i``),
    when present, are a time and a UUID. The request validators call this so a forged
    position never reaches SQL; :func:`decode` also checks the listing it names."""
    if not token:
        return True
    try:
        data = _load(token)
        if "t" in data:
            if not isinstance(data["t"], str):
                return False
            _instant(data["t"])
        if "i" in data:
            if not isinstance(data["i"], str):
                return False
            uuid.UUID(data["i"])
    except ValueError:
        return False
    return True


def decode(token: str, scope: str) -> dict[str, Any] | None:
    """The position in ``token``; None for an empty token (the first page)."""
    if not token:
        return None
    try:
        data = _load(token)
    except ValueError as exc:
        raise InvalidArgument.one("page_token", NOT_OURS) from exc
    if data.get("s") != scope:
        raise InvalidArgument.one("page_token", "belongs to a different listing or filter")
    return data


def page_size(value: int, *, default: int, maximum: int) -> int:
    """0 means ``default``; above ``maximum`` is capped to it (AIP-158); negative is refused."""
    if value < 0:
        raise InvalidArgument.one(
            "page_size", f"must not be negative (0 means {default}, at most {maximum})"
        )
    return min(value or default, maximum)


def decode_position(token: str, scope: str) -> Position | None:
    """The keyset position in ``token``; None for an empty token (the first page)."""
    pos = decode(token, scope)
    if pos is None:
        return None
    try:
        at = _instant(pos.get("t"))
        row_id = str(uuid.UUID(str(pos.get("i"))))
    except (TypeError, ValueError) as exc:
        raise InvalidArgument.one("page_token", NOT_OURS) from exc
    if at is None or not isinstance(pos.get("i"), str):
        raise InvalidArgument.one("page_token", NOT_OURS)
    return at, row_id


def encode_position(scope: str, position: Position) -> str:
    return encode(scope, {"t": position[0].isoformat(), "i": position[1]})


def decode_key(token: str, scope: str) -> str | None:
    """The last row's key in a token of a listing ordered by one text key (the
    Registry's workflows by id); None for an empty token (the first page)."""
    pos = decode(token, scope)
    if pos is None:
        return None
    key = pos.get("a")
    if not isinstance(key, str):
        raise InvalidArgument.one("page_token", NOT_OURS)
    return key


def encode_key(scope: str, key: str) -> str:
    return encode(scope, {"a": key})


def after(dialect: str, time_column: str, *, newest_first: bool = True) -> str:
    """SQL predicate: rows strictly after a position in :func:`order`'s order. Takes two
    parameters, the position's time and row id. ``time_column`` is a fixed column name
    from the caller's code, never input."""
    op = "<" if newest_first else ">"
    if dialect == "postgres":
        return f"({time_column}, id) {op} (%s::timestamptz, %s::uuid)"
    return f"({time_column}, id) {op} (%s, %s)"


def order(time_column: str, *, newest_first: bool = True) -> str:
    """The ORDER BY terms :func:`after` pages through (the id breaks ties)."""
    way = "DESC" if newest_first else "ASC"
    return f"{time_column} {way}, id {way}"


def page(found: Sequence[T], limit: int, next_token: Callable[[T], str]) -> tuple[list[T], str]:
    """The page out of up to ``limit + 1`` rows fetched, and the next page's token made
    from its last row by ``next_token`` ("" when this is the last page)."""
    rows = list(found[:limit])
    return rows, next_token(rows[-1]) if len(found) > limit and rows else ""


def keyset_page(
    found: Sequence[T], limit: int, scope: str, position: Callable[[T], Position]
) -> tuple[list[T], str]:
    """:func:`page` for a ``(time, id)`` listing: the next token holds the last row's
    position."""
    return page(found, limit, lambda row: encode_position(scope, position(row)))
