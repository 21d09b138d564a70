"""gRPC status → HTTP error response, as grpc-gateway does it.

The HTTP status comes from the gRPC code (grpc-gateway's ``HTTPStatusFromCode``); the
body is grpc-gateway's error shape — the gRPC ``code`` (a number), the ``message`` and
the ``details`` (``google.rpc`` messages as JSON with their ``@type``, e.g. the
``ErrorInfo`` whose ``reason`` is ``RUN_NOT_FOUND``) — plus ``status``, the code's name.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import any_pb2, json_format
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}

# The detail types the servers attach; importing them registers them for Any → JSON.
_KNOWN_DETAILS = (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest, code_pb2)


def error_body(
    code: grpc.StatusCode, message: str, details: list[any_pb2.Any] | None = None
) -> dict[str, Any]:
    out_details: list[Any] = []
    for detail in details or []:
        try:
            out_details.append(json_format.MessageToDict(detail, preserving_proto_field_name=True))
        except (TypeError, KeyError, json_format.Error):
            # A detail type this process does not know: keep its type, drop its bytes.
            out_details.append({"@type": detail.type_url})
    return {
        "code": code.value[0],
        "status": code.name,
        "message": message,
        "details": out_details,
    }


def from_rpc_error(exc: grpc.RpcError) -> tuple[int, dict[str, Any]]:
    """HTTP status and body for a failed gRPC call."""
    call: Any = exc
    code: grpc.StatusCode = call.code()
    status: status_pb2.Status | None = None
    try:
        status = rpc_status.from_call(call)
    except ValueError:  # the rich status disagrees with the plain one: trust the plain one
        status = None
    details = list(status.details) if status is not None else []
    return HTTP_STATUS.get(code, 500), error_body(code, call.details() or "", details)


def bad_request(field: str, description: str) -> dict[str, Any]:
    """INVALID_ARGUMENT for a request the gateway could not transcode, in the same shape
    (and with the same BadRequest detail) as the servers' own validation errors."""
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason="INVALID_ARGUMENT", domain="neuralops"))
    bad = any_pb2.Any()
    bad.Pack(
        error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=field, description=description)
            ]
        )
    )
    return error_body(grpc.StatusCode.INVALID_ARGUMENT, f"{field}: {description}", [info, bad])
