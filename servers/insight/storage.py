"""Insight SQL: signals, idempotent on (series, method, sample time)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime

from neuralops.servers import pagination
from neuralops.servers.db import Database, Row, as_datetime, json_value, utcnow
from neuralops.servers.insight.model import Signal

_COLUMNS = (
    "id, metric, value, score, hint, created_at, labels, method, sample_time, query,"
    " threshold, baseline"
)
_INSERT = (
    "INSERT INTO insight_signals (id, metric, value, score, hint, created_at, labels, series_key,"
    " method, sample_time, query, threshold, baseline)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (series_key, method, sample_time) DO NOTHING RETURNING id"
)
_EXISTING = (
    "SELECT id FROM insight_signals WHERE series_key = %s AND method = %s AND sample_time = %s"
)


def series_key(labels: dict[str, str]) -> str:
    return json.dumps(labels, sort_keys=True, separators=(",", ":"))


def _signal(r: Row) -> Signal:
    return Signal(
        id=str(r["id"]),
        metric=r["metric"],
        value=float(r["value"]),
        score=float(r["score"]),
        hint=r["hint"],
        labels=json_value(r["labels"]),
        method=r["method"],
        sample_time=as_datetime(r["sample_time"]) or utcnow(),
        query=r["query"],
        threshold=float(r["threshold"]),
        baseline=float(r["baseline"]),
        created_at=as_datetime(r["created_at"]),
    )


class SignalStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def save(self, signals: Sequence[Signal]) -> list[tuple[str, bool]]:
        """Store each signal unless its sample is already stored: (id, created) each."""
        if not signals:
            return []
        now = utcnow()
        rows = [
            (
                str(uuid.uuid4()),
                s.metric,
                s.value,
                s.score,
                s.hint,
                now,
                json.dumps(s.labels),
                series_key(s.labels),
                s.method,
                s.sample_time,
                s.query,
                s.threshold,
                s.baseline,
            )
            for s in signals
        ]
        with self._db.transaction() as tx:
            inserted = tx.execute_each(_INSERT, rows)
            out: list[tuple[str, bool]] = []
            for row, got in zip(rows, inserted, strict=True):
                if got:
                    out.append((str(got[0]["id"]), True))
                else:
                    found = tx.execute(_EXISTING, (row[7], row[8], row[9]))
                    out.append((str(found[0]["id"]), False))
        return out

    def list_signals(
        self,
        limit: int,
        metric: str,
        start: datetime | None,
        end: datetime | None,
        after: tuple[datetime, str] | None,
    ) -> list[Signal]:
        where: list[str] = []
        params: list[object] = []
        if metric:
            where.append("metric = %s")
            params.append(metric)
        if start is not None:
            where.append("sample_time >= %s")
            params.append(start)
        if end is not None:
            where.append("sample_time < %s")
            params.append(end)
        if after is not None:
            where.append(pagination.after(self._db.dialect, "sample_time"))
            params.extend(after)
        sql = f"SELECT {_COLUMNS} FROM insight_signals"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY sample_time DESC, id DESC LIMIT %s"
        with self._db.transaction(write=False) as tx:
            rows = tx.execute(sql, (*params, limit))
        return [_signal(r) for r in rows]
