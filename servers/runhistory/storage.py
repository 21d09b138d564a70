"""RunHistory's SQL: runs, their embedding state, and the outbox rows announcing them."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from neuralops.servers import outbox, textcodec
from neuralops.servers.db import Database, Row, as_datetime, json_value, utcnow
from neuralops.servers.runhistory import context
from neuralops.servers.runhistory.model import LogResult, NewRun, RunFilter, RunSummary, StoredRun

NOTIFY_TOPIC = "registry.notify_run"

# Run context columns (migration 006), appended to every insert and read; see context.py.
_INSERT = f"""
INSERT INTO workflow_runs
    (id, wpk_id, run_id, inputs, outputs, status, duration_ms, node_logs, error,
     created_at, updated_at, embedding_status, embedding_next_at, {context.COLUMNS})
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, {context.PLACEHOLDERS})
ON CONFLICT (wpk_id, run_id) DO NOTHING
RETURNING id
"""
_EXISTING = "SELECT id, created_at FROM workflow_runs WHERE wpk_id = %s AND run_id = %s"
_COLUMNS = (
    "id, wpk_id, run_id, inputs, outputs, status, duration_ms, node_logs, error,"
    f" created_at, updated_at, embedding_status, {context.COLUMNS}"
)


@dataclass(frozen=True)
class DueEmbedding:
    id: str
    wpk_id: str
    run_id: str
    text: str
    attempts: int


def _dumps(value: Any) -> str:
    return textcodec.dumps(value)


def stored_run(row: Row) -> StoredRun:
    created, updated = as_datetime(row["created_at"]), as_datetime(row["updated_at"])
    return StoredRun(
        id=str(row["id"]),
        wpk_id=row["wpk_id"],
        run_id=row["run_id"],
        inputs=textcodec.restore(json_value(row["inputs"])),
        outputs=textcodec.restore(json_value(row["outputs"])),
        status=row["status"],
        duration_ms=int(row["duration_ms"]),
        node_logs=textcodec.restore(json_value(row["node_logs"])),
        error=textcodec.unescape(row["error"]),
        created_at=created,
        updated_at=updated,
        embedding_status=row["embedding_status"],
        context=context.from_row(row),
    )


class RunStore:
    """Runs in ``workflow_runs``; every new run also gets an outbox row, in the same
    transaction, so the registry hears of it even if this process dies right after."""

    def __init__(self, db: Database, *, embeddings_enabled: bool) -> None:
        self._db = db
        self._embeddings_enabled = embeddings_enabled

    def insert(self, runs: Sequence[NewRun]) -> list[LogResult]:
        """Store new runs, leave known ones alone; one result per run, in order."""
        base = utcnow()
        # One clock reading per run, strictly increasing inside a batch, so the batch's
        # order survives as created_at order.
        stamps = [base + timedelta(microseconds=i) for i in range(len(runs))]
        rows = []
        for run, at in zip(runs, stamps, strict=True):
            embed = self._embeddings_enabled and run.output_text is not None
            rows.append(
                (
                    str(uuid.uuid4()),
                    run.wpk_id,
                    run.run_id,
                    _dumps(run.inputs),
                    _dumps(run.outputs),
                    run.status,
                    run.duration_ms,
                    _dumps(run.node_logs),
                    textcodec.escape(run.error),
                    at,
                    at,
                    "pending" if embed else "skipped",
                    at if embed else None,
                    *context.params(run.context),
                )
            )
        with self._db.transaction() as tx:
            inserted = tx.execute_each(_INSERT, rows)
            missing = [i for i, got in enumerate(inserted) if not got]
            existing = tx.execute_each(
                _EXISTING, [(runs[i].wpk_id, runs[i].run_id) for i in missing]
            )
            results = [
                LogResult(row[0], run.run_id, True, at)
                for row, run, at in zip(rows, runs, stamps, strict=True)
            ]
            for i, found in zip(missing, existing, strict=True):
                row = found[0]
                results[i] = LogResult(
                    str(row["id"]), runs[i].run_id, False, as_datetime(row["created_at"]) or base
                )
            outbox.enqueue(
                tx,
                NOTIFY_TOPIC,
                [
                    {
                        "id": r.id,
                        "workflow_id": run.wpk_id,
                        "run_id": run.run_id,
                        "status": run.status,
                        "created_at": r.created_at.isoformat(),
                    }
                    for r, run in zip(results, runs, strict=True)
                    if r.created
                ],
            )
        return results

    def get(self, wpk_id: str, run_id: str) -> StoredRun | None:
        with self._db.transaction(write=False) as tx:
            rows = tx.execute(
                f"SELECT {_COLUMNS} FROM workflow_runs WHERE wpk_id = %s AND run_id = %s",
                (wpk_id, run_id),
            )
        return stored_run(rows[0]) if rows else None

    def list_runs(
        self, wpk_id: str, flt: RunFilter, limit: int, after: tuple[datetime, str] | None
    ) -> list[RunSummary]:
        """One keyset page of a workflow's runs, newest first (created_at, id)."""
        sql, params = context.list_query(self._db.dialect, wpk_id, flt, limit, after)
        with self._db.transaction(write=False) as tx:
            rows = tx.execute(sql, params)
        return [context.summary(r) for r in rows]

    # ----------------------------------------------------------- embedding queue

    def due_embeddings(self, limit: int, max_attempts: int) -> list[DueEmbedding]:
        """Runs whose embedding is pending, or failed and due for a retry."""
        with self._db.transaction(write=False) as tx:
            rows = tx.execute(
                "SELECT id, wpk_id, run_id, outputs, embedding_attempts FROM workflow_runs"
                " WHERE embedding_status IN ('pending', 'failed')"
                " AND embedding_next_at <= %s AND embedding_attempts < %s"
                " ORDER BY embedding_next_at LIMIT %s",
                (utcnow(), max_attempts, limit),
            )
        return [
            DueEmbedding(
                str(r["id"]),
                r["wpk_id"],
                r["run_id"],
                str(json_value(r["outputs"]).get("text", "")),
                int(r["embedding_attempts"]),
            )
            for r in rows
        ]

    def mark_embedded(self, ids: Sequence[str]) -> None:
        now = utcnow()
        with self._db.transaction() as tx:
            tx.executemany(
                "UPDATE workflow_runs SET embedding_status = 'done', embedding_next_at = NULL,"
                " embedding_error = '', embedding_attempts = embedding_attempts + 1,"
                " updated_at = %s WHERE id = %s",
                [(now, i) for i in ids],
            )

    def mark_embedding_failed(self, ids: Sequence[str], error: str, retry_at: datetime) -> None:
        now = utcnow()
        with self._db.transaction() as tx:
            tx.executemany(
                "UPDATE workflow_runs SET embedding_status = 'failed', embedding_next_at = %s,"
                " embedding_error = %s, embedding_attempts = embedding_attempts + 1,"
                " updated_at = %s WHERE id = %s",
                [(retry_at, error[:1000], now, i) for i in ids],
            )

    def embedding_counts(self) -> dict[str, int]:
        with self._db.transaction(write=False) as tx:
            rows = tx.execute(
                "SELECT embedding_status, COUNT(*) AS n FROM workflow_runs GROUP BY embedding_status"
            )
        return {r["embedding_status"]: int(r["n"]) for r in rows}
