"""A budget for request bytes in flight across all calls of a process.

Every RPC of a ``neuralops.*`` service is charged for the memory its request holds,
from the moment its message is received until its handler returns: CHARGE_PER_BYTE
times its size on the wire. A request is held three times over at its peak: its bytes
while they are decoded, the decoded message, and the values the handler converts from
it (a 31 MB BatchLogRuns measured 31 + 30 + 30 MB), so the budget bounds what requests
really hold, not a third of it. A call that would take the total past
the budget is answered RESOURCE_EXHAUSTED with a ``google.rpc.RetryInfo`` hint (and a
message saying "in-flight budget"), which clients treat as transient. A call alone in
flight is always admitted, so any message within the transport limit gets through.

grpc reads a unary request whole before any handler code sees it, so the check runs
twice: when the call arrives (before its message is read) against a reservation of the
size recent requests had, and refused calls are answered without reading their message
at all; then, once the message is read, against its real size. The reservation starts at
the largest message the server accepts (a cold server does not let a burst of large
calls in blind) and halves with each smaller request, so small calls are not held back
for long. When the last large call ends, freed memory is handed back to the system
(``malloc_trim`` on glibc), so a burst does not leave the process at its peak size.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from prometheus_client import Gauge

log = logging.getLogger(__name__)

ERROR_DOMAIN = "neuralops.dev"
REASON = "INFLIGHT_BUDGET_EXCEEDED"
_MIN_ESTIMATE = 16 * 1024
_INFLIGHT = Gauge(
    "neuralops_inflight_request_bytes",
    "Request memory admitted under the in-flight budget and held now (charged bytes).",
)
_INFLIGHT_PEAK = Gauge(
    "neuralops_inflight_request_bytes_peak",
    "The most request memory (charged bytes) held at once since the process started.",
)
_REFUSED = Gauge(
    "neuralops_inflight_refused_calls",
    "Calls answered RESOURCE_EXHAUSTED by the in-flight budget since the process started.",
)
# Bytes of memory a request holds per byte on the wire (see the module docstring).
CHARGE_PER_BYTE = 3
# Freed memory is handed back (malloc_trim) each time this much was released since the
# last time: on a thread of its own (off the request path; ctypes lets go of the GIL),
# also while other calls are in flight, since a burst may never leave the process idle.
_TRIM_AFTER = 8 * 1024 * 1024


_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_FROM = 128 * 1024


def _malloc_trim() -> Callable[[], None]:
    """glibc's malloc_trim, after fixing the mmap threshold: glibc otherwise raises it
    to the largest block freed so far (up to 32 MB), so after one large request every
    later large buffer comes from the heap and stays there. No-op off glibc."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        trim = libc.malloc_trim if libc is not None else None
        if libc is not None:
            libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_FROM)
            libc.mallopt(_M_TRIM_THRESHOLD, 4 * _MMAP_FROM)
    except (OSError, AttributeError):
        trim = None
    if trim is None:
        return lambda: None
    return lambda: trim(0)


class InflightBudget:
    """Counts admitted request bytes; thread-safe."""

    def __init__(
        self,
        max_bytes: int,
        *,
        max_message_bytes: int,
        retry_after_s: float = 0.25,
        stale_s: float = 120.0,
    ) -> None:
        self.max_bytes = max_bytes
        self.retry_after_s = retry_after_s
        self._stale_s = stale_s
        self._lock = threading.Lock()
        self._admitted = 0  # bytes of calls whose message is read and admitted
        # Reservations of calls whose message is not read yet. A call cancelled before
        # its message arrives never says so: its reservation lapses after stale_s.
        self._reserved: dict[int, tuple[int, float]] = {}
        self._next = 0
        self._estimate = max_message_bytes
        self._since_trim = 0
        self._trim = _malloc_trim()
        self._trimming = False
        # The process's budget (one per process; the latest made, in tests) on /metrics.
        _INFLIGHT.set_function(lambda: self._admitted)
        _INFLIGHT_PEAK.set_function(lambda: self.peak)
        _REFUSED.set_function(lambda: self.refused)
        self.peak = 0
        self.refused = 0

    @property
    def admitted(self) -> int:
        return self._admitted

    def reserve(self) -> int | None:
        """A call arrives: a reservation token, or None when the budget is full."""
        now = time.monotonic()
        with self._lock:
            for token, (_, at) in list(self._reserved.items()):
                if now - at > self._stale_s:
                    del self._reserved[token]
            held = self._admitted + sum(n for n, _ in self._reserved.values())
            if held and held + self._estimate > self.max_bytes:
                self.refused += 1
                return None
            self._next += 1
            self._reserved[self._next] = (self._estimate, now)
            return self._next

    def admit(self, token: int, size: int) -> bool:
        """Its message is read: swap the reservation for the real size, or refuse."""
        with self._lock:
            self._reserved.pop(token, None)
            self._estimate = max(_MIN_ESTIMATE, size, self._estimate // 2)
            if self._admitted and self._admitted + size > self.max_bytes:
                self.refused += 1
                return False
            self._admitted += size
            self.peak = max(self.peak, self._admitted)
            return True

    def release(self, size: int) -> None:
        with self._lock:
            self._admitted -= size
            self._since_trim += size
            if self._since_trim < _TRIM_AFTER or self._trimming:
                return
            self._since_trim = 0
            self._trimming = True
        threading.Thread(target=self._trim_now, name="malloc-trim", daemon=True).start()

    def _trim_now(self) -> None:
        try:
            self._trim()
        finally:
            with self._lock:
                self._trimming = False

    def status(self) -> grpc.Status:
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(int(self.retry_after_s * 1000))
        details = []
        for detail in (
            error_details_pb2.ErrorInfo(
                reason=REASON,
                domain=ERROR_DOMAIN,
                metadata={"max_inflight_bytes": str(self.max_bytes)},
            ),
            error_details_pb2.RetryInfo(retry_delay=delay),
        ):
            packed = any_pb2.Any()
            packed.Pack(detail)
            details.append(packed)
        message = (
            f"server busy: the in-flight budget of {self.max_bytes} bytes of request memory is full;"
            f" retry after {self.retry_after_s:g} s"
        )
        return rpc_status.to_status(
            status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message=message, details=details)
        )


@dataclass
class _Held:
    """A request admitted under the budget, or refused (``message`` None)."""

    message: Any
    size: int


class BudgetInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Enforces an :class:`InflightBudget` on the unary calls of ``neuralops.*`` services.
    Put it first in the server's interceptor list, so its answers are final."""

    def __init__(self, budget: InflightBudget, *, charge_per_byte: int = CHARGE_PER_BYTE) -> None:
        self.budget = budget
        self.charge_per_byte = charge_per_byte

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        if (
            handler is None
            or handler.unary_unary is None
            or not handler_call_details.method.startswith("/neuralops.")
        ):
            return handler
        budget = self.budget
        token = budget.reserve()
        if token is None:
            return self._refuse_unread(handler)
        behavior = handler.unary_unary
        deserialize = handler.request_deserializer
        per_byte = self.charge_per_byte

        def read(data: bytes) -> _Held:
            charge = len(data) * per_byte
            if not budget.admit(token, charge):
                return _Held(None, 0)
            try:
                return _Held(deserialize(data) if deserialize else data, charge)
            except BaseException:
                budget.release(charge)
                raise

        def handle(held: _Held, context: grpc.ServicerContext) -> Any:
            if held.message is None:
                context.abort_with_status(budget.status())
            # grpc keeps its argument (``held``) until the response is sent: hand the
            # message on and drop it here, so it is freed before its bytes are released
            # for another call to take.
            message, held.message = held.message, None
            try:
                return behavior(message, context)
            finally:
                del message
                budget.release(held.size)

        return grpc.unary_unary_rpc_method_handler(
            handle, request_deserializer=read, response_serializer=handler.response_serializer
        )

    def _refuse_unread(
        self, handler: grpc.RpcMethodHandler[Any, Any]
    ) -> grpc.RpcMethodHandler[Any, Any]:
        # A request-streaming handler is not made to read its message first: the call
        # is answered and its message dropped unread.
        budget = self.budget

        def refuse(requests: Iterator[bytes], context: grpc.ServicerContext) -> Any:
            context.abort_with_status(budget.status())

        return grpc.stream_unary_rpc_method_handler(
            refuse, response_serializer=handler.response_serializer
        )
