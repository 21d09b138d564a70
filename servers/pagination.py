"""Keyset pagination, written once: the token, the predicate and the slice.

Every newest-first listing here (RunHistory's runs, Insight's signals) walks its
table in ``(time, id) DESC`` order. A page token (AIP-158) is opaque: URL-safe base64
of a small JSON object holding the last row's position and naming the listing it
belongs to, so a token from another listing or filter is refused instead of misread.

- :func:`decode_position` turns a token into the position (or None for page one);
- :func:`after` is the SQL predicate "strictly after that position";
- :func:`keyset_page` slices ``limit + 1`` fetched rows into the page and next token.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from neuralops.servers.db import as_datetime
from neuralops.servers.errors import InvalidArgument

T = TypeVar("T")
# A row's place in a newest-first listing: its time, then its row id (a UUID).
Position = tuple[datetime, str]
_NOT_OURS = "is not a token this service issued"


def encode(scope: str, position: dict[str, Any]) -> str:
    raw = json.dumps({"s": scope, **position}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(token: str, scope: str) -> dict[str, Any] | None:
    """The position in ``token``; None for an empty token (the first page)."""
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument.one("page_token", _NOT_OURS) from exc
    if not isinstance(data, dict) or data.get("s") != scope:
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
        at = as_datetime(pos.get("t"))
        row_id = str(uuid.UUID(str(pos.get("i"))))
    except (TypeError, ValueError) as exc:
        raise InvalidArgument.one("page_token", _NOT_OURS) from exc
    if at is None or not isinstance(pos.get("i"), str):
        raise InvalidArgument.one("page_token", _NOT_OURS)
    return at, row_id


def encode_position(scope: str, position: Position) -> str:
    return encode(scope, {"t": position[0].isoformat(), "i": position[1]})


def after(dialect: str, time_column: str) -> str:
    """SQL predicate: rows strictly after a position in ``(time_column, id) DESC`` order.
    Takes two parameters, the position's time and row id. ``time_column`` is a fixed
    column name from the caller's code, never input."""
    if dialect == "postgres":
        return f"({time_column}, id) < (%s::timestamptz, %s::uuid)"
    return f"({time_column}, id) < (%s, %s)"


def keyset_page(
    found: Sequence[T], limit: int, scope: str, position: Callable[[T], Position]
) -> tuple[list[T], str]:
    """The page out of up to ``limit + 1`` rows fetched, and the next page's token
    ("" when this is the last page)."""
    page = list(found[:limit])
    more = len(found) > limit
    return page, encode_position(scope, position(page[-1])) if more and page else ""
