"""The run-context columns (migration 006) and the ListRuns query over them.

Kept apart from the insert path in storage.py: these are the columns a run gains
from the LangGraph hook (thread, checkpoint, user/session, tags, metadata, usage
totals, interrupts, truncation) and the filters ListRuns offers on them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from neuralops.servers.runhistory.model import RunContext, RunFilter, RunSummary
from neuralops.servers.runtime import pagination, textcodec
from neuralops.servers.runtime.db import Row, as_datetime, json_value

COLUMNS = (
    "thread_id, checkpoint_id, user_id, session_id, tags, metadata, usage, interrupts,"
    " calls, omitted_node_logs, truncated"
)
_SUMMARY = f"id, wpk_id, run_id, status, duration_ms, created_at, error, {COLUMNS}"


def _dumps(value: Any) -> str:
    return textcodec.dumps(value)


def from_row(row: Row) -> RunContext:
    return RunContext(
        thread_id=textcodec.unescape(row["thread_id"]),
        checkpoint_id=textcodec.unescape(row["checkpoint_id"]),
        user_id=textcodec.unescape(row["user_id"]),
        session_id=textcodec.unescape(row["session_id"]),
        tags=list(textcodec.restore(json_value(row["tags"])) or []),
        metadata=dict(textcodec.restore(json_value(row["metadata"])) or {}),
        usage=dict(json_value(row["usage"]) or {}),
        interrupts=list(textcodec.restore(json_value(row["interrupts"])) or []),
        calls=list(textcodec.restore(json_value(row["calls"])) or []),
        omitted_node_logs=int(row["omitted_node_logs"]),
        truncated=bool(row["truncated"]),
    )


def summary(row: Row) -> RunSummary:
    return RunSummary(
        id=str(row["id"]),
        wpk_id=row["wpk_id"],
        run_id=row["run_id"],
        status=row["status"],
        duration_ms=int(row["duration_ms"]),
        created_at=as_datetime(row["created_at"]) or datetime.min,
        error=row["error"],
        context=from_row(row),
    )


def list_query(
    dialect: str, wpk_id: str, flt: RunFilter, limit: int, after: pagination.Position | None
) -> tuple[str, list[Any]]:
    """SQL and parameters for one ListRuns page: fixed fragments, never formatted values."""
    where = ["wpk_id = %s"]
    args: list[Any] = [wpk_id]
    for column in ("thread_id", "status", "user_id", "session_id"):
        value = getattr(flt, column)
        if value:
            where.append(f"{column} = %s")
            args.append(textcodec.escape(value))
    if flt.tag:
        if dialect == "postgres":
            where.append("tags @> %s::jsonb")
            args.append(_dumps([flt.tag]))
        else:
            where.append("EXISTS (SELECT 1 FROM json_each(workflow_runs.tags) WHERE value = %s)")
            args.append(flt.tag)
    if after is not None:
        where.append(pagination.after(dialect, "created_at"))
        args.extend(after)
    sql = (
        f"SELECT {_SUMMARY} FROM workflow_runs WHERE {' AND '.join(where)}"
        f" ORDER BY {pagination.order('created_at')} LIMIT %s"
    )
    args.append(limit)
    return sql, args
