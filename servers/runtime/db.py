"""One small database interface with a Postgres and a SQLite implementation.

Storage modules write portable SQL with ``%s`` placeholders (the SQLite side
turns them into ``?``) and run it inside :meth:`Database.transaction`. Values
come back as plain Python: JSON columns as text or decoded objects (use
:func:`json_value`), timestamps as text or datetimes (use :func:`as_datetime`).
A database that cannot be reached raises :class:`StorageUnavailable`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import psycopg
import psycopg_pool
from neuralops.servers.runtime.errors import StorageUnavailable
from psycopg.rows import dict_row

log = logging.getLogger(__name__)

Row = dict[str, Any]
Dialect = Literal["postgres", "sqlite"]
_SQLITE_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


class Pending(Protocol):
    """A statement sent and maybe still running."""

    def rows(self) -> list[Row]:
        """Its rows, once it has run (waits for it)."""
        ...


class Tx(Protocol):
    """An open transaction."""

    def execute(self, sql: str, params: Sequence[Any] = (), *, prepare: bool = False) -> list[Row]:
        """Run one statement and return its rows. ``prepare``: a statement run on every
        call of a hot path, planned once per connection (Postgres)."""
        ...

    def executemany(self, sql: str, params: Iterable[Sequence[Any]]) -> None: ...

    def execute_each(self, sql: str, params: Sequence[Sequence[Any]]) -> list[list[Row]]:
        """Run one statement per parameter row and return each one's rows (pipelined on
        Postgres, so a batch of N costs about one round trip, not N)."""
        ...

    def send(self, sql: str, params: Sequence[Any] = (), *, prepare: bool = False) -> Pending:
        """Start one statement that returns rows, and return before it has run when the
        transaction is pipelined (Postgres), so the caller works while the database
        does; elsewhere it runs now. Read a statement's rows before sending the next:
        reading waits for every statement sent before it, and each one's parameters
        stay in memory until then."""
        ...


class Database(Protocol):
    """What storage modules need from a database."""

    dialect: Dialect

    def transaction(
        self, *, write: bool = True, pipeline: bool = False
    ) -> contextlib.AbstractContextManager[Tx]:
        """``pipeline``: statements are sent without waiting for the ones before
        (:meth:`Tx.send`; Postgres pipeline mode, the commit in the same round trip as
        the last statements); ignored by SQLite."""
        ...

    def statement(
        self, sql: str, params: Sequence[Any] = (), *, prepare: bool = False
    ) -> list[Row]:
        """Run one statement as its own transaction and return its rows: atomic as any
        single statement is, and on Postgres one round trip (no BEGIN, no COMMIT)."""
        ...

    def close(self) -> None: ...

    def describe(self) -> str: ...


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_datetime(value: Any) -> datetime | None:
    """A stored timestamp as an aware UTC datetime (SQLite keeps ISO text)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    text = str(value)
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def json_value(value: Any) -> Any:
    """A stored JSON column as Python (Postgres decodes jsonb, SQLite keeps text)."""
    if isinstance(value, str | bytes):
        return json.loads(value)
    return value


# --------------------------------------------------------------------- Postgres


class _PgPending:
    def __init__(self, cursor: psycopg.Cursor[Row]) -> None:
        self._cursor = cursor

    def rows(self) -> list[Row]:
        with self._cursor as cur:
            return cur.fetchall()


class _PgTx:
    def __init__(self, conn: psycopg.Connection[Row]) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = (), *, prepare: bool = False) -> list[Row]:
        cur = self._conn.execute(sql, params, prepare=True if prepare else None)
        return cur.fetchall() if cur.description else []

    def executemany(self, sql: str, params: Iterable[Sequence[Any]]) -> None:
        with self._conn.cursor() as cur:
            cur.executemany(sql, params)

    def execute_each(self, sql: str, params: Sequence[Sequence[Any]]) -> list[list[Row]]:
        if not params:
            return []
        out: list[list[Row]] = []
        with self._conn.cursor() as cur:
            cur.executemany(sql, params, returning=True)
            while True:
                out.append(cur.fetchall() if cur.description else [])
                if not cur.nextset():
                    break
        return out

    def send(self, sql: str, params: Sequence[Any] = (), *, prepare: bool = False) -> Pending:
        # In pipeline mode psycopg sends the statement and flushes it to the server
        # before returning; fetchall() then waits for its result.
        cur = self._conn.cursor()
        cur.execute(sql, params, prepare=True if prepare else None)
        return _PgPending(cur)


class PostgresDatabase:
    """A psycopg 3 connection pool. The pool opens lazily: a server starts with
    Postgres down and answers UNAVAILABLE until it comes back."""

    dialect: Dialect = "postgres"

    def __init__(self, dsn: str, *, max_size: int = 10, timeout_s: float = 5.0) -> None:
        self._dsn = dsn
        self._pool: psycopg_pool.ConnectionPool[psycopg.Connection[Row]] = (
            psycopg_pool.ConnectionPool(
                dsn,
                min_size=1,
                max_size=max_size,
                timeout=timeout_s,
                open=False,
                kwargs={"row_factory": dict_row, "connect_timeout": max(1, int(timeout_s))},
                connection_class=psycopg.Connection[Row],
                name="neuralops",
            )
        )
        self._pool.open(wait=False)

    @contextlib.contextmanager
    def transaction(self, *, write: bool = True, pipeline: bool = False) -> Iterator[Tx]:
        try:
            with self._pool.connection() as conn:
                if pipeline:
                    with conn.pipeline(), conn.transaction():
                        yield _PgTx(conn)
                else:
                    with conn.transaction():
                        yield _PgTx(conn)
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
            log.warning("postgres unavailable: %s", exc)
            raise StorageUnavailable("database unavailable") from exc

    def statement(
        self, sql: str, params: Sequence[Any] = (), *, prepare: bool = False
    ) -> list[Row]:
        try:
            with self._pool.connection() as conn:
                conn.autocommit = True
                try:
                    cur = conn.execute(sql, params, prepare=True if prepare else None)
                    return cur.fetchall() if cur.description else []
                finally:
                    conn.autocommit = False
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
            log.warning("postgres unavailable: %s", exc)
            raise StorageUnavailable("database unavailable") from exc

    def close(self) -> None:
        self._pool.close()

    def describe(self) -> str:
        info = psycopg.conninfo.conninfo_to_dict(self._dsn)
        return f"postgres {info.get('host', 'local')}:{info.get('port', 5432)}/{info.get('dbname', '')}"


# ----------------------------------------------------------------------- SQLite


def _sqlite_param(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).strftime(_SQLITE_TIME_FORMAT)
    if isinstance(value, bool):
        return int(value)
    return value


def _sqlite_sql(sql: str) -> str:
    return sql.replace("%s", "?")


class _Done:
    def __init__(self, rows: list[Row]) -> None:
        self._rows = rows

    def rows(self) -> list[Row]:
        return self._rows


class _SqliteTx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = (), *, prepare: bool = False) -> list[Row]:
        cur = self._conn.execute(_sqlite_sql(sql), [_sqlite_param(p) for p in params])
        if cur.description is None:
            return []
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def executemany(self, sql: str, params: Iterable[Sequence[Any]]) -> None:
        self._conn.executemany(
            _sqlite_sql(sql), ([_sqlite_param(p) for p in row] for row in params)
        )

    def execute_each(self, sql: str, params: Sequence[Sequence[Any]]) -> list[list[Row]]:
        return [self.execute(sql, row) for row in params]

    def send(self, sql: str, params: Sequence[Any] = (), *, prepare: bool = False) -> Pending:
        return _Done(self.execute(sql, params))


class SqliteDatabase:
    """A SQLite file in WAL mode, one connection per thread."""

    dialect: Dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        self._path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self._path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    @contextlib.contextmanager
    def transaction(self, *, write: bool = True, pipeline: bool = False) -> Iterator[Tx]:
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        except sqlite3.OperationalError as exc:
            raise StorageUnavailable(f"database unavailable: {exc}") from exc
        try:
            yield _SqliteTx(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            conn.execute("ROLLBACK")
            raise StorageUnavailable(f"database unavailable: {exc}") from exc

    def statement(
        self, sql: str, params: Sequence[Any] = (), *, prepare: bool = False
    ) -> list[Row]:
        with self.transaction() as tx:
            return tx.execute(sql, params)

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._all.clear()
        self._local = threading.local()

    def describe(self) -> str:
        return f"sqlite {self._path}"


def open_database(
    postgres_dsn: str | None, sqlite_path: Path, *, pool_size: int = 10, timeout_s: float = 5.0
) -> Database:
    """Postgres when a DSN is given, else the SQLite fallback (and the log says so)."""
    if postgres_dsn:
        return PostgresDatabase(postgres_dsn, max_size=pool_size, timeout_s=timeout_s)
    log.warning("POSTGRES_DSN is not set: using the SQLite file %s", sqlite_path)
    return SqliteDatabase(sqlite_path)


def with_search_path(dsn: str, schema: str) -> str:
    """The DSN with every connection's search_path set to ``schema``."""
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    params["options"] = f"-c search_path={schema}"
    return psycopg.conninfo.make_conninfo(**params)  # type: ignore[arg-type]


@contextlib.contextmanager
def scratch_schema(base_dsn: str, prefix: str) -> Iterator[str]:
    """A new, empty Postgres schema for the block (reports, benchmarks), dropped after;
    yields a DSN that uses it."""
    schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield with_search_path(base_dsn, schema)
    finally:
        with psycopg.connect(base_dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
