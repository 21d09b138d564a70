"""What the LangGraph hook captures, bounded, and the Run message built from it.

Runs on the sender's thread (but for :func:`model_replies` and :func:`usage_of`, read as a
model call ends, and :func:`snapshot`): the callbacks only keep references
and timestamps, and this module turns what they kept into JSON text for the record
(the ``*_json`` twins of its Struct fields, :mod:`neuralops.clients.jsontext`), within
the capture budget. Two budgets bound the captured inputs/outputs: ``node_bytes`` per node or call
(and for the run's own inputs and outputs) and ``run_bytes`` for the whole run; sizes
are counted as the JSON text would be (roughly: characters of strings and keys, 8 per
number). What does not fit is cut (strings get a trailing ``…``, containers an entry
``"…": "N more"``) and the node, call and run are marked ``truncated``.

Integers: Struct numbers are doubles, exact up to 2^53. A larger integer is captured as
its decimal text, so it is never silently rounded. Floats JSON cannot carry (NaN,
infinities) are captured as null, as ``JSON.stringify`` and orjson write them.

Speed: most values are small, plain JSON-like data and LangChain messages. They take a
fast path: one ``orjson.dumps`` (C) writes the text and decides whether the value fits
its budget as it is (no string over ``max_chars``, no integer past 2^53, nesting within
bounds); that text is what the record carries, so no Struct is built. Anything else
(too big, odd types, deep) takes the careful walk (:func:`bounded`), which cuts where
needed, and its result is written the same way.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from datetime import time as clock_time
from enum import Enum
from typing import Any

from google.protobuf import struct_pb2
from langchain_core.messages import BaseMessage

try:  # a dependency of langsmith (so of langchain-core) on CPython; the walk works without it
    import orjson
except ImportError:  # pragma: no cover
    orjson = None  # type: ignore[assignment]
from neuralops.clients.enums import CALL_KIND, RUN_STATUS
from neuralops.clients.jsontext import deeper_than
from neuralops.runhistory.v1 import runhistory_pb2 as pb

MAX_EXACT_INT = 2**53


class _Dropped:
    """A value the hook did not keep (past its bounds): captured as nothing, marked
    truncated."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<dropped>"


DROPPED: Any = _Dropped()

MAX_DEPTH = 20  # Struct nests two messages per level; protobuf parsers stop at 100
_ELLIPSIS = "…"


class Budget:
    """Bytes left for captured values: one per run, and one per node or call.

    A run's budget also remembers the JSON shape of each LangChain message it wrote (a
    react agent's messages recur in every node's state, model input and the run's
    outputs): the shape is made once per message and run. The memo holds the message
    too, so its id is not reused while the run is built."""

    __slots__ = ("_shapes", "cut", "left", "max_chars")

    def __init__(self, left: int, max_chars: int) -> None:
        self.left = left
        self.cut = False
        self.max_chars = max_chars
        self._shapes: dict[int, tuple[Any, Any]] | None = None

    def json_default(self, value: Any) -> Any:
        """orjson's ``default``: :func:`_json_default`, once per message."""
        if not isinstance(value, BaseMessage):
            return _json_default(value)
        shapes = self._shapes
        if shapes is None:
            shapes = self._shapes = {}
        known = shapes.get(id(value))
        if known is None:
            known = shapes[id(value)] = (value, _message(value))
        return known[1]


def _text(value: str, b: Budget) -> str:
    limit = min(b.max_chars or len(value), max(b.left, 0))
    if len(value) > limit:
        b.cut = True
        value = value[:limit] + _ELLIPSIS
    b.left -= len(value) + 2
    return valid_text(value)


_SURROGATE = re.compile("[\ud800-\udfff]")


def valid_text(value: str) -> str:
    """``value`` as protobuf accepts it: a lone surrogate (e.g. half of an emoji cut by
    someone else) becomes U+FFFD instead of failing the whole record."""
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", value)
    return value


def _key_text(key: Any) -> str:
    """A mapping key as JSON text, the way orjson writes it (the fast path)."""
    if key is True or key is False or key is None:
        return "true" if key else ("null" if key is None else "false")
    if isinstance(key, Enum):
        key = key.value
    if isinstance(key, float) and not math.isfinite(key):
        return "null"
    if isinstance(key, date | clock_time):
        return key.isoformat()
    return str(key)


_MESSAGE_KEYS = (
    "name",
    "id",
    "tool_call_id",
    "tool_calls",
    "invalid_tool_calls",  # what the model meant as a tool call but did not parse
    "artifact",  # a tool's content_and_artifact
    "usage_metadata",
)
# A streamed message's chunk type as the message type it adds up to.
_CHUNK_TYPES = {
    "AIMessageChunk": "ai",
    "HumanMessageChunk": "human",
    "SystemMessageChunk": "system",
    "ToolMessageChunk": "tool",
    "ChatMessageChunk": "chat",
    "FunctionMessageChunk": "function",
}


def _message(m: Any) -> dict[str, Any]:
    """A LangChain message, compactly (model_dump is ten times slower and noisier)."""
    kind = m.type
    d: dict[str, Any] = {"type": _CHUNK_TYPES.get(kind, kind), "content": m.content}
    # The model's fields, read from its __dict__: getattr on a pydantic model for a
    # field it does not have goes through a slow __getattr__.
    fields = getattr(m, "__dict__", None) or {}
    for key in _MESSAGE_KEYS:
        v = fields.get(key)
        if v:
            d[key] = v
    status = fields.get("status")
    if status and status != "success":  # a ToolMessage reporting an error
        d["status"] = status
    finish = (fields.get("response_metadata") or {}).get("finish_reason")
    if finish:
        d["finish_reason"] = finish
    return d


def _plain(value: Any) -> Any:
    """The JSON-like shape of LangChain/LangGraph objects; ``value`` itself when none."""
    if isinstance(value, BaseMessage):
        return _message(value)
    kind = type(value).__name__
    if kind == "Command" and hasattr(value, "resume"):
        return {
            k: getattr(value, k)
            for k in ("graph", "update", "resume", "goto")
            if getattr(value, k, None) not in (None, (), [], {})
        }
    if kind == "Interrupt" and hasattr(value, "id"):
        return {"id": value.id, "value": value.value}
    if kind == "Send" and hasattr(value, "node"):
        return {"node": value.node, "arg": value.arg}
    if hasattr(value, "content") and hasattr(value, "type") and hasattr(value, "additional_kwargs"):
        return _message(value)
    if kind == "Document" and hasattr(value, "page_content"):
        doc = {"page_content": value.page_content, "metadata": value.metadata}
        if getattr(value, "id", None):
            doc["id"] = value.id
        return doc
    return value


def bounded(value: Any, b: Budget, depth: int = 0) -> Any:
    """A JSON-safe copy of ``value`` within ``b`` (which it spends). Never raises: a
    value that cannot be read (its ``repr``, ``items`` or a property raises) is captured
    as ``"<TypeName>"``, and the rest of the record is kept."""
    if value is None or isinstance(value, bool):
        b.left -= 4
        return value
    if isinstance(value, int):  # subclasses (IntEnum, IntFlag) as the plain number
        b.left -= 8
        value = int(value)
        return value if -MAX_EXACT_INT <= value <= MAX_EXACT_INT else str(value)
    if isinstance(value, float):  # subclasses too: numpy.float64 is one
        b.left -= 8
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return _text(str(value), b)
    if depth > MAX_DEPTH:
        b.cut = True
        return _ELLIPSIS
    try:
        return _bounded_object(value, b, depth)
    except RecursionError:
        b.cut = True
        return _ELLIPSIS
    except Exception:
        return _text(f"<{type(value).__name__}>", b)


def _bounded_object(value: Any, b: Budget, depth: int) -> Any:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        items = list(value.items())
        for i, (k, v) in enumerate(items):
            if b.left <= 0:
                b.cut = True
                out[_ELLIPSIS] = f"{len(items) - i} more"
                break
            key = _key(k, b)
            out[key] = bounded(v, b, depth + 1)
        return out
    if isinstance(value, list | tuple | set | frozenset):
        seq = list(value)
        res: list[Any] = []
        for i, v in enumerate(seq):
            if b.left <= 0:
                b.cut = True
                res.append(f"{_ELLIPSIS} {len(seq) - i} more")
                break
            res.append(bounded(v, b, depth + 1))
        return res
    if isinstance(value, date | clock_time):  # as orjson writes them (RFC 3339)
        return _text(value.isoformat(), b)
    if isinstance(value, uuid.UUID):
        return _text(str(value), b)
    if isinstance(value, Enum):
        return bounded(value.value, b, depth + 1)
    plain = _plain(value)
    if plain is not value:
        return bounded(plain, b, depth + 1)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return bounded(
            {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}, b, depth + 1
        )
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        try:
            return bounded(dump(), b, depth + 1)
        except Exception:
            pass
    scalar = _numpy_value(value)
    if scalar is not value:
        return bounded(scalar, b, depth + 1)
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return _text(text, b)


def _numpy_value(value: Any) -> Any:
    """A numpy scalar as its Python value, a small array as nested lists (numpy is not
    imported: its objects are known by their module); ``value`` itself otherwise."""
    if not type(value).__module__.startswith("numpy"):
        return value
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        return value.item()
    if getattr(value, "size", _MAX_ARRAY + 1) <= _MAX_ARRAY and hasattr(value, "tolist"):
        return value.tolist()
    return value


_MAX_ARRAY = 4096  # elements: a bigger array is captured as numpy's own (abridged) repr


def _key(k: Any, b: Budget) -> str:
    """A mapping key as the record's text, cut like a string value."""
    key = _key_text(k)
    limit = b.max_chars or len(key)
    if len(key) > limit:
        b.cut = True
        key = key[:limit] + _ELLIPSIS
    b.left -= len(key) + 4
    return valid_text(key)


def capture(value: Any, run: Budget, per_item: int) -> tuple[dict[str, Any] | None, bool]:
    """``value`` as a Struct-ready dict within ``per_item`` bytes and the run's budget;
    ``(None, True)`` when the run's budget is already spent."""
    if value is None:
        return None, False
    if run.left <= 0:
        return None, True
    b = Budget(min(per_item, run.left), run.max_chars)
    start = b.left
    v = bounded(value, b)
    run.left -= start - b.left
    return (v if isinstance(v, dict) else {"value": v}), b.cut


def json_capture(value: Any, run: Budget, per_item: int) -> tuple[bytes, bool]:
    """``value`` as the JSON text of an object (what a Struct's ``*_json`` twin takes,
    :mod:`neuralops.clients.jsontext`) within ``per_item`` bytes and the run's budget,
    which it spends; and whether something was cut (or the run's budget was spent).
    ``b""`` (the field left unset) for nothing, an empty mapping included (as an
    empty Struct was). A value that is not a mapping is captured as ``{"value": ...}``."""
    if value is None:
        return b"", False
    if run.left <= 0 or value is DROPPED:
        return b"", True
    if orjson is not None:
        text = _fast_json(value, min(per_item, run.left), run.max_chars, run.json_default)
        if text is not None:
            if text[:1] != b"{":
                text = b'{"value":' + text + b"}"
            if not deeper_than(text, MAX_DEPTH):
                run.left -= len(text)
                return (b"" if text == b"{}" else text), False
    d, cut = capture(value, run, per_item)
    return (_dumps(d) if d else b""), cut


def _dumps(d: dict[str, Any]) -> bytes:
    """What the careful walk made (JSON types only) as JSON text."""
    if orjson is not None:
        return orjson.dumps(d)
    return json.dumps(d, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


# Dataclasses go through _json_default, so LangGraph's (Command, Interrupt) get their shape.
_FAST_OPTIONS = (
    (orjson.OPT_STRICT_INTEGER | orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATACLASS)
    if orjson
    else 0
)
_long_strings: dict[int, re.Pattern[bytes]] = {}


def _fast_json(
    value: Any, limit: int, max_chars: int, default: Callable[[Any], Any] | None = None
) -> bytes | None:
    """``value`` as JSON when it fits as it is: within ``limit`` bytes, no string over
    ``max_chars`` (bytes of UTF-8, so a little strict), every integer exact."""
    if _looks_bigger(value, limit):
        return None  # the walk stops at the budget; orjson would write it all first
    try:
        text: bytes = orjson.dumps(value, default=default or _json_default, option=_FAST_OPTIONS)
    except (TypeError, ValueError, RecursionError):  # JSONEncodeError is a TypeError
        return None
    if len(text) > limit:
        return None
    if max_chars and len(text) > max_chars:
        pattern = _long_strings.get(max_chars)
        if pattern is None:
            pattern = re.compile(rb'"(?:[^"\\]|\\.){%d,}"' % (max_chars + 1))
            _long_strings[max_chars] = pattern
        if pattern.search(text):
            return None
    return text


def _looks_bigger(value: Any, limit: int) -> bool:
    """A rough look two levels down: is ``value`` surely bigger than ``limit`` bytes?"""
    if isinstance(value, dict):
        items: Any = value.values()
        n = 8 * len(value)
    elif isinstance(value, list | tuple):
        items, n = value, 0
    else:
        return False
    for v in items:
        t = type(v)
        if t is str or t is bytes:
            n += len(v)
        elif t is list or t is tuple or t is dict:
            n += 32 * len(v)
        else:
            n += 8
        if n > limit:
            return True
    return False


def snapshot(value: Any) -> Any:
    """A copy of what a caller may still change after a run: the containers at the top
    and one level down (a chat loop appending to ``state["messages"]``); the objects
    inside are shared. Cheap enough for the graph's thread (no call per value)."""
    if isinstance(value, dict):
        copy = dict(value)  # C copy, then only the mutable values replaced (no resize)
        for k, v in copy.items():
            if type(v) in _MUTABLE:
                copy[k] = v.copy()
        return copy
    if isinstance(value, list | tuple):
        return [v.copy() if type(v) in _MUTABLE else v for v in value]
    return value


_MUTABLE = frozenset((list, dict, set))


def _json_default(value: Any) -> Any:
    plain = _plain(value)
    if plain is not value:
        return plain
    if isinstance(value, set | frozenset):
        return list(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump()
    scalar = _numpy_value(value)
    if scalar is not value:
        return scalar
    raise TypeError(type(value).__name__)  # the careful walk takes it (repr, ...)


def struct(d: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(d)
    return s


def stamp(epoch_s: float, msg: Any) -> None:
    msg.FromNanoseconds(int(epoch_s * 1e9))


def status(text: str) -> pb.RunStatus.ValueType:
    return RUN_STATUS.to_proto(text)


def kind(text: str) -> pb.CallKind.ValueType:
    return CALL_KIND.to_proto(text)


def model_replies(response: Any) -> tuple[list[Any], Any]:
    """What a model call's record needs of its ``LLMResult``, taken on the graph's
    thread without reading into it: each generation's message (the graph's state holds
    it anyway; a text generation becomes ``{"text": ...}``) and ``llm_output``. The
    result's own objects are not kept; :func:`usage_of` reads the replies as the call
    ends, :func:`generation_output` on the sender's thread."""
    replies: list[Any] = []
    for batch in getattr(response, "generations", None) or ():
        for g in batch:
            msg = getattr(g, "message", None)
            replies.append({"text": getattr(g, "text", "")} if msg is None else msg)
    return replies, getattr(response, "llm_output", None)


def usage_of(replies: list[Any], llm_output: Any) -> tuple[dict[str, int], str]:
    """Token usage and model name from a model call's replies (:func:`model_replies`):
    the first reply's ``usage_metadata`` (cached and reasoning tokens when the provider
    reports them), else the provider's ``llm_output["token_usage"]``."""
    totals = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
    model = ""
    found = False
    for msg in replies:
        meta = getattr(msg, "response_metadata", None) or {}
        model = model or str(meta.get("model_name") or meta.get("model") or "")
        um = getattr(msg, "usage_metadata", None)
        if not um or found:
            # One response is billed once: with several choices (n > 1) providers
            # put the response's usage on each (LangChain's own usage callback reads
            # the first generation too).
            continue
        found = True
        for key in ("input_tokens", "output_tokens", "total_tokens"):
            totals[key] = _tokens(um.get(key))
        cached = (um.get("input_token_details") or {}).get("cache_read")
        if cached:
            totals["cached_input_tokens"] = _tokens(cached)
        reasoning = (um.get("output_token_details") or {}).get("reasoning")
        if reasoning:
            totals["reasoning_tokens"] = _tokens(reasoning)
    llm_output = llm_output if isinstance(llm_output, Mapping) else {}
    model = model or str(llm_output.get("model_name") or llm_output.get("model") or "")
    if not found:
        tu = llm_output.get("token_usage") or llm_output.get("usage") or {}
        if isinstance(tu, Mapping):
            totals["input_tokens"] = _tokens(tu.get("prompt_tokens") or tu.get("input_tokens"))
            totals["output_tokens"] = _tokens(
                tu.get("completion_tokens") or tu.get("output_tokens")
            )
            totals["total_tokens"] = _tokens(
                tu.get("total_tokens") or totals["input_tokens"] + totals["output_tokens"]
            )
    if totals["total_tokens"] == 0:
        totals["total_tokens"] = totals["input_tokens"] + totals["output_tokens"]
    return totals, model


_MAX_TOKENS = 2**40  # per call: past it a count is nonsense; sums stay within int64


def _tokens(value: Any) -> int:
    """A token count as a provider reported it: a number or numeric text; anything
    else (or negative) counts 0, so an odd report never costs the record."""
    try:
        n = int(value or 0)
    except (TypeError, ValueError, OverflowError):
        return 0
    return n if 0 <= n <= _MAX_TOKENS else 0


def generation_output(replies: list[Any]) -> Any:
    """What a model call returned: its first generation's message (or text)."""
    if not replies:
        return None
    first = replies[0]
    return first if isinstance(first, dict) else {"message": first}


def utc(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, UTC)
