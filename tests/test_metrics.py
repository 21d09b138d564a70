"""What the servers export to Prometheus (read from the same registry /metrics serves)."""

from __future__ import annotations

import grpc
import httpx
import pytest
from neuralops.runhistory.v1 import runhistory_pb2 as pb
from neuralops.runhistory.v1 import runhistory_pb2_grpc
from neuralops.servers.runtime.app import App
from neuralops.servers.tooling.processes import free_port
from prometheus_client import REGISTRY, start_http_server


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_rpcs_runs_and_the_outbox_are_exported(stack: App) -> None:
    stub = runhistory_pb2_grpc.RunHistoryServiceStub(
        grpc.insecure_channel(stack.address("runhistory"))
    )
    svc = "neuralops.runhistory.v1.RunHistoryService"
    ok_before = _value("neuralops_rpc_requests_total", service=svc, method="LogRun", code="OK")
    bad_before = _value(
        "neuralops_rpc_requests_total", service=svc, method="LogRun", code="INVALID_ARGUMENT"
    )
    runs_before = _value("neuralops_workflow_runs_total", wpk_id="metrics-wf", status="failed")
    stub.LogRun(
        pb.LogRunRequest(
            run=pb.Run(
                wpk_id="metrics-wf", run_id="a", status=pb.RUN_STATUS_FAILED, duration_ms=2500
            )
        )
    )
    stub.LogRun(
        pb.LogRunRequest(run=pb.Run(wpk_id="metrics-wf", run_id="a", status=pb.RUN_STATUS_FAILED))
    )
    with pytest.raises(grpc.RpcError):
        stub.LogRun(pb.LogRunRequest(run=pb.Run(run_id="x")))
    assert (
        _value("neuralops_rpc_requests_total", service=svc, method="LogRun", code="OK")
        == ok_before + 2
    )
    assert (
        _value(
            "neuralops_rpc_requests_total", service=svc, method="LogRun", code="INVALID_ARGUMENT"
        )
        == bad_before + 1
    )
    assert (
        _value("neuralops_rpc_duration_seconds_count", service=svc, method="LogRun", code="OK") >= 2
    )
    # A retried run is counted once.
    assert (
        _value("neuralops_workflow_runs_total", wpk_id="metrics-wf", status="failed")
        == runs_before + 1
    )
    assert _value("neuralops_workflow_last_run_duration_seconds", wpk_id="metrics-wf") == 2.5

    port = free_port()
    start_http_server(port, addr="127.0.0.1")
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    assert "neuralops_outbox_backlog" in text
    assert 'neuralops_workflow_run_duration_seconds_bucket{le="5.0",wpk_id="metrics-wf"}' in text


def test_workflow_label_cardinality_is_bounded() -> None:
    from neuralops.servers.runtime.metrics import OTHER, BoundedLabel

    label = BoundedLabel(limit=3)
    assert [label(v) for v in ("a", "b", "c", "d", "a", "e")] == ["a", "b", "c", OTHER, "a", OTHER]
