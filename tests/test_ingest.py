"""The ingest path's fast parts give what the plain ones give: the compiled message
converter, the fast validation pass, the one-document insert (with its escaping), the
batch of ids; and the in-flight budget charges a call for what it holds."""

from __future__ import annotations

import math
import threading
import uuid

import grpc
import pytest
from google.protobuf.message import Message
from neuralops.runhistory.v1 import runhistory_pb2 as pb
from neuralops.runhistory.v1 import runhistory_pb2_grpc
from neuralops.servers.runhistory import storage
from neuralops.servers.runhistory.model import NewRun, RunContext
from neuralops.servers.runhistory.storage import RunStore, new_ids
from neuralops.servers.runtime import convert, validation
from neuralops.servers.runtime.app import App
from neuralops.servers.runtime.budget import CHARGE_PER_BYTE
from neuralops.servers.runtime.config import Config
from neuralops.servers.runtime.db import Database
from neuralops.servers.tooling.processes import free_port

from tests.helpers import wait_for
from tests.test_budget import _writes_blocked


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
