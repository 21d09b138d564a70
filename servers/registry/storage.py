"""Registry SQL: the workflows table, the only one the Registry owns (runs are RunHistory's)."""

from __future__ import annotations

from neuralops.servers import textcodec
from neuralops.servers.db import Database, Row, as_datetime, json_value, utcnow
from neuralops.servers.registry.model import NotifyResult, RunNotice, Workflow

_COLUMNS = (
    "id, name, description, metadata, latest_run_id, latest_run_status, latest_run_at,"
    " created_at, updated_at"
)


def _workflow(row: Row) -> Workflow:
    return Workflow(
        workflow_id=row["id"],
        name=textcodec.unescape(row["name"]),
        description=textcodec.unescape(row["description"]),
        metadata=textcodec.restore(json_value(row["metadata"])),
        latest_run_id=row["latest_run_id"] or "",
        latest_run_status=row["latest_run_status"] or "",
        latest_run_at=as_datetime(row["latest_run_at"]),
        created_at=as_datetime(row["created_at"]),
        updated_at=as_datetime(row["updated_at"]),
    )


class RegistryStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def create(self, wf: Workflow) -> Workflow | None:
        """The stored workflow, or None when the id is taken."""
        now = utcnow()
        with self._db.transaction() as tx:
            rows = tx.execute(
                f"INSERT INTO workflows ({_COLUMNS}) VALUES (%s, %s, %s, %s, NULL, NULL, NULL, %s, %s)"
                f" ON CONFLICT (id) DO NOTHING RETURNING {_COLUMNS}",
                (
                    wf.workflow_id,
                    textcodec.escape(wf.name or wf.workflow_id),
                    textcodec.escape(wf.description),
                    textcodec.dumps(wf.metadata),
                    now,
                    now,
                ),
            )
        return _workflow(rows[0]) if rows else None

    def get(self, workflow_id: str) -> Workflow | None:
        with self._db.transaction(write=False) as tx:
            rows = tx.execute(f"SELECT {_COLUMNS} FROM workflows WHERE id = %s", (workflow_id,))
        return _workflow(rows[0]) if rows else None

    def list_workflows(self, limit: int, after: str | None) -> list[Workflow]:
        with self._db.transaction(write=False) as tx:
            if after is None:
                rows = tx.execute(
                    f"SELECT {_COLUMNS} FROM workflows ORDER BY id LIMIT %s", (limit,)
                )
            else:
                rows = tx.execute(
                    f"SELECT {_COLUMNS} FROM workflows WHERE id > %s ORDER BY id LIMIT %s",
                    (after, limit),
                )
        return [_workflow(r) for r in rows]

    def notify(self, n: RunNotice) -> NotifyResult:
        """Register the workflow if new; move its latest run forward, never back."""
        now = utcnow()
        with self._db.transaction() as tx:
            inserted = tx.execute(
                f"INSERT INTO workflows ({_COLUMNS}, latest_run_row_id)"
                " VALUES (%s, %s, '', '{}', %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (id) DO NOTHING RETURNING id",
                (
                    n.workflow_id,
                    n.workflow_id,
                    n.run_id,
                    n.status,
                    n.created_at,
                    now,
                    now,
                    n.row_id,
                ),
            )
            if inserted:
                return NotifyResult(True, True, n.run_id)
            moved = tx.execute(
                "UPDATE workflows SET latest_run_id = %s, latest_run_row_id = %s,"
                " latest_run_status = %s, latest_run_at = %s, updated_at = %s"
                " WHERE id = %s AND (latest_run_at IS NULL OR latest_run_at < %s"
                " OR (latest_run_at = %s AND latest_run_row_id < %s))"
                " RETURNING latest_run_id",
                (
                    n.run_id,
                    n.row_id,
                    n.status,
                    n.created_at,
                    now,
                    n.workflow_id,
                    n.created_at,
                    n.created_at,
                    n.row_id,
                ),
            )
            if moved:
                return NotifyResult(True, False, n.run_id)
            current = tx.execute(
                "SELECT latest_run_id FROM workflows WHERE id = %s", (n.workflow_id,)
            )
        return NotifyResult(False, False, current[0]["latest_run_id"] or "")
