"""Registry domain logic: plain Python, no gRPC."""

from __future__ import annotations

from neuralops.servers import pagination
from neuralops.servers.errors import AlreadyExists, FieldViolation, InvalidArgument, NotFound
from neuralops.servers.registry.model import NotifyResult, Workflow, WorkflowRun
from neuralops.servers.registry.runs import RunSource
from neuralops.servers.registry.storage import RegistryStore

DEFAULT_RUNS_PAGE = 20
MAX_RUNS_PAGE = 1000
DEFAULT_WORKFLOWS_PAGE = 50
MAX_WORKFLOWS_PAGE = 1000


# The id rule RunHistory applies to wpk_id / run_id (its model's MAX_ID_LENGTH): the
# Registry states it here instead of importing another service's package.
MAX_ID_LENGTH = 200


def _id_violation(value: str, field: str) -> FieldViolation | None:
    if not value.strip():
        return FieldViolation(field, "is required")
    if len(value) > MAX_ID_LENGTH:
        return FieldViolation(field, f"is {len(value)} characters; at most {MAX_ID_LENGTH}")
    return None


def _require_id(value: str, field: str) -> None:
    violation = _id_violation(value, field)
    if violation is not None:
        raise InvalidArgument([violation])


class Registry:
    def __init__(self, store: RegistryStore, runs: RunSource) -> None:
        self._store = store
        self._runs = runs

    def create(self, wf: Workflow) -> Workflow:
        _require_id(wf.workflow_id, "workflow.workflow_id")
        created = self._store.create(wf)
        if created is None:
            raise AlreadyExists(
                f"workflow {wf.workflow_id!r} already exists", reason="WORKFLOW_EXISTS"
            )
        return created

    def get(self, workflow_id: str) -> Workflow:
        _require_id(workflow_id, "workflow_id")
        wf = self._store.get(workflow_id)
        if wf is None:
            raise NotFound(f"workflow {workflow_id!r} not found", reason="WORKFLOW_NOT_FOUND")
        return wf

    def list_workflows(self, size: int, token: str) -> tuple[list[Workflow], str]:
        limit = pagination.page_size(
            size, default=DEFAULT_WORKFLOWS_PAGE, maximum=MAX_WORKFLOWS_PAGE
        )
        pos = pagination.decode(token, "workflows")
        found = self._store.list_workflows(limit + 1, None if pos is None else str(pos["a"]))
        page, more = found[:limit], len(found) > limit
        nxt = pagination.encode("workflows", {"a": page[-1].workflow_id}) if more else ""
        return page, nxt

    def runs(
        self, workflow_id: str, size: int, token: str, thread_id: str = ""
    ) -> tuple[list[WorkflowRun], str]:
        """A page of the workflow's runs, from RunHistory (which owns them); the page
        token is RunHistory's, passed through untouched."""
        _require_id(workflow_id, "workflow_id")
        pagination.page_size(size, default=DEFAULT_RUNS_PAGE, maximum=MAX_RUNS_PAGE)
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
        violations = [
            v
            for v in (_id_violation(workflow_id, "workflow_id"), _id_violation(run_id, "run_id"))
            if v is not None
        ]
        if violations:
            raise InvalidArgument(violations)
        stored = self._runs.stored_run(workflow_id, run_id)
        if stored is None:
            raise NotFound(
                f"RunHistory has no run {run_id!r} of workflow {workflow_id!r}",
                reason="RUN_NOT_FOUND",
            )
        return self._store.notify(stored)
