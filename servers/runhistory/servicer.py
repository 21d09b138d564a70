"""The RunHistoryService servicer: decode, call :class:`RunHistory`, encode."""

from __future__ import annotations

from typing import Any

import grpc
from neuralops.clients.enums import EMBEDDING_STATUS, RUN_STATUS
from neuralops.runhistory.v1 import runhistory_pb2 as pb
from neuralops.runhistory.v1 import runhistory_pb2_grpc
from neuralops.servers.runhistory.model import (
    LogResult,
    NewRun,
    RunContext,
    RunFilter,
    RunSummary,
    StoredRun,
)
from neuralops.servers.runhistory.service import RunHistory
from neuralops.servers.runhistory.validation import validate
from neuralops.servers.runtime.convert import (
    NotJson,
    dict_message,
    from_struct,
    message_dict,
    to_struct,
    to_timestamp,
)
from neuralops.servers.runtime.errors import InvalidArgument


def _node_dict(node: pb.NodeLog) -> dict[str, Any]:
    d = message_dict(node)  # nested calls included, their enums as lowercase names
    # Always present, also when zero (proto3 leaves defaults out of ListFields);
    # RUN_STATUS_UNSPECIFIED is stored as "" (clients/enums.py).
    d["status"] = RUN_STATUS.text(node.status)
    d["duration_ms"] = node.duration_ms
    return d


def _node_message(d: dict[str, Any]) -> pb.NodeLog:
    rest = dict(d)
    # Whatever a stored row holds ("completed", "" or, from older rows, "unspecified"
    # or "RUN_STATUS_COMPLETED") reads through the one codec; unknown text reads as 0.
    status = RUN_STATUS.lookup(rest.pop("status", ""))
    node = dict_message(rest, pb.NodeLog())
    node.status = RUN_STATUS.to_proto(status)
    return node


def _interrupt_dict(i: pb.Interrupt) -> dict[str, Any]:
    d: dict[str, Any] = {"id": i.id, "next_nodes": list(i.next_nodes)}
    if i.HasField("value"):
        d["value"] = message_dict(i)["value"]
    return d


def _context(run: pb.Run) -> RunContext:
    return RunContext(
        thread_id=run.thread_id,
        checkpoint_id=run.checkpoint_id,
        user_id=run.user_id,
        session_id=run.session_id,
        tags=list(run.tags),
        metadata=from_struct(run.metadata),
        usage=message_dict(run.usage),
        interrupts=[_interrupt_dict(i) for i in run.interrupts],
        omitted_node_logs=run.omitted_node_logs,
        truncated=run.truncated,
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


def new_run(run: pb.Run, field: str = "run") -> NewRun:
    """The run as domain values: one walk over the decoded message, no JSON round trip."""
    try:
        inputs = from_struct(run.inputs)
        outputs = from_struct(run.outputs)
        node_logs = [_node_dict(n) for n in run.node_logs]
        context = _context(run)
    except NotJson as exc:
        raise InvalidArgument.one(field, str(exc)) from None
    return NewRun(
        wpk_id=run.wpk_id,
        run_id=run.run_id,
        status=RUN_STATUS.text(run.status),  # "" for UNSPECIFIED: validation refuses it
        inputs=inputs,
        outputs=outputs,
        duration_ms=run.duration_ms,
        node_logs=node_logs,
        error=run.error,
        context=context,
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
        (result,) = self._history.log_runs([new_run(request.run)])
        return _result(result)

    def BatchLogRuns(
        self, request: pb.BatchLogRunsRequest, context: grpc.ServicerContext
    ) -> pb.BatchLogRunsResponse:
        validate(request)
        runs = [new_run(r, f"runs[{i}]") for i, r in enumerate(request.runs)]
        results = self._history.log_runs(runs)
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
