"""Conversions between protobuf well-known types and plain Python values."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2


def to_timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value.astimezone(UTC))
    return ts


def from_timestamp(ts: timestamp_pb2.Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


def to_struct(value: dict[str, Any] | None) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    if value:
        s.update(value)
    return s


def from_struct(s: struct_pb2.Struct) -> dict[str, Any]:
    return json_format.MessageToDict(s)


def enum_text(enum_name: str, prefix: str) -> str:
    """``RUN_STATUS_COMPLETED`` -> ``completed`` (how enums are stored)."""
    return enum_name.removeprefix(prefix).lower()


def text_enum(text: str, prefix: str) -> str:
    """``completed`` -> ``RUN_STATUS_COMPLETED``."""
    return prefix + text.upper()
