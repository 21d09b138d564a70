"""The RunHistoryService servicer: decode, call :class:`RunHistory`, encode."""

from __future__ import annotations

import dataclasses
from typing import Any

import grpc
from neuralops.clients.enums import EMBEDDING_STATUS, RUN_STATUS
from neuralops.runhistory.v1 import runhistory_pb2 as pb
from neuralops.runhistory.v1 import runhistory_pb2_grpc
from neuralops.servers.runhistory.model import (
    EMPTY_CONTEXT,
    LogResult,
    NewRun,
    RunContext,
    RunFilter,
    RunSummary,
    StoredRun,
)
from neuralops.servers.runhistory.service import RunHistory
from neuralops.servers.runhistory.validation import runs_checked, validate
from neuralops.servers.runtime.convert import (
    dict_message,
    message_dict,
    to_struct,
    to_timestamp,
)


def _node_message(d: dict[str, Any]) -> pb.NodeLog:
    rest = dict(d)
    # Whatever a stored row holds ("completed", "" or, from older rows, "unspecified"
    # or "RUN_STATUS_COMPLETED") reads through the one codec; unknown text reads as 0.
    status = RUN_STATUS.lookup(rest.pop("status", ""))
    node = dict_message(rest, pb.NodeLog())
    node.status = RUN_STATUS.to_proto(status)
    return node


def _node(d: dict[str, Any]) -> dict[str, Any]:
    """A node log as stored: its status and duration always present, also when zero
    (proto3 leaves defaults out); RUN_STATUS_UNSPECIFIED is stored as "" (clients/enums.py)."""
    if type(d.get("status")) is not str:
        d["status"] = ""
    if "duration_ms" not in d:
        d["duration_ms"] = 0
    return d


def _interrupt(d: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"id": d.get("id", ""), "next_nodes": d.get("next_nodes", [])}
    if "value" in d:
        out["value"] = d["value"]
    return out


# The Run fields a RunContext holds (its fields are named after them).
_CONTEXT_FIELDS = frozenset(f.name for f in dataclasses.fields(RunContext))


def _context(d: dict[str, Any]) -> RunContext:
    if _CONTEXT_FIELDS.isdisjoint(d):
        return EMPTY_CONTEXT
    get = d.get
    return RunContext(
        thread_id=get("thread_id", ""),
        checkpoint_id=get("checkpoint_id", ""),
        user_id=get("user_id", ""),
        session_id=get("session_id", ""),
        tags=get("tags", []),
        metadata=get("metadata", {}),
        usage=get("usage", {}),
        interrupts=[_interrupt(i) for i in get("interrupts", ())],
        calls=get("calls", []),
        omitted_node_logs=get("omitted_node_logs", 0),
        truncated=get("truncated", False),
    )


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
        "usage": dict_message(ctx.usage, pb.RunUsage()),
    }


def new_run(run: pb.Run) -> NewRun:
    """The run as domain values: one walk over the decoded message, no JSON round trip.
    The walk makes the generic checks too (see :mod:`neuralops.servers.runtime.convert`):
    it raises :class:`NotValid` on what they refuse, and
    :func:`neuralops.servers.runhistory.validation.runs_checked` names the field."""
    d = message_dict(run, strict=True)
    get = d.get
    status = get("status")
    return NewRun(
        wpk_id=get("wpk_id", ""),
        run_id=get("run_id", ""),
        status=status if type(status) is str else "",  # "" for UNSPECIFIED: validation refuses it
        inputs=get("inputs", {}),
        outputs=get("outputs", {}),
        duration_ms=get("duration_ms", 0),
        node_logs=[_node(n) for n in get("node_logs", ())],
        error=get("error", ""),
        context=_context(d),
    )


def run_message(run: StoredRun) -> pb.Run:
    ctx = run.context
    msg = pb.Run(
        id=run.id,
        wpk_id=run.wpk_id,
        run_id=run.run_id,
        inputs=to_struct(run.inputs),
        outputs=to_struct(run.outputs),
        status=RUN_STATUS.to_proto(run.status),
        duration_ms=run.duration_ms,
        node_logs=[_node_message(n) for n in run.node_logs],
        created_at=to_timestamp(run.created_at),
        updated_at=to_timestamp(run.updated_at),
        embedding_status=EMBEDDING_STATUS.to_proto(run.embedding_status),
        error=run.error,
        **_context_fields(ctx),
    )
    if ctx is not None:
        msg.metadata.CopyFrom(to_struct(ctx.metadata))
        msg.omitted_node_logs = ctx.omitted_node_logs
        msg.truncated = ctx.truncated
        for i in ctx.interrupts:
            msg.interrupts.append(dict_message(i, pb.Interrupt()))
        for c in ctx.calls:
            msg.calls.append(dict_message(c, pb.Call()))
    return msg


def summary_message(r: RunSummary) -> pb.RunSummary:
    return pb.RunSummary(
        id=r.id,
        wpk_id=r.wpk_id,
        run_id=r.run_id,
        status=RUN_STATUS.to_proto(r.status),
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
        validate(request)
        with runs_checked(request):
            (result,) = self._history.log_runs([new_run(request.run)])
        return _result(result)

    def BatchLogRuns(
        self, request: pb.BatchLogRunsRequest, context: grpc.ServicerContext
    ) -> pb.BatchLogRunsResponse:
        validate(request)
        with runs_checked(request):
            # Converted as storage reads them: the later runs of a large batch are
            # converted while Postgres stores the earlier ones.
            results = self._history.log_runs(map(new_run, request.runs[:]))
        return pb.BatchLogRunsResponse(results=[_result(r) for r in results])

    def GetRun(self, request: pb.GetRunRequest, context: grpc.ServicerContext) -> pb.GetRunResponse:
        validate(request)
        return pb.GetRunResponse(
            run=run_message(self._history.get_run(request.wpk_id, request.run_id))
        )

    def ListRuns(
        self, request: pb.ListRunsRequest, context: grpc.ServicerContext
    ) -> pb.ListRunsResponse:
        validate(request)
        flt = RunFilter(
            thread_id=request.thread_id,
            status=RUN_STATUS.text(request.status),  # "" (UNSPECIFIED): any status
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
        validate(request)
        hits = self._history.search(request.text, request.wpk_id, request.limit)
        return pb.SearchRunsResponse(
            hits=[
                pb.SearchRunsHit(
                    id=h.id, wpk_id=h.wpk_id, run_id=h.run_id, score=h.score, text=h.text
                )
                for h in hits
            ]
        )
