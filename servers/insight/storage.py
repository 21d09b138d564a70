"""Insight SQL: episodes (a series has at most one open episode per source) and watches
(each evaluated once per interval by whichever server holds its lease)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from neuralops.servers.insight.model import Episode, Watch
from neuralops.servers.runtime import pagination
from neuralops.servers.runtime.db import Database, Row, as_datetime, json_value, utcnow

_EP_COLUMNS = (
    "id, source, watch_id, metric, labels, method, query, threshold, start_time, end_time,"
    " peak_time, peak_score, peak_value, baseline, last_seen_time, evaluated_time,"
    " normal_points, hint, created_at"
)
_EP_INSERT = (
    "INSERT INTO insight_episodes (id, source, watch_id, metric, labels, series_key, method,"
    " query, threshold, start_time, end_time, peak_time, peak_score, peak_value, baseline,"
    " last_seen_time, evaluated_time, normal_points, hint, created_at)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
    " ON CONFLICT DO NOTHING RETURNING id"
)
# Only moves forward: a slower evaluator of an older interval cannot undo a newer one.
_EP_UPDATE = (
    "UPDATE insight_episodes SET end_time = %s, peak_time = %s, peak_score = %s,"
    " peak_value = %s, baseline = %s, last_seen_time = %s, evaluated_time = %s,"
    " normal_points = %s, hint = %s WHERE id = %s AND evaluated_time < %s"
)
_W_COLUMNS = (
    "id, name, query, detector, interval_s, created_at, updated_at, evaluated_time,"
    " evaluations, last_error"
)


def series_key(labels: dict[str, str]) -> str:
    return json.dumps(labels, sort_keys=True, separators=(",", ":"))


def _t(value: object) -> datetime:
    got = as_datetime(value)
    assert got is not None
    return got


def _episode(r: Row) -> Episode:
    return Episode(
        id=str(r["id"]),
        source=r["source"],
        watch_id=r["watch_id"],
        metric=r["metric"],
        labels=json_value(r["labels"]),
        method=r["method"],
        query=r["query"],
        threshold=float(r["threshold"]),
        start_time=_t(r["start_time"]),
        end_time=as_datetime(r["end_time"]),
        peak_time=_t(r["peak_time"]),
        peak_score=float(r["peak_score"]),
        peak_value=float(r["peak_value"]),
        baseline=float(r["baseline"]),
        last_seen_time=_t(r["last_seen_time"]),
        evaluated_time=_t(r["evaluated_time"]),
        normal_points=int(r["normal_points"]),
        hint=r["hint"],
        created_at=as_datetime(r["created_at"]),
    )


def _watch(r: Row) -> Watch:
    return Watch(
        id=str(r["id"]),
        name=r["name"],
        query=r["query"],
        detector=json_value(r["detector"]),
        interval_s=float(r["interval_s"]),
        created_at=as_datetime(r["created_at"]),
        updated_at=as_datetime(r["updated_at"]),
        evaluated_time=as_datetime(r["evaluated_time"]),
        evaluations=int(r["evaluations"]),
        last_error=r["last_error"],
    )


def watch_position(w: Watch) -> pagination.Position:
    """A stored watch's place in :meth:`SignalStore.list_watches` (created_at is NOT NULL)."""
    return _t(w.created_at), w.id


class SignalStore:
    """Episodes and watches."""

    def __init__(self, db: Database) -> None:
        self._db = db

    # ------------------------------------------------------------------ episodes

    def open_episodes(self, source: str) -> dict[str, Episode]:
        """The open episodes of ``source``, by series key."""
        with self._db.transaction(write=False) as tx:
            rows = tx.execute(
                f"SELECT {_EP_COLUMNS} FROM insight_episodes"
                " WHERE source = %s AND end_time IS NULL",
                (source,),
            )
        return {series_key(json_value(r["labels"])): _episode(r) for r in rows}

    def write(
        self, opened: Sequence[Episode], updated: Sequence[Episode]
    ) -> list[tuple[str, bool]]:
        """Insert ``opened`` (unless the series already has an open episode for that
        source, or the same start is stored) and apply ``updated``; returns (id,
        created) for each opened one (the existing id when not created)."""
        now = utcnow()
        out: list[tuple[str, bool]] = []
        with self._db.transaction() as tx:
            if updated:
                tx.executemany(
                    _EP_UPDATE,
                    [
                        (
                            e.end_time,
                            e.peak_time,
                            e.peak_score,
                            e.peak_value,
                            e.baseline,
                            e.last_seen_time,
                            e.evaluated_time,
                            e.normal_points,
                            e.hint,
                            e.id,
                            e.evaluated_time,
                        )
                        for e in updated
                    ],
                )
            rows = [
                (
                    e.id or str(uuid.uuid4()),
                    e.source,
                    e.watch_id,
                    e.metric,
                    json.dumps(e.labels),
                    series_key(e.labels),
                    e.method,
                    e.query,
                    e.threshold,
                    e.start_time,
                    e.end_time,
                    e.peak_time,
                    e.peak_score,
                    e.peak_value,
                    e.baseline,
                    e.last_seen_time,
                    e.evaluated_time,
                    e.normal_points,
                    e.hint,
                    now,
                )
                for e in opened
            ]
            for row, got in zip(rows, tx.execute_each(_EP_INSERT, rows), strict=True):
                if got:
                    out.append((str(got[0]["id"]), True))
                    continue
                found = tx.execute(
                    "SELECT id FROM insight_episodes WHERE source = %s AND series_key = %s"
                    " AND (end_time IS NULL OR start_time = %s) ORDER BY start_time DESC LIMIT 1",
                    (row[1], row[5], row[9]),
                )
                out.append((str(found[0]["id"]) if found else "", False))
        return out

    def list_episodes(
        self,
        limit: int,
        *,
        metric: str = "",
        start: datetime | None = None,
        end: datetime | None = None,
        state: str = "",
        watch_id: str = "",
        after: pagination.Position | None = None,
    ) -> list[Episode]:
        where: list[str] = []
        params: list[object] = []
        if metric:
            where.append("metric = %s")
            params.append(metric)
        if watch_id:
            where.append("watch_id = %s")
            params.append(watch_id)
        if state == "open":
            where.append("end_time IS NULL")
        elif state == "closed":
            where.append("end_time IS NOT NULL")
        if start is not None:
            where.append("start_time >= %s")
            params.append(start)
        if end is not None:
            where.append("start_time < %s")
            params.append(end)
        if after is not None:
            where.append(pagination.after(self._db.dialect, "start_time"))
            params.extend(after)
        sql = f"SELECT {_EP_COLUMNS} FROM insight_episodes"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY {pagination.order('start_time')} LIMIT %s"
        with self._db.transaction(write=False) as tx:
            rows = tx.execute(sql, (*params, limit))
        return [_episode(r) for r in rows]

    # ------------------------------------------------------------------- watches

    def create_watch(self, w: Watch) -> Watch:
        now = utcnow()
        wid = str(uuid.uuid4())
        with self._db.transaction() as tx:
            tx.execute(
                "INSERT INTO insight_watches (id, name, query, detector, interval_s,"
                " created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (wid, w.name, w.query, json.dumps(w.detector), w.interval_s, now, now),
            )
        got = self.get_watch(wid)
        assert got is not None
        return got

    def get_watch(self, wid: str) -> Watch | None:
        with self._db.transaction(write=False) as tx:
            rows = tx.execute(f"SELECT {_W_COLUMNS} FROM insight_watches WHERE id = %s", (wid,))
        return _watch(rows[0]) if rows else None

    def list_watches(self, limit: int, after: pagination.Position | None) -> list[Watch]:
        """Oldest first (a watch list reads in the order they were made)."""
        sql = f"SELECT {_W_COLUMNS} FROM insight_watches"
        params: list[object] = []
        if after is not None:
            sql += " WHERE " + pagination.after(self._db.dialect, "created_at", newest_first=False)
            params.extend(after)
        sql += f" ORDER BY {pagination.order('created_at', newest_first=False)} LIMIT %s"
        with self._db.transaction(write=False) as tx:
            rows = tx.execute(sql, (*params, limit))
        return [_watch(r) for r in rows]

    def update_watch(self, w: Watch) -> Watch | None:
        with self._db.transaction() as tx:
            tx.execute(
                "UPDATE insight_watches SET name = %s, query = %s, detector = %s,"
                " interval_s = %s, updated_at = %s WHERE id = %s",
                (w.name, w.query, json.dumps(w.detector), w.interval_s, utcnow(), w.id),
            )
        return self.get_watch(w.id)

    def delete_watch(self, wid: str) -> bool:
        with self._db.transaction() as tx:
            found = tx.execute("SELECT id FROM insight_watches WHERE id = %s", (wid,))
            tx.execute("DELETE FROM insight_watches WHERE id = %s", (wid,))
        return bool(found)

    def due_watches(self, now: datetime) -> list[Watch]:
        with self._db.transaction(write=False) as tx:
            rows = tx.execute(
                f"SELECT {_W_COLUMNS} FROM insight_watches"
                " WHERE lease_until IS NULL OR lease_until < %s ORDER BY created_at, id",
                (now,),
            )
        return [_watch(r) for r in rows]

    def claim(self, wid: str, owner: str, grid: datetime, lease: timedelta) -> bool:
        """Take the watch's lease for evaluating ``grid`` unless that interval is done
        or another server holds it (one conditional UPDATE: atomic on both databases)."""
        now = utcnow()
        with self._db.transaction() as tx:
            got = tx.execute(
                "UPDATE insight_watches SET lease_owner = %s, lease_until = %s"
                " WHERE id = %s AND (evaluated_time IS NULL OR evaluated_time < %s)"
                " AND (lease_until IS NULL OR lease_until < %s) RETURNING id",
                (owner, now + lease, wid, grid, now),
            )
        return bool(got)

    def finish(self, wid: str, owner: str, grid: datetime | None, error: str) -> None:
        with self._db.transaction() as tx:
            if grid is None:
                tx.execute(
                    "UPDATE insight_watches SET lease_until = NULL, last_error = %s"
                    " WHERE id = %s AND lease_owner = %s",
                    (error, wid, owner),
                )
            else:
                tx.execute(
                    "UPDATE insight_watches SET lease_until = NULL, last_error = %s,"
                    " evaluated_time = %s, evaluations = evaluations + 1"
                    " WHERE id = %s AND lease_owner = %s",
                    (error, grid, wid, owner),
                )
