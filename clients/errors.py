"""Python exceptions for gRPC errors, with the server's field violations and reason.

:func:`rpc_call` is the one place a client call's ``grpc.RpcError`` becomes one of
these (as temporalio's ``_rpc_call`` does); typed clients call every RPC through it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

Req = TypeVar("Req")
Resp = TypeVar("Resp")


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class NeuralOpsError(Exception):
    """A call failed. ``code`` is the gRPC status; ``reason`` the server's ErrorInfo reason."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str = "",
        violations: tuple[FieldViolation, ...] = (),
    ) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.reason = reason
        self.violations = violations


class InvalidArgumentError(NeuralOpsError, ValueError):
    """The request (or the run dict given to ``log_run``) is malformed."""


class NotFoundError(NeuralOpsError, LookupError):
    pass


class AlreadyExistsError(NeuralOpsError):
    pass


class FailedPreconditionError(NeuralOpsError):
    pass


class UnavailableError(NeuralOpsError, ConnectionError):
    """The service, or one it depends on, cannot be reached (retrying may help)."""


class RunDroppedError(NeuralOpsError):
    """``log_run`` could not deliver the run *and* could not keep it: the spool cannot
    be written and the sender's memory bound is full. The run is lost (counted in
    ``RunSender.stats()["dropped"]``)."""


_KINDS: dict[grpc.StatusCode, type[NeuralOpsError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: UnavailableError,
}


def from_rpc_error(exc: grpc.RpcError) -> NeuralOpsError:
    """Turn a grpc.RpcError into the matching NeuralOpsError subclass."""
    if not isinstance(exc, grpc.Call):
        return NeuralOpsError(grpc.StatusCode.UNKNOWN, str(exc))
    code, message = exc.code(), exc.details() or ""
    reason = ""
    violations: list[FieldViolation] = []
    status = rpc_status.from_call(exc)
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason = info.reason
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations += [FieldViolation(v.field, v.description) for v in bad.field_violations]
    kind = _KINDS.get(code, NeuralOpsError)
    return kind(code, message, reason=reason, violations=tuple(violations))


def rpc_call(method: Callable[..., Resp], request: Req, *, timeout: float) -> Resp:
    """Call one unary RPC with a deadline; any gRPC error is raised as the matching
    :class:`NeuralOpsError` (the gRPC traceback is dropped: the status says it all)."""
    try:
        return method(request, timeout=timeout)
    except grpc.RpcError as exc:
        raise from_rpc_error(exc) from None
