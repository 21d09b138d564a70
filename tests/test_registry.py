"""RegistryService through real servers, on SQLite and Postgres."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from google.protobuf import timestamp_pb2
from neuralops.registry.v1 import registry_pb2 as rpb
from neuralops.registry.v1 import registry_pb2_grpc
from neuralops.runhistory.v1 import runhistory_pb2 as pb
from neuralops.runhistory.v1 import runhistory_pb2_grpc
from neuralops.servers.registry.model import RunNotice
from neuralops.servers.registry.storage import RegistryStore
from neuralops.servers.runtime import metrics, outbox
from neuralops.servers.runtime.app import App
from neuralops.servers.runtime.config import Config
from neuralops.servers.runtime.db import Database

from tests.conftest import free_port
from tests.helpers import error_reason, field_violations, wait_for
from tests.procs import ServerProcess, grpcurl


def _registry(app: App) -> registry_pb2_grpc.RegistryServiceStub:
    return registry_pb2_grpc.RegistryServiceStub(grpc.insecure_channel(app.address("registry")))


def _history(addr: str) -> runhistory_pb2_grpc.RunHistoryServiceStub:
    return runhistory_pb2_grpc.RunHistoryServiceStub(grpc.insecure_channel(addr))


def _run(
    wpk_id: str, run_id: str, status: pb.RunStatus.ValueType = pb.RUN_STATUS_COMPLETED
) -> pb.Run:
    return pb.Run(wpk_id=wpk_id, run_id=run_id, status=status, duration_ms=7)


def _ts(dt: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(dt)
    return ts


def _code(call: Callable[[], object]) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as err:
        call()
    code: grpc.StatusCode = err.value.code()
    return code


def test_create_get_and_duplicate(stack: App) -> None:
    reg = _registry(stack)
    made = reg.CreateWorkflow(
        rpb.CreateWorkflowRequest(workflow=rpb.Workflow(workflow_id="billing", description="bills"))
    ).workflow
    assert made.name == "billing" and made.description == "bills" and made.latest_run_id == ""
    got = reg.GetWorkflow(rpb.GetWorkflowRequest(workflow_id="billing")).workflow
    assert got == made
    with pytest.raises(grpc.RpcError) as err:
        reg.CreateWorkflow(rpb.CreateWorkflowRequest(workflow=rpb.Workflow(workflow_id="billing")))
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS


def test_unknown_workflow_is_not_found(stack: App) -> None:
    reg = _registry(stack)
    with pytest.raises(grpc.RpcError) as err:
        reg.GetWorkflow(rpb.GetWorkflowRequest(workflow_id="nope"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_reason(err.value) == "WORKFLOW_NOT_FOUND"
    assert _code(lambda: reg.ListWorkflowRuns(rpb.ListWorkflowRunsRequest(workflow_id="nope"))) == (
        grpc.StatusCode.NOT_FOUND
    )


def test_missing_ids_are_invalid_argument(stack: App) -> None:
    reg = _registry(stack)
    with pytest.raises(grpc.RpcError) as err:
        reg.CreateWorkflow(rpb.CreateWorkflowRequest(workflow=rpb.Workflow()))
    assert field_violations(err.value) == ["workflow.workflow_id"]
    with pytest.raises(grpc.RpcError) as err:
        reg.NotifyRun(rpb.NotifyRunRequest(workflow_id="w"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(err.value) == ["run_id"]
    with pytest.raises(grpc.RpcError) as err:
        reg.NotifyRun(rpb.NotifyRunRequest(workflow_id=" ", run_id="r" * 201))
    assert field_violations(err.value) == ["workflow_id", "run_id"]


def test_list_workflows_pages_through_all(stack: App) -> None:
    reg = _registry(stack)
    for i in range(7):
        reg.CreateWorkflow(rpb.CreateWorkflowRequest(workflow=rpb.Workflow(workflow_id=f"wf-{i}")))
    seen, token = [], ""
    while True:
        page = reg.ListWorkflows(rpb.ListWorkflowsRequest(page_size=3, page_token=token))
        seen += [w.workflow_id for w in page.workflows]
        token = page.next_page_token
        if not token:
            break
    assert seen == [f"wf-{i}" for i in range(7)]


def _token(data: Mapping[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def test_list_workflows_tokens_keep_their_format_and_forged_ones_are_invalid(stack: App) -> None:
    reg = _registry(stack)
    for i in range(3):
        reg.CreateWorkflow(rpb.CreateWorkflowRequest(workflow=rpb.Workflow(workflow_id=f"wf-{i}")))
    # A token as earlier servers wrote it still continues the listing.
    older = _token({"s": "workflows", "a": "wf-0"})
    rest = reg.ListWorkflows(rpb.ListWorkflowsRequest(page_token=older))
    assert [w.workflow_id for w in rest.workflows] == ["wf-1", "wf-2"]
    for forged in (_token({"s": "workflows"}), _token({"s": "workflows", "a": 5}), "e30"):
        with pytest.raises(grpc.RpcError) as err:
            reg.ListWorkflows(rpb.ListWorkflowsRequest(page_token=forged))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field_violations(err.value) == ["page_token"]


def test_logged_run_becomes_the_latest_run(stack: App) -> None:
    _history(stack.address("runhistory")).LogRun(pb.LogRunRequest(run=_run("test-workflow", "r1")))
    reg = _registry(stack)
    wf = wait_for(
        lambda: next(
            (
                w
                for w in reg.ListWorkflows(rpb.ListWorkflowsRequest()).workflows
                if w.latest_run_id == "r1"
            ),
            None,
        )
    )
    assert wf.workflow_id == "test-workflow"
    assert wf.latest_run_status == pb.RUN_STATUS_COMPLETED
    runs = reg.ListWorkflowRuns(rpb.ListWorkflowRunsRequest(workflow_id="test-workflow")).runs
    assert [(r.run_id, r.status, r.duration_ms) for r in runs] == [
        ("r1", pb.RUN_STATUS_COMPLETED, 7)
    ]


def test_list_workflow_runs_newest_first_default_and_cap(stack: App) -> None:
    hist = _history(stack.address("runhistory"))
    for i in range(3):
        hist.BatchLogRuns(pb.BatchLogRunsRequest(runs=[_run("w", f"r{i}-{j}") for j in range(10)]))
    reg = _registry(stack)
    page = reg.ListWorkflowRuns(rpb.ListWorkflowRunsRequest(workflow_id="w"))
    assert len(page.runs) == 20 and page.next_page_token
    assert page.runs[0].run_id == "r2-9" and page.runs[1].run_id == "r2-8"
    times = [r.created_at.ToDatetime() for r in page.runs]
    assert times == sorted(times, reverse=True)
    rest = reg.ListWorkflowRuns(
        rpb.ListWorkflowRunsRequest(workflow_id="w", page_token=page.next_page_token)
    )
    assert len(rest.runs) == 10 and rest.next_page_token == ""
    assert rest.runs[-1].run_id == "r0-0"
    with pytest.raises(grpc.RpcError) as err:
        reg.ListWorkflowRuns(rpb.ListWorkflowRunsRequest(workflow_id="w", page_size=-1))
    assert field_violations(err.value) == ["page_size"]


def test_page_size_above_the_maximum_is_capped(stack: App) -> None:
    hist = _history(stack.address("runhistory"))
    for b in range(3):
        hist.BatchLogRuns(
            pb.BatchLogRunsRequest(runs=[_run("many", f"r{b}-{i}") for i in range(400)])
        )
    reg = _registry(stack)
    page = reg.ListWorkflowRuns(rpb.ListWorkflowRunsRequest(workflow_id="many", page_size=5000))
    assert len(page.runs) == 1000 and page.next_page_token
    rest = reg.ListWorkflowRuns(
        rpb.ListWorkflowRunsRequest(
            workflow_id="many", page_size=5000, page_token=page.next_page_token
        )
    )
    assert len(rest.runs) == 200 and rest.next_page_token == ""


def test_bad_page_tokens_are_invalid_argument(stack: App) -> None:
    hist = _history(stack.address("runhistory"))
    hist.BatchLogRuns(
        pb.BatchLogRunsRequest(runs=[_run(w, f"r{i}") for w in ("a", "b") for i in range(3)])
    )
    reg = _registry(stack)
    token_a = reg.ListWorkflowRuns(
        rpb.ListWorkflowRunsRequest(workflow_id="a", page_size=1)
    ).next_page_token
    for wf, token in (("a", "garbage!"), ("a", "e30"), ("b", token_a)):
        with pytest.raises(grpc.RpcError) as err:
            reg.ListWorkflowRuns(rpb.ListWorkflowRunsRequest(workflow_id=wf, page_token=token))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field_violations(err.value) == ["page_token"]


def test_walk_sees_every_run_once_while_runs_arrive(stack: App) -> None:
    hist = _history(stack.address("runhistory"))
    before = [f"old-{i}" for i in range(240)]
    for i in range(0, len(before), 40):
        hist.BatchLogRuns(
            pb.BatchLogRunsRequest(runs=[_run("busy", r) for r in before[i : i + 40]])
        )
    stop = threading.Event()
    added: list[str] = []

    def writer() -> None:
        n = 0
        while not stop.is_set() and n < 400:
            batch = [f"new-{n + j}" for j in range(4)]
            hist.BatchLogRuns(pb.BatchLogRunsRequest(runs=[_run("busy", r) for r in batch]))
            added.extend(batch)
            n += 4

    t = threading.Thread(target=writer)
    t.start()
    reg = _registry(stack)
    seen: list[str] = []
    token = ""
    try:
        while True:
            page = reg.ListWorkflowRuns(
                rpb.ListWorkflowRunsRequest(workflow_id="busy", page_size=7, page_token=token)
            )
            seen += [r.run_id for r in page.runs]
            token = page.next_page_token
            if not token:
                break
    finally:
        stop.set()
        t.join()
    assert added, "the writer never ran during the walk"
    assert len(seen) == len(set(seen)), "a run was listed twice"
    assert [r for r in seen if r.startswith("old-")] == list(reversed(before))


def _latest(reg: registry_pb2_grpc.RegistryServiceStub, workflow_id: str) -> rpb.Workflow:
    return reg.GetWorkflow(rpb.GetWorkflowRequest(workflow_id=workflow_id)).workflow


def _latest_id(reg: registry_pb2_grpc.RegistryServiceStub, workflow_id: str) -> str:
    """The workflow's latest run id; "" while the registry does not know the workflow."""
    try:
        return _latest(reg, workflow_id).latest_run_id
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.NOT_FOUND
        return ""


def test_late_notice_of_an_older_run_changes_nothing(stack: App) -> None:
    _history(stack.address("runhistory")).BatchLogRuns(
        pb.BatchLogRunsRequest(
            runs=[_run("late", "r1"), _run("late", "r2", status=pb.RUN_STATUS_FAILED)]
        )
    )
    reg = _registry(stack)
    wait_for(lambda: _latest_id(reg, "late") == "r2")
    late = reg.NotifyRun(rpb.NotifyRunRequest(workflow_id="late", run_id="r1"))
    assert not late.updated and not late.workflow_created and late.latest_run_id == "r2"
    again = reg.NotifyRun(rpb.NotifyRunRequest(workflow_id="late", run_id="r2"))
    assert not again.updated and again.latest_run_id == "r2"
    wf = _latest(reg, "late")
    assert (wf.latest_run_id, wf.latest_run_status) == ("r2", pb.RUN_STATUS_FAILED)


def test_same_instant_the_higher_row_id_wins(db: Database) -> None:
    store = RegistryStore(db)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)

    def notice(run_id: str, row: int) -> RunNotice:
        return RunNotice(
            "tie", run_id, f"00000000-0000-4000-8000-00000000000{row}", "completed", t0
        )

    assert store.notify(notice("r2", 2)).workflow_created
    assert not store.notify(notice("r1", 1)).updated
    assert store.notify(notice("r3", 3)).updated
    assert store.notify(notice("r2", 2)).latest_run_id == "r3"


def test_forged_notice_is_refused_and_changes_nothing(stack: App) -> None:
    hist = _history(stack.address("runhistory"))
    hist.LogRun(pb.LogRunRequest(run=_run("real", "r1")))
    reg = _registry(stack)
    wait_for(lambda: _latest_id(reg, "real") == "r1")
    before = _latest(reg, "real")
    far = _ts(datetime(9999, 1, 1, tzinfo=UTC))
    forged = rpb.NotifyRunRequest(
        workflow_id="real",
        run_id="never-stored",
        id="ffffffff-ffff-4fff-bfff-ffffffffffff",
        status=pb.RUN_STATUS_FAILED,
        created_at=far,
    )
    with pytest.raises(grpc.RpcError) as err:
        reg.NotifyRun(forged)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_reason(err.value) == "RUN_NOT_FOUND"
    assert _latest(reg, "real") == before
    # A real run with a claimed time and status: the stored ones count, not the claim.
    lying = rpb.NotifyRunRequest(
        workflow_id="real", run_id="r1", status=pb.RUN_STATUS_FAILED, created_at=far
    )
    assert reg.NotifyRun(lying).latest_run_id == "r1"
    assert _latest(reg, "real") == before
    # Nothing was pinned: the next real run still becomes the latest.
    hist.LogRun(pb.LogRunRequest(run=_run("real", "r2")))
    wait_for(lambda: _latest_id(reg, "real") == "r2")
    # A workflow first seen through a forged notice is not registered.
    with pytest.raises(grpc.RpcError) as err:
        reg.NotifyRun(rpb.NotifyRunRequest(workflow_id="ghost", run_id="x", created_at=far))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert _code(lambda: _latest(reg, "ghost")) == grpc.StatusCode.NOT_FOUND


def test_notify_run_with_runhistory_down_is_unavailable(config: Config) -> None:
    registry = App(
        config.with_(runhistory_addr=f"localhost:{free_port()}"),
        services=("registry",),
        ports={"registry": 0},
    ).start()
    try:
        with pytest.raises(grpc.RpcError) as err:
            _registry(registry).NotifyRun(
                rpb.NotifyRunRequest(workflow_id="w", run_id="r1"), timeout=30
            )
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert error_reason(err.value) == "RUNHISTORY_UNAVAILABLE"
    finally:
        registry.stop(grace=1)


def test_registry_outage_loses_nothing(config: Config) -> None:
    """RunHistory keeps logging while the registry is down; when it comes back, every
    workflow ends with its right latest run."""
    registry_port = free_port()
    history = App(
        config.with_(registry_addr=f"localhost:{registry_port}"),
        services=("runhistory",),
        ports={"runhistory": 0},
        relay_backoff_s=0.5,
    ).start()
    try:
        hist = _history(history.address("runhistory"))
        expected = {}
        for w in range(5):
            for i in range(6):
                reply = hist.LogRun(pb.LogRunRequest(run=_run(f"wf-{w}", f"run-{i}")), timeout=5)
                assert reply.created
            expected[f"wf-{w}"] = "run-5"
        assert history.db is not None
        assert outbox.backlog(history.db) == 30  # all waiting, none lost

        # Let the relay fail a few rounds: every waiting row then shares one due time,
        # so the first round after the registry is back claims all 30 at once.
        time.sleep(1.5)
        notify = metrics.RPC_REQUESTS.labels(
            "neuralops.registry.v1.RegistryService", "NotifyRun", "OK"
        )
        calls_before = notify._value.get()
        registry = App(
            config.with_(runhistory_addr=history.address("runhistory")),
            services=("registry",),
            ports={"registry": registry_port},
        ).start()
        try:
            reg = _registry(registry)
            wait_for(lambda: outbox.backlog(history.db) == 0, timeout=30)  # type: ignore[arg-type]
            # Only the newest notice of each workflow needs sending: 5 calls, not 30.
            assert notify._value.get() - calls_before == 5
            for wf, run_id in expected.items():
                assert (
                    reg.GetWorkflow(rpb.GetWorkflowRequest(workflow_id=wf)).workflow.latest_run_id
                    == run_id
                )
                assert (
                    len(reg.ListWorkflowRuns(rpb.ListWorkflowRunsRequest(workflow_id=wf)).runs) == 6
                )
        finally:
            registry.stop(grace=1)
    finally:
        history.stop(grace=1)


def test_grpcurl_get_workflow_and_list_runs(config: Config, tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "srv", postgres_dsn=config.postgres_dsn).start()
    try:
        run = {
            "wpk_id": "test-workflow",
            "run_id": "r1",
            "status": "RUN_STATUS_COMPLETED",
            "duration_ms": 42,
        }
        grpcurl(
            server.address("runhistory"),
            "neuralops.runhistory.v1.RunHistoryService/LogRun",
            data={"run": run},
        )
        svc = "neuralops.registry.v1.RegistryService"

        def latest() -> str:
            out = grpcurl(
                server.address("registry"),
                f"{svc}/GetWorkflow",
                data={"workflow_id": "test-workflow"},
                check=False,
            )
            return (
                str(json.loads(out.stdout)["workflow"].get("latest_run_id", ""))
                if out.returncode == 0
                else ""
            )

        assert wait_for(latest) == "r1"
        listed = json.loads(
            grpcurl(
                server.address("registry"),
                f"{svc}/ListWorkflowRuns",
                data={"workflow_id": "test-workflow"},
            ).stdout
        )
        assert [(r["run_id"], r["status"], r["duration_ms"]) for r in listed["runs"]] == [
            ("r1", "RUN_STATUS_COMPLETED", "42")
        ]
    finally:
        server.stop()
