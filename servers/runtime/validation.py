"""Request checks every service shares, driven by the protobuf descriptors.

:func:`message_violations` walks any request message and names each field the
servers could not store or compute with: an enum number the proto does not define,
a Timestamp or Duration outside protobuf's range, a NaN or infinite number (in a
double field or inside a Struct), a Struct nested deeper than :data:`MAX_STRUCT_DEPTH`.
Because it reads the descriptors, fields added to the contracts later are covered
without code here. Each service's ``validation`` module adds its own rules (ids,
ranges) on top and is the one place its servicer calls.
"""

from __future__ import annotations

import math
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from neuralops.servers.runtime import pagination
from neuralops.servers.runtime.errors import FieldViolation, InvalidArgument

MAX_ID_LENGTH = 200
MAX_FILTER_LENGTH = 1000
MAX_STRUCT_DEPTH = 32
MAX_ECHO = 80  # characters of caller input an error message may repeat

# google.protobuf.Timestamp: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z.
MIN_TIMESTAMP_SECONDS = -62_135_596_800
MAX_TIMESTAMP_SECONDS = 253_402_300_799
# google.protobuf.Duration: about +-10,000 years.
MAX_DURATION_SECONDS = 315_576_000_000

_STRUCT = "google.protobuf.Struct"
_VALUE = "google.protobuf.Value"
_LIST = "google.protobuf.ListValue"
_TIMESTAMP = "google.protobuf.Timestamp"
_DURATION = "google.protobuf.Duration"


def clip(text: str, limit: int = MAX_ECHO) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis, for error messages."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _name(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


# ------------------------------------------------------------------ well-known types


def _timestamp(msg: Any, path: str, out: list[FieldViolation]) -> None:
    if not MIN_TIMESTAMP_SECONDS <= msg.seconds <= MAX_TIMESTAMP_SECONDS:
        out.append(FieldViolation(path, "is outside years 0001 to 9999"))
    if not 0 <= msg.nanos <= 999_999_999:
        out.append(FieldViolation(path, "has nanos outside 0 to 999,999,999"))


def _duration(msg: Any, path: str, out: list[FieldViolation]) -> None:
    if not -MAX_DURATION_SECONDS <= msg.seconds <= MAX_DURATION_SECONDS:
        out.append(FieldViolation(path, "is longer than 10,000 years"))
    if not -999_999_999 <= msg.nanos <= 999_999_999 or (
        msg.seconds and msg.nanos and (msg.seconds > 0) != (msg.nanos > 0)
    ):
        out.append(FieldViolation(path, "has nanos out of range or of the other sign"))


def _value(msg: Any, path: str, depth: int, out: list[FieldViolation]) -> None:
    kind = msg.WhichOneof("kind")
    if kind == "number_value":
        if not math.isfinite(msg.number_value):
            out.append(FieldViolation(path, "is NaN or infinite, which JSON cannot hold"))
    elif kind == "struct_value":
        _struct(msg.struct_value, path, depth + 1, out)
    elif kind == "list_value":
        _list(msg.list_value, path, depth + 1, out)


def _struct(msg: Any, path: str, depth: int, out: list[FieldViolation]) -> None:
    if depth > MAX_STRUCT_DEPTH:
        out.append(FieldViolation(path, f"is nested more than {MAX_STRUCT_DEPTH} levels deep"))
        return
    for key, value in msg.fields.items():
        _value(value, f"{path}.{clip(key, 40)}", depth, out)
        if len(out) > 20:
            return


def _list(msg: Any, path: str, depth: int, out: list[FieldViolation]) -> None:
    if depth > MAX_STRUCT_DEPTH:
        out.append(FieldViolation(path, f"is nested more than {MAX_STRUCT_DEPTH} levels deep"))
        return
    for i, value in enumerate(msg.values):
        _value(value, f"{path}[{i}]", depth, out)
        if len(out) > 20:
            return


# ------------------------------------------------------------------ any message


def _scalar(field: FieldDescriptor, value: Any, path: str, out: list[FieldViolation]) -> None:
    if field.type == FieldDescriptor.TYPE_ENUM:
        enum = field.enum_type
        if enum is not None and value not in enum.values_by_number:
            out.append(FieldViolation(path, f"is {value}, not a value of {enum.name}"))
    elif field.type in (
        FieldDescriptor.TYPE_DOUBLE,
        FieldDescriptor.TYPE_FLOAT,
    ) and not math.isfinite(value):
        out.append(FieldViolation(path, "must be a finite number"))


def _message(msg: Message, path: str, out: list[FieldViolation]) -> None:
    full = msg.DESCRIPTOR.full_name
    if full == _TIMESTAMP:
        _timestamp(msg, path, out)
        return
    if full == _DURATION:
        _duration(msg, path, out)
        return
    if full == _STRUCT:
        _struct(msg, path, 1, out)
        return
    if full == _VALUE:
        _value(msg, path, 1, out)
        return
    if full == _LIST:
        _list(msg, path, 1, out)
        return
    for field, value in msg.ListFields():
        here = _name(path, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            vfield = field.message_type.fields_by_name["value"]
            for k, v in value.items():
                if vfield.message_type is not None:
                    _message(v, f"{here}[{clip(str(k), 40)}]", out)
                else:
                    _scalar(vfield, v, f"{here}[{clip(str(k), 40)}]", out)
        elif field.is_repeated:
            for i, item in enumerate(value):
                if field.message_type is not None:
                    _message(item, f"{here}[{i}]", out)
                else:
                    _scalar(field, item, f"{here}[{i}]", out)
                if len(out) > 20:
                    return
        elif field.message_type is not None:
            _message(value, here, out)
        else:
            _scalar(field, value, here, out)


def message_violations(msg: Message, prefix: str = "") -> list[FieldViolation]:
    """Every field of ``msg`` no server could store or compute with."""
    out: list[FieldViolation] = []
    _message(msg, prefix, out)
    return out


# ------------------------------------------------------------------ strings


def id_violations(
    value: str, path: str, *, required: bool = True, limit: int = MAX_ID_LENGTH
) -> list[FieldViolation]:
    """An identifier: present (when required), at most ``limit`` characters, no NUL."""
    if not value.strip():
        return [FieldViolation(path, "is required")] if required else []
    if len(value) > limit:
        return [FieldViolation(path, f"is {len(value)} characters; at most {limit}")]
    if "\x00" in value:
        return [FieldViolation(path, "must not contain the NUL character (U+0000)")]
    return []


def text_violations(value: str, path: str, *, limit: int) -> list[FieldViolation]:
    """A filter or query string: at most ``limit`` characters, no NUL."""
    if len(value) > limit:
        return [FieldViolation(path, f"is {len(value)} characters; at most {limit}")]
    if "\x00" in value:
        return [FieldViolation(path, "must not contain the NUL character (U+0000)")]
    return []


def page_token_violations(token: str, path: str = "page_token") -> list[FieldViolation]:
    """A page token must be well formed (:func:`neuralops.servers.runtime.pagination.well_formed`):
    this keeps a forged token's position out of the SQL; the service still checks that
    the token belongs to its listing."""
    return [] if pagination.well_formed(token) else [FieldViolation(path, pagination.NOT_OURS)]


def raise_if(violations: list[FieldViolation]) -> None:
    if violations:
        raise InvalidArgument(violations[:20])


def check_request(msg: Message, extra: list[FieldViolation] | None = None) -> None:
    """Raise InvalidArgument for the generic problems in ``msg`` plus ``extra``."""
    raise_if((extra or []) + message_violations(msg))


def field_names(descriptor: Descriptor) -> set[str]:
    return {f.name for f in descriptor.fields}
