"""The ingest path's fast parts give what the plain ones give: the compiled message
converter, the fast validation pass, the one-document insert (with its escaping), the
batch of ids; the conversion that makes the generic checks refuses what they name; a
large batch pipelined in several statements is one transaction; and the in-flight
budget charges a call for what it holds."""

from __future__ import annotations

import gc
import math
import threading
import uuid
import weakref
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf import struct_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from hypothesis import HealthCheck, given, settings
from neuralops.runhistory.v1 import runhistory_pb2 as pb
from neuralops.runhistory.v1 import runhistory_pb2_grpc
from neuralops.servers.runhistory import storage
from neuralops.servers.runhistory.model import LogResult, NewRun, RunContext
from neuralops.servers.runhistory.servicer import new_run
from neuralops.servers.runhistory.storage import RunStore, new_ids
from neuralops.servers.runtime import convert, validation
from neuralops.servers.runtime import db as db_module
from neuralops.servers.runtime.app import App
from neuralops.servers.runtime.budget import CHARGE_PER_BYTE
from neuralops.servers.runtime.config import Config
from neuralops.servers.runtime.db import Database, PostgresDatabase
from neuralops.servers.runtime.errors import FieldViolation
from neuralops.servers.runtime.interceptors import MAX_DESCRIPTION, MAX_FIELD
from neuralops.servers.runtime.migrate import migrate
from neuralops.servers.tooling.cli import YOUNG_COLLECTION, tune_collector
from neuralops.servers.tooling.processes import free_port

from tests.helpers import field_violations, wait_for
from tests.test_budget import _writes_blocked
from tests.test_fuzz import messages


def _rich_run() -> pb.Run:
    run = pb.Run(wpk_id="w", run_id="r", status=pb.RUN_STATUS_FAILED, duration_ms=7)
    run.inputs.update({"q": "hi", "n": 3, "x": 0.5, "deep": {"a": [1, {"b": None}]}})
    run.usage.model_calls = 2
    run.usage.tokens.input_tokens = 11
    node = run.node_logs.add(name="plan", path="a/b", step=2, attempt=1, truncated=True)
    node.start_time.FromMilliseconds(1_700_000_000_123)
    node.end_time.FromNanoseconds(1_700_000_000_123_456_789)
    call = node.calls.add(id="c", kind=1, name="llm", model="m", status=pb.RUN_STATUS_COMPLETED)
    call.time_to_first_token_ms = 0  # set though zero: explicit presence
    call.parameters.update({"temperature": 0.0})
    call.calls.add(name="inner", status=pb.RUN_STATUS_CANCELLED)
    interrupt = run.interrupts.add(id="i", next_nodes=["n1", "n2"])
    interrupt.value.string_value = "why"
    return run


def _generic(message: Message) -> dict[str, object]:
    """message_dict by the generic ListFields walk, for every type inside."""
    saved = dict(convert._compiled)
    try:
        for desc in (pb.Run, pb.NodeLog, pb.Call, pb.RunUsage, pb.Usage, pb.Interrupt):
            convert._compiled[desc.DESCRIPTOR] = None
        return convert.message_dict(message)
    finally:
        convert._compiled.clear()
        convert._compiled.update(saved)


def test_compiled_converter_matches_the_generic_walk_field_for_field() -> None:
    run = _rich_run()
    # A number the proto does not define.
    run.node_logs[0].calls[0].calls[0].status = 99  # type: ignore[assignment]
    for message in (run, run.node_logs[0], run.node_logs[0].calls[0], run.usage, pb.Run()):
        fast = convert.message_dict(message)
        assert fast == _generic(message)
        assert list(fast) == list(_generic(message))  # same key order too
    call = convert.message_dict(run.node_logs[0].calls[0])
    assert call["time_to_first_token_ms"] == 0
    assert call["calls"] == [{"name": "inner", "status": 99}]


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [(-62_135_596_800, 0), (253_402_300_799, 999_999_999), (0, 0), (-1, 5), (86_399, 120_000)],
)
def test_timestamp_text_is_protobufs_own(seconds: int, nanos: int) -> None:
    ts = pb.NodeLog().start_time
    ts.seconds, ts.nanos = seconds, nanos
    assert convert.timestamp_text(ts) == ts.ToJsonString()


def test_fast_validation_pass_agrees_with_the_naming_walk() -> None:
    good = pb.BatchLogRunsRequest(runs=[_rich_run()])
    assert validation._message_ok(good)
    bad_cases = []
    nan = pb.BatchLogRunsRequest(runs=[_rich_run()])
    nan.runs[0].node_logs[0].output.update({"v": math.nan})
    bad_cases.append(nan)
    deep = pb.BatchLogRunsRequest(runs=[_rich_run()])
    inner = deep.runs[0].inputs
    for _ in range(validation.MAX_STRUCT_DEPTH + 1):
        inner = inner.get_or_create_struct("d")
    bad_cases.append(deep)
    enum = pb.BatchLogRunsRequest(runs=[_rich_run()])
    enum.runs[0].status = 99  # type: ignore[assignment]
    bad_cases.append(enum)
    ts = pb.BatchLogRunsRequest(runs=[_rich_run()])
    ts.runs[0].node_logs[0].end_time.seconds = validation.MAX_TIMESTAMP_SECONDS + 1
    bad_cases.append(ts)
    for request in bad_cases:
        assert not validation._message_ok(request)
        assert validation.message_violations(request)  # and the walk names the field


def test_new_ids_are_distinct_version_4_uuids() -> None:
    ids = new_ids(500)
    assert len(set(ids)) == 500
    for text in ids:
        u = uuid.UUID(text)
        assert str(u) == text and u.version == 4 and u.variant == uuid.RFC_4122


def test_the_batch_document_escapes_free_text_and_leaves_ids_as_sent(db: Database) -> None:
    """One run with NUL and marker characters in its free text makes the whole batch
    take the escaping path; identifiers keep their marker characters verbatim."""
    store = RunStore(db, embeddings_enabled=False)
    odd = "a\x00b\u2400c\u241b"
    runs = [
        NewRun(wpk_id="w\u2400", run_id="plain", status="completed", outputs={"text": "ok"}),
        NewRun(
            wpk_id="w\u2400",
            run_id="odd",
            status="failed",
            inputs={odd: [odd, 1, None]},
            error=odd,
            node_logs=[{"name": odd, "status": "failed", "duration_ms": 0}],
            context=RunContext(thread_id=odd, tags=[odd], metadata={"k": odd}),
        ),
    ]
    assert [r.created for r in store.insert(runs)] == [True, True]
    stored = store.get("w\u2400", "odd")
    assert stored is not None and stored.context is not None
    assert stored.inputs == {odd: [odd, 1, None]}
    assert stored.error == odd and stored.node_logs[0]["name"] == odd
    assert stored.context.thread_id == odd and stored.context.tags == [odd]
    assert stored.context.metadata == {"k": odd}
    plain = store.get("w\u2400", "plain")
    assert plain is not None and plain.outputs == {"text": "ok"}


def test_a_large_batch_in_several_statements_answers_known_runs(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage, "CHUNK_BYTES", 2000)
    store = RunStore(db, embeddings_enabled=False)
    first = store.insert([NewRun(wpk_id="w", run_id="r7", status="completed")])[0]
    runs = [
        NewRun(wpk_id="w", run_id=f"r{i}", status="completed", outputs={"text": "y" * 300})
        for i in range(40)
    ]
    results = store.insert(runs)
    assert [r.created for r in results] == [i != 7 for i in range(40)]
    assert results[7].id == first.id and results[7].created_at == first.created_at


def test_budget_charges_a_call_for_the_memory_its_request_holds(config: Config) -> None:
    app = App(
        config.with_(registry_addr=f"localhost:{free_port()}"),
        services=("runhistory",),
        ports={"runhistory": 0},
    ).start()
    try:
        stub = runhistory_pb2_grpc.RunHistoryServiceStub(
            grpc.insecure_channel(app.address("runhistory"))
        )
        request = pb.BatchLogRunsRequest(runs=[_rich_run()])
        request.runs[0].outputs.update({"text": "z" * 5000})
        with _writes_blocked(config):
            call = threading.Thread(target=lambda: stub.BatchLogRuns(request, timeout=60))
            call.start()
            wait_for(lambda: app.budget.admitted > 0)
            assert app.budget.admitted == CHARGE_PER_BYTE * request.ByteSize()
        call.join(60)
        wait_for(lambda: app.budget.admitted == 0)
    finally:
        app.stop(grace=1.0)


# ------------------------------------------------- one walk: conversion checks


def _bad_runs() -> list[tuple[str, pb.Run, str]]:
    """Runs each holding one value the generic checks refuse, where it sits, and the
    field the answer names."""
    cases: list[tuple[str, pb.Run, str]] = []

    def case(name: str, field: str, spoil: Callable[[pb.Run], object]) -> None:
        run = _rich_run()
        spoil(run)
        cases.append((name, run, field))

    def deep(s: struct_pb2.Struct, levels: int) -> None:
        for _ in range(levels):
            s = s.fields["k"].struct_value

    def deep_list(s: struct_pb2.Struct) -> None:
        lv = s.fields["k"].list_value
        for _ in range(validation.MAX_STRUCT_DEPTH):
            lv = lv.values.add().list_value

    def call(r: pb.Run) -> pb.Call:
        return r.node_logs[0].calls[0]

    case("nan in inputs", "run.inputs.x", lambda r: r.inputs.update({"x": math.nan}))
    case("inf in a list", "run.outputs.l[1]", lambda r: r.outputs.update({"l": [1, -math.inf]}))
    case("nan in metadata", "run.metadata.m", lambda r: r.metadata.update({"m": math.inf}))
    case(
        "nan in a node output",
        "run.node_logs[0].output.v",
        lambda r: r.node_logs[0].output.update({"v": math.nan}),
    )
    case(
        "nan in call parameters",
        "run.node_logs[0].calls[0].parameters.t",
        lambda r: call(r).parameters.update({"t": math.nan}),
    )
    case(
        "nan in an interrupt value",
        "run.interrupts[0].value",
        lambda r: setattr(r.interrupts[0].value, "number_value", math.nan),
    )
    k33 = "run.inputs" + ".k" * validation.MAX_STRUCT_DEPTH
    case("deep struct", k33, lambda r: deep(r.inputs, validation.MAX_STRUCT_DEPTH + 1))
    lists = "[0]" * (validation.MAX_STRUCT_DEPTH - 1)
    case("deep lists", "run.metadata.k" + lists, lambda r: deep_list(r.metadata))
    case(
        "deep lists in a call",  # lists: Structs this deep here pass protobuf's depth limit
        "run.node_logs[0].calls[0].calls[0].input.k" + lists,
        lambda r: deep_list(call(r).calls[0].input),
    )
    case("run status", "run.status", lambda r: setattr(r, "status", 99))
    case("embedding status", "run.embedding_status", lambda r: setattr(r, "embedding_status", 7))
    case("node status", "run.node_logs[0].status", lambda r: setattr(r.node_logs[0], "status", -1))
    case("call kind", "run.node_logs[0].calls[0].kind", lambda r: setattr(call(r), "kind", 9))
    case(
        "nested call status",
        "run.node_logs[0].calls[0].calls[0].status",
        lambda r: setattr(call(r).calls[0], "status", 42),
    )
    case(
        "node end time",
        "run.node_logs[0].end_time",
        lambda r: setattr(r.node_logs[0].end_time, "seconds", validation.MAX_TIMESTAMP_SECONDS + 1),
    )
    case(
        "call start time nanos",
        "run.node_logs[0].calls[0].start_time",
        lambda r: setattr(call(r).start_time, "nanos", -1),
    )
    case(
        "run created_at",
        "run.created_at",
        lambda r: setattr(r.created_at, "seconds", validation.MIN_TIMESTAMP_SECONDS - 1),
    )
    return cases


BAD_RUNS = _bad_runs()


def _as_sent(violations: list[FieldViolation]) -> list[tuple[str, str]]:
    """Violations as the error interceptor sends them (long fields clipped)."""
    return [
        (validation.clip(v.field, MAX_FIELD), validation.clip(v.description, MAX_DESCRIPTION))
        for v in violations
    ]


def _violations(err: grpc.RpcError) -> list[tuple[str, str]]:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None
    out = []
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            out += [(v.field, v.description) for v in bad.field_violations]
    return out


@pytest.mark.parametrize(("name", "run", "field"), BAD_RUNS, ids=[c[0] for c in BAD_RUNS])
def test_the_conversion_refuses_what_the_generic_walk_names(
    name: str, run: pb.Run, field: str
) -> None:
    with pytest.raises(convert.NotValid):
        new_run(run)
    assert [v.field for v in validation.message_violations(run, "run")] == [field]


def test_the_conversion_takes_a_valid_run_as_the_lenient_one_does() -> None:
    run = _rich_run()
    run.created_at.seconds = validation.MAX_TIMESTAMP_SECONDS
    run.embedding_status = pb.EMBEDDING_STATUS_DONE
    assert validation._message_ok(run)
    assert convert.message_dict(run, strict=True) == convert.message_dict(run)
    converted = new_run(run)
    assert converted.node_logs[0]["status"] == "" and converted.status == "failed"


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(run=messages(pb.Run.DESCRIPTOR))
def test_the_conversion_and_the_generic_walk_agree_on_any_run(run: pb.Run) -> None:
    refused = bool(validation.message_violations(run))
    try:
        new_run(run)
    except convert.NotValid:
        assert refused
    else:
        assert not refused


@pytest.fixture
def runhistory(config: Config) -> Iterator[App]:
    app = App(
        config.with_(registry_addr=f"localhost:{free_port()}"),
        services=("runhistory",),
        ports={"runhistory": 0},
    ).start()
    yield app
    app.stop(grace=1.0)


def _stub(app: App) -> runhistory_pb2_grpc.RunHistoryServiceStub:
    return runhistory_pb2_grpc.RunHistoryServiceStub(
        grpc.insecure_channel(app.address("runhistory"))
    )


@pytest.mark.parametrize(("name", "run", "field"), BAD_RUNS, ids=[c[0] for c in BAD_RUNS])
def test_a_bad_value_anywhere_in_a_run_answers_what_the_generic_walk_names(
    runhistory: App, name: str, run: pb.Run, field: str
) -> None:
    stub = _stub(runhistory)
    request = pb.LogRunRequest(run=run)
    with pytest.raises(grpc.RpcError) as err:
        stub.LogRun(request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    named = validation.message_violations(request)
    assert [v.field for v in named] == [field]
    assert _violations(err.value) == _as_sent(named)
    batch = pb.BatchLogRunsRequest(runs=[_rich_run(), run])
    batch.runs[0].run_id = "fine"
    with pytest.raises(grpc.RpcError) as err:
        stub.BatchLogRuns(batch)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    named = validation.message_violations(batch)
    assert [v.field for v in named] == [field.replace("run.", "runs[1].", 1)]
    assert _violations(err.value) == _as_sent(named)
    with pytest.raises(grpc.RpcError) as missing:
        stub.GetRun(pb.GetRunRequest(wpk_id="w", run_id="fine"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def _count_sends(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the statements storage sends in pipelined transactions (Postgres)."""
    sent = [0]
    real = db_module._PgTx.send

    def send(self: Any, *args: Any, **kw: Any) -> Any:
        sent[0] += 1
        return real(self, *args, **kw)

    monkeypatch.setattr(db_module._PgTx, "send", send)
    return sent


def test_a_bad_run_late_in_a_large_batch_stores_nothing_and_is_named(
    runhistory: App, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage, "CHUNK_RUNS", 3)
    sent = _count_sends(monkeypatch)
    runs = [_rich_run() for _ in range(12)]
    for i, run in enumerate(runs):
        run.run_id = f"r{i}"
    runs[10].node_logs[0].output.update({"v": math.nan})
    stub = _stub(runhistory)
    with pytest.raises(grpc.RpcError) as err:
        stub.BatchLogRuns(pb.BatchLogRunsRequest(runs=runs))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(err.value) == ["runs[10].node_logs[0].output.v"]
    if backend == "postgres":  # the first runs' statements were sent before run 10 was read
        assert sent[0] == 3
    assert _stored(runhistory) == (0, 0)
    # The connection it rolled back on serves the next batch.
    runs[10].node_logs[0].output.update({"v": 1})
    results = stub.BatchLogRuns(pb.BatchLogRunsRequest(runs=runs)).results
    assert [r.created for r in results] == [True] * 12
    assert _stored(runhistory) == (12, 1)


def _stored(app: App) -> tuple[int, int]:
    """Runs and outbox rows in the app's database."""
    assert app.db is not None
    with app.db.transaction(write=False) as tx:
        runs = tx.execute("SELECT COUNT(*) AS n FROM workflow_runs")[0]["n"]
        notes = tx.execute("SELECT COUNT(*) AS n FROM outbox")[0]["n"]
    return int(runs), int(notes)


# ------------------------------------------------- pipelined batches (Postgres)


@pytest.fixture
def pg(pg_schema_factory: Callable[[], str]) -> Iterator[tuple[PostgresDatabase, str]]:
    dsn = pg_schema_factory()
    database = PostgresDatabase(dsn)
    migrate(database)
    yield database, dsn
    database.close()


def test_a_sent_statement_runs_before_its_rows_are_read(
    pg: tuple[PostgresDatabase, str],
) -> None:
    """psycopg flushes a pipelined statement to the server when it is sent: the server
    takes the lock the statement asks for while the sender has not read its rows."""
    db, dsn = pg
    key = 40_512
    held = "SELECT COUNT(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND objid = %s"
    with db.transaction(pipeline=True) as tx, psycopg.connect(dsn, autocommit=True) as other:
        pending = tx.send("SELECT pg_advisory_xact_lock(%s) AS locked", [key])
        wait_for(lambda: other.execute(held, [key]).fetchone() == (1,))
        assert len(pending.rows()) == 1


def test_a_batch_in_several_statements_is_one_transaction(
    pg: tuple[PostgresDatabase, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    db, _ = pg
    monkeypatch.setattr(storage, "CHUNK_RUNS", 4)
    sent = _count_sends(monkeypatch)
    store = RunStore(db, embeddings_enabled=False)
    store.insert([NewRun(wpk_id="a", run_id="r10", status="completed")])
    runs = [
        NewRun(wpk_id="ab"[i % 2], run_id=f"r{i}", status="completed", outputs={"i": i})
        for i in range(11)
    ]
    runs.append(runs[4])  # a repeat inside the batch
    results = store.insert(runs)
    assert sent[0] == 3  # 4 + 4 + 3 runs
    assert [r.created for r in results] == [i < 10 for i in range(12)]
    assert results[11].id == results[4].id
    with db.transaction(write=False) as tx:
        rows = tx.execute(
            "SELECT xmin::text AS tx, COUNT(*) AS n FROM workflow_runs"
            " WHERE run_id <> 'r10' GROUP BY xmin::text"
        )
        assert [int(r["n"]) for r in rows] == [10]  # all stored by one transaction
        notes = tx.execute("SELECT xmin::text AS tx, payload FROM outbox ORDER BY created_at")
    batch_notes = [n for n in notes if n["tx"] == rows[0]["tx"]]
    # Each workflow's newest new run (r10 was stored before).
    assert sorted((n["payload"]["workflow_id"], n["payload"]["run_id"]) for n in batch_notes) == [
        ("a", "r8"),
        ("b", "r9"),
    ]
    stored = {r.run_id: r for r in results}
    note = next(n["payload"] for n in batch_notes if n["payload"]["workflow_id"] == "a")
    assert note["id"] == stored["r8"].id
    assert datetime.fromisoformat(note["created_at"]) == stored["r8"].created_at


def test_a_pipelined_batch_answers_a_run_a_concurrent_call_stored_meanwhile(
    pg: tuple[PostgresDatabase, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other call's row is committed while the batch's statement waits on it, after
    that statement's snapshot: the batch answers created=false with the stored id."""
    db, dsn = pg
    monkeypatch.setattr(storage, "CHUNK_RUNS", 3)
    sent = _count_sends(monkeypatch)
    store = RunStore(db, embeddings_enabled=False)
    runs = [NewRun(wpk_id="w", run_id=f"r{i}", status="completed") for i in range(10)]
    theirs = str(uuid.uuid4())
    results: list[LogResult] = []
    with psycopg.connect(dsn) as other, psycopg.connect(dsn, autocommit=True) as watch:
        other.execute(
            "INSERT INTO workflow_runs (id, wpk_id, run_id, status) VALUES (%s, 'w', 'r5', 'failed')",
            [theirs],
        )
        worker = threading.Thread(target=lambda: results.extend(store.insert(runs)))
        worker.start()
        blocked = "SELECT COUNT(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))"
        wait_for(lambda: watch.execute(blocked, [other.info.backend_pid]).fetchone() == (1,))
        other.commit()
        worker.join(30)
    assert sent[0] == 4
    assert [r.created for r in results] == [i != 5 for i in range(10)]
    assert results[5].id == theirs
    got = store.get("w", "r5")
    assert got is not None and got.status == "failed"


def test_a_serving_process_freezes_its_startup_objects_and_still_collects_cycles() -> None:
    before = gc.get_threshold()
    try:
        tune_collector()
        assert gc.get_threshold() == (YOUNG_COLLECTION, *before[1:])
        assert gc.get_freeze_count() > 0

        class Node:
            other: Any = None

        a, b = Node(), Node()
        a.other, b.other = b, a
        gone = weakref.ref(a)
        del a, b
        gc.collect()
        assert gone() is None  # a cycle made after start-up is still collected
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_a_pipelined_batch_failing_while_read_rolls_back_and_its_connection_serves_on(
    pg_schema_factory: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    db = PostgresDatabase(pg_schema_factory(), max_size=1)  # one connection: the same one after
    try:
        migrate(db)
        monkeypatch.setattr(storage, "CHUNK_RUNS", 2)
        sent = _count_sends(monkeypatch)
        store = RunStore(db, embeddings_enabled=False)

        def runs() -> Iterator[NewRun]:
            for i in range(7):
                if i == 5:  # read while the statement of runs 2-3 is in flight
                    raise convert.NotValid("holds nan")
                yield NewRun(wpk_id="w", run_id=f"r{i}", status="completed")

        with pytest.raises(convert.NotValid):
            store.insert(runs())
        assert sent[0] == 2
        again = [NewRun(wpk_id="w", run_id=f"r{i}", status="completed") for i in range(3)]
        assert [r.created for r in store.insert(again)] == [True] * 3
        with db.transaction(write=False) as tx:
            assert tx.execute("SELECT COUNT(*) AS n FROM workflow_runs")[0]["n"] == 3
            assert tx.execute("SELECT COUNT(*) AS n FROM outbox")[0]["n"] == 1
    finally:
        db.close()
