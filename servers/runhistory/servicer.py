"""The RunHistoryService servicer: decode, call :class:`RunHistory`, encode."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import json_format
from neuralops.runhistory.v1 import runhistory_pb2 as pb
from neuralops.runhistory.v1 import runhistory_pb2_grpc
from neuralops.servers.convert import from_struct, to_struct, to_timestamp
from neuralops.servers.enums import EMBEDDING_STATUS, RUN_STATUS
from neuralops.servers.runhistory.model import LogResult, NewRun, StoredRun
from neuralops.servers.runhistory.service import RunHistory


def _node_dict(node: pb.NodeLog) -> dict[str, Any]:
    d = json_format.MessageToDict(node, preserving_proto_field_name=True)
    d["status"] = RUN_STATUS.text(node.status)
    d["duration_ms"] = node.duration_ms
    return d


def _node_message(d: dict[str, Any]) -> pb.NodeLog:
    d = dict(d)
    d["status"] = RUN_STATUS.to_proto(str(d.get("status", "")))
    return json_format.ParseDict(d, pb.NodeLog(), ignore_unknown_fields=True)


def new_run(run: pb.Run) -> NewRun:
    return NewRun(
        wpk_id=run.wpk_id,
        run_id=run.run_id,
        status=RUN_STATUS.text(run.status),
        inputs=from_struct(run.inputs),
        outputs=from_struct(run.outputs),
        duration_ms=run.duration_ms,
        node_logs=[_node_dict(n) for n in run.node_logs],
        error=run.error,
    )


def run_message(run: StoredRun) -> pb.Run:
    return pb.Run(
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
