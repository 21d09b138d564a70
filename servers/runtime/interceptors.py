"""Server interceptors: error mapping and RPC metrics, in one place for every method.

Domain exceptions become their status code with a ``google.rpc.Status`` holding one
``ErrorInfo`` (and ``BadRequest`` field violations for INVALID_ARGUMENT); anything
unexpected becomes INTERNAL with no SQL or stack text on the wire (it goes to the log).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from neuralops.servers.runtime import errors, metrics
from neuralops.servers.runtime.validation import clip

log = logging.getLogger(__name__)

ERROR_DOMAIN = "neuralops.dev"
# Error texts are cut to these lengths, so no caller input (a 10 KB id, a long
# query) can push the status past gRPC's header limit.
MAX_MESSAGE = 300
MAX_DESCRIPTION = 200
MAX_FIELD = 100
MAX_DETAILS_BYTES = 3000  # serialized google.rpc.Status; the header limit is 8 KiB

_CODES: list[tuple[type[errors.DomainError], grpc.StatusCode]] = [
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.Cancelled, grpc.StatusCode.CANCELLED),
    (errors.ResourceExhausted, grpc.StatusCode.INVALID_ARGUMENT),
]


def status_code(exc: errors.DomainError) -> grpc.StatusCode:
    for kind, code in _CODES:
        if isinstance(exc, kind):
            return code
    return grpc.StatusCode.INTERNAL


def rich_status(exc: errors.DomainError, service: str) -> grpc.Status:
    code = status_code(exc)
    details = []
    info = any_pb2.Any()
    info.Pack(
        error_details_pb2.ErrorInfo(
            reason=exc.reason, domain=ERROR_DOMAIN, metadata={"service": service}
        )
    )
    details.append(info)
    message = clip(exc.message, MAX_MESSAGE)
    if isinstance(exc, errors.InvalidArgument):
        violations = [
            error_details_pb2.BadRequest.FieldViolation(
                field=clip(v.field, MAX_FIELD), description=clip(v.description, MAX_DESCRIPTION)
            )
            for v in exc.violations[:20]
        ]
        while True:  # keep the first violations that fit the header budget
            bad = any_pb2.Any()
            bad.Pack(error_details_pb2.BadRequest(field_violations=violations))
            size = sum(len(d.SerializeToString()) for d in (*details, bad))
            if size <= MAX_DETAILS_BYTES or len(violations) <= 1:
                break
            violations.pop()
        details.append(bad)
    return rpc_status.to_status(
        status_pb2.Status(code=getattr(code_pb2, code.name), message=message, details=details)
    )


class _Undecodable:
    """Stands for a request whose bytes did not parse."""

    def __init__(self, error: str) -> None:
        self.error = error


class ServiceInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Wraps every unary-unary handler: times it, counts it, maps its errors."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        full = handler_call_details.method  # "/pkg.Service/Method"
        service, _, method = full.lstrip("/").partition("/")
        if not service.startswith("neuralops."):
            return handler
        behavior = handler.unary_unary
        deserialize = handler.request_deserializer

        def safe_deserialize(data: bytes) -> Any:
            # grpcio answers INTERNAL when the deserializer raises; a request that
            # is not a valid message is the caller's error, reported in `wrapped`.
            try:
                return deserialize(data) if deserialize is not None else data
            except Exception as exc:
                return _Undecodable(str(exc))

        def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
            start = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                if isinstance(request, _Undecodable):
                    raise errors.InvalidArgument.one(
                        "request",
                        "is not a valid protobuf message: invalid UTF-8 in a string field,"
                        " nesting deeper than protobuf's limit of 100, or malformed bytes"
                        f" ({clip(request.error)})",
                        reason="MALFORMED_REQUEST",
                    )
                return behavior(request, context)
            except errors.DomainError as exc:
                code = status_code(exc)
                context.abort_with_status(rich_status(exc, service))
            except Exception:
                code = grpc.StatusCode.INTERNAL
                log.exception("%s failed", full)
                context.abort(grpc.StatusCode.INTERNAL, "internal error; see the server log")
            finally:
                metrics.RPC_REQUESTS.labels(service, method, code.name).inc()
                metrics.RPC_LATENCY.labels(service, method, code.name).observe(
                    time.perf_counter() - start
                )

        return grpc.unary_unary_rpc_method_handler(
            wrapped,
            request_deserializer=safe_deserialize,
            response_serializer=handler.response_serializer,
        )
