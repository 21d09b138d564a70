"""Registry domain logic: plain Python, no gRPC.

Requests reach it checked: the servicer calls :func:`neuralops.servers.registry.validation.validate`
once per RPC (ids required, at most 200 characters, no NUL; page tokens well formed), so
the ids are not checked again here."""

from __future__ import annotations

from neuralops.servers.registry.model import NotifyResult, Workflow, WorkflowRun
from neuralops.servers.registry.runs import RunSource
from neuralops.servers.registry.storage import RegistryStore
from neuralops.servers.runtime import pagination
from neuralops.servers.runtime.errors import AlreadyExists, NotFound

DEFAULT_WORKFLOWS_PAGE = 50
MAX_WORKFLOWS_PAGE = 1000
_WORKFLOWS = "workflows"  # the scope of ListWorkflows' page tokens


class Registry:
    def __init__(self, store: RegistryStore, runs: RunSource) -> None:
        self._store = store
        self._runs = runs

    def create(self, wf: Workflow) -> Workflow:
        created = self._store.create(wf)
        if created is None:
            raise AlreadyExists(
                f"workflow {wf.workflow_id!r} already exists", reason="WORKFLOW_EXISTS"
            )
        return created

    def get(self, workflow_id: str) -> Workflow:
        wf = self._store.get(workflow_id)
        if wf is None:
            raise NotFound(f"workflow {workflow_id!r} not found", reason="WORKFLOW_NOT_FOUND")
        return wf

    def list_workflows(self, size: int, token: str) -> tuple[list[Workflow], str]:
        limit = pagination.page_size(
            size, default=DEFAULT_WORKFLOWS_PAGE, maximum=MAX_WORKFLOWS_PAGE
        )
        found = self._store.list_workflows(limit + 1, pagination.decode_key(token, _WORKFLOWS))
        return pagination.page(
            found, limit, lambda w: pagination.encode_key(_WORKFLOWS, w.workflow_id)
        )

    def runs(
        self, workflow_id: str, size: int, token: str, thread_id: str = ""
    ) -> tuple[list[WorkflowRun], str]:
        """A page of the workflow's runs, from RunHistory (which owns them); the page
        size and token are RunHistory's to apply (its default and maximum, its token
        format), passed through untouched; what it refuses comes back as this request's
        INVALID_ARGUMENT (:mod:`.runs`)."""
        page, nxt = self._runs.list_runs(workflow_id, size, token, thread_id)
        # A workflow with runs exists; only an empty first page needs the extra look.
        if not page and not token and self._store.get(workflow_id) is None:
            raise NotFound(f"workflow {workflow_id!r} not found", reason="WORKFLOW_NOT_FOUND")
        return page, nxt

    def notify(self, workflow_id: str, run_id: str) -> NotifyResult:
        """Move the workflow's latest run forward to a run RunHistory has stored.

        Only the ids come from the caller: the run's row id, status and time are read
        from RunHistory (GetRun), so a notice for a run that does not exist, or one
        claiming another time or status, changes nothing.
        """
        stored = self._runs.stored_run(workflow_id, run_id)
        if stored is None:
            raise NotFound(
                f"RunHistory has no run {run_id!r} of workflow {workflow_id!r}",
                reason="RUN_NOT_FOUND",
            )
        return self._store.notify(stored)
