"""The RunHistoryService servicer: decode, call :class:`RunHistory`, encode."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import json_format
from neuralops.runhistory.v1 import runhistory_pb2 as pb
from neuralops.runhistory.v1 import runhistory_pb2_grpc
from neuralops.servers.convert import enum_text, from_struct, text_enum, to_struct, to_timestamp
from neuralops.servers.runhistory.model import (
    LogResult,
    NewRun,
    RunContext,
    RunFilter,
    RunSummary,
    StoredRun,
)
from neuralops.servers.runhistory.service import RunHistory

_RUN = "RUN_STATUS_"
_EMB = "EMBEDDING_STATUS_"


_MAX_EXACT = 2**53


def integral(value: Any) -> Any:
    """Struct numbers arrive as doubles: store an integral one (up to 2^53) as an int."""
    if isinstance(value, float):
        return int(value) if value.is_integer() and -_MAX_EXACT <= value <= _MAX_EXACT else value
    if isinstance(value, dict):
        return {k: integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [integral(v) for v in value]
    return value


def _fields(msg: Any) -> dict[str, Any]:
    """A message of numbers and messages as a dict with int64s kept as ints
    (MessageToDict would make them strings)."""
    out: dict[str, Any] = {}
    for f, v in msg.ListFields():
        out[f.name] = _fields(v) if f.message_type is not None else v
    return out


def _call_dict(call: pb.Call) -> dict[str, Any]:
    d: dict[str, Any] = {
        f.name: v for f, v in call.ListFields() if f.message_type is None and f.enum_type is None
    }
    # An enum number this proto does not define is kept as unspecified, not an error.
    kind = call.kind if call.kind in pb.CallKind.values() else pb.CALL_KIND_UNSPECIFIED
    status = call.status if call.status in pb.RunStatus.values() else pb.RUN_STATUS_UNSPECIFIED
    d["kind"] = enum_text(pb.CallKind.Name(kind), "CALL_KIND_")
    d["status"] = enum_text(pb.RunStatus.Name(status), _RUN)
    for f, v in call.ListFields():
        if f.name in ("start_time", "end_time"):
            d[f.name] = v.ToJsonString()
        elif f.name in ("input", "output", "parameters"):
            d[f.name] = integral(from_struct(v))
        elif f.name == "usage":
            d["usage"] = _fields(v)
    if call.calls:
        d["calls"] = [_call_dict(c) for c in call.calls]
    return d


def _call_message(d: dict[str, Any]) -> pb.Call:
    d = dict(d)
    d["kind"] = "CALL_KIND_" + str(d.get("kind", "unspecified")).upper()
    d["status"] = text_enum(str(d.get("status", "unspecified")), _RUN)
    nested = d.pop("calls", None) or []
    call = json_format.ParseDict(d, pb.Call(), ignore_unknown_fields=True)
    call.calls.extend(_call_message(c) for c in nested)
    return call


def _node_dict(node: pb.NodeLog) -> dict[str, Any]:
    calls = [_call_dict(c) for c in node.calls]
    d = json_format.MessageToDict(node, preserving_proto_field_name=True)
    d.pop("calls", None)
    d["status"] = enum_text(pb.RunStatus.Name(node.status), _RUN)
    d["duration_ms"] = node.duration_ms
    for name in ("input", "output"):
        if name in d:
            d[name] = integral(d[name])
    if calls:
        d["calls"] = calls
    return d


def _node_message(d: dict[str, Any]) -> pb.NodeLog:
    d = dict(d)
    d["status"] = text_enum(str(d.get("status", "unspecified")), _RUN)
    calls = d.pop("calls", None) or []
    node = json_format.ParseDict(d, pb.NodeLog(), ignore_unknown_fields=True)
    node.calls.extend(_call_message(c) for c in calls)
    return node


def _interrupt_dict(i: pb.Interrupt) -> dict[str, Any]:
    d: dict[str, Any] = {"id": i.id, "next_nodes": list(i.next_nodes)}
    if i.HasField("value"):
        d["value"] = integral(json_format.MessageToDict(i.value))
    return d


def _context(run: pb.Run) -> RunContext:
    return RunContext(
        thread_id=run.thread_id,
        checkpoint_id=run.checkpoint_id,
        user_id=run.user_id,
        session_id=run.session_id,
        tags=list(run.tags),
        metadata=integral(from_struct(run.metadata)),
        usage=_fields(run.usage),
        interrupts=[_interrupt_dict(i) for i in run.interrupts],
        omitted_node_logs=run.omitted_node_logs,
        truncated=run.truncated,
    )


def _usage_message(d: dict[str, Any]) -> pb.RunUsage:
    return json_format.ParseDict(d, pb.RunUsage(), ignore_unknown_fields=True)


def _context_fields(ctx: RunContext | None) -> dict[str, Any]:
    """The Run / RunSummary fields a context fills."""
    if ctx is None:
        return {}
    return {
        "thread_id": ctx.thread_id,
        "checkpoint_id": ctx.checkpoint_id,
        "user_id": ctx.user_id,
        "session_id": ctx.session_id,
        "tags": ctx.tags,
        "usage": _usage_message(ctx.usage),
    }


def new_run(run: pb.Run) -> NewRun:
    return NewRun(
        wpk_id=run.wpk_id,
        run_id=run.run_id,
        status=enum_text(pb.RunStatus.Name(run.status), _RUN),
        inputs=integral(from_struct(run.inputs)),
        outputs=integral(from_struct(run.outputs)),
        duration_ms=run.duration_ms,
        node_logs=[_node_dict(n) for n in run.node_logs],
        error=run.error,
        context=_context(run),
    )


def run_message(run: StoredRun) -> pb.Run:
    ctx = run.context
    msg = pb.Run(
        id=run.id,
        wpk_id=run.wpk_id,
        run_id=run.run_id,
        inputs=to_struct(run.inputs),
        outputs=to_struct(run.outputs),
        status=pb.RunStatus.Value(text_enum(run.status, _RUN)),
        duration_ms=run.duration_ms,
        node_logs=[_node_message(n) for n in run.node_logs],
        created_at=to_timestamp(run.created_at),
        updated_at=to_timestamp(run.updated_at),
        embedding_status=pb.EmbeddingStatus.Value(text_enum(run.embedding_status, _EMB)),
        error=run.error,
        **_context_fields(ctx),
    )
    if ctx is not None:
        msg.metadata.CopyFrom(to_struct(ctx.metadata))
        msg.omitted_node_logs = ctx.omitted_node_logs
        msg.truncated = ctx.truncated
        for i in ctx.interrupts:
            msg.interrupts.append(json_format.ParseDict(i, pb.Interrupt()))
    return msg


def summary_message(r: RunSummary) -> pb.RunSummary:
    return pb.RunSummary(
        id=r.id,
        wpk_id=r.wpk_id,
        run_id=r.run_id,
        status=pb.RunStatus.Value(text_enum(r.status, _RUN)),
        duration_ms=r.duration_ms,
        created_at=to_timestamp(r.created_at),
        error=r.error,
        **_context_fields(r.context),
    )


def _result(r: LogResult) -> pb.LogRunResponse:
    return pb.LogRunResponse(id=r.id, run_id=r.run_id, created=r.created)


class RunHistoryServicer(runhistory_pb2_grpc.RunHistoryServiceServicer):
    def __init__(self, history: RunHistory) -> None:
        self._history = history

    def LogRun(self, request: pb.LogRunRequest, context: grpc.ServicerContext) -> pb.LogRunResponse:
        (result,) = self._history.log_runs([new_run(request.run)], "run")
        return _result(result)

    def BatchLogRuns(
        self, request: pb.BatchLogRunsRequest, context: grpc.ServicerContext
    ) -> pb.BatchLogRunsResponse:
        results = self._history.log_runs([new_run(r) for r in request.runs], "runs")
        return pb.BatchLogRunsResponse(results=[_result(r) for r in results])

    def GetRun(self, request: pb.GetRunRequest, context: grpc.ServicerContext) -> pb.GetRunResponse:
        return pb.GetRunResponse(
            run=run_message(self._history.get_run(request.wpk_id, request.run_id))
        )

    def ListRuns(
        self, request: pb.ListRunsRequest, context: grpc.ServicerContext
    ) -> pb.ListRunsResponse:
        status = (
            enum_text(pb.RunStatus.Name(request.status), _RUN)
            if request.status in pb.RunStatus.values()
            else "invalid"
        )
        flt = RunFilter(
            thread_id=request.thread_id,
            status="" if status == "unspecified" else status,
            user_id=request.user_id,
            session_id=request.session_id,
            tag=request.tag,
        )
        page, token = self._history.list_runs(
            request.wpk_id, flt, request.page_size, request.page_token
        )
        return pb.ListRunsResponse(runs=[summary_message(r) for r in page], next_page_token=token)

    def SearchRuns(
        self, request: pb.SearchRunsRequest, context: grpc.ServicerContext
    ) -> pb.SearchRunsResponse:
        hits = self._history.search(request.text, request.wpk_id, request.limit)
        return pb.SearchRunsResponse(
            hits=[
                pb.SearchRunsHit(
                    id=h.id, wpk_id=h.wpk_id, run_id=h.run_id, score=h.score, text=h.text
                )
                for h in hits
            ]
        )
