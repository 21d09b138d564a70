"""The RunHistoryService servicer: decode, call :class:`RunHistory`, encode."""

from __future__ import annotations

from typing import Any

import grpc
from neuralops.runhistory.v1 import runhistory_pb2 as pb
from neuralops.runhistory.v1 import runhistory_pb2_grpc
from neuralops.servers.convert import (
    NotJson,
    dict_message,
    from_struct,
    message_dict,
    text_enum,
    to_struct,
    to_timestamp,
)
from neuralops.servers.errors import InvalidArgument
from neuralops.servers.runhistory.model import LogResult, NewRun, StoredRun
from neuralops.servers.runhistory.service import RunHistory
from neuralops.servers.runhistory.validation import validate

_RUN = "RUN_STATUS_"
_EMB = "EMBEDDING_STATUS_"


_STATUS_TEXT = {v.number: v.name.removeprefix(_RUN).lower() for v in pb.RunStatus.DESCRIPTOR.values}


def _status_text(number: int) -> str:
    # An unknown number (a newer client) reads as a status validation refuses.
    return _STATUS_TEXT.get(number, str(number))


def _node_dict(node: pb.NodeLog) -> dict[str, Any]:
    d = message_dict(node)
    # Always present, also when zero (proto3 leaves defaults out of ListFields).
    d["status"] = _status_text(node.status)
    d["duration_ms"] = node.duration_ms
    return d


def _node_message(d: dict[str, Any]) -> pb.NodeLog:
    return dict_message(d, pb.NodeLog())


def new_run(run: pb.Run, field: str = "run") -> NewRun:
    """The run as domain values: one walk over the decoded message, no JSON round trip."""
    try:
        inputs = from_struct(run.inputs)
        outputs = from_struct(run.outputs)
        node_logs = [_node_dict(n) for n in run.node_logs]
    except NotJson as exc:
        raise InvalidArgument.one(field, str(exc)) from None
    return NewRun(
        wpk_id=run.wpk_id,
        run_id=run.run_id,
        status=_status_text(run.status),
        inputs=inputs,
        outputs=outputs,
        duration_ms=run.duration_ms,
        node_logs=node_logs,
        error=run.error,
    )


def run_message(run: StoredRun) -> pb.Run:
    return pb.Run(
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
    )


def _result(r: LogResult) -> pb.LogRunResponse:
    return pb.LogRunResponse(id=r.id, run_id=r.run_id, created=r.created)


class RunHistoryServicer(runhistory_pb2_grpc.RunHistoryServiceServicer):
    def __init__(self, history: RunHistory) -> None:
        self._history = history

    def LogRun(self, request: pb.LogRunRequest, context: grpc.ServicerContext) -> pb.LogRunResponse:
        validate(request)
        (result,) = self._history.log_runs([new_run(request.run)], "run")
        return _result(result)

    def BatchLogRuns(
        self, request: pb.BatchLogRunsRequest, context: grpc.ServicerContext
    ) -> pb.BatchLogRunsResponse:
        validate(request)
        runs = [new_run(r, f"runs[{i}]") for i, r in enumerate(request.runs)]
        results = self._history.log_runs(runs, "runs")
        return pb.BatchLogRunsResponse(results=[_result(r) for r in results])

    def GetRun(self, request: pb.GetRunRequest, context: grpc.ServicerContext) -> pb.GetRunResponse:
        validate(request)
        return pb.GetRunResponse(
            run=run_message(self._history.get_run(request.wpk_id, request.run_id))
        )

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
