"""Request checks every service shares, driven by the protobuf descriptors.

:func:`message_violations` walks any request message and names each field the
servers could not store or compute with: an enum number the proto does not define,
a Timestamp or Duration outside protobuf's range, a NaN or infinite number (in a
double field or inside a Struct), a Struct nested deeper than :data:`MAX_STRUCT_DEPTH`,
and a Struct's ``*_json`` twin (:mod:`neuralops.clients.jsontext`) that is not a JSON
object within the same bounds, or is set beside its Struct.
Because it reads the descriptors, fields added to the contracts later are covered
without code here. Each service's ``validation`` module adds its own rules (ids,
ranges) on top and is the one place its servicer calls. The conversions of
:mod:`neuralops.servers.runtime.convert` make the same checks as they go (raising
``NotValid``, which names no field), so a request converted anyway is walked once and
:func:`message_violations` names the fields only when the conversion refuses it
(RunHistory's runs).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import orjson
from google.protobuf import struct_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from neuralops.clients.jsontext import deeper_than, has_negative_zero, twins
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


def json_object(raw: bytes) -> dict[str, Any]:
    """The content of a Struct's ``*_json`` twin: the UTF-8 text of a JSON object (NaN
    and infinities are not JSON), nested at most :data:`MAX_STRUCT_DEPTH` levels.
    Raises ValueError saying what is wrong."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"is not JSON text ({clip(str(exc))})") from None
    if type(value) is not dict:
        raise ValueError("must be a JSON object")
    if deeper_than(raw, MAX_STRUCT_DEPTH):
        raise ValueError(f"is nested more than {MAX_STRUCT_DEPTH} levels deep")
    if has_negative_zero(raw):  # rare: the walk only then
        return {k: _no_negative_zero(v) for k, v in value.items()}
    return value


def _no_negative_zero(value: Any) -> Any:
    """-0.0 as 0.0, as a Struct's -0.0 is stored (as 0): the same on every backend."""
    if type(value) is float and value == 0.0:
        return 0.0
    if type(value) is dict:
        return {k: _no_negative_zero(v) for k, v in value.items()}
    if type(value) is list:
        return [_no_negative_zero(v) for v in value]
    return value


def _twin_problems(msg: Any) -> Iterator[tuple[str, str]]:
    """(field, what is wrong) for each ``*_json`` twin of ``msg`` the server cannot take."""
    for stem, json_field in twins(msg.DESCRIPTOR):
        raw = getattr(msg, json_field)
        if not raw:
            continue
        if msg.HasField(stem):
            yield json_field, f"is set beside {stem}: set {stem} or {json_field}, not both"
            continue
        try:
            json_object(raw)
        except ValueError as exc:
            yield json_field, str(exc)


def _twins(msg: Any, path: str, out: list[FieldViolation]) -> None:
    for field, problem in _twin_problems(msg):
        out.append(FieldViolation(_name(path, field), problem))


def _twins_ok(msg: Any) -> bool:
    return next(_twin_problems(msg), None) is None


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
    _twins(msg, path, out)
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


# ------------------------------------------------------------------ fast pass
#
# Almost every request is valid, so a first pass only answers "anything wrong?"
# without building a path per field; the naming walk above runs only when it says yes.
# It checks exactly what the naming walk checks, from a per-type plan of the fields
# that can hold anything checkable (enums, floats, messages that hold either).

_Check = Callable[[Any], bool]
_which_kind = struct_pb2.Value.WhichOneof
_isfinite = math.isfinite


def _timestamp_ok(msg: Any) -> bool:
    seconds: int = msg.seconds
    nanos: int = msg.nanos
    return MIN_TIMESTAMP_SECONDS <= seconds <= MAX_TIMESTAMP_SECONDS and 0 <= nanos <= 999_999_999


def _duration_ok(msg: Any) -> bool:
    out: list[FieldViolation] = []
    _duration(msg, "", out)
    return not out


def _value_ok(v: Any, depth: int) -> bool:
    kind = _which_kind(v, "kind")
    if kind == "number_value":
        return _isfinite(v.number_value)
    if kind == "struct_value":
        return _struct_ok(v.struct_value, depth + 1)
    if kind == "list_value":
        return _list_ok(v.list_value, depth + 1)
    return True


def _struct_ok(msg: Any, depth: int = 1) -> bool:
    if depth > MAX_STRUCT_DEPTH:
        return False
    fields = msg.fields
    for key in fields:
        v = fields[key]
        kind = _which_kind(v, "kind")
        if kind == "string_value":
            continue
        if kind == "number_value":
            if not _isfinite(v.number_value):
                return False
        elif kind == "struct_value":
            if not _struct_ok(v.struct_value, depth + 1):
                return False
        elif kind == "list_value" and not _list_ok(v.list_value, depth + 1):
            return False
    return True


def _list_ok(msg: Any, depth: int = 1) -> bool:
    if depth > MAX_STRUCT_DEPTH:
        return False
    return all(_value_ok(v, depth) for v in msg.values[:])


_WELL_KNOWN: dict[str, _Check] = {
    _TIMESTAMP: _timestamp_ok,
    _DURATION: _duration_ok,
    _STRUCT: _struct_ok,
    _VALUE: lambda v: _value_ok(v, 1),
    _LIST: _list_ok,
}
# Per message type: its fields that need a look, each with the check of its value.
_plans: dict[Any, dict[Any, _Check]] = {}


def _refuse(_: Any) -> bool:
    return False  # a field the plan does not know (an extension): the naming walk decides


def _single_check(field: Any) -> _Check | None:
    if field.type == FieldDescriptor.TYPE_ENUM:
        numbers = frozenset(field.enum_type.values_by_number)
        return numbers.__contains__
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return _isfinite
    if field.message_type is None:
        return None
    known = _WELL_KNOWN.get(field.message_type.full_name)
    if known is not None:
        return known
    if not _needs_look(field.message_type, set()):
        return None
    return _message_ok


def _needs_look(desc: Any, seen: set[Any]) -> bool:
    """Whether a message of this type can hold anything the checks look at."""
    if desc.full_name in _WELL_KNOWN or desc in seen or twins(desc):
        return True
    seen.add(desc)
    for field in desc.fields:
        if field.type in (
            FieldDescriptor.TYPE_ENUM,
            FieldDescriptor.TYPE_DOUBLE,
            FieldDescriptor.TYPE_FLOAT,
        ):
            return True
        if field.message_type is not None and _needs_look(field.message_type, seen):
            return True
    return False


def _each_value(one: _Check) -> _Check:
    return lambda m: all(one(m[k]) for k in m)


def _each_item(one: _Check) -> _Check:
    return lambda xs: all(map(one, xs[:]))


def _plan(desc: Any) -> dict[Any, _Check]:
    plan: dict[Any, _Check] = {}
    for field in desc.fields:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            one = _single_check(field.message_type.fields_by_name["value"])
            if one is not None:
                plan[field] = _each_value(one)
            continue
        one = _single_check(field)
        if one is None:
            continue
        if field.is_repeated:
            plan[field] = _each_item(one)
        else:
            plan[field] = one
    _plans[desc] = plan
    return plan


def _message_ok(msg: Any) -> bool:
    desc = msg.DESCRIPTOR
    plan = _plans.get(desc)
    if plan is None:
        known = _WELL_KNOWN.get(desc.full_name)
        if known is not None:
            return known(msg)
        plan = _plan(desc)
    if twins(desc) and not _twins_ok(msg):
        return False
    if not plan:
        return True
    for field, value in msg.ListFields():
        check = plan.get(field, _refuse)
        if (check is not _refuse or field.is_extension) and not check(value):
            return False
    return True


def message_violations(msg: Message, prefix: str = "") -> list[FieldViolation]:
    """Every field of ``msg`` no server could store or compute with."""
    out: list[FieldViolation] = []
    if _message_ok(msg):
        return out
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
