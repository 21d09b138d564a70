"""The RegistryService servicer: decode, call :class:`Registry`, encode."""

from __future__ import annotations

import grpc
from neuralops.clients.enums import RUN_STATUS
from neuralops.registry.v1 import registry_pb2 as pb
from neuralops.registry.v1 import registry_pb2_grpc
from neuralops.servers.convert import from_struct, to_struct, to_timestamp
from neuralops.servers.registry.model import Workflow
from neuralops.servers.registry.service import Registry
from neuralops.servers.registry.validation import validate


def workflow_message(wf: Workflow) -> pb.Workflow:
    return pb.Workflow(
        workflow_id=wf.workflow_id,
        name=wf.name,
        description=wf.description,
        metadata=to_struct(wf.metadata),
        latest_run_id=wf.latest_run_id,
        latest_run_status=RUN_STATUS.to_proto(wf.latest_run_status),
        latest_run_at=to_timestamp(wf.latest_run_at),
        created_at=to_timestamp(wf.created_at),
        updated_at=to_timestamp(wf.updated_at),
    )


class RegistryServicer(registry_pb2_grpc.RegistryServiceServicer):
    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    def CreateWorkflow(
        self, request: pb.CreateWorkflowRequest, context: grpc.ServicerContext
    ) -> pb.CreateWorkflowResponse:
        validate(request)
        w = request.workflow
        wf = Workflow(
            workflow_id=w.workflow_id,
            name=w.name,
            description=w.description,
            metadata=from_struct(w.metadata),
        )
        return pb.CreateWorkflowResponse(workflow=workflow_message(self._registry.create(wf)))

    def GetWorkflow(
        self, request: pb.GetWorkflowRequest, context: grpc.ServicerContext
    ) -> pb.GetWorkflowResponse:
        validate(request)
        return pb.GetWorkflowResponse(
            workflow=workflow_message(self._registry.get(request.workflow_id))
        )

    def ListWorkflows(
        self, request: pb.ListWorkflowsRequest, context: grpc.ServicerContext
    ) -> pb.ListWorkflowsResponse:
        validate(request)
        page, token = self._registry.list_workflows(request.page_size, request.page_token)
        return pb.ListWorkflowsResponse(
            workflows=[workflow_message(w) for w in page], next_page_token=token
        )

    def ListWorkflowRuns(
        self, request: pb.ListWorkflowRunsRequest, context: grpc.ServicerContext
    ) -> pb.ListWorkflowRunsResponse:
        validate(request)
        page, token = self._registry.runs(
            request.workflow_id, request.page_size, request.page_token, request.thread_id
        )
        return pb.ListWorkflowRunsResponse(
            runs=[
                pb.WorkflowRun(
                    run_id=r.run_id,
                    status=RUN_STATUS.to_proto(r.status),
                    duration_ms=r.duration_ms,
                    created_at=to_timestamp(r.created_at),
                    thread_id=r.thread_id,
                )
                for r in page
            ],
            next_page_token=token,
        )

    def NotifyRun(
        self, request: pb.NotifyRunRequest, context: grpc.ServicerContext
    ) -> pb.NotifyRunResponse:
        validate(request)
        # Only the ids are taken from the request: the Registry reads the run itself
        # from RunHistory (its status, created_at and row id are ignored here).
        result = self._registry.notify(request.workflow_id, request.run_id)
        return pb.NotifyRunResponse(
            updated=result.updated,
            workflow_created=result.workflow_created,
            latest_run_id=result.latest_run_id,
        )
