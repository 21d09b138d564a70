"""JSON text in the RunHistory contract: the ``*_json`` twins of Struct fields.

A Struct field such as ``NodeLog.input`` has a twin ``input_json`` (bytes) holding the
same content as the UTF-8 text of a JSON object. A writer that already holds JSON (the
LangGraph hook, which captures through orjson) sends the twin: it builds no Struct, and
the server parses the text in C instead of walking a Struct. Both ends need the same
two facts, kept here: which fields are twins (read from the descriptors, so twins added
later are covered), and how deep a JSON text nests (the contract's nesting bound),
found without parsing it.
"""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Any

__all__ = ["JSON_SUFFIX", "deeper_than", "has_negative_zero", "into_structs", "twins"]

JSON_SUFFIX = "_json"

# A JSON string (escapes included), anything but a bracket, and a bracket pair with
# nothing between: what is left of the innermost containers once the rest is gone.
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")
_EMPTY_PAIR = re.compile(rb"[\[{][\]}]")
# A negative zero number (-0, -0.0, -0e5; not -0.5 nor -0.05) before a comma or closing
# bracket. The pattern starts with its literal "-0", which the regular expression engine
# finds fast (a lookbehind made it seven times slower); what precedes a match is looked
# at in Python (matches are rare), and text inside a string can look like that too
# ("a: -0, b"), so a match is checked again with the strings removed.
_NEGATIVE_ZERO = re.compile(rb"-0(?:\.0*)?(?:[eE][+-]?[0-9]+)?\s*[,}\]]")


def deeper_than(text: bytes, limit: int) -> bool:
    """Whether the JSON ``text`` nests arrays and objects more than ``limit`` levels
    (the outermost object is level 1). Regular expressions do the work (no Python per
    value): strings are dropped, then only brackets are kept, then each pass removes
    the innermost pairs, one level at a time. ``text`` must be valid JSON."""
    if text.count(b"[") + text.count(b"{") <= limit:
        return False  # fewer brackets than levels allowed (brackets in strings count too)
    brackets = _NOT_BRACKET.sub(b"", _STRING.sub(b"", text))
    for _ in range(limit):
        if not brackets:
            return False
        brackets = _EMPTY_PAIR.sub(b"", brackets)
    return bool(brackets)


def has_negative_zero(text: bytes) -> bool:
    """Whether the JSON ``text`` holds a negative zero number (outside its strings).
    A Struct cannot tell -0.0 from 0.0 once stored, so the server stores it as 0.0
    whichever form it came in."""
    if b"-0" not in text or not _a_value_is_negative_zero(text):
        return False
    return _a_value_is_negative_zero(_STRING.sub(b'""', text))


_BEFORE_A_VALUE = frozenset(b":,[")
_SPACE = frozenset(b" \t\r\n")


def _a_value_is_negative_zero(text: bytes) -> bool:
    for match in _NEGATIVE_ZERO.finditer(text):
        # What precedes it, past whitespace (the runs looked at are disjoint: linear).
        i = match.start() - 1
        while i >= 0 and text[i] in _SPACE:
            i -= 1
        if i >= 0 and text[i] in _BEFORE_A_VALUE:
            return True
    return False


@cache
def twins(descriptor: Any) -> tuple[tuple[str, str], ...]:
    """``(struct_field, json_field)`` for each Struct field of the message type that has
    a ``<name>_json`` bytes twin, in field-number order."""
    out = []
    for field in sorted(descriptor.fields, key=lambda f: f.number):
        if field.type != field.TYPE_BYTES or not field.name.endswith(JSON_SUFFIX):
            continue
        stem = descriptor.fields_by_name.get(field.name[: -len(JSON_SUFFIX)])
        kind = stem.message_type if stem is not None else None
        if kind is not None and kind.full_name == "google.protobuf.Struct":
            out.append((stem.name, field.name))
    return tuple(out)


def into_structs(message: Any) -> None:
    """Move every ``*_json`` twin of ``message`` (and of the messages inside it) into its
    Struct, as the server stores and reads it back (-0 as 0): the record a writer that
    does not send twins would have built."""
    for stem, json_field in twins(message.DESCRIPTOR):
        raw = getattr(message, json_field)
        if raw:
            value = json.loads(raw, parse_float=lambda text: float(text) or 0.0)
            getattr(message, stem).update(value)
            message.ClearField(json_field)
    for field, value in message.ListFields():
        kind = field.message_type
        if kind is not None and not kind.full_name.startswith("google.protobuf."):
            for item in value if field.is_repeated else [value]:
                into_structs(item)
