"""RunHistory's SQL: runs, their embedding state, and the outbox rows announcing them."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from operator import attrgetter
from typing import Any

import orjson
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
# JSON text per insert statement, about (a larger batch takes several, in one
# transaction). Small enough that the send buffer of each pooled connection, which
# libpq never shrinks, stays small after a burst.
CHUNK_BYTES = 1024 * 1024
# Runs per insert statement at most. A batch of more takes several, pipelined in one
# transaction: the runs of the next statement are converted (and checked) while
# Postgres stores the ones before, on another core.
CHUNK_RUNS = 50
# Ids per lookup of the rows a SQLite batch stored (under SQLite's variable limit).
_SQLITE_IDS = 500


@dataclass(frozen=True)
class Column:
    """One column a caller's run fills: its name, its Postgres type, where its value
    comes from (an attribute of the run, or of its context when ``of_context``), and
    whether it is free text (stored escaped, see textcodec) or JSON (``jsonb``)."""

    name: str
    pg_type: str
    attr: str
    of_context: bool = False
    free_text: bool = False

    def raw(self, runs: Sequence[NewRun], contexts: Sequence[RunContext]) -> list[Any]:
        """This column's value for each run, as the run holds it: one C-level getter
        over the batch, no Python call per run."""
        return list(map(attrgetter(self.attr), contexts if self.of_context else runs))

    def escaped(self, runs: Sequence[NewRun], contexts: Sequence[RunContext]) -> list[Any]:
        """Each run's value with its free text escaped (JSON values still as values)."""
        raw = self.raw(runs, contexts)
        if self.pg_type == "jsonb":
            return list(map(textcodec.escape_value, raw))
        return list(map(textcodec.escape, raw)) if self.free_text else raw

    def values(self, runs: Sequence[NewRun], contexts: Sequence[RunContext]) -> list[Any]:
        """Each run's value as stored: free text escaped, JSON as its text."""
        raw = self.raw(runs, contexts)
        if self.pg_type == "jsonb":
            return list(map(textcodec.dumps, raw))
        return list(map(textcodec.escape, raw)) if self.free_text else raw


# The columns taken from the run itself. Adding a column is one line here: both the
# Postgres statement and the SQLite one are built from this list.
RUN_COLUMNS: tuple[Column, ...] = (
    Column("wpk_id", "text", "wpk_id"),
    Column("run_id", "text", "run_id"),
    Column("inputs", "jsonb", "inputs"),
    Column("outputs", "jsonb", "outputs"),
    Column("status", "text", "status"),
    Column("duration_ms", "bigint", "duration_ms"),
    Column("node_logs", "jsonb", "node_logs"),
    Column("error", "text", "error", free_text=True),
    # The run context (migration 006; read back by context.py).
    Column("thread_id", "text", "thread_id", of_context=True, free_text=True),
    Column("checkpoint_id", "text", "checkpoint_id", of_context=True, free_text=True),
    Column("user_id", "text", "user_id", of_context=True, free_text=True),
    Column("session_id", "text", "session_id", of_context=True, free_text=True),
    Column("tags", "jsonb", "tags", of_context=True),
    Column("metadata", "jsonb", "metadata", of_context=True),
    Column("usage", "jsonb", "usage", of_context=True),
    Column("interrupts", "jsonb", "interrupts", of_context=True),
    Column("calls", "jsonb", "calls", of_context=True),  # migration 007
    Column("omitted_node_logs", "integer", "omitted_node_logs", of_context=True),
    Column("truncated", "boolean", "truncated", of_context=True),
)
# Set by the server per run, after the run's own columns: id, created_at, embed?
_SERVER_COLUMNS = ("id", "created_at", "updated_at", "embedding_status", "embedding_next_at")
_COLUMNS = ", ".join(("id", *(c.name for c in RUN_COLUMNS), *_SERVER_COLUMNS[1:]))


# The time of a run in its notice, as Postgres writes it in the single statement (to_char)
# and Python after a pipelined batch (isoformat with microseconds, in UTC).
_NOTE_TIME = 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'


def _from_doc(i: int, c: Column) -> str:
    if c.pg_type == "jsonb":
        return f"d->{i}"
    if c.pg_type == "text":
        return f"d->>{i}"
    return f"(d->>{i})::{c.pg_type}"


def _pg_insert_sql(*, notes: bool = True) -> str:
    """One statement for a whole batch. Its runs' columns come as one JSON document (an
    array per run: one ``orjson`` call for the batch, one parse in Postgres, instead of
    a text per value), beside binary arrays of the ids, times and embed flags the
    server chose. It inserts what is new, writes an outbox row per workflow with new
    runs, and answers, in the same round trip, the runs that were not inserted (with
    the stored row's id; usually none). A new run's id and time are the ones this
    process chose, so they need no answer. Without ``notes`` it writes no outbox rows:
    a batch in several statements writes them once, after the last."""
    names = [c.name for c in RUN_COLUMNS]
    picks = ", ".join(f"{_from_doc(i, c)} AS {c.name}" for i, c in enumerate(RUN_COLUMNS))
    outbox_rows = f"""
), notes AS (
    -- One notice per workflow: its newest new run (NotifyRun keeps only the newest).
    INSERT INTO outbox (id, topic, payload, created_at, next_attempt_at)
    SELECT DISTINCT ON (ins.wpk_id) gen_random_uuid(), %s, jsonb_build_object(
               'id', ins.id, 'workflow_id', ins.wpk_id, 'run_id', ins.run_id,
               'status', ins.status,
               'created_at', to_char(ins.created_at AT TIME ZONE 'UTC', '{_NOTE_TIME}')),
           %s, %s
    FROM ins
    ORDER BY ins.wpk_id, ins.created_at DESC"""
    return f"""
WITH b AS (
    SELECT u.id, u.at, u.embed, {picks}
    FROM ROWS FROM (unnest(%b::uuid[]), unnest(%b::timestamptz[]), unnest(%b::boolean[]),
                    jsonb_array_elements(%b::text::jsonb)) AS u(id, at, embed, d)
), ins AS (
    INSERT INTO workflow_runs (id, {", ".join(names)}, {", ".join(_SERVER_COLUMNS[1:])})
    SELECT b.id, {", ".join(f"b.{n}" for n in names)}, b.at, b.at,
           CASE WHEN b.embed THEN 'pending' ELSE 'skipped' END,
           CASE WHEN b.embed THEN b.at END
    FROM b
    ON CONFLICT (wpk_id, run_id) DO NOTHING
    RETURNING {"id, wpk_id, run_id, status, created_at" + outbox_rows if notes else "id"}
)
SELECT b.id AS new_id, old.id AS id, old.created_at AS created_at
FROM b
LEFT JOIN ins ON ins.id = b.id
LEFT JOIN workflow_runs old ON ins.id IS NULL AND old.wpk_id = b.wpk_id AND old.run_id = b.run_id
WHERE ins.id IS NULL
"""


_PG_INSERT = _pg_insert_sql()
_PG_INSERT_RUNS = _pg_insert_sql(notes=False)
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


def new_ids(n: int) -> list[str]:
    """``n`` random (version 4) UUIDs as text, from one read of the system's random
    source: ``str(uuid.uuid4())`` per run costs a quarter of a batch's bookkeeping."""
    raw = bytearray(os.urandom(16 * n))
    raw[6::16] = bytes([(x & 0x0F) | 0x40 for x in raw[6::16]])  # version 4
    raw[8::16] = bytes([(x & 0x3F) | 0x80 for x in raw[8::16]])  # RFC 4122 variant
    h = raw.hex()
    return [
        f"{h[i : i + 8]}-{h[i + 8 : i + 12]}-{h[i + 12 : i + 16]}-{h[i + 16 : i + 20]}-{h[i + 20 : i + 32]}"
        for i in range(0, 32 * n, 32)
    ]


class _Batch:
    """A batch as it is read, each (wpk_id, run_id) once in ``unique``; ``first[i]`` is
    the position in ``unique`` of the ``i``-th run read (``read[i]``). Runs are read
    only as statements need them (:meth:`fill`); each unique run gets its id, its time
    (one clock reading per batch, a microsecond apart, so the batch's order survives
    as created_at order) and its embed flag as it is read."""

    def __init__(self, runs: Iterable[NewRun], *, embeddings_enabled: bool) -> None:
        self._runs = iter(runs)
        self._seen: dict[tuple[str, str], int] = {}
        self._embeddings = embeddings_enabled
        self._base = utcnow()
        self.read: list[NewRun] = []
        self.first: list[int] = []
        self.unique: list[NewRun] = []
        self.contexts: list[RunContext] = []
        self.ids: list[str] = []
        self.stamps: list[datetime] = []
        self.embed: list[bool] = []

    def fill(self, n: int) -> int:
        """Read runs until ``n`` are unique or none are left; returns how many unique
        runs there are, at most ``n``."""
        unique, seen = self.unique, self._seen
        had = len(unique)
        while len(unique) < n:
            run = next(self._runs, None)
            if run is None:
                break
            key = (run.wpk_id, run.run_id)
            at = seen.get(key)
            if at is None:
                at = seen[key] = len(unique)
                unique.append(run)
            self.read.append(run)
            self.first.append(at)
        added = unique[had:]
        if added:
            base = self._base
            self.contexts += [r.context or EMPTY_CONTEXT for r in added]
            self.ids += new_ids(len(added))
            self.stamps += [base + timedelta(microseconds=i) for i in range(had, len(unique))]
            if self._embeddings:
                self.embed += [r.output_text is not None for r in added]
            else:
                self.embed += [False] * len(added)
        return min(n, len(unique))


_ALL = 2**62  # fill(_ALL) reads every run


def _columns(batch: _Batch, start: int, stop: int) -> list[list[Any]]:
    runs, contexts = batch.unique[start:stop], batch.contexts[start:stop]
    return [c.values(runs, contexts) for c in RUN_COLUMNS]


def _document(batch: _Batch, start: int, stop: int) -> str:
    """Runs ``start:stop`` as one JSON array of arrays (RUN_COLUMNS order), free text
    escaped. Nearly always the text holds nothing to escape, which one scan of it
    shows; only then are the values walked."""
    runs, contexts = batch.unique[start:stop], batch.contexts[start:stop]
    raw = (c.raw(runs, contexts) for c in RUN_COLUMNS)
    text = orjson.dumps(list(zip(*raw, strict=True))).decode()
    if textcodec.needs_escape(text):
        rows = zip(*(c.escaped(runs, contexts) for c in RUN_COLUMNS), strict=True)
        text = orjson.dumps(list(rows)).decode()
    return text


def _chunk(batch: _Batch, start: int) -> tuple[int, str]:
    """The runs of the statement from unique run ``start`` on: up to CHUNK_RUNS of them
    and about CHUNK_BYTES of JSON, read and made into a document a slice at a time (the
    slice sized from the runs so far), so a batch of large runs never holds all its
    JSON at once. Returns (end, document)."""
    parts: list[str] = []
    size, end, step = 0, start, 1
    limit = start + CHUNK_RUNS
    while size < CHUNK_BYTES and end < limit:
        stop = batch.fill(min(limit, end + step))
        if stop == end:
            break
        part = _document(batch, end, stop)
        size += len(part)
        parts.append(part[1:-1])  # the runs, without the array's brackets
        del part
        end = stop
        step = max(1, (CHUNK_BYTES - size) // max(1, size // (end - start)))
    if not parts:
        return end, "[]"
    doc = parts[0] if len(parts) == 1 else ",".join(parts)
    return end, f"[{doc}]"


def _params(batch: _Batch, start: int, end: int, doc: str) -> list[Any]:
    return [batch.ids[start:end], batch.stamps[start:end], batch.embed[start:end], doc]


def _notices(batch: _Batch, found: Sequence[tuple[str, bool, datetime]]) -> list[dict[str, Any]]:
    """One outbox payload per workflow with new runs: its newest (the batch's last)."""
    newest: dict[str, dict[str, Any]] = {}
    for r, (row_id, created, at) in zip(batch.unique, found, strict=True):
        if created:
            newest[r.wpk_id] = {
                "id": row_id,
                "workflow_id": r.wpk_id,
                "run_id": r.run_id,
                "status": r.status,
                "created_at": at.isoformat(timespec="microseconds"),
            }
    return list(newest.values())


_Found = list[tuple[str, bool, datetime]]


class RunStore:
    """Runs in ``workflow_runs``. Every batch that stores new runs also writes, in the
    same transaction, one outbox row per workflow naming its newest new run, so the
    registry hears of it even if this process dies right after (NotifyRun is monotonic:
    the older runs of the batch could change nothing there)."""

    def __init__(self, db: Database, *, embeddings_enabled: bool) -> None:
        self._db = db
        self._embeddings_enabled = embeddings_enabled

    def insert(self, runs: Iterable[NewRun]) -> list[LogResult]:
        """Store new runs, leave known ones alone; one result per run, in order. A run
        repeated inside the batch is stored once: its later copies answer created=false.
        ``runs`` is read as the statements need it (on Postgres, a batch of more than
        CHUNK_RUNS runs is read while the statements of its first runs execute); when
        reading it raises, the transaction ends and nothing is stored."""
        batch = _Batch(runs, embeddings_enabled=self._embeddings_enabled)
        if self._db.dialect == "postgres":
            found = self._insert_postgres(batch)
        else:
            batch.fill(_ALL)
            found = self._insert_sqlite(batch)
        results: list[LogResult] = []
        answered: set[int] = set()
        for run, at in zip(batch.read, batch.first, strict=True):
            row_id, created, created_at = found[at]
            results.append(
                LogResult(row_id, run.run_id, created and at not in answered, created_at)
            )
            answered.add(at)
        return results

    def _insert_postgres(self, batch: _Batch) -> _Found:
        now = utcnow()
        end, doc = _chunk(batch, 0)
        if not end:
            return []
        if batch.fill(end + 1) == end:  # the whole batch in one statement: one round trip
            params = [*_params(batch, 0, end, doc), NOTIFY_TOPIC, now, now]
            del doc
            return self._answers(batch, self._db.statement(_PG_INSERT, params, prepare=True))
        # Several statements in one transaction, each sent before the next one's runs
        # are read, so Postgres stores a chunk while this process converts the next;
        # one statement in flight at a time, so a burst of large batches holds at most
        # two chunks' JSON per call. The outbox rows and the commit go last, together.
        rows: list[Row] = []
        with self._db.transaction(pipeline=True) as tx:
            pending = tx.send(_PG_INSERT_RUNS, _params(batch, 0, end, doc), prepare=True)
            del doc
            start = end
            while batch.fill(start + 1) > start:
                end, doc = _chunk(batch, start)
                rows += pending.rows()
                pending = tx.send(_PG_INSERT_RUNS, _params(batch, start, end, doc), prepare=True)
                del doc
                start = end
            rows += pending.rows()
            found, late = self._known(batch, rows)
            outbox.enqueue(tx, NOTIFY_TOPIC, _notices(batch, found))
        return self._reread(batch, found, late)

    def _answers(self, batch: _Batch, rows: list[Row]) -> _Found:
        found, late = self._known(batch, rows)
        return self._reread(batch, found, late)

    def _known(self, batch: _Batch, rows: list[Row]) -> tuple[_Found, list[int]]:
        """Each unique run's (id, created, created_at) from the rows the insert answered
        (the runs it did not insert), and the runs to read again."""
        # New runs have the id and time chosen here; only the others come back.
        out = [(i, True, at) for i, at in zip(batch.ids, batch.stamps, strict=True)]
        late: list[int] = []
        if not rows:
            return out, late
        where = {new_id: i for i, new_id in enumerate(batch.ids)}
        for r in rows:
            i = where[str(r["new_id"])]
            if r["id"] is None:
                # Stored by a concurrent call that committed after this statement's
                # snapshot was taken: read it again below.
                late.append(i)
                out[i] = ("", False, batch.stamps[i])
            else:
                out[i] = (str(r["id"]), False, r["created_at"])
        return out, late

    def _reread(self, batch: _Batch, found: _Found, late: list[int]) -> _Found:
        if late:
            with self._db.transaction(write=False) as tx:
                for i in late:
                    run = batch.unique[i]
                    (row,) = tx.execute(_FIND, (run.wpk_id, run.run_id))
                    at = as_datetime(row["created_at"]) or batch.stamps[i]
                    found[i] = (str(row["id"]), False, at)
        return found

    def _insert_sqlite(self, batch: _Batch) -> _Found:
        unique = batch.unique
        columns = _columns(batch, 0, len(unique))
        rows = [
            (
                row_id,
                *values,
                at,
                at,
                "pending" if embed else "skipped",
                at if embed else None,
            )
            for row_id, at, embed, *values in zip(
                batch.ids, batch.stamps, batch.embed, *columns, strict=True
            )
        ]
        del columns
        out: _Found = []
        with self._db.transaction() as tx:
            tx.executemany(_SQLITE_INSERT, rows)
            del rows
            # The rows stored now carry the ids chosen here; only the others are looked up.
            stored: set[str] = set()
            for start in range(0, len(unique), _SQLITE_IDS):
                ids = batch.ids[start : start + _SQLITE_IDS]
                found = tx.execute(
                    f"SELECT id FROM workflow_runs WHERE id IN ({', '.join(['%s'] * len(ids))})",
                    ids,
                )
                stored.update(str(r["id"]) for r in found)
            for r, row_id, at in zip(unique, batch.ids, batch.stamps, strict=True):
                if row_id in stored:
                    out.append((row_id, True, at))
                    continue
                (row,) = tx.execute(_FIND, (r.wpk_id, r.run_id))
                out.append((str(row["id"]), False, as_datetime(row["created_at"]) or at))
            outbox.enqueue(tx, NOTIFY_TOPIC, _notices(batch, out))
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
