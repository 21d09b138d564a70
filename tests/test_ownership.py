"""Each service owns its tables and reaches the others only through their contracts."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from neuralops.registry.v1 import registry_pb2 as rpb
from neuralops.registry.v1 import registry_pb2_grpc
from neuralops.runhistory.v1 import runhistory_pb2 as pb
from neuralops.runhistory.v1 import runhistory_pb2_grpc
from neuralops.servers.app import App
from neuralops.servers.config import Config

from tests.conftest import free_port
from tests.helpers import error_reason, wait_for

ROOT = Path(__file__).resolve().parent.parent
# Who owns which table (migrations/). The outbox carries RunHistory's notices.
OWNERS = {
    "registry": {"workflows"},
    "runhistory": {"workflow_runs", "outbox"},
    "insight": {"insight_signals"},
}
_SQL_TABLE = re.compile(r"\b(?:FROM|INTO|UPDATE|JOIN|TABLE)\s+([a-z_][a-z0-9_]*)", re.I)


def _tables_named(package: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in sorted(package.rglob("*.py")):
        names = {m.group(1).lower() for m in _SQL_TABLE.finditer(path.read_text())}
        if names:
            found[str(path.relative_to(ROOT))] = names
    return found


def test_no_service_names_another_services_tables_in_sql() -> None:
    wrong = []
    for service in OWNERS:
        others = set().union(*(t for s, t in OWNERS.items() if s != service))
        for path, names in _tables_named(ROOT / "servers" / service).items():
            wrong += [f"{path} names {t}" for t in sorted(names & others)]
    assert wrong == []


def test_the_check_sees_sql_it_should_refuse() -> None:
    sample = "SELECT id FROM workflow_runs WHERE wpk_id = %s; INSERT INTO workflows (id)"
    assert {m.group(1) for m in _SQL_TABLE.finditer(sample)} == {"workflow_runs", "workflows"}


@pytest.fixture
def split(backend: str, tmp_path: Path, pg_schema_factory: object) -> Iterator[tuple[App, App]]:
    """RunHistory and the Registry, each in its own database (two SQLite files or two
    Postgres schemas), knowing each other only by address. The Registry's database has
    no workflow_runs table at all."""

    def cfg(name: str) -> Config:
        dsn = pg_schema_factory() if backend == "postgres" else None  # type: ignore[operator]
        return Config(postgres_dsn=dsn, data_dir=tmp_path / name, metrics_port=0)

    ports = {"runhistory": free_port(), "registry": free_port()}
    addrs = {f"{s}_addr": f"localhost:{p}" for s, p in ports.items()}
    history = App(
        cfg("history").with_(**addrs), ("runhistory",), ports=ports, relay_backoff_s=0.5
    ).start()
    registry = App(cfg("registry").with_(**addrs), ("registry",), ports=ports).start()
    assert registry.db is not None and history.db is not None
    with registry.db.transaction() as tx:
        tx.execute("DROP TABLE workflow_runs")
    yield history, registry
    registry.stop(grace=1)
    history.stop(grace=1)


def test_services_on_separate_databases(split: tuple[App, App]) -> None:
    history, registry = split
    hist = runhistory_pb2_grpc.RunHistoryServiceStub(
        grpc.insecure_channel(history.address("runhistory"))
    )
    reg = registry_pb2_grpc.RegistryServiceStub(grpc.insecure_channel(registry.address("registry")))
    runs = [
        pb.Run(wpk_id="apart", run_id=f"r{i}", status=pb.RUN_STATUS_COMPLETED, thread_id=t)
        for i, t in enumerate(["t1", "t2", "t1", "t2", "t1"])
    ]
    hist.BatchLogRuns(pb.BatchLogRunsRequest(runs=runs))

    def latest() -> str:
        try:
            req = rpb.GetWorkflowRequest(workflow_id="apart")
            return reg.GetWorkflow(req).workflow.latest_run_id
        except grpc.RpcError:
            return ""

    assert wait_for(lambda: latest() == "r4")
    seen, token = [], ""
    while True:
        page = reg.ListWorkflowRuns(
            rpb.ListWorkflowRunsRequest(workflow_id="apart", page_size=2, page_token=token)
        )
        seen += [r.run_id for r in page.runs]
        if not (token := page.next_page_token):
            break
    assert seen == ["r4", "r3", "r2", "r1", "r0"]
    one_thread = reg.ListWorkflowRuns(
        rpb.ListWorkflowRunsRequest(workflow_id="apart", thread_id="t2")
    ).runs
    assert [(r.run_id, r.thread_id) for r in one_thread] == [("r3", "t2"), ("r1", "t2")]
    forged = rpb.NotifyRunRequest(workflow_id="apart", run_id="r99")
    with pytest.raises(grpc.RpcError) as err:
        reg.NotifyRun(forged)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert latest() == "r4"
    # Each service wrote only its own tables.
    assert history.db is not None and registry.db is not None
    with history.db.transaction(write=False) as tx:
        assert tx.execute("SELECT COUNT(*) AS n FROM workflows")[0]["n"] == 0
    with registry.db.transaction(write=False) as tx:
        assert tx.execute("SELECT COUNT(*) AS n FROM workflows")[0]["n"] == 1


def test_list_workflow_runs_with_runhistory_down_is_unavailable(split: tuple[App, App]) -> None:
    history, registry = split
    reg = registry_pb2_grpc.RegistryServiceStub(grpc.insecure_channel(registry.address("registry")))
    reg.CreateWorkflow(rpb.CreateWorkflowRequest(workflow=rpb.Workflow(workflow_id="lonely")))
    history.stop(grace=0)
    with pytest.raises(grpc.RpcError) as err:
        reg.ListWorkflowRuns(rpb.ListWorkflowRunsRequest(workflow_id="lonely"), timeout=30)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_reason(err.value) == "RUNHISTORY_UNAVAILABLE"
