"""Registry request validation: the one place its servicer checks a request.

Generic checks come from :mod:`neuralops.servers.validation`; here are the
Registry's own: ``workflow_id`` (and NotifyRun's ``run_id``, ``id``) required, at
most 200 characters, without NUL, on every RPC; NotifyRun's ``id`` is a UUID and its
``created_at`` is required; page tokens carry a valid time and UUID.
"""

from __future__ import annotations

import uuid

from google.protobuf.message import Message
from neuralops.registry.v1 import registry_pb2 as pb
from neuralops.servers import validation as v
from neuralops.servers.errors import FieldViolation


def _notify(request: pb.NotifyRunRequest) -> list[FieldViolation]:
    out = v.id_violations(request.workflow_id, "workflow_id")
    out += v.id_violations(request.run_id, "run_id")
    id_bad = v.id_violations(request.id, "id")
    if not id_bad:
        try:
            uuid.UUID(request.id)
        except ValueError:
            id_bad = [FieldViolation("id", "must be a UUID (RunHistory's row id)")]
    out += id_bad
    if not request.HasField("created_at"):
        out.append(FieldViolation("created_at", "is required"))
    return out


def validate(request: Message) -> None:
    """Raise InvalidArgument naming every field of ``request`` the service cannot take."""
    extra: list[FieldViolation] = []
    if isinstance(request, pb.CreateWorkflowRequest):
        extra = v.id_violations(request.workflow.workflow_id, "workflow.workflow_id")
    elif isinstance(request, pb.NotifyRunRequest):
        extra = _notify(request)
    elif isinstance(request, pb.GetWorkflowRequest | pb.ListWorkflowRunsRequest):
        extra = v.id_violations(request.workflow_id, "workflow_id")
    for field in request.DESCRIPTOR.fields:
        if field.name == "page_token" and field.type == field.TYPE_STRING:
            extra += v.page_token_violations(getattr(request, field.name))
    v.check_request(request, extra)
