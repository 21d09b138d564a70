"""The transport behind the sender: an :class:`Exporter` sends one batch of runs.

Like OpenTelemetry's ``SpanExporter`` the protocol is small, so the queue, the spool
and the failure policy do not know about gRPC, and a test or another transport can
stand in. Every failure is classified once, here:

- **transient** (the service may answer differently later): UNAVAILABLE,
  DEADLINE_EXCEEDED, CANCELLED, ABORTED, and RESOURCE_EXHAUSTED from server load
  (e.g. an in-flight byte budget; its ``google.rpc.RetryInfo`` delay is honoured);
- **permanent** (the server would answer the same again): a message larger than the
  client's or the server's limit (gRPC reports it as RESOURCE_EXHAUSTED with
  "larger than max"), INVALID_ARGUMENT, INTERNAL, UNKNOWN, UNIMPLEMENTED, and the rest.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from neuralops.clients import channels
from neuralops.clients.batching import Encoded
from neuralops.clients.runhistory import SERVICE
from neuralops.runhistory.v1 import runhistory_pb2 as pb

TRANSIENT_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)


# grpc imports its channel module on the first channel; here (at import) rather than
# on the sender's worker at its first export, where it held the GIL for ~5 ms while
# the application ran.
importlib.import_module("grpc._channel")


def too_large(message: str) -> bool:
    """gRPC's own words for a message over a size limit (either side)."""
    text = message.lower()
    return "larger than max" in text or "message too large" in text


def is_transient(code: grpc.StatusCode, message: str) -> bool:
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and too_large(message):
        return False
    return code in TRANSIENT_CODES


@dataclass
class ExportError(Exception):
    """A batch was not stored. ``transient`` says whether sending it again later may work."""

    code: grpc.StatusCode
    message: str
    transient: bool
    retry_after_s: float | None = None

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


class Exporter(Protocol):
    """Sends runs; returns when all are stored, raises :class:`ExportError` otherwise."""

    def export(self, batch: Sequence[Encoded], timeout_s: float) -> None: ...

    def reset(self) -> None:
        """Drop connections (called in a forked child before first use)."""
        ...


def _retry_delay(exc: grpc.Call) -> float | None:
    try:
        status = rpc_status.from_call(exc)
    except Exception:
        return None
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return float(info.retry_delay.ToTimedelta().total_seconds())
    return None


class GrpcExporter:
    """``BatchLogRuns`` on RunHistory, one attempt per call (the sender does its own
    backoff and spooling). The request goes as the runs' bytes joined (see
    :class:`~neuralops.clients.batching.Encoded`): nothing is serialized twice."""

    _METHOD = f"/{SERVICE}/BatchLogRuns"

    def __init__(self, address: str) -> None:
        self.address = address
        self._call: grpc.UnaryUnaryMultiCallable | None = None  # type: ignore[type-arg]

    def reset(self) -> None:
        channels.keep_inherited(self._call)  # a child must not free the parent's channel
        self._call = None

    def _get_call(self) -> grpc.UnaryUnaryMultiCallable:  # type: ignore[type-arg]
        if self._call is None:
            ch = channels.channel(self.address, SERVICE, attempts=1)
            self._call = ch.unary_unary(
                self._METHOD,
                request_serializer=None,  # the request is already bytes
                response_deserializer=pb.BatchLogRunsResponse.FromString,
            )
        return self._call

    def export(self, batch: Sequence[Encoded], timeout_s: float) -> None:
        try:
            self._get_call()(b"".join(e.payload for e in batch), timeout=timeout_s)
        except grpc.RpcError as exc:
            if not isinstance(exc, grpc.Call):
                raise ExportError(grpc.StatusCode.UNKNOWN, str(exc), transient=False) from None
            code, message = exc.code(), exc.details() or ""
            raise ExportError(
                code,
                message,
                transient=is_transient(code, message),
                retry_after_s=_retry_delay(exc),
            ) from None
