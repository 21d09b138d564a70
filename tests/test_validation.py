"""Malformed input answers INVALID_ARGUMENT naming the field, on both backends; NUL in
free text reads back exactly as sent (the text rule in the protos)."""

from __future__ import annotations

import base64
import json
import math
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from neuralops.insight.v1 import insight_pb2, insight_pb2_grpc
from neuralops.registry.v1 import registry_pb2, registry_pb2_grpc
from neuralops.runhistory.v1 import runhistory_pb2 as pb
from neuralops.runhistory.v1 import runhistory_pb2_grpc
from neuralops.servers.runtime.app import App
from neuralops.servers.runtime.config import Config

from tests.helpers import field_violations


def _rh(app: App) -> runhistory_pb2_grpc.RunHistoryServiceStub:
    return runhistory_pb2_grpc.RunHistoryServiceStub(
        grpc.insecure_channel(app.address("runhistory"))
    )


def _reg(app: App) -> registry_pb2_grpc.RegistryServiceStub:
    return registry_pb2_grpc.RegistryServiceStub(grpc.insecure_channel(app.address("registry")))


def _invalid(call: object, request: object) -> list[str]:
    with pytest.raises(grpc.RpcError) as err:
        call(request)  # type: ignore[operator]
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    return field_violations(err.value)


def test_nul_in_free_text_reads_back_exactly(stack: App) -> None:
    stub = _rh(stack)
    inputs = struct_pb2.Struct()
    inputs.update({"k\x00ey": "a\x00b \u2400 \u241b \u241b\u2400", "list": ["\x00", 1.5]})
    run = pb.Run(
        wpk_id="w",
        run_id="nul",
        status=pb.RUN_STATUS_FAILED,
        inputs=inputs,
        error="boom\x00",
        node_logs=[pb.NodeLog(name="node\x00", error="\x00\u2400")],
    )
    assert stub.LogRun(pb.LogRunRequest(run=run)).created
    got = stub.GetRun(pb.GetRunRequest(wpk_id="w", run_id="nul")).run
    assert got.inputs == run.inputs
    assert got.error == run.error
    assert got.node_logs[0].name == "node\x00"
    assert got.node_logs[0].error == "\x00\u2400"

    reg = _reg(stack)
    wf = registry_pb2.Workflow(workflow_id="wf-nul", name="n\x00", description="\u2400")
    reg.CreateWorkflow(registry_pb2.CreateWorkflowRequest(workflow=wf))
    back = reg.GetWorkflow(registry_pb2.GetWorkflowRequest(workflow_id="wf-nul")).workflow
    assert (back.name, back.description) == ("n\x00", "\u2400")


def test_ids_are_checked_on_every_rpc(stack: App) -> None:
    stub, reg = _rh(stack), _reg(stack)
    long = "x" * 10_240
    with pytest.raises(grpc.RpcError) as err:
        stub.GetRun(pb.GetRunRequest(wpk_id=long, run_id="r"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(err.value) == ["wpk_id"]
    assert len(err.value.details() or "") < 400  # the id is not echoed
    assert _invalid(stub.GetRun, pb.GetRunRequest(wpk_id="w\x00", run_id="r")) == ["wpk_id"]
    assert "wpk_id" in _invalid(stub.SearchRuns, pb.SearchRunsRequest(text="x", wpk_id=long))
    notify = registry_pb2.NotifyRunRequest(
        workflow_id=long,
        run_id="r\x00",
        id="00000000-0000-0000-0000-000000000001",
        status=pb.RUN_STATUS_COMPLETED,
    )
    notify.created_at.GetCurrentTime()
    assert _invalid(reg.NotifyRun, notify) == ["workflow_id", "run_id"]
    assert _invalid(
        reg.ListWorkflowRuns, registry_pb2.ListWorkflowRunsRequest(workflow_id=long)
    ) == ["workflow_id"]


def test_malformed_values_name_their_field(stack: App) -> None:
    stub = _rh(stack)
    bad_enum = pb.Run(wpk_id="w", run_id="e", status=99)  # type: ignore[arg-type]
    assert _invalid(stub.LogRun, pb.LogRunRequest(run=bad_enum)) == ["run.status"]
    outputs = struct_pb2.Struct()
    outputs.update({"x": math.nan, "y": [math.inf]})
    nan_run = pb.Run(wpk_id="w", run_id="n", status=pb.RUN_STATUS_COMPLETED, outputs=outputs)
    assert sorted(_invalid(stub.LogRun, pb.LogRunRequest(run=nan_run))) == [
        "run.outputs.x",
        "run.outputs.y[0]",
    ]
    node = pb.NodeLog(name="a")
    node.start_time.seconds = 253_402_300_800  # year 10000
    node.end_time.nanos = -1
    run = pb.Run(wpk_id="w", run_id="t", status=pb.RUN_STATUS_COMPLETED, node_logs=[node])
    assert _invalid(stub.BatchLogRuns, pb.BatchLogRunsRequest(runs=[run])) == [
        "runs[0].node_logs[0].start_time",
        "runs[0].node_logs[0].end_time",
    ]
    deep = struct_pb2.Struct()
    cur = deep
    for _ in range(33):
        cur = cur.fields["k"].struct_value
    run = pb.Run(wpk_id="w", run_id="d", status=pb.RUN_STATUS_COMPLETED, inputs=deep)
    assert _invalid(stub.LogRun, pb.LogRunRequest(run=run))[0].startswith("run.inputs.k")
    raw = grpc.insecure_channel(stack.address("runhistory")).unary_unary(
        "/neuralops.runhistory.v1.RunHistoryService/GetRun", None, None
    )
    assert _invalid(raw, b"\x0a\x03\xed\xa0\x80") == ["request"]  # a lone surrogate


def test_negative_call_durations_and_token_counts_name_their_field(stack: App) -> None:
    inner = pb.Call(name="m", duration_ms=-1, time_to_first_token_ms=-5)
    inner.usage.output_tokens = -3
    call = pb.Call(name="t", duration_ms=2, calls=[inner])
    run = pb.Run(
        wpk_id="w",
        run_id="c",
        status=pb.RUN_STATUS_COMPLETED,
        node_logs=[pb.NodeLog(name="a", calls=[call])],
        calls=[pb.Call(name="router", duration_ms=-4)],
    )
    run.usage.tool_calls = -1
    run.usage.tokens.total_tokens = -7
    assert sorted(_invalid(_rh(stack).LogRun, pb.LogRunRequest(run=run))) == [
        "run.calls[0].duration_ms",
        "run.node_logs[0].calls[0].calls[0].duration_ms",
        "run.node_logs[0].calls[0].calls[0].time_to_first_token_ms",
        "run.node_logs[0].calls[0].calls[0].usage.output_tokens",
        "run.usage.tokens.total_tokens",
        "run.usage.tool_calls",
    ]


def _token(obj: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")


def test_forged_page_tokens_are_refused(stack: App) -> None:
    reg = _reg(stack)
    reg.CreateWorkflow(
        registry_pb2.CreateWorkflowRequest(workflow=registry_pb2.Workflow(workflow_id="w"))
    )
    for token in (
        _token({"s": "runs:w", "t": "not a time", "i": "00000000-0000-0000-0000-000000000001"}),
        _token({"s": "runs:w", "t": "2024-01-01T00:00:00+00:00", "i": "not-a-uuid"}),
        _token({"s": "workflows", "a": "\x00"}),
    ):
        for call, req in (
            (
                reg.ListWorkflowRuns,
                registry_pb2.ListWorkflowRunsRequest(workflow_id="w", page_token=token),
            ),
            (reg.ListWorkflows, registry_pb2.ListWorkflowsRequest(page_token=token)),
        ):
            assert _invalid(call, req) == ["page_token"]


@pytest.fixture
def garbage_prometheus() -> Iterator[str]:
    """A PromQL-compatible endpoint answering values that are not numbers (a broken
    store; a real Prometheus never does this, so this one boundary is a stand-in)."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            body = json.dumps(
                {
                    "status": "success",
                    "data": {
                        "resultType": "matrix",
                        "result": [
                            {"metric": {"__name__": "m"}, "values": [[1.0, "abc"], [2.0, "1"]]}
                        ],
                    },
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_probe_overflow_and_non_numeric_prometheus(config: Config, garbage_prometheus: str) -> None:
    app = App(
        config.with_(prom_url=garbage_prometheus), services=("insight",), ports={"insight": 0}
    ).start()
    try:
        stub = insight_pb2_grpc.InsightServiceStub(grpc.insecure_channel(app.address("insight")))
        req = insight_pb2.ProbeRequest(query="m")
        req.step.seconds = 315_576_000_000
        assert _invalid(stub.Probe, req) == ["step"]
        req = insight_pb2.ProbeRequest(query="m")
        req.evaluation_time.seconds = 253_402_300_800
        assert _invalid(stub.Probe, req) == ["evaluation_time"]
        assert _invalid(stub.Probe, insight_pb2.ProbeRequest(query="m\x00")) == ["query"]
        # Values that are not numbers are gaps, not an error (and never INTERNAL): the
        # series is listed, with nothing anomalous in it.
        reply = stub.Probe(insight_pb2.ProbeRequest(query="m"))
        assert all(not s.signal_id for s in reply.series)
    finally:
        app.stop(grace=1)


def test_json_twins_store_and_read_back_as_their_structs(stack: App) -> None:
    # The same content sent as Structs and as *_json text reads back identically, in
    # the Struct fields (the twins are write-only), integers as integers.
    stub = _rh(stack)
    content: dict[str, Any] = {
        "q": "refund \x00 \u2400",
        "n": 15,
        "x": 1.5,
        "deep": {"l": [1, None, True]},
    }
    as_struct = struct_pb2.Struct()
    as_struct.update(content)
    text = json.dumps(content).encode()

    def run(run_id: str, twin: bool) -> pb.Run:
        r = pb.Run(wpk_id="w", run_id=run_id, status=pb.RUN_STATUS_COMPLETED)
        node = r.node_logs.add(name="a")
        call = node.calls.add(name="m", kind=pb.CALL_KIND_MODEL)
        if twin:
            r.inputs_json = node.output_json = call.input_json = text
        else:
            for target in (r.inputs, node.output, call.input):
                target.CopyFrom(as_struct)
        return r

    stub.BatchLogRuns(pb.BatchLogRunsRequest(runs=[run("struct", False), run("json", True)]))
    got = {r: stub.GetRun(pb.GetRunRequest(wpk_id="w", run_id=r)).run for r in ("struct", "json")}
    for r in got.values():
        assert r.inputs == as_struct
        assert r.node_logs[0].output == as_struct
        assert r.node_logs[0].calls[0].input == as_struct
        assert not r.inputs_json and not r.node_logs[0].output_json  # write-only
    from neuralops.clients.runs import to_python

    assert to_python(got["json"].inputs) == content
    assert type(to_python(got["json"].inputs)["n"]) is int


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (b"{not json", "is not JSON text"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"x": NaN}', "is not JSON text"),
        (b'{"x": 1e999}', "is not JSON text"),
        (b'{"x": "\xff"}', "is not JSON text"),
        (b'{"k": ' * 33 + b"1" + b"}" * 33, "nested more than 32 levels"),
    ],
)
def test_a_malformed_json_twin_names_its_field(stack: App, text: bytes, says: str) -> None:
    stub = _rh(stack)
    good = pb.Run(wpk_id="w", run_id="ok", status=pb.RUN_STATUS_COMPLETED)
    bad = pb.Run(
        wpk_id="w",
        run_id="bad",
        status=pb.RUN_STATUS_COMPLETED,
        node_logs=[pb.NodeLog(name="a"), pb.NodeLog(name="b", input_json=text)],
    )
    with pytest.raises(grpc.RpcError) as err:
        stub.BatchLogRuns(pb.BatchLogRunsRequest(runs=[good, bad]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(err.value) == ["runs[1].node_logs[1].input_json"]
    assert says in (err.value.details() or "")
    # Nothing of the refused batch was stored; the good run alone goes in.
    assert stub.LogRun(pb.LogRunRequest(run=good)).created


def test_a_struct_and_its_json_twin_both_set_is_refused(stack: App) -> None:
    stub = _rh(stack)
    both = pb.Run(wpk_id="w", run_id="both", status=pb.RUN_STATUS_COMPLETED, inputs_json=b"{}")
    both.inputs.update({"a": 1})
    assert _invalid(stub.LogRun, pb.LogRunRequest(run=both)) == ["run.inputs_json"]


def test_negative_zero_reads_back_as_zero_from_either_form(stack: App) -> None:
    # A Struct's -0.0 is stored as 0; a twin's the same, on both backends (JSON text
    # keeps the sign, and SQLite would have kept it too).
    stub = _rh(stack)
    as_struct = struct_pb2.Struct()
    as_struct.update({"z": -0.0, "l": [-0.0, -0.5]})
    runs = [
        pb.Run(wpk_id="w", run_id="s", status=pb.RUN_STATUS_COMPLETED, inputs=as_struct),
        pb.Run(
            wpk_id="w",
            run_id="j",
            status=pb.RUN_STATUS_COMPLETED,
            inputs_json=b'{"z": -0.0, "l": [-0e3, -0.5], "t": "-0"}',
        ),
    ]
    stub.BatchLogRuns(pb.BatchLogRunsRequest(runs=runs))
    for run_id in ("s", "j"):
        got = stub.GetRun(pb.GetRunRequest(wpk_id="w", run_id=run_id)).run.inputs
        assert math.copysign(1, got.fields["z"].number_value) == 1.0
        assert [v.number_value for v in got.fields["l"].list_value.values] == [0.0, -0.5]
        assert math.copysign(1, got.fields["l"].list_value.values[0].number_value) == 1.0
    assert stub.GetRun(pb.GetRunRequest(wpk_id="w", run_id="j")).run.inputs["t"] == "-0"
