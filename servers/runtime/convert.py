"""Conversions between protobuf messages and plain Python (JSON-ready) values.

The write path converts every run it stores, so these walk the messages directly
(``ListFields`` and the Struct map) instead of going through ``json_format``, which
builds and re-parses JSON per field. The dicts they make are what ``json_format``'s
``MessageToDict(..., preserving_proto_field_name=True)`` makes, except that enums are
stored as lowercase names without their prefix (``completed``) and 64-bit integers
stay integers; :func:`dict_message` reads both back.

A Struct's ``*_json`` twin (``NodeLog.input_json``, :mod:`neuralops.clients.jsontext`)
is parsed (orjson, C) and stored under the Struct's name, so a run reads back the same
whichever of the two its writer set. What is stored keeps a twin's numbers as written
(15.0 stays 15.0, an integer past 2^53 stays exact), where a Struct's doubles store
integral values as integers; -0.0 is 0.0 either way.

The walk also checks, as it goes, what the generic request checks of
:mod:`neuralops.servers.runtime.validation` refuse: NaN or infinite numbers in a
Struct, a Struct nested deeper than ``MAX_STRUCT_DEPTH``, a Timestamp or Duration
outside protobuf's range, and (``strict=True``) an enum number the proto does not
define or a float field that is not finite. It raises :class:`NotValid` then, without
naming the field: a server that converts a request it has not walked yet (RunHistory's
runs) lets that conversion be the one walk a valid request gets, and names the fields
with ``validation.message_violations`` only on this signal.
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
from neuralops.clients.jsontext import twins
from neuralops.servers.runtime.validation import (
    MAX_DURATION_SECONDS,
    MAX_STRUCT_DEPTH,
    MAX_TIMESTAMP_SECONDS,
    MIN_TIMESTAMP_SECONDS,
    json_object,
)

M = TypeVar("M", bound=Message)


class NotValid(ValueError):
    """A value the generic request checks refuse, found while converting (its text says
    what, not where: ``validation.message_violations`` names the field)."""


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


# ------------------------------------------------------------------ Struct values

_which = struct_pb2.Value.WhichOneof
_isfinite = math.isfinite
_MAX_EXACT = 2.0**53
_NESTED = ("struct_value", "list_value")


def _number(x: float) -> Any:
    if x.is_integer() and -_MAX_EXACT <= x <= _MAX_EXACT:
        # Struct numbers are doubles: an integral one is stored (and read back by the
        # clients) as an integer, so 15 stays 15, not 15.0. Beyond 2^53 a double is no
        # longer exact and stays a float.
        return int(x)
    if _isfinite(x):
        return x
    raise NotValid(f"holds {x!r}, which JSON cannot carry")


def _other(v: struct_pb2.Value, kind: str | None, depth: int) -> Any:
    """A Value that holds no string, held by ``depth`` Structs and lists."""
    if kind == "number_value":
        return _number(v.number_value)
    if kind == "bool_value":
        return v.bool_value
    if kind in _NESTED and depth >= MAX_STRUCT_DEPTH:
        raise NotValid(f"is nested more than {MAX_STRUCT_DEPTH} levels deep")
    if kind == "struct_value":
        return from_struct(v.struct_value, depth + 1)
    if kind == "list_value":
        return _list(v.list_value, depth + 1)
    return None


def _value(v: struct_pb2.Value, depth: int = 1) -> Any:
    kind = _which(v, "kind")
    return v.string_value if kind == "string_value" else _other(v, kind, depth)


def _list(lv: struct_pb2.ListValue, depth: int = 1) -> list[Any]:
    out = []
    # A slice is a plain list; iterating the container itself goes through
    # Python-level Sequence.__iter__.
    for x in lv.values[:]:
        kind = _which(x, "kind")
        out.append(x.string_value if kind == "string_value" else _other(x, kind, depth))
    return out


def from_struct(s: struct_pb2.Struct, depth: int = 1) -> dict[str, Any]:
    """A Struct as a dict (integral numbers up to 2^53 as ints, others as floats).
    ``depth``: how deep the Struct itself is nested (a field's own Struct is 1). Raises
    :class:`NotValid` on NaN or Infinity and on nesting past ``MAX_STRUCT_DEPTH``."""
    fields = s.fields
    out: dict[str, Any] = {}
    for k in fields:
        v = fields[k]
        kind = _which(v, "kind")
        out[k] = v.string_value if kind == "string_value" else _other(v, kind, depth)
    return out


# ------------------------------------------------------------------ times

_EPOCH = datetime(1970, 1, 1)
# "YYYY-MM-DDTHH:MM:SS" per second since the epoch: the times of a run's nodes and
# calls mostly share their second, so it is formatted once and only the fraction per
# timestamp. Only seconds inside protobuf's range are ever cached.
_SECONDS: dict[int, str] = {}
_MILLIS = [f".{i:03d}Z" for i in range(1000)]


def _second_text(seconds: int) -> str:
    if not MIN_TIMESTAMP_SECONDS <= seconds <= MAX_TIMESTAMP_SECONDS:
        raise NotValid("is outside years 0001 to 9999")
    if len(_SECONDS) >= 4096:
        _SECONDS.clear()
    text = _SECONDS[seconds] = (_EPOCH + timedelta(seconds=seconds)).isoformat()
    return text


def timestamp_text(ts: timestamp_pb2.Timestamp) -> str:
    """RFC 3339 in UTC, as ``Timestamp.ToJsonString`` writes it (0, 3, 6 or 9
    fraction digits), without its per-call overhead. Raises :class:`NotValid` outside
    protobuf's range (years 0001 to 9999, nanos 0 to 999,999,999)."""
    seconds = ts.seconds
    text = _SECONDS.get(seconds) or _second_text(seconds)
    nanos = ts.nanos
    if not nanos:
        return text + "Z"
    if not 0 < nanos <= 999_999_999:
        raise NotValid("has nanos outside 0 to 999,999,999")
    if nanos % 1_000_000 == 0:
        return text + _MILLIS[nanos // 1_000_000]
    if nanos % 1000 == 0:
        return f"{text}.{nanos // 1000:06d}Z"
    return f"{text}.{nanos:09d}Z"


def duration_text(d: Any) -> str:
    """A Duration as ``Duration.ToJsonString`` writes it; :class:`NotValid` outside
    protobuf's range (about +-10,000 years, nanos of the seconds' sign)."""
    seconds, nanos = d.seconds, d.nanos
    if (
        not -MAX_DURATION_SECONDS <= seconds <= MAX_DURATION_SECONDS
        or not -999_999_999 <= nanos <= 999_999_999
        or (seconds and nanos and (seconds > 0) != (nanos > 0))
    ):
        raise NotValid("is outside protobuf's Duration range")
    text: str = d.ToJsonString()
    return text


# ------------------------------------------------------------- messages as dicts


def _json_twin(raw: bytes) -> dict[str, Any]:
    try:
        return json_object(raw)
    except ValueError as exc:
        raise NotValid(str(exc)) from None


def _both_set(stem: str) -> NotValid:
    return NotValid(f"sets both {stem} and {stem}_json")


_Convert = Callable[[Any], Any]
# Keyed by (descriptor, strict) (typed Any: the upb runtime's classes are not the stubs').
_field_converters: dict[tuple[Any, bool], _Convert] = {}


def _finite(x: float) -> float:
    if _isfinite(x):
        return x
    raise NotValid("must be a finite number")


def _enum_texts(enum: Any) -> dict[int, Any]:
    """Each number the enum defines with its stored text from its codec
    (clients/enums.py); a number the codec does not name (or an enum without one)
    is stored as the number."""
    codec = BY_PROTO_ENUM.get(enum.full_name)
    if codec is None:
        return {v.number: v.number for v in enum.values}
    return {v.number: codec.text(v.number) or v.number for v in enum.values}


def _enum_converter(enum: Any, strict: bool) -> _Convert:
    texts = _enum_texts(enum)
    if not strict:
        return lambda n: texts.get(n, n)
    name = enum.name

    def checked(n: int) -> Any:
        text = texts.get(n)
        if text is None:
            raise NotValid(f"is {n}, not a value of {name}")
        return text

    return checked


def _single_converter(fd: Any, strict: bool) -> _Convert:
    if fd.type == FieldDescriptor.TYPE_ENUM:
        return _enum_converter(fd.enum_type, strict)
    if fd.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return _finite if strict else (lambda x: x)
    if fd.type != FieldDescriptor.TYPE_MESSAGE:
        return lambda x: x
    full = fd.message_type.full_name
    if full == "google.protobuf.Struct":
        return from_struct
    if full == "google.protobuf.Value":
        return _value
    if full == "google.protobuf.ListValue":
        return _list
    if full == "google.protobuf.Timestamp":
        return timestamp_text
    if full == "google.protobuf.Duration":
        return duration_text
    return lambda m: _converted(m, strict)


def _is_map(fd: Any) -> bool:
    return fd.message_type is not None and bool(fd.message_type.GetOptions().map_entry)


def _field_converter(fd: Any, strict: bool) -> _Convert:
    conv = _field_converters.get((fd, strict))
    if conv is not None:
        return conv
    if _is_map(fd):
        value_conv = _single_converter(fd.message_type.fields_by_name["value"], strict)
        conv = lambda m: {str(k): value_conv(m[k]) for k in m}  # noqa: E731
    elif fd.is_repeated:
        one = _single_converter(fd, strict)
        conv = lambda xs: [one(x) for x in xs[:]]  # noqa: E731
    else:
        conv = _single_converter(fd, strict)
    _field_converters[(fd, strict)] = conv
    return conv


_tables: dict[tuple[Any, bool], dict[Any, tuple[str, _Convert]]] = {}
# Per message type and mode, a function made for it (see _compile), or None where the
# generic walk must do (extensions, float fields).
_compiled: dict[Any, Callable[[Any], dict[str, Any]] | None] = {}
_compiled_strict: dict[Any, Callable[[Any], dict[str, Any]] | None] = {}


def _compile(desc: Any, strict: bool) -> Callable[[Any], dict[str, Any]] | None:
    """A converter written out for one message type: one attribute read per field and
    a truth test (what ``ListFields`` reports as set, for proto3 fields without
    presence), ``HasField`` for fields with presence, no table look-ups. Float fields
    (where ``-0.0`` is set but false) and extendable types are left to the generic walk.
    ``strict``: an enum number the proto does not define raises :class:`NotValid`."""
    if desc.extension_ranges:
        return None
    env: dict[str, Any] = {"NotValid": NotValid, "twin": _json_twin, "both": _both_set}
    body = ["def convert(m):", "    out = {}"]
    stems = {json_field: stem for stem, json_field in twins(desc)}
    for i, fd in enumerate(sorted(desc.fields, key=lambda f: f.number)):
        name = fd.name
        read = f"getattr(m, {name!r})" if keyword.iskeyword(name) else f"m.{name}"
        stem = stems.get(name)
        if stem is not None:  # JSON text, stored as its Struct
            body += [
                f"    v = {read}",
                "    if v:",
                f"        if m.HasField({stem!r}):",
                f"            raise both({stem!r})",
                f"        out[{stem!r}] = twin(v)",
            ]
            continue
        env[f"c{i}"] = _field_converter(fd, strict)
        if fd.is_repeated or _is_map(fd):
            body += [f"    v = {read}", "    if v:", f"        out[{name!r}] = c{i}(v)"]
        elif fd.has_presence:
            body += [f"    if m.HasField({name!r}):", f"        out[{name!r}] = c{i}({read})"]
        elif fd.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            return None
        elif fd.type == FieldDescriptor.TYPE_ENUM:
            # Stored text per number, looked up in place (0 is never stored).
            env[f"e{i}"] = _enum_texts(fd.enum_type)
            body += [f"    v = {read}", "    if v:", f"        t = e{i}.get(v)"]
            if strict:
                bad = f"f'is {{v}}, not a value of {fd.enum_type.name}'"
                body += ["        if t is None:", f"            raise NotValid({bad})"]
            else:
                body += ["        if t is None:", "            t = v"]
            body.append(f"        out[{name!r}] = t")
        else:  # strings, bytes, integers, bools: as they are
            body += [f"    v = {read}", "    if v:", f"        out[{name!r}] = v"]
    body.append("    return out")
    exec("\n".join(body), env)  # code built from descriptors only, no caller input
    fn: Callable[[Any], dict[str, Any]] = env["convert"]
    return fn


def _walk(message: Message, strict: bool) -> dict[str, Any]:
    """The generic walk: ``ListFields`` and a converter per field."""
    desc = message.DESCRIPTOR
    table = _tables.get((desc, strict))
    if table is None:
        table = _tables[(desc, strict)] = {
            fd: (fd.name, _field_converter(fd, strict)) for fd in desc.fields
        }
    out: dict[str, Any] = {}
    for fd, value in message.ListFields():
        entry = table.get(fd)
        if entry is None:  # an extension
            entry = (fd.name, _field_converter(fd, strict))
        out[entry[0]] = entry[1](value)
    for stem, json_field in twins(desc):
        raw = out.pop(json_field, None)
        if raw:
            if stem in out:
                raise _both_set(stem)
            out[stem] = _json_twin(raw)
    return out


def _converted(message: Message, strict: bool) -> dict[str, Any]:
    desc = message.DESCRIPTOR
    compiled = _compiled_strict if strict else _compiled
    try:
        fn = compiled[desc]
    except KeyError:
        fn = compiled[desc] = _compile(desc, strict)
    return fn(message) if fn is not None else _walk(message, strict)


def message_dict(message: Message, *, strict: bool = False) -> dict[str, Any]:
    """The set fields of ``message`` as a JSON-ready dict keyed by proto field names.
    Raises :class:`NotValid` on what the generic request checks refuse; an enum number
    the proto does not define is stored as the number, or with ``strict`` refused too
    (and a float field that is not finite)."""
    return _converted(message, strict)


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
