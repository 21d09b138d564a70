"""The run dict users write (the seed's shape) and its Run message.

    {"wpk_id": "test", "run_id": "r1", "inputs": {}, "outputs": {"text": "ok"},
     "status": "completed", "node_logs": [], "duration_ms": 123}

:func:`run_message` validates such a dict with errors naming the key, so a typo
fails at the caller, not as a server round trip.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from google.protobuf import struct_pb2, timestamp_pb2
from neuralops.clients.enums import RUN_STATUS
from neuralops.clients.errors import FieldViolation, InvalidArgumentError
from neuralops.runhistory.v1 import runhistory_pb2 as pb

_RUN_KEYS = {"wpk_id", "run_id", "inputs", "outputs", "status", "duration_ms", "node_logs", "error"}
_NODE_KEYS = {
    "name",
    "path",
    "step",
    "start_time",
    "end_time",
    "duration_ms",
    "status",
    "error",
    "input",
    "output",
}


def _fail(field: str, description: str) -> InvalidArgumentError:
    import grpc

    return InvalidArgumentError(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"{field}: {description}",
        reason="INVALID_RUN",
        violations=(FieldViolation(field, description),),
    )


def jsonable(value: Any, max_chars: int = 0, _depth: int = 0) -> Any:
    """A JSON-safe copy of ``value`` (messages and models dumped, the rest repr'd).

    With ``max_chars`` > 0, long strings are cut to that many characters."""
    if _depth > 20:
        return "…"
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return value if not max_chars or len(value) <= max_chars else value[:max_chars] + "…"
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, max_chars, _depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v, max_chars, _depth + 1) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        try:
            return jsonable(dump(), max_chars, _depth + 1)
        except Exception:
            pass
    text = repr(value)
    return text if not max_chars or len(text) <= max_chars else text[:max_chars] + "…"


def _struct(value: Any, field: str) -> struct_pb2.Struct:
    if value is None:
        return struct_pb2.Struct()
    if not isinstance(value, Mapping):
        raise _fail(field, f"must be a dict, not {type(value).__name__}")
    s = struct_pb2.Struct()
    s.update(jsonable(value))
    return s


def _status(value: Any, field: str) -> pb.RunStatus.ValueType:
    """``completed``, ``COMPLETED``, ``RUN_STATUS_COMPLETED`` or ``RunStatus.COMPLETED``."""
    member = RUN_STATUS.lookup(value)
    if member is None:
        names = ", ".join(f"{m.value} ({RUN_STATUS.proto_name(m)})" for m in RUN_STATUS.kind)
        raise _fail(field, f"must be one of {names}; got {value!r}")
    return RUN_STATUS.to_proto(member)


def _int(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise _fail(field, f"must be a number >= 0; got {value!r}")
    return int(value)


def _time(value: Any, field: str) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    ts = timestamp_pb2.Timestamp()
    if isinstance(value, datetime):
        ts.FromDatetime(value if value.tzinfo else value.replace(tzinfo=UTC))
    elif isinstance(value, int | float):
        ts.FromNanoseconds(int(value * 1e9))
    elif isinstance(value, str):
        try:
            ts.FromJsonString(value)
        except ValueError as exc:
            raise _fail(field, f"must be an RFC 3339 time; got {value!r}") from exc
    else:
        raise _fail(field, f"must be a datetime, epoch seconds or RFC 3339 text; got {value!r}")
    return ts


def _node(d: Any, field: str) -> pb.NodeLog:
    if not isinstance(d, Mapping):
        raise _fail(field, "must be a dict")
    unknown = set(d) - _NODE_KEYS
    if unknown:
        raise _fail(f"{field}.{sorted(unknown)[0]}", "is not a node log field")
    name = d.get("name")
    if not isinstance(name, str) or not name:
        raise _fail(f"{field}.name", "is required")
    node = pb.NodeLog(
        name=name,
        path=str(d.get("path", "")),
        step=int(d.get("step", 0)),
        duration_ms=_int(d.get("duration_ms", 0), f"{field}.duration_ms"),
        status=_status(d.get("status", "completed"), f"{field}.status"),
        error=str(d.get("error", "")),
    )
    for key in ("start_time", "end_time"):
        ts = _time(d.get(key), f"{field}.{key}")
        if ts is not None:
            getattr(node, key).CopyFrom(ts)
    for key in ("input", "output"):
        if d.get(key) is not None:
            getattr(node, key).CopyFrom(_struct(d[key], f"{field}.{key}"))
    return node


def run_message(run: Mapping[str, Any] | pb.Run) -> pb.Run:
    """Validate a run dict and build its Run message (a Run passes through)."""
    if isinstance(run, pb.Run):
        return run
    if not isinstance(run, Mapping):
        raise _fail("run", f"must be a dict, not {type(run).__name__}")
    unknown = set(run) - _RUN_KEYS
    if unknown:
        raise _fail(
            sorted(unknown)[0], f"is not a run field (known: {', '.join(sorted(_RUN_KEYS))})"
        )
    wpk_id = run.get("wpk_id")
    if not isinstance(wpk_id, str) or not wpk_id.strip():
        raise _fail("wpk_id", "is required (the workflow id)")
    run_id = run.get("run_id") or str(uuid.uuid4())
    if not isinstance(run_id, str):
        run_id = str(run_id)
    logs = run.get("node_logs") or []
    if not isinstance(logs, list | tuple):
        raise _fail("node_logs", "must be a list")
    return pb.Run(
        wpk_id=wpk_id,
        run_id=run_id,
        inputs=_struct(run.get("inputs"), "inputs"),
        outputs=_struct(run.get("outputs"), "outputs"),
        status=_status(run.get("status", "completed"), "status"),
        duration_ms=_int(run.get("duration_ms", 0), "duration_ms"),
        node_logs=[_node(n, f"node_logs[{i}]") for i, n in enumerate(logs)],
        error=str(run.get("error", "")),
    )


_MAX_EXACT = 2**53


def _integral(value: Any) -> Any:
    if isinstance(value, float):
        return int(value) if value.is_integer() and abs(value) <= _MAX_EXACT else value
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return value


def to_python(value: struct_pb2.Struct | struct_pb2.Value | struct_pb2.ListValue) -> Any:
    """A Struct (``run.inputs``, ``run.outputs``, a node's input ...) as plain Python,
    with integral numbers as ``int``: Struct numbers are doubles on the wire, so 15
    would otherwise come back as 15.0. Exact up to 2^53; the hook sends larger
    integers as their decimal text."""
    from google.protobuf import json_format

    return _integral(json_format.MessageToDict(value))
