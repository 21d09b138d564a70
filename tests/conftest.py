"""Shared fixtures: real SQLite files, a Postgres schema per session, real servers."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from neuralops.servers.runtime.app import App
from neuralops.servers.runtime.config import Config
from neuralops.servers.runtime.db import Database, open_database, with_search_path
from neuralops.servers.runtime.migrate import migrate
from neuralops.servers.tooling.processes import free_port

BACKENDS = ["sqlite", "postgres"]


def postgres_base_dsn() -> str:
    dsn = os.environ.get("NEURALOPS_TEST_POSTGRES_DSN") or os.environ.get("POSTGRES_DSN")
    if not dsn:
        pytest.fail(
            "the Postgres tests need a server: set POSTGRES_DSN "
            "(make test uses postgresql://postgres@127.0.0.1:5432/test), "
            "or deselect them with -k sqlite"
        )
    return dsn


@pytest.fixture(scope="session")
def pg_schema_factory() -> Iterator[object]:
    """Makes empty Postgres schemas and drops them at the end of the session."""
    made: list[str] = []
    base = None

    def make() -> str:
        nonlocal base
        base = base or postgres_base_dsn()
        name = f"nops_test_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {name}")
        made.append(name)
        return with_search_path(base, name)

    yield make
    if base and made:
        with psycopg.connect(base, autocommit=True) as conn:
            for name in made:
                conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def config(backend: str, tmp_path: Path, pg_schema_factory: object) -> Config:
    """A Config on a fresh, empty database of the test's backend."""
    dsn = pg_schema_factory() if backend == "postgres" else None  # type: ignore[operator]
    return Config(postgres_dsn=dsn, data_dir=tmp_path / "data", metrics_port=0)


@pytest.fixture
def db(config: Config) -> Iterator[Database]:
    database = open_database(config.postgres_dsn, config.sqlite_path)
    migrate(database)
    yield database
    database.close()


ALL_ZERO = {"registry": 0, "insight": 0, "runhistory": 0}


@pytest.fixture
def stack(config: Config) -> Iterator[App]:
    """All three services in this process on free ports (the way `neuralops serve` runs)."""
    app = App(config, ports=dict(ALL_ZERO), relay_backoff_s=0.5).start()
    yield app
    app.stop(grace=1.0)


__all__ = ["free_port"]
