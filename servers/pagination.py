"""Opaque page tokens (AIP-158): a keyset position, never an offset.

A token is URL-safe base64 of a small JSON object that also names the listing it
belongs to, so a token from another listing is refused instead of misread.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from neuralops.servers.errors import InvalidArgument


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
        raise InvalidArgument.one("page_token", "is not a token this service issued") from exc
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
