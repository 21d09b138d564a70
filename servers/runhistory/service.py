"""RunHistory's domain logic: plain Python, no gRPC."""

from __future__ import annotations

from collections.abc import Callable

from neuralops.servers.errors import FieldViolation, InvalidArgument, NotFound
from neuralops.servers.runhistory import embeddings
from neuralops.servers.runhistory.embeddings import EmbeddingService
from neuralops.servers.runhistory.model import (
    LogResult,
    NewRun,
    SearchHit,
    StoredRun,
    validate_runs,
)
from neuralops.servers.runhistory.storage import RunStore


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

    def log_runs(self, runs: list[NewRun], field_name: str) -> list[LogResult]:
        """Validate all, then store all in one transaction (committed on return)."""
        validate_runs(runs, field_name)
        results = self._store.insert(runs)
        self._on_stored(runs, results)
        return results

    def get_run(self, wpk_id: str, run_id: str) -> StoredRun:
        missing = [
            FieldViolation(n, "is required")
            for n, v in (("wpk_id", wpk_id), ("run_id", run_id))
            if not v
        ]
        if missing:
            raise InvalidArgument(missing)
        run = self._store.get(wpk_id, run_id)
        if run is None:
            raise NotFound(
                f"run {run_id!r} of workflow {wpk_id!r} not found", reason="RUN_NOT_FOUND"
            )
        return run

    def search(self, text: str, wpk_id: str, limit: int) -> list[SearchHit]:
        service = embeddings.require(self._embedding)
        if not text.strip():
            raise InvalidArgument.one("text", "is required")
        if len(text) > embeddings.MAX_TEXT:
            raise InvalidArgument.one(
                "text", f"is {len(text)} characters; at most {embeddings.MAX_TEXT}"
            )
        if limit < 0 or limit > 100:
            raise InvalidArgument.one("limit", "must be between 1 and 100 (0 means 10)")
        return service.search(text, wpk_id, limit or 10)
