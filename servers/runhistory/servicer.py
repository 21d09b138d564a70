"""The RunHistoryService servicer: decode, call :class:`RunHistory`, encode."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import json_format
from neuralops.runhistory.v1 import runhistory_pb2 as pb
from neuralops.runhistory.v1 import runhistory_pb2_grpc
from neuralops.servers.convert import enum_text, from_struct, text_enum, to_struct, to_timestamp
from neuralops.servers.runhistory.model import LogResult, NewRun, StoredRun
from neuralops.servers.runhistory.service import RunHistory
from neuralops.servers.runhistory.validation import validate

_RUN = "RUN_STATUS_"
_EMB = "EMBEDDING_STATUS_"


def _node_dict(node: pb.NodeLog) -> dict[str, Any]:
    d = json_format.MessageToDict(node, preserving_proto_field_name=True)
    d["status"] = enum_text(pb.RunStatus.Name(node.status), _RUN)
    d["duration_ms"] = node.duration_ms
    return d


def _node_message(d: dict[str, Any]) -> pb.NodeLog:
    d = dict(d)
    d["status"] = text_enum(str(d.get("status", "unspecified")), _RUN)
    return json_format.ParseDict(d, pb.NodeLog(), ignore_unknown_fields=True)


def new_run(run: pb.Run) -> NewRun:
    return NewRun(
        wpk_id=run.wpk_id,
        run_id=run.run_id,
        status=enum_text(pb.RunStatus.Name(run.status), _RUN),
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
        results = self._history.log_runs([new_run(r) for r in request.runs], "runs")
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
