"""A transactional outbox: rows written with the change they announce, delivered later.

Writers call :func:`enqueue` inside their own transaction. A relay :func:`claim`s due
rows under a lease (so several relay instances never deliver the same row at once, and
a relay that dies mid-delivery only delays it), then calls :func:`delivered` or
:func:`retry_later`. Delivery is at-least-once; receivers are idempotent.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from neuralops.servers.runtime.db import Database, Tx, json_value, utcnow


@dataclass(frozen=True)
class OutboxItem:
    id: str
    topic: str
    payload: dict[str, Any]
    attempts: int


def enqueue(tx: Tx, topic: str, payloads: Sequence[dict[str, Any]]) -> None:
    if not payloads:
        return
    now = utcnow()
    tx.executemany(
        "INSERT INTO outbox (id, topic, payload, created_at, next_attempt_at)"
        " VALUES (%s, %s, %s, %s, %s)",
        [(str(uuid.uuid4()), topic, json.dumps(p), now, now) for p in payloads],
    )


def claim(db: Database, topic: str, limit: int, lease: timedelta) -> list[OutboxItem]:
    """Take up to ``limit`` due rows, oldest first, for ``lease``."""
    now = utcnow()
    with db.transaction() as tx:
        rows = tx.execute(
            "UPDATE outbox SET claimed_until = %s WHERE id IN ("
            " SELECT id FROM outbox WHERE topic = %s AND next_attempt_at <= %s"
            " AND (claimed_until IS NULL OR claimed_until < %s)"
            " ORDER BY next_attempt_at, created_at LIMIT %s)"
            " RETURNING id, topic, payload, attempts, created_at",
            (now + lease, topic, now, now, limit),
        )
    rows.sort(key=lambda r: str(r["created_at"]))
    return [
        OutboxItem(str(r["id"]), r["topic"], json_value(r["payload"]), int(r["attempts"]))
        for r in rows
    ]


def delivered(db: Database, ids: Sequence[str]) -> None:
    with db.transaction() as tx:
        tx.executemany("DELETE FROM outbox WHERE id = %s", [(i,) for i in ids])


def retry_later(db: Database, delays: Sequence[tuple[OutboxItem, timedelta]], error: str) -> None:
    """Put undelivered items back, each due again after its own delay (one transaction)."""
    if not delays:
        return
    now = utcnow()
    with db.transaction() as tx:
        tx.executemany(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = %s,"
            " claimed_until = NULL, last_error = %s WHERE id = %s",
            [(now + delay, error[:1000], item.id) for item, delay in delays],
        )


def backlog(db: Database) -> int:
    with db.transaction(write=False) as tx:
        rows = tx.execute("SELECT COUNT(*) AS n FROM outbox")
    return int(rows[0]["n"])
