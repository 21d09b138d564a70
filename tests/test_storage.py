"""Storage and migrations, on SQLite and on the real Postgres."""

from __future__ import annotations

import pytest
from neuralops.servers.runhistory import storage
from neuralops.servers.runhistory.model import NewRun
from neuralops.servers.runhistory.storage import RunStore
from neuralops.servers.runtime.db import Database, json_value
from neuralops.servers.runtime.migrate import applied, load_migrations, migrate


def _run(run_id: str, wpk_id: str = "test", **kw: object) -> NewRun:
    kw.setdefault("outputs", {"text": "ok"})
    return NewRun(wpk_id=wpk_id, run_id=run_id, status="completed", **kw)  # type: ignore[arg-type]


def test_migrations_are_recorded_and_rerunning_is_a_no_op(db: Database) -> None:
    names = [m.name for m in load_migrations()]
    assert names[0] == "001_create_workflow_runs.sql"
    assert applied(db) == names
    assert migrate(db) == []
    assert applied(db) == names


def test_insert_returns_the_row_id_and_created(db: Database) -> None:
    (result,) = RunStore(db, embeddings_enabled=False).insert([_run("r1")])
    assert result.created is True
    assert len(result.id) == 36
    stored = RunStore(db, embeddings_enabled=False).get("test", "r1")
    assert stored is not None
    assert stored.id == result.id
    assert stored.outputs == {"text": "ok"}
    assert stored.embedding_status == "skipped"


def test_log_run_twice_stores_one_row(db: Database) -> None:
    store = RunStore(db, embeddings_enabled=False)
    first = store.insert([_run("r1")])[0]
    again = store.insert([_run("r1", duration_ms=999)])[0]
    assert again.id == first.id
    assert again.created is False
    with db.transaction(write=False) as tx:
        rows = tx.execute("SELECT COUNT(*) AS n FROM workflow_runs")
    assert int(rows[0]["n"]) == 1
    stored = store.get("test", "r1")
    assert stored is not None and stored.duration_ms == 0  # the first write wins


def test_a_batch_repeating_a_run_stores_it_once(db: Database) -> None:
    store = RunStore(db, embeddings_enabled=False)
    results = store.insert([_run("a"), _run("b"), _run("a")])
    assert [r.created for r in results] == [True, True, False]
    assert results[2].id == results[0].id


def test_same_run_id_in_two_workflows_is_two_runs(db: Database) -> None:
    store = RunStore(db, embeddings_enabled=False)
    a, b = store.insert([_run("r1", wpk_id="w1"), _run("r1", wpk_id="w2")])
    assert a.created and b.created and a.id != b.id


def test_each_batch_gets_one_outbox_row_per_workflow_naming_its_newest_new_run(
    db: Database,
) -> None:
    store = RunStore(db, embeddings_enabled=False)
    store.insert([_run("a"), _run("b"), _run("c", wpk_id="other")])
    store.insert([_run("a")])  # nothing new: no notice
    store.insert([_run("d"), _run("a")])
    with db.transaction(write=False) as tx:
        rows = tx.execute("SELECT payload FROM outbox")
    notices = sorted(
        (p["workflow_id"], p["run_id"]) for p in (json_value(r["payload"]) for r in rows)
    )
    assert notices == [("other", "c"), ("test", "b"), ("test", "d")]


def test_runs_with_text_are_pending_when_embeddings_are_on(db: Database) -> None:
    store = RunStore(db, embeddings_enabled=True)
    store.insert([_run("with-text"), NewRun(wpk_id="test", run_id="no-text", status="failed")])
    assert store.embedding_counts() == {"pending": 1, "skipped": 1}
    due = store.due_embeddings(10, max_attempts=3)
    assert [(d.run_id, d.text) for d in due] == [("with-text", "ok")]


def test_a_batch_larger_than_one_statement_is_stored_whole_in_order(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage, "CHUNK_BYTES", 100)  # a few runs per statement
    store = RunStore(db, embeddings_enabled=False)
    store.insert([_run("r3")])
    results = store.insert([_run(f"r{i}", outputs={"text": "x" * 60}) for i in range(10)])
    assert [r.created for r in results] == [i != 3 for i in range(10)]
    stamps = [r.created_at for r in results if r.created]
    assert stamps == sorted(stamps) and len(set(stamps)) == 9
    with db.transaction(write=False) as tx:
        rows = tx.execute("SELECT COUNT(*) AS n FROM workflow_runs")
    assert int(rows[0]["n"]) == 10
