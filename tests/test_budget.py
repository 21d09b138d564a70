"""The in-flight byte budget: over it, RESOURCE_EXHAUSTED with a retry hint, and the
hook's sender, which treats that as transient, still delivers every run."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import psycopg
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from neuralops.clients.delivery import RunSender
from neuralops.runhistory.v1 import runhistory_pb2 as pb
from neuralops.runhistory.v1 import runhistory_pb2_grpc
from neuralops.servers.runtime.app import App
from neuralops.servers.runtime.budget import InflightBudget
from neuralops.servers.runtime.config import Config
from neuralops.servers.tooling.processes import free_port

from tests.helpers import wait_for


def _run(run_id: str, text: str = "ok") -> pb.Run:
    run = pb.Run(wpk_id="budget", run_id=run_id, status=pb.RUN_STATUS_COMPLETED)
    run.outputs.update({"text": text})
    return run


@contextlib.contextmanager
def _writes_blocked(config: Config) -> Iterator[None]:
    """Hold the runs table so a write waits inside its handler (still in flight)."""
    if config.postgres_dsn:
        with psycopg.connect(config.postgres_dsn) as conn:
            conn.execute("LOCK TABLE workflow_runs IN SHARE ROW EXCLUSIVE MODE")
            yield
            conn.rollback()
    else:
        lite = sqlite3.connect(config.sqlite_path, isolation_level=None)
        lite.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            lite.execute("ROLLBACK")
            lite.close()


def test_budget_refuses_past_its_bytes_and_admits_a_call_alone() -> None:
    budget = InflightBudget(100_000, max_message_bytes=1_000_000)
    first = budget.reserve()
    assert first is not None
    assert budget.reserve() is None  # a cold server reserves the largest message
    assert budget.admit(first, 150_000)  # alone in flight: admitted though past the budget
    budget.release(150_000)
    for _ in range(10):  # the reservation shrinks toward what calls really send
        t = budget.reserve()
        assert t is not None
        assert budget.admit(t, 1000)
        budget.release(1000)
    a, b = budget.reserve(), budget.reserve()
    assert a is not None and b is not None
    assert budget.admit(a, 60_000)
    assert not budget.admit(b, 60_000)  # its real size takes the total past the budget
    assert budget.reserve() is None  # and while 60 KB are held, another 60 KB is not let in
    budget.release(60_000)
    assert budget.admitted == 0 and budget.peak == 150_000 and budget.refused == 3


def test_over_budget_calls_get_resource_exhausted_and_the_sender_delivers_all(
    config: Config, tmp_path: Path
) -> None:
    app = App(
        # No registry runs here: its notices wait in the outbox, on a port nobody serves.
        config.with_(max_inflight_bytes=64 * 1024, registry_addr=f"localhost:{free_port()}"),
        services=("runhistory",),
        ports={"runhistory": 0},
    ).start()
    try:
        address = app.address("runhistory")
        stub = runhistory_pb2_grpc.RunHistoryServiceStub(grpc.insecure_channel(address))
        sender = RunSender(address, spool_dir=tmp_path / "spool", retry_s=0.2, max_retry_s=0.5)
        with _writes_blocked(config):
            blocked = threading.Thread(
                target=lambda: stub.BatchLogRuns(
                    pb.BatchLogRunsRequest(runs=[_run("first")]), timeout=60
                )
            )
            blocked.start()
            wait_for(lambda: app.budget.admitted > 0)

            with pytest.raises(grpc.RpcError) as err:
                stub.LogRun(pb.LogRunRequest(run=_run("refused")), timeout=10)
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "in-flight budget" in (err.value.details() or "")
            status = rpc_status.from_call(err.value)  # type: ignore[arg-type]
            assert status is not None
            hints = [d for d in status.details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)]
            assert len(hints) == 1

            # The hook's sender meets the same answer while the first call holds the budget.
            for i in range(40):
                sender.submit(_run(f"r{i}", "x" * 2000))
            assert sender.flush(20)
            assert sender.spooled > 0 and sender.delivered == 0
        blocked.join(60)

        def stored() -> int:
            assert app.db is not None
            with app.db.transaction(write=False) as tx:
                rows = tx.execute("SELECT run_id FROM workflow_runs WHERE wpk_id = 'budget'")
            return len({r["run_id"] for r in rows} & {f"r{i}" for i in range(40)})

        wait_for(lambda: sender.delivered >= 40, timeout=30)  # replayed from the spool
        assert stored() == 40
        sender.close()
    finally:
        app.stop(grace=1.0)
