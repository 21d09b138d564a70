"""RunHistoryService through a real server on a free port (SQLite and Postgres)."""

from __future__ import annotations

import json

import grpc
import pytest
from google.protobuf import struct_pb2
from neuralops.runhistory.v1 import runhistory_pb2 as pb
from neuralops.runhistory.v1 import runhistory_pb2_grpc
from neuralops.servers.runtime.app import App
from neuralops.servers.runtime.config import Config
from neuralops.servers.runtime.db import json_value

from tests.conftest import free_port
from tests.helpers import error_reason, field_violations


def _stub(app: App) -> runhistory_pb2_grpc.RunHistoryServiceStub:
    return runhistory_pb2_grpc.RunHistoryServiceStub(
        grpc.insecure_channel(app.address("runhistory"))
    )


def _run(run_id: str, wpk_id: str = "test", text: str = "ok") -> pb.Run:
    outputs = struct_pb2.Struct()
    outputs.update({"text": text})
    return pb.Run(
        wpk_id=wpk_id,
        run_id=run_id,
        outputs=outputs,
        status=pb.RUN_STATUS_COMPLETED,
        duration_ms=123,
        node_logs=[pb.NodeLog(name="plan", status=pb.RUN_STATUS_COMPLETED, duration_ms=4, step=1)],
    )


def test_log_run_twice_stores_one_row(stack: App) -> None:
    stub = _stub(stack)
    first = stub.LogRun(pb.LogRunRequest(run=_run("r1")))
    again = stub.LogRun(pb.LogRunRequest(run=_run("r1")))
    assert first.created is True and again.created is False
    assert again.id == first.id
    assert stack.db is not None
    with stack.db.transaction(write=False) as tx:
        assert tx.execute("SELECT COUNT(*) AS n FROM workflow_runs")[0]["n"] == 1


def test_get_run_returns_what_was_logged(stack: App) -> None:
    stub = _stub(stack)
    logged = stub.LogRun(pb.LogRunRequest(run=_run("r1", text="hello")))
    run = stub.GetRun(pb.GetRunRequest(wpk_id="test", run_id="r1")).run
    assert run.id == logged.id
    assert run.outputs["text"] == "hello"
    assert run.status == pb.RUN_STATUS_COMPLETED
    assert run.duration_ms == 123
    assert [(n.name, n.step, n.status, n.duration_ms) for n in run.node_logs] == [
        ("plan", 1, pb.RUN_STATUS_COMPLETED, 4)
    ]
    assert run.created_at.seconds > 0
    assert run.embedding_status == pb.EMBEDDING_STATUS_SKIPPED


def test_batch_log_runs_answers_per_run_in_order(stack: App) -> None:
    stub = _stub(stack)
    stub.LogRun(pb.LogRunRequest(run=_run("b")))
    reply = stub.BatchLogRuns(
        pb.BatchLogRunsRequest(runs=[_run("a"), _run("b"), _run("c"), _run("a")])
    )
    assert [(r.run_id, r.created) for r in reply.results] == [
        ("a", True),
        ("b", False),
        ("c", True),
        ("a", False),
    ]
    assert reply.results[3].id == reply.results[0].id


@pytest.mark.parametrize(
    ("run", "fields"),
    [
        (pb.Run(run_id="r", status=pb.RUN_STATUS_COMPLETED), ["run.wpk_id"]),
        (pb.Run(wpk_id="w", status=pb.RUN_STATUS_COMPLETED), ["run.run_id"]),
        (pb.Run(wpk_id="w", run_id="r"), ["run.status"]),
        (
            pb.Run(wpk_id="w", run_id="r", status=pb.RUN_STATUS_FAILED, duration_ms=-1),
            ["run.duration_ms"],
        ),
        (pb.Run(wpk_id="w" * 201, run_id="r", status=pb.RUN_STATUS_FAILED), ["run.wpk_id"]),
        (
            pb.Run(wpk_id="w", run_id="r", status=pb.RUN_STATUS_FAILED, node_logs=[pb.NodeLog()]),
            ["run.node_logs[0].name"],
        ),
    ],
)
def test_invalid_runs_are_invalid_argument_naming_the_field(
    stack: App, run: pb.Run, fields: list[str]
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        _stub(stack).LogRun(pb.LogRunRequest(run=run))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(err.value) == fields
    assert fields[0] in (err.value.details() or "")


def test_one_bad_run_fails_the_batch_and_stores_nothing(stack: App) -> None:
    stub = _stub(stack)
    with pytest.raises(grpc.RpcError) as err:
        stub.BatchLogRuns(pb.BatchLogRunsRequest(runs=[_run("ok"), pb.Run(wpk_id="w", run_id="x")]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(err.value) == ["runs[1].status"]
    with pytest.raises(grpc.RpcError) as missing:
        stub.GetRun(pb.GetRunRequest(wpk_id="test", run_id="ok"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def test_empty_and_oversized_batches_are_refused(stack: App) -> None:
    stub = _stub(stack)
    for runs in ([], [_run(f"r{i}") for i in range(501)]):
        with pytest.raises(grpc.RpcError) as err:
            stub.BatchLogRuns(pb.BatchLogRunsRequest(runs=runs))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field_violations(err.value) == ["runs"]


def test_get_missing_run_is_not_found(stack: App) -> None:
    with pytest.raises(grpc.RpcError) as err:
        _stub(stack).GetRun(pb.GetRunRequest(wpk_id="test", run_id="nope"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_reason(err.value) == "RUN_NOT_FOUND"


def test_get_run_without_ids_names_both_fields(stack: App) -> None:
    with pytest.raises(grpc.RpcError) as err:
        _stub(stack).GetRun(pb.GetRunRequest())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(err.value) == ["wpk_id", "run_id"]


def test_search_without_embeddings_is_failed_precondition(stack: App) -> None:
    with pytest.raises(grpc.RpcError) as err:
        _stub(stack).SearchRuns(pb.SearchRunsRequest(text="anything"))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "OPENAI_KEY" in (err.value.details() or "")


def test_database_down_is_unavailable_not_a_crash(tmp_path: object) -> None:
    """A Postgres nobody listens on: the server starts, answers UNAVAILABLE, keeps serving."""
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/test?connect_timeout=1"
    app = App(
        Config(postgres_dsn=dead, data_dir=tmp_path / "d", metrics_port=0, db_timeout_s=1.0),  # type: ignore[operator]
        services=("runhistory",),
        ports={"runhistory": 0},
        run_migrations=False,
    )
    app.start()
    try:
        stub = _stub(app)
        for _ in range(2):
            with pytest.raises(grpc.RpcError) as err:
                stub.LogRun(pb.LogRunRequest(run=_run("r1")), timeout=30)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert error_reason(err.value) == "DATABASE_UNAVAILABLE"
            assert "database unavailable" in (err.value.details() or "")
    finally:
        app.stop(grace=0.5)


def _stored_node_logs(app: App, run_id: str) -> list[dict[str, object]]:
    assert app.db is not None
    with app.db.transaction(write=False) as tx:
        rows = tx.execute("SELECT node_logs FROM workflow_runs WHERE run_id = %s", (run_id,))
    return list(json_value(rows[0]["node_logs"]))


def test_unspecified_node_status_is_stored_as_empty_text_and_old_rows_still_read(
    stack: App,
) -> None:
    stub = _stub(stack)
    run = _run("r1")
    run.node_logs.append(pb.NodeLog(name="untold", duration_ms=1))  # status 0
    stub.LogRun(pb.LogRunRequest(run=run))
    stored = _stored_node_logs(stack, "r1")
    assert [n["status"] for n in stored] == ["completed", ""]
    got = stub.GetRun(pb.GetRunRequest(wpk_id="test", run_id="r1")).run
    assert [n.status for n in got.node_logs] == [pb.RUN_STATUS_COMPLETED, pb.RUN_STATUS_UNSPECIFIED]

    # Rows written before the rule spelled status 0 "unspecified" (and older ones the
    # proto name): both still read, through the same codec.
    stored[0]["status"], stored[1]["status"] = "RUN_STATUS_FAILED", "unspecified"
    assert stack.db is not None
    cast = "::jsonb" if stack.db.dialect == "postgres" else ""
    with stack.db.transaction() as tx:
        tx.execute(
            f"UPDATE workflow_runs SET node_logs = %s{cast} WHERE run_id = %s",
            (json.dumps(stored), "r1"),
        )
    got = stub.GetRun(pb.GetRunRequest(wpk_id="test", run_id="r1")).run
    assert [n.status for n in got.node_logs] == [pb.RUN_STATUS_FAILED, pb.RUN_STATUS_UNSPECIFIED]


def test_list_runs_status_unspecified_means_any_and_a_status_filters(stack: App) -> None:
    stub = _stub(stack)
    failed = _run("f")
    failed.status = pb.RUN_STATUS_FAILED
    stub.BatchLogRuns(pb.BatchLogRunsRequest(runs=[_run("c"), failed]))
    every = stub.ListRuns(pb.ListRunsRequest(wpk_id="test", status=pb.RUN_STATUS_UNSPECIFIED))
    assert sorted(r.run_id for r in every.runs) == ["c", "f"]
    only = stub.ListRuns(pb.ListRunsRequest(wpk_id="test", status=pb.RUN_STATUS_FAILED))
    assert [(r.run_id, r.status) for r in only.runs] == [("f", pb.RUN_STATUS_FAILED)]


def test_one_validation_pass_names_every_bad_field_once(stack: App) -> None:
    # All of RunHistory's rules live in its validation module, so one bad request
    # names each faulty field, ids and run fields alike, exactly once.
    run = pb.Run(wpk_id=" ", run_id="r" * 201, duration_ms=-1, node_logs=[pb.NodeLog()])
    with pytest.raises(grpc.RpcError) as err:
        _stub(stack).LogRun(pb.LogRunRequest(run=run))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(err.value) == [
        "run.wpk_id",
        "run.run_id",
        "run.status",
        "run.duration_ms",
        "run.node_logs[0].name",
    ]
    unknown = pb.Run(wpk_id="w", run_id="r")
    unknown.status = 99  # type: ignore[assignment]  # a value from a newer contract
    with pytest.raises(grpc.RpcError) as err:
        _stub(stack).LogRun(pb.LogRunRequest(run=unknown))
    assert field_violations(err.value) == ["run.status"]
