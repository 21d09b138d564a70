"""The Registry's view of runs: RunHistory over gRPC, through its generated client.

RunHistory owns the runs; the Registry never reads their tables. Every call has a
deadline; RunHistory down (or too slow) is :class:`Unavailable` (UNAVAILABLE to the
Registry's caller), and a RunHistory error the Registry cannot explain is reported as
such instead of leaking out as INTERNAL.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from neuralops.clients import channels
from neuralops.clients.enums import RUN_STATUS
from neuralops.clients.errors import (
    InvalidArgumentError,
    NeuralOpsError,
    NotFoundError,
    rpc_call,
)
from neuralops.runhistory.v1 import runhistory_pb2 as pb
from neuralops.runhistory.v1 import runhistory_pb2_grpc
from neuralops.servers.convert import from_timestamp
from neuralops.servers.errors import FieldViolation, InvalidArgument, Unavailable
from neuralops.servers.registry.model import RunNotice, WorkflowRun

SERVICE = "neuralops.runhistory.v1.RunHistoryService"
DEFAULT_TIMEOUT_S = 5.0


class RunSource(Protocol):
    """Where the Registry learns about runs."""

    def stored_run(self, workflow_id: str, run_id: str) -> RunNotice | None:
        """The stored run's identity, status and time; None when RunHistory has no such run."""
        ...

    def list_runs(
        self, workflow_id: str, page_size: int, page_token: str, thread_id: str = ""
    ) -> tuple[list[WorkflowRun], str]:
        """One page of the workflow's runs, newest first, and the next page's token."""
        ...


class RunHistoryRuns:
    """:class:`RunSource` over RunHistory's gRPC API.

    ``address`` may be a callable so that a RunHistory started in the same process on
    a port picked at start-up is found once it listens.
    """

    def __init__(
        self,
        address: str | Callable[[], str],
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        attempts: int = 3,
        security: channels.Security | None = None,
    ) -> None:
        self._address = address if callable(address) else (lambda: address)
        self._timeout_s = timeout_s
        self._attempts = attempts
        self._security = security

    def _stub(self) -> runhistory_pb2_grpc.RunHistoryServiceStub:
        # One shared channel per address (clients.channels): retries UNAVAILABLE with
        # backoff; GetRun and ListRuns are reads, safe to retry.
        return runhistory_pb2_grpc.RunHistoryServiceStub(
            channels.channel(
                self._address(), SERVICE, attempts=self._attempts, security=self._security
            )
        )

    def stored_run(self, workflow_id: str, run_id: str) -> RunNotice | None:
        request = pb.GetRunRequest(wpk_id=workflow_id, run_id=run_id)
        try:
            run = rpc_call(self._stub().GetRun, request, timeout=self._timeout_s).run
        except (NotFoundError, InvalidArgumentError):
            # A run RunHistory refuses to look up (an id it finds malformed) cannot be stored.
            return None
        except NeuralOpsError as err:
            raise _unavailable(err) from err
        return RunNotice(
            workflow_id=run.wpk_id,
            run_id=run.run_id,
            row_id=run.id,
            status=RUN_STATUS.text(run.status),
            created_at=from_timestamp(run.created_at),
        )

    def list_runs(
        self, workflow_id: str, page_size: int, page_token: str, thread_id: str = ""
    ) -> tuple[list[WorkflowRun], str]:
        request = pb.ListRunsRequest(
            wpk_id=workflow_id, page_size=page_size, page_token=page_token, thread_id=thread_id
        )
        try:
            reply = rpc_call(self._stub().ListRuns, request, timeout=self._timeout_s)
        except InvalidArgumentError as err:
            raise _invalid(err) from err
        except NeuralOpsError as err:
            raise _unavailable(err) from err
        runs = [
            WorkflowRun(
                id=r.id,
                run_id=r.run_id,
                status=RUN_STATUS.text(r.status),
                duration_ms=r.duration_ms,
                created_at=from_timestamp(r.created_at),
                thread_id=r.thread_id,
            )
            for r in reply.runs
        ]
        return runs, reply.next_page_token


# ListRuns' field names where the Registry's request names them differently.
_OUR_FIELD = {"wpk_id": "workflow_id"}


def _invalid(err: InvalidArgumentError) -> InvalidArgument:
    """RunHistory refused a request field (a page token, a filter): the same field of
    the Registry's request is at fault, so say so under its name here."""
    violations = [
        FieldViolation(_OUR_FIELD.get(v.field, v.field), v.description) for v in err.violations
    ]
    return InvalidArgument(violations or [FieldViolation("request", err.message)])


def _unavailable(err: NeuralOpsError) -> Unavailable:
    """Any other failure of RunHistory (down, too slow, broken) is a dependency failure
    to the Registry's caller, never INTERNAL."""
    return Unavailable(
        f"RunHistory could not answer ({err.code.name}: {err.message})",
        reason="RUNHISTORY_UNAVAILABLE",
    )
