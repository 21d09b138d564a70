"""RunHistory's SQL: runs, their embedding state, and the outbox rows announcing them."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from neuralops.servers.runhistory import context
from neuralops.servers.runhistory.model import (
    EMPTY_CONTEXT,
    LogResult,
    NewRun,
    RunContext,
    RunFilter,
    RunSummary,
    StoredRun,
)
from neuralops.servers.runtime import outbox, textcodec
from neuralops.servers.runtime.db import Database, Row, as_datetime, json_value, utcnow

NOTIFY_TOPIC = "registry.notify_run"
# Column text per insert statement, at most (a larger batch takes several, in one
# transaction); batches of ordinary runs fit in one.
CHUNK_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Column:
    """One column a caller's run fills: its name, its Postgres type, its value."""

    name: str
    pg_type: str
    value: Callable[[NewRun], Any]


def _dumps(value: Any) -> str:
    return textcodec.dumps(value)


def _ctx(run: NewRun) -> RunContext:
    return run.context or EMPTY_CONTEXT


# The columns taken from the run itself. Adding a column is one line here: both the
# Postgres statement and the SQLite one are built from this list.
RUN_COLUMNS: tuple[Column, ...] = (
    Column("wpk_id", "text", lambda r: r.wpk_id),
    Column("run_id", "text", lambda r: r.run_id),
    Column("inputs", "jsonb", lambda r: _dumps(r.inputs)),
    Column("outputs", "jsonb", lambda r: _dumps(r.outputs)),
    Column("status", "text", lambda r: r.status),
    Column("duration_ms", "bigint", lambda r: r.duration_ms),
    Column("node_logs", "jsonb", lambda r: _dumps(r.node_logs)),
    Column("error", "text", lambda r: textcodec.escape(r.error)),
    # The run context (migration 006; read back by context.py).
    Column("thread_id", "text", lambda r: textcodec.escape(_ctx(r).thread_id)),
    Column("checkpoint_id", "text", lambda r: textcodec.escape(_ctx(r).checkpoint_id)),
    Column("user_id", "text", lambda r: textcodec.escape(_ctx(r).user_id)),
    Column("session_id", "text", lambda r: textcodec.escape(_ctx(r).session_id)),
    Column("tags", "jsonb", lambda r: _dumps(_ctx(r).tags)),
    Column("metadata", "jsonb", lambda r: _dumps(_ctx(r).metadata)),
    Column("usage", "jsonb", lambda r: _dumps(_ctx(r).usage)),
    Column("interrupts", "jsonb", lambda r: _dumps(_ctx(r).interrupts)),
    Column("omitted_node_logs", "integer", lambda r: _ctx(r).omitted_node_logs),
    Column("truncated", "boolean", lambda r: _ctx(r).truncated),
)
# Set by the server per run, after the run's own columns: id, created_at, embed?
_SERVER_COLUMNS = ("id", "created_at", "updated_at", "embedding_status", "embedding_next_at")
_COLUMNS = ", ".join(("id", *(c.name for c in RUN_COLUMNS), *_SERVER_COLUMNS[1:]))


def _pg_insert_sql() -> str:
    """One statement for a whole batch: unnest the column arrays, insert what is new,
    write an outbox row per new run, and answer every run's id in the same round trip
    (new rows from the insert, known ones from the table)."""
    names = [c.name for c in RUN_COLUMNS]
    # %b: binary parameters (psycopg escapes text arrays element by element otherwise).
    arrays = ", ".join(
        f"%b::{'text' if c.pg_type == 'jsonb' else c.pg_type}[]" for c in RUN_COLUMNS
    )
    values = ", ".join(
        f"b.{c.name}::jsonb" if c.pg_type == "jsonb" else f"b.{c.name}" for c in RUN_COLUMNS
    )
    return f"""
WITH b AS (
    SELECT * FROM unnest(%b::uuid[], %b::timestamptz[], %b::boolean[], {arrays})
        AS b(id, at, embed, {", ".join(names)})
), ins AS (
    INSERT INTO workflow_runs (id, {", ".join(names)}, {", ".join(_SERVER_COLUMNS[1:])})
    SELECT b.id, {values}, b.at, b.at,
           CASE WHEN b.embed THEN 'pending' ELSE 'skipped' END,
           CASE WHEN b.embed THEN b.at END
    FROM b
    ON CONFLICT (wpk_id, run_id) DO NOTHING
    RETURNING id, wpk_id, run_id, status, created_at
), notes AS (
    -- One notice per workflow: its newest new run (NotifyRun keeps only the newest).
    INSERT INTO outbox (id, topic, payload, created_at, next_attempt_at)
    SELECT DISTINCT ON (ins.wpk_id) gen_random_uuid(), %s, jsonb_build_object(
               'id', ins.id, 'workflow_id', ins.wpk_id, 'run_id', ins.run_id,
               'status', ins.status,
               'created_at', to_char(ins.created_at AT TIME ZONE 'UTC',
                                     'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')),
           %s, %s
    FROM ins
    ORDER BY ins.wpk_id, ins.created_at DESC
)
SELECT b.id AS new_id, ins.id IS NOT NULL AS created,
       COALESCE(ins.id, old.id) AS id, COALESCE(ins.created_at, old.created_at) AS created_at
FROM b
LEFT JOIN ins ON ins.id = b.id
LEFT JOIN workflow_runs old ON ins.id IS NULL AND old.wpk_id = b.wpk_id AND old.run_id = b.run_id
"""


_PG_INSERT = _pg_insert_sql()
_SQLITE_INSERT = (
    f"INSERT INTO workflow_runs ({_COLUMNS}) VALUES ({', '.join(['%s'] * (len(RUN_COLUMNS) + 5))})"
    " ON CONFLICT (wpk_id, run_id) DO NOTHING"
)
_FIND = "SELECT id, created_at FROM workflow_runs WHERE wpk_id = %s AND run_id = %s"
_READ_COLUMNS = (
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


@dataclass(frozen=True)
class _Batch:
    """A batch as columns, each (wpk_id, run_id) once; ``first[i]`` is the position in
    ``unique`` of request run ``i``."""

    unique: list[NewRun]
    first: list[int]
    ids: list[str]
    stamps: list[datetime]
    embed: list[bool]


class RunStore:
    """Runs in ``workflow_runs``. Every batch that stores new runs also writes, in the
    same transaction, one outbox row per workflow naming its newest new run, so the
    registry hears of it even if this process dies right after (NotifyRun is monotonic:
    the older runs of the batch could change nothing there)."""

    def __init__(self, db: Database, *, embeddings_enabled: bool) -> None:
        self._db = db
        self._embeddings_enabled = embeddings_enabled

    def _batch(self, runs: Sequence[NewRun]) -> _Batch:
        seen: dict[tuple[str, str], int] = {}
        unique: list[NewRun] = []
        first: list[int] = []
        for run in runs:
            key = (run.wpk_id, run.run_id)
            at = seen.get(key)
            if at is None:
                at = seen[key] = len(unique)
                unique.append(run)
            first.append(at)
        base = utcnow()
        # One clock reading per run, strictly increasing inside a batch, so the batch's
        # order survives as created_at order.
        stamps = [base + timedelta(microseconds=i) for i in range(len(unique))]
        on = self._embeddings_enabled
        return _Batch(
            unique,
            first,
            [str(uuid.uuid4()) for _ in unique],
            stamps,
            [on and r.output_text is not None for r in unique],
        )

    def insert(self, runs: Sequence[NewRun]) -> list[LogResult]:
        """Store new runs, leave known ones alone; one result per run, in order. A run
        repeated inside the batch is stored once: its later copies answer created=false."""
        if not runs:
            return []
        batch = self._batch(runs)
        if self._db.dialect == "postgres":
            found = self._insert_postgres(batch)
        else:
            found = self._insert_sqlite(batch)
        results: list[LogResult] = []
        answered: set[int] = set()
        for run, at in zip(runs, batch.first, strict=True):
            row_id, created, created_at = found[at]
            results.append(
                LogResult(row_id, run.run_id, created and at not in answered, created_at)
            )
            answered.add(at)
        return results

    def _insert_postgres(self, batch: _Batch) -> list[tuple[str, bool, datetime]]:
        unique = batch.unique
        now = utcnow()
        chunks = self._pg_chunks(batch, now)
        first = next(chunks)
        if first[0] is None:  # the whole batch in one statement: one round trip
            rows = self._db.statement(_PG_INSERT, first[1])
        else:
            with self._db.transaction() as tx:
                rows = tx.execute(_PG_INSERT, first[1])
                for _, params in chunks:
                    rows += tx.execute(_PG_INSERT, params)
        by_id = {str(r["new_id"]): r for r in rows}
        out: list[tuple[str, bool, datetime]] = []
        late: list[int] = []
        for i, new_id in enumerate(batch.ids):
            r = by_id[new_id]
            if r["id"] is None:
                # Stored by a concurrent call that committed after this statement's
                # snapshot was taken: read it again below.
                late.append(i)
                out.append(("", False, now))
            else:
                out.append((str(r["id"]), bool(r["created"]), r["created_at"]))
        if late:
            with self._db.transaction(write=False) as tx:
                for i in late:
                    (row,) = tx.execute(_FIND, (unique[i].wpk_id, unique[i].run_id))
                    out[i] = (str(row["id"]), False, as_datetime(row["created_at"]) or now)
        return out

    def _pg_chunks(self, batch: _Batch, now: datetime) -> Iterator[tuple[int | None, list[Any]]]:
        """Statement parameters for up to CHUNK_BYTES of column text at a time, so a
        large batch never holds all its JSON (nor grows each pooled connection's send
        buffer) at once. Yields (next start or None when this chunk ends the batch,
        parameters)."""
        unique, start = batch.unique, 0
        while start < len(unique):
            columns: list[list[Any]] = [[] for _ in RUN_COLUMNS]
            size, end = 0, start
            while end < len(unique) and (end == start or size < CHUNK_BYTES):
                for values, c in zip(columns, RUN_COLUMNS, strict=True):
                    v = c.value(unique[end])
                    if isinstance(v, str):
                        size += len(v)
                    values.append(v)
                end += 1
            params: list[Any] = [
                batch.ids[start:end],
                batch.stamps[start:end],
                batch.embed[start:end],
                *columns,
                NOTIFY_TOPIC,
                now,
                now,
            ]
            del columns
            yield (end if end < len(unique) else None), params
            start = end

    def _insert_sqlite(self, batch: _Batch) -> list[tuple[str, bool, datetime]]:
        unique = batch.unique
        rows = [
            (
                row_id,
                *(c.value(r) for c in RUN_COLUMNS),
                at,
                at,
                "pending" if embed else "skipped",
                at if embed else None,
            )
            for r, row_id, at, embed in zip(
                unique, batch.ids, batch.stamps, batch.embed, strict=True
            )
        ]
        out: list[tuple[str, bool, datetime]] = []
        with self._db.transaction() as tx:
            tx.executemany(_SQLITE_INSERT, rows)
            for r, row_id, at in zip(unique, batch.ids, batch.stamps, strict=True):
                (row,) = tx.execute(_FIND, (r.wpk_id, r.run_id))
                found = str(row["id"])
                if found == row_id:
                    out.append((found, True, at))
                else:
                    out.append((found, False, as_datetime(row["created_at"]) or at))
            newest: dict[str, dict[str, Any]] = {}
            for r, (row_id, created, at) in zip(unique, out, strict=True):
                if created:  # later runs of a batch are newer: the last one stays
                    newest[r.wpk_id] = {
                        "id": row_id,
                        "workflow_id": r.wpk_id,
                        "run_id": r.run_id,
                        "status": r.status,
                        "created_at": at.isoformat(),
                    }
            outbox.enqueue(tx, NOTIFY_TOPIC, list(newest.values()))
        return out

    def get(self, wpk_id: str, run_id: str) -> StoredRun | None:
        with self._db.transaction(write=False) as tx:
            rows = tx.execute(
                f"SELECT {_READ_COLUMNS} FROM workflow_runs WHERE wpk_id = %s AND run_id = %s",
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
