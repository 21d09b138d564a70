"""RunHistory's domain logic: plain Python, no gRPC.

Requests reach it checked: the servicer calls
:func:`neuralops.servers.runhistory.validation.validate` once per RPC, so ids, statuses,
sizes and filters are not checked again here. The runs given to :meth:`RunHistory.log_runs`
may still be converted (and their generic checks made) as storage reads them; a run
that fails its checks raises out of the reading, and nothing of the batch is stored."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator

from neuralops.servers.runhistory import embeddings
from neuralops.servers.runhistory.embeddings import EmbeddingService
from neuralops.servers.runhistory.model import (
    LogResult,
    NewRun,
    RunFilter,
    RunSummary,
    SearchHit,
    StoredRun,
)
from neuralops.servers.runhistory.storage import RunStore
from neuralops.servers.runtime import pagination
from neuralops.servers.runtime.errors import NotFound

DEFAULT_RUNS_PAGE = 20
MAX_RUNS_PAGE = 1000


def _list_scope(wpk_id: str, flt: RunFilter) -> str:
    """A token is valid only for the listing (workflow and filters) that issued it."""
    key = "\x1f".join((wpk_id, flt.thread_id, flt.status, flt.user_id, flt.session_id, flt.tag))
    return "runs:" + hashlib.sha256(key.encode()).hexdigest()[:16]


def _kept(runs: Iterable[NewRun], into: list[NewRun]) -> Iterator[NewRun]:
    """``runs``, each also kept in ``into`` as it is read."""
    for run in runs:
        into.append(run)
        yield run


class RunHistory:
    def __init__(
        self,
        store: RunStore,
        embedding: EmbeddingService | None,
        on_stored: Callable[[list[NewRun], list[LogResult]], None] = lambda runs, results: None,
    ) -> None:
        self._store = store
        self._embedding = embedding
        self._on_stored = on_stored

    def log_runs(self, runs: Iterable[NewRun]) -> list[LogResult]:
        """Store all in one transaction (committed on return)."""
        read: list[NewRun] = []
        results = self._store.insert(_kept(runs, read))
        self._on_stored(read, results)
        return results

    def get_run(self, wpk_id: str, run_id: str) -> StoredRun:
        run = self._store.get(wpk_id, run_id)
        if run is None:
            raise NotFound(
                f"run {run_id!r} of workflow {wpk_id!r} not found", reason="RUN_NOT_FOUND"
            )
        return run

    def list_runs(
        self, wpk_id: str, flt: RunFilter, size: int, token: str
    ) -> tuple[list[RunSummary], str]:
        """One page of a workflow's runs, newest first, and the next page's token."""
        limit = pagination.page_size(size, default=DEFAULT_RUNS_PAGE, maximum=MAX_RUNS_PAGE)
        scope = _list_scope(wpk_id, flt)
        after = pagination.decode_position(token, scope)
        found = self._store.list_runs(wpk_id, flt, limit + 1, after)
        return pagination.keyset_page(found, limit, scope, lambda r: (r.created_at, r.id))

    def search(self, text: str, wpk_id: str, limit: int) -> list[SearchHit]:
        service = embeddings.require(self._embedding)
        return service.search(text, wpk_id, limit or 10)
