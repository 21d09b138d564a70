"""A typed client for RunHistoryService."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from neuralops.clients import channels
from neuralops.clients.enums import RUN_STATUS
from neuralops.clients.errors import FieldViolation, InvalidArgumentError, rpc_call
from neuralops.clients.runs import run_message
from neuralops.runhistory.v1 import runhistory_pb2 as pb
from neuralops.runhistory.v1 import runhistory_pb2_grpc

DEFAULT_ADDR = "localhost:8002"
SERVICE = "neuralops.runhistory.v1.RunHistoryService"


def default_address() -> str:
    return os.environ.get("NEURALOPS_RUNHISTORY_ADDR", "").strip() or DEFAULT_ADDR


@dataclass(frozen=True)
class LogResult:
    """Where a run was stored: its row ``id``, and whether this call created it."""

    id: str
    run_id: str
    created: bool


RunLike = Mapping[str, Any] | pb.Run


class RunHistoryClient:
    """RunHistory over a shared channel. Every call has a timeout; UNAVAILABLE is
    retried with backoff (all RunHistory calls are idempotent). Errors raise
    :class:`neuralops.clients.errors.NeuralOpsError` subclasses."""

    def __init__(
        self, address: str | None = None, *, timeout_s: float = 10.0, attempts: int = 4
    ) -> None:
        self.address = address or default_address()
        self.timeout_s = timeout_s
        self._stub = runhistory_pb2_grpc.RunHistoryServiceStub(
            channels.channel(self.address, SERVICE, attempts=attempts)
        )

    def log_run(self, run: RunLike, *, timeout_s: float | None = None) -> LogResult:
        msg = run_message(run)
        r = rpc_call(
            self._stub.LogRun, pb.LogRunRequest(run=msg), timeout=timeout_s or self.timeout_s
        )
        return LogResult(r.id, r.run_id, r.created)

    def batch_log_runs(
        self, runs: Iterable[RunLike], *, timeout_s: float | None = None
    ) -> list[LogResult]:
        msgs = [run_message(r) for r in runs]
        reply = rpc_call(
            self._stub.BatchLogRuns,
            pb.BatchLogRunsRequest(runs=msgs),
            timeout=timeout_s or self.timeout_s,
        )
        return [LogResult(r.id, r.run_id, r.created) for r in reply.results]

    def get_run(self, wpk_id: str, run_id: str) -> pb.Run:
        request = pb.GetRunRequest(wpk_id=wpk_id, run_id=run_id)
        return rpc_call(self._stub.GetRun, request, timeout=self.timeout_s).run

    def list_runs(
        self,
        wpk_id: str,
        *,
        page_size: int = 0,
        page_token: str = "",
        thread_id: str = "",
        status: str = "",
        user_id: str = "",
        session_id: str = "",
        tag: str = "",
    ) -> tuple[list[pb.RunSummary], str]:
        """One page of a workflow's runs, newest first, and the next page's token
        (empty on the last page). ``status`` is e.g. ``"interrupted"``."""
        request = pb.ListRunsRequest(
            wpk_id=wpk_id,
            page_size=page_size,
            page_token=page_token,
            thread_id=thread_id,
            user_id=user_id,
            session_id=session_id,
            tag=tag,
        )
        if status:
            member = RUN_STATUS.lookup(status)
            if member is None:
                raise InvalidArgumentError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"status must be one of {', '.join(RUN_STATUS.names)}; got {status!r}",
                    violations=(FieldViolation("status", "is not a run status"),),
                )
            request.status = RUN_STATUS.to_proto(member)
        reply = rpc_call(self._stub.ListRuns, request, timeout=self.timeout_s)
        return list(reply.runs), reply.next_page_token

    def search_runs(
        self, text: str, *, wpk_id: str = "", limit: int = 10
    ) -> list[pb.SearchRunsHit]:
        request = pb.SearchRunsRequest(text=text, wpk_id=wpk_id, limit=limit)
        reply = rpc_call(self._stub.SearchRuns, request, timeout=self.timeout_s)
        return list(reply.hits)
