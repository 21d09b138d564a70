"""HTTP request → gRPC request message, gRPC response → JSON: the transcoding rules of
``google/api/http.proto``, with protobuf's JSON mapping (``json_format``).

- path variables set the (possibly nested) fields they name;
- ``body: "*"`` maps the whole JSON body onto the request, ``body: "field"`` onto that
  field, and then every field not bound by the path or body may come from the query
  string (``?page_size=10&status=RUN_STATUS_FAILED&labels.job=x&tag=a&tag=b``);
- the response is the message (or its ``response_body`` field) in protobuf's JSON
  mapping with the proto field names (``run_id``), every field present.

Any value that does not fit its field is :class:`BadField`, which the gateway answers
as INVALID_ARGUMENT naming the field, as the gRPC servers do.
"""

from __future__ import annotations

import json
import re
from typing import Any

from google.protobuf import descriptor, json_format, message, message_factory
from google.protobuf.descriptor import FieldDescriptor
from neuralops.clients.jsontext import twins
from neuralops.servers.gateway.routes import Route

_STRUCT_TYPES = {"google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"}


class BadField(ValueError):
    """A request value that does not fit the field it is for."""

    def __init__(self, field: str, description: str) -> None:
        super().__init__(f"{field}: {description}")
        self.field = field
        self.description = description


def new_message(desc: descriptor.Descriptor) -> message.Message:
    return message_factory.GetMessageClass(desc)()


def _field_chain(desc: descriptor.Descriptor, path: str) -> list[FieldDescriptor]:
    """The fields along a dotted path (proto or JSON names), or BadField."""
    chain: list[FieldDescriptor] = []
    current: descriptor.Descriptor | None = desc
    for name in path.split("."):
        if current is None:
            raise BadField(path, "not a field of the request")
        fd = current.fields_by_name.get(name) or current.fields_by_camelcase_name.get(name)
        if fd is None:
            raise BadField(path, "not a field of the request")
        chain.append(fd)
        is_leaf_type = fd.message_type is None or fd.message_type.full_name.startswith(
            "google.protobuf."
        )
        current = None if is_leaf_type or fd.is_repeated else fd.message_type
    return chain


def _scalar_json(fd: FieldDescriptor, text: str) -> Any:
    """A query/path string as the JSON value json_format expects for ``fd``."""
    if fd.enum_type is not None:
        if text.lstrip("-").isdigit():
            return int(text)
        values = fd.enum_type.values_by_name
        if text in values:
            return text
        # Accept the short form too: status=failed for RUN_STATUS_FAILED.
        prefix = "".join(
            "_" + c if c.isupper() and i else c.upper() for i, c in enumerate(fd.enum_type.name)
        )
        full = f"{prefix}_{text.upper()}"
        return full if full in values else text
    if fd.type == FieldDescriptor.TYPE_BOOL:
        # As grpc-gateway (Go's strconv.ParseBool): true/false, 1/0, t/f, any case.
        word = text.lower()
        if word in ("true", "t", "1"):
            return True
        if word in ("false", "f", "0"):
            return False
        return text
    if fd.message_type is not None and fd.message_type.full_name in _STRUCT_TYPES:
        try:
            return json.loads(text)
        except (ValueError, RecursionError):
            return text
    return text


def _nest(path: list[str], value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {path[-1]: value}
    for name in reversed(path[:-1]):
        out = {name: out}
    return out


def _parse_into(msg: message.Message, data: dict[str, Any], field: str) -> None:
    _check_bytes(data, msg.DESCRIPTOR, "")
    try:
        json_format.ParseDict(data, msg)
    except json_format.ParseError as exc:
        raise BadField(field, _short(str(exc))) from None
    except RecursionError:
        raise BadField(field, "is nested too deeply") from None
    except (OverflowError, TypeError, ValueError) as exc:  # e.g. an integer past a double
        raise BadField(field, _short(f"cannot be read: {exc}")) from None


# Base64 as protobuf's JSON mapping writes bytes (standard or URL-safe alphabet, padding
# optional). json_format's decoder skips any other character, so "!!!" would be taken as
# no bytes at all: a value is checked against this first.
_BASE64 = re.compile(r"[A-Za-z0-9+/_-]*={0,2}")


def _fields(desc: Any, data: dict[str, Any]) -> Any:
    """Each key of a JSON object that names a field of ``desc``, with the field."""
    for key, value in data.items():
        fd = desc.fields_by_name.get(key) or desc.fields_by_camelcase_name.get(key)
        if fd is not None:
            yield fd, value


def _check_bytes(data: Any, desc: Any, path: str) -> None:
    """BadField for a bytes value (a Struct's ``*_json`` twin, say) that is not base64."""
    if not isinstance(data, dict) or desc.full_name.startswith("google.protobuf."):
        return
    for fd, value in _fields(desc, data):
        here = f"{path}.{fd.name}" if path else fd.name
        items = value if fd.is_repeated and isinstance(value, list) else [value]
        if fd.type == FieldDescriptor.TYPE_BYTES:
            for item in items:
                if item is not None and not isinstance(item, str):
                    raise BadField(
                        here,
                        "must be base64 text (bytes travel as base64 in JSON), not "
                        f"a JSON {type(item).__name__.replace('dict', 'object')}",
                    )
                if isinstance(item, str) and not _BASE64.fullmatch(item):
                    raise BadField(here, "is not base64 (bytes travel as base64 in JSON)")
        elif fd.message_type is not None and not fd.message_type.GetOptions().map_entry:
            for i, item in enumerate(items):
                _check_bytes(item, fd.message_type, f"{here}[{i}]" if fd.is_repeated else here)


def _short(text: str) -> str:
    """json_format's messages nest "Failed to parse x field: " prefixes; keep the cause."""
    text = re.sub(r"^(Failed to parse \S+ field: )+", "", text)
    return re.sub(r"\s+at [\w.\[\]]+\.?$", "", text).rstrip(".") or "invalid value"


def build_request(
    route: Route,
    path_vars: dict[str, str],
    query: list[tuple[str, str]],
    body: bytes,
) -> message.Message:
    """The gRPC request for one HTTP request on ``route``."""
    desc = route.method.input_type
    request = new_message(desc)
    bound: set[str] = set()

    if route.body:
        try:
            data = json.loads(body) if body.strip() else {}
        except ValueError as exc:
            raise BadField("body", f"not valid JSON ({exc})") from None
        except RecursionError:
            raise BadField("body", "is nested too deeply") from None
        if route.body == "*":
            if not isinstance(data, dict):
                raise BadField("body", "must be a JSON object")
            _parse_into(request, data, "body")
        else:
            chain = _field_chain(desc, route.body)
            _parse_into(request, _nest([f.name for f in chain], data), route.body)
            bound.add(".".join(f.name for f in chain))

    if route.body != "*":
        grouped: dict[str, list[str]] = {}
        for key, value in query:
            grouped.setdefault(key, []).append(value)
        for key, values in grouped.items():
            chain = _field_chain(desc, key)
            names = [f.name for f in chain]
            dotted = ".".join(names)
            if any(dotted == b or dotted.startswith(b + ".") for b in bound):
                raise BadField(key, "is set by the body, not the query string")
            leaf = chain[-1]
            if (
                leaf.message_type is not None
                and leaf.message_type.full_name not in _STRUCT_TYPES
                and not leaf.message_type.full_name.startswith("google.protobuf.")
            ):
                raise BadField(key, "is a message: set its fields (key.subfield=...)")
            if leaf.is_repeated and leaf.message_type is None:
                parsed: Any = [_scalar_json(leaf, v) for v in values]
            elif len(values) > 1:
                raise BadField(key, "given more than once")
            else:
                parsed = _scalar_json(leaf, values[0])
            _parse_into(request, _nest(names, parsed), key)

    for field_path, text in path_vars.items():
        chain = _field_chain(desc, field_path)
        if chain[-1].is_repeated:
            raise BadField(field_path, "a path variable cannot set a repeated field")
        names = [f.name for f in chain]
        _parse_into(request, _nest(names, _scalar_json(chain[-1], text)), field_path)
    return request


def response_json(route: Route, response: message.Message) -> Any:
    """The response in protobuf's JSON mapping: proto field names, all fields present."""
    target: Any = response
    if route.response_body:
        for name in route.response_body.split("."):
            target = getattr(target, name)
        if not isinstance(target, message.Message):
            if isinstance(target, str | bytes | int | float | bool):
                return target
            return [
                json_format.MessageToDict(
                    m, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
                )
                if isinstance(m, message.Message)
                else m
                for m in target
            ]
    out = json_format.MessageToDict(
        target,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )
    _drop_twins(out, target.DESCRIPTOR)
    return _integral(out)


def _drop_twins(data: Any, desc: Any) -> None:
    """Leave out the ``*_json`` twins of Struct fields: write-only, a read answers in the
    Struct field, so printed they would only be empty strings on every run, node and
    call."""
    if not isinstance(data, dict) or desc.full_name.startswith("google.protobuf."):
        return
    for _, json_field in twins(desc):
        if not data.get(json_field):
            data.pop(json_field, None)
    for fd, value in list(_fields(desc, data)):
        if fd.message_type is not None and not fd.message_type.GetOptions().map_entry:
            for item in value if isinstance(value, list) else [value]:
                _drop_twins(item, fd.message_type)


def _integral(value: Any) -> Any:
    """Struct numbers are doubles: print an integral one (up to 2^53) as 15, not 15.0,
    so a run's integers read back as integers (issue 10)."""
    if isinstance(value, float):
        return int(value) if value.is_integer() and abs(value) <= 2**53 else value
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return value
