"""Numbered SQL migrations, applied in order and recorded in ``schema_migrations``.

Re-running is a no-op. Each file is applied with its record in one transaction
(Postgres and SQLite both have transactional DDL), and on Postgres an advisory
lock keeps two servers starting at once from applying the same file twice. A
file changed after it was applied is refused: migrations are append-only.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources

from neuralops.servers.runtime.db import Database, utcnow

log = logging.getLogger(__name__)

_LOCK_KEY = 0x6E6F7073  # "nops"
_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def statements(self) -> list[str]:
        """The file's statements (our migrations keep ';' out of literals)."""
        body = "\n".join(
            line for line in self.sql.splitlines() if not line.lstrip().startswith("--")
        )
        return [s.strip() for s in body.split(";") if s.strip()]


class MigrationError(RuntimeError):
    pass


def load_migrations() -> list[Migration]:
    found = []
    for entry in resources.files("neuralops.migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(match.group(1), entry.name, entry.read_text("utf-8")))
    return sorted(found, key=lambda m: m.version)


def migrate(db: Database) -> list[str]:
    """Apply pending migrations; returns the names applied by this call."""
    applied_now: list[str] = []
    with db.transaction() as tx:
        if db.dialect == "postgres":
            tx.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        tx.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
            " applied_at timestamptz NOT NULL)"
        )
        done = {
            r["version"]: r
            for r in tx.execute("SELECT version, name, checksum FROM schema_migrations")
        }
        for m in load_migrations():
            if m.version in done:
                if done[m.version]["checksum"] != m.checksum:
                    raise MigrationError(
                        f"migration {m.name} changed after it was applied; add a new migration instead"
                    )
                continue
            for statement in m.statements():
                tx.execute(statement)
            tx.execute(
                "INSERT INTO schema_migrations (version, name, checksum, applied_at)"
                " VALUES (%s, %s, %s, %s)",
                (m.version, m.name, m.checksum, utcnow()),
            )
            applied_now.append(m.name)
            log.info("applied migration %s", m.name)
    return applied_now


def applied(db: Database) -> list[str]:
    """Names of the migrations recorded as applied."""
    with db.transaction(write=False) as tx:
        rows = tx.execute("SELECT name FROM schema_migrations ORDER BY version")
    return [r["name"] for r in rows]
