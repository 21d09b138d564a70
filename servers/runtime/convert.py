"""Conversions between protobuf messages and plain Python (JSON-ready) values.

The write path converts every run it stores, so these walk the messages directly
(``ListFields`` and the Struct map) instead of going through ``json_format``, which
builds and re-parses JSON per field. The dicts they make are what ``json_format``'s
``MessageToDict(..., preserving_proto_field_name=True)`` makes, except that enums are
stored as lowercase names without their prefix (``completed``) and 64-bit integers
stay integers; :func:`dict_message` reads both back.
"""

from __future__ import annotations

import keyword
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from google.protobuf import json_format, struct_pb2, timestamp_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from neuralops.clients.enums import BY_PROTO_ENUM

M = TypeVar("M", bound=Message)


class NotJson(ValueError):
    """A Struct holds a number JSON cannot carry (NaN, Infinity)."""


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


_which = struct_pb2.Value.WhichOneof
_MAX_EXACT = 2.0**53


def _value(v: struct_pb2.Value) -> Any:
    kind = _which(v, "kind")
    if kind == "string_value":
        return v.string_value
    return _other(v, kind)


def _other(v: struct_pb2.Value, kind: str | None) -> Any:
    if kind == "number_value":
        x = v.number_value
        if x.is_integer() and -_MAX_EXACT <= x <= _MAX_EXACT:
            # Struct numbers are doubles: an integral one is stored (and read back by
            # the clients) as an integer, so 15 stays 15, not 15.0. Beyond 2^53 a
            # double is no longer exact and stays a float.
            return int(x)
        if math.isfinite(x):
            return x
        raise NotJson(f"holds {x!r}, which JSON cannot carry")
    if kind == "bool_value":
        return v.bool_value
    if kind == "struct_value":
        return from_struct(v.struct_value)
    if kind == "list_value":
        # A slice is a plain list; iterating the container itself goes through
        # Python-level Sequence.__iter__.
        return [_value(x) for x in v.list_value.values[:]]
    return None


def from_struct(s: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as a dict (integral numbers up to 2^53 as ints, others as floats). Raises
    :class:`NotJson` on NaN or Infinity."""
    fields = s.fields
    out: dict[str, Any] = {}
    for k in fields:
        v = fields[k]
        kind = _which(v, "kind")
        out[k] = v.string_value if kind == "string_value" else _other(v, kind)
    return out


_EPOCH = datetime(1970, 1, 1)
# "YYYY-MM-DDT" per day number since the epoch: timestamps sent together share their
# day, so the date is formatted once and only the time of day per timestamp.
_DAYS: dict[int, str] = {}


def _day_prefix(day: int) -> str:
    prefix = _DAYS.get(day)
    if prefix is None:
        if len(_DAYS) > 4096:
            _DAYS.clear()
        prefix = _DAYS[day] = (_EPOCH + timedelta(days=day)).isoformat()[:11]
    return prefix


def timestamp_text(ts: timestamp_pb2.Timestamp) -> str:
    """RFC 3339 in UTC, as ``Timestamp.ToJsonString`` writes it (0, 3, 6 or 9
    fraction digits), without its per-call overhead."""
    day, rem = divmod(ts.seconds, 86400)
    hours, rem = divmod(rem, 3600)
    minutes, seconds = divmod(rem, 60)
    text = f"{_day_prefix(day)}{hours:02d}:{minutes:02d}:{seconds:02d}"
    nanos = ts.nanos
    if not nanos:
        return text + "Z"
    if nanos % 1_000_000 == 0:
        return f"{text}.{nanos // 1_000_000:03d}Z"
    if nanos % 1000 == 0:
        return f"{text}.{nanos // 1000:06d}Z"
    return f"{text}.{nanos:09d}Z"


# ------------------------------------------------------------- messages as dicts

_Convert = Callable[[Any], Any]
# Keyed by descriptors (typed Any: the upb runtime's classes are not the stubs').
_field_converters: dict[Any, _Convert] = {}


def _enum_converter(enum: Any) -> _Convert:
    """An enum's stored text from its codec (clients/enums.py); a number no codec names
    (or an enum without one) is stored as the number."""
    codec = BY_PROTO_ENUM.get(enum.full_name)
    if codec is None:
        return lambda n: n
    texts = {v.number: codec.text(v.number) for v in enum.values}
    return lambda n: texts.get(n) or n


def _single_converter(fd: Any) -> _Convert:
    if fd.type == FieldDescriptor.TYPE_ENUM:
        return _enum_converter(fd.enum_type)
    if fd.type != FieldDescriptor.TYPE_MESSAGE:
        return lambda x: x
    full = fd.message_type.full_name
    if full == "google.protobuf.Struct":
        return from_struct
    if full == "google.protobuf.Value":
        return _value
    if full == "google.protobuf.ListValue":
        return lambda lv: [_value(x) for x in lv.values[:]]
    if full == "google.protobuf.Timestamp":
        return timestamp_text
    if full == "google.protobuf.Duration":
        return lambda m: m.ToJsonString()
    return message_dict


def _field_converter(fd: Any) -> _Convert:
    conv = _field_converters.get(fd)
    if conv is not None:
        return conv
    if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
        value_conv = _single_converter(fd.message_type.fields_by_name["value"])
        conv = lambda m: {str(k): value_conv(m[k]) for k in m}  # noqa: E731
    elif fd.is_repeated:
        one = _single_converter(fd)
        conv = lambda xs: [one(x) for x in xs[:]]  # noqa: E731
    else:
        conv = _single_converter(fd)
    _field_converters[fd] = conv
    return conv


_tables: dict[Any, dict[Any, tuple[str, _Convert]]] = {}
# Per message type, a function made for it (see _compile), or None where the generic
# walk must do (extensions, float fields).
_compiled: dict[Any, Callable[[Any], dict[str, Any]] | None] = {}


def _compile(desc: Any) -> Callable[[Any], dict[str, Any]] | None:
    """A converter written out for one message type: one attribute read per field and
    a truth test (what ``ListFields`` reports as set, for proto3 fields without
    presence), ``HasField`` for fields with presence, no table look-ups. Float fields
    (where ``-0.0`` is set but false) and extendable types are left to the generic walk."""
    if desc.extension_ranges:
        return None
    env: dict[str, Any] = {}
    body = ["def convert(m):", "    out = {}"]
    for i, fd in enumerate(sorted(desc.fields, key=lambda f: f.number)):
        name = fd.name
        read = f"getattr(m, {name!r})" if keyword.iskeyword(name) else f"m.{name}"
        conv = _field_converter(fd)
        env[f"c{i}"] = conv
        is_map = fd.message_type is not None and fd.message_type.GetOptions().map_entry
        if fd.is_repeated or is_map:
            body += [f"    v = {read}", "    if v:", f"        out[{name!r}] = c{i}(v)"]
        elif fd.has_presence:
            body += [f"    if m.HasField({name!r}):", f"        out[{name!r}] = c{i}({read})"]
        elif fd.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            return None
        elif fd.type == FieldDescriptor.TYPE_ENUM:
            body += [f"    v = {read}", "    if v:", f"        out[{name!r}] = c{i}(v)"]
        else:  # strings, bytes, integers, bools: as they are
            body += [f"    v = {read}", "    if v:", f"        out[{name!r}] = v"]
    body.append("    return out")
    exec("\n".join(body), env)  # code built from descriptors only, no caller input
    fn: Callable[[Any], dict[str, Any]] = env["convert"]
    return fn


def message_dict(message: Message) -> dict[str, Any]:
    """The set fields of ``message`` as a JSON-ready dict keyed by proto field names."""
    desc = message.DESCRIPTOR
    try:
        fn = _compiled[desc]
    except KeyError:
        fn = _compiled[desc] = _compile(desc)
    if fn is not None:
        return fn(message)
    table = _tables.get(desc)
    if table is None:
        table = _tables[desc] = {fd: (fd.name, _field_converter(fd)) for fd in desc.fields}
    out: dict[str, Any] = {}
    for fd, value in message.ListFields():
        entry = table.get(fd)
        if entry is None:  # an extension
            entry = (fd.name, _field_converter(fd))
        out[entry[0]] = entry[1](value)
    return out


def _enum_names_back(d: dict[str, Any], desc: Any) -> dict[str, Any]:
    """Lowercase enum names (how :func:`message_dict` stores them) back to full names,
    recursively, so ``json_format.ParseDict`` accepts them."""
    out = dict(d)
    for name, value in d.items():
        fd = desc.fields_by_name.get(name)
        if fd is None:
            continue
        if fd.type == FieldDescriptor.TYPE_ENUM:
            codec = BY_PROTO_ENUM.get(fd.enum_type.full_name)

            def back(x: Any, codec: Any = codec) -> Any:
                if not isinstance(x, str):
                    return x
                # Stored text ("completed"), a proto name, or text of older rows
                # ("unspecified"): through the codec; what it does not name reads as 0.
                member = codec.lookup(x) if codec is not None else None
                return codec.proto_name(member) if member is not None else 0

            out[name] = [back(x) for x in value] if isinstance(value, list) else back(value)
        elif (
            fd.type == FieldDescriptor.TYPE_MESSAGE
            and not fd.message_type.full_name.startswith("google.protobuf.")
            and not fd.message_type.GetOptions().map_entry
        ):
            sub = fd.message_type
            if isinstance(value, list):
                out[name] = [_enum_names_back(x, sub) if isinstance(x, dict) else x for x in value]
            elif isinstance(value, dict):
                out[name] = _enum_names_back(value, sub)
    return out


def dict_message(d: dict[str, Any], message: M) -> M:
    """Fill ``message`` from a dict made by :func:`message_dict` (or by
    ``MessageToDict``); unknown keys are ignored, so older rows still read."""
    json_format.ParseDict(
        _enum_names_back(d, message.DESCRIPTOR), message, ignore_unknown_fields=True
    )
    return message
