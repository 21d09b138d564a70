"""Registry request validation: the one place its servicer checks a request.

Generic checks come from :mod:`neuralops.servers.validation`; here are the
Registry's own: ``workflow_id`` (and NotifyRun's ``run_id``) required, at most 200
characters, without NUL, on every RPC (NotifyRun's other fields are ignored: the run is
read from RunHistory); page tokens carry a valid time and UUID.
"""

from __future__ import annotations

from google.protobuf.message import Message
from neuralops.registry.v1 import registry_pb2 as pb
from neuralops.servers import validation as v
from neuralops.servers.errors import FieldViolation


def _notify(request: pb.NotifyRunRequest) -> list[FieldViolation]:
    # Only the ids are taken from a NotifyRun: the Registry reads the run's row id,
    # status and created_at from RunHistory, so those request fields are ignored.
    return v.id_violations(request.workflow_id, "workflow_id") + v.id_violations(
        request.run_id, "run_id"
    )


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
