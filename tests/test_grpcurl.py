"""The real `neuralops serve` process driven by the real grpcurl binary."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from neuralops.runhistory.v1 import runhistory_pb2 as pb
from neuralops.runhistory.v1 import runhistory_pb2_grpc

from tests.openai_server import OpenAIServer
from tests.procs import ServerProcess, grpcurl

RH = "neuralops.runhistory.v1.RunHistoryService"
SEED_RUN = {
    "wpk_id": "test",
    "run_id": "r1",
    "inputs": {},
    "outputs": {"text": "ok"},
    "status": "RUN_STATUS_COMPLETED",
    "node_logs": [],
    "duration_ms": 123,
}


@pytest.fixture
def server(config: object, tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path / "srv", postgres_dsn=config.postgres_dsn).start()  # type: ignore[attr-defined]
    yield proc
    proc.stop()


def test_list_shows_the_three_part_service_name(server: ServerProcess) -> None:
    out = grpcurl(server.address("runhistory"), "list").stdout.split()
    assert RH in out
    assert "grpc.health.v1.Health" in out


def test_describe_shows_the_contract_documentation(server: ServerProcess) -> None:
    out = grpcurl(server.address("runhistory"), "describe", RH).stdout
    assert "rpc LogRun ( .neuralops.runhistory.v1.LogRunRequest )" in out
    assert "Idempotent" in out or "idempotent" in out
    msg = grpcurl(
        server.address("runhistory"), "describe", "neuralops.runhistory.v1.LogRunRequest"
    ).stdout
    assert ".neuralops.runhistory.v1.Run run = 1;" in msg
    method = grpcurl(server.address("runhistory"), "describe", f"{RH}.LogRun").stdout
    assert "// LogRun stores one run." in method


def test_log_run_then_get_run(server: ServerProcess) -> None:
    addr = server.address("runhistory")
    first = json.loads(grpcurl(addr, f"{RH}/LogRun", data={"run": SEED_RUN}).stdout)
    assert first["created"] is True and first["run_id"] == "r1" and len(first["id"]) == 36
    again = json.loads(grpcurl(addr, f"{RH}/LogRun", data={"run": SEED_RUN}).stdout)
    assert again["id"] == first["id"] and "created" not in again  # false is the default: omitted
    got = json.loads(grpcurl(addr, f"{RH}/GetRun", data={"wpk_id": "test", "run_id": "r1"}).stdout)
    assert got["run"]["id"] == first["id"]
    assert got["run"]["outputs"] == {"text": "ok"}
    assert got["run"]["status"] == "RUN_STATUS_COMPLETED"
    assert got["run"]["duration_ms"] == "123"


def test_bad_input_shows_the_field_and_status(server: ServerProcess) -> None:
    proc = grpcurl(
        server.address("runhistory"), f"{RH}/LogRun", data={"run": {"run_id": "x"}}, check=False
    )
    assert proc.returncode != 0
    assert "InvalidArgument" in proc.stderr
    assert "run.wpk_id" in proc.stderr


def test_health_reports_serving(server: ServerProcess) -> None:
    out = grpcurl(
        server.address("runhistory"), "grpc.health.v1.Health/Check", data={"service": RH}
    ).stdout
    assert json.loads(out) == {"status": "SERVING"}


def test_sigterm_lets_in_flight_calls_finish(config: object, tmp_path: Path) -> None:
    fake = OpenAIServer()
    fake.delay_s = 1.5
    proc = ServerProcess(
        tmp_path / "srv",
        postgres_dsn=config.postgres_dsn,  # type: ignore[attr-defined]
        services="runhistory",
        extra_env={"OPENAI_API_KEY": "k", "OPENAI_BASE_URL": fake.base_url},
    ).start()
    try:
        stub = runhistory_pb2_grpc.RunHistoryServiceStub(
            grpc.insecure_channel(proc.address("runhistory"))
        )
        result: dict[str, object] = {}

        def slow_call() -> None:
            try:
                result["reply"] = stub.SearchRuns(pb.SearchRunsRequest(text="hello"), timeout=20)
            except grpc.RpcError as exc:
                result["error"] = exc

        t = threading.Thread(target=slow_call)
        t.start()
        while not fake.requests:  # the call is now inside the server
            threading.Event().wait(0.02)
        code = proc.stop(signal.SIGTERM)
        t.join(20)
        assert "error" not in result, result.get("error")
        assert isinstance(result["reply"], pb.SearchRunsResponse)
        assert code == 0
        assert "draining in-flight calls" in proc.log.read_text()
    finally:
        proc.stop()
        fake.close()
