"""The HTTP/JSON gateway in front of the real gRPC servers, called with a plain HTTP
client the way curl would: routes, JSON mapping, status mapping and error bodies."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
from collections.abc import Iterator
from concurrent import futures
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from neuralops.registry.v1 import registry_pb2, registry_pb2_grpc
from neuralops.servers.gateway.app import Gateway
from neuralops.servers.gateway.server import HttpPortUnavailable, HttpServer
from neuralops.servers.runtime.app import App
from neuralops.servers.runtime.config import Config

from tests.conftest import ALL_ZERO, free_port
from tests.procs import ServerProcess


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """All three services and the gateway in this process, on free ports (SQLite: the
    gateway never touches storage, the servers' own tests cover both backends)."""
    cfg = Config(data_dir=tmp_path_factory.mktemp("gw") / "data", metrics_port=0)
    app = App(cfg, ports={**ALL_ZERO, "http": free_port()}, relay_backoff_s=0.5).start()
    assert app.http is not None
    with httpx.Client(base_url=f"http://127.0.0.1:{app.http.port}", timeout=30) as client:
        yield client
    app.stop(grace=1)


def _run(wpk: str, run_id: str, status: str = "RUN_STATUS_COMPLETED", **kw: Any) -> dict[str, Any]:
    return {"wpk_id": wpk, "run_id": run_id, "status": status, "duration_ms": 120, **kw}


def _error(reply: httpx.Response) -> tuple[int, str, list[dict[str, Any]]]:
    body = reply.json()
    return body["code"], body["message"], body["details"]


def _reason(details: list[dict[str, Any]]) -> str:
    return str(next(d["reason"] for d in details if d["@type"].endswith("google.rpc.ErrorInfo")))


def _violations(details: list[dict[str, Any]]) -> list[str]:
    return [
        v["field"]
        for d in details
        if d["@type"].endswith("google.rpc.BadRequest")
        for v in d["field_violations"]
    ]


def _wait_listed(http: httpx.Client, wf: str, n: int) -> list[dict[str, Any]]:
    from tests.helpers import wait_for

    def listed() -> list[dict[str, Any]] | None:
        reply = http.get(f"/workflows/{wf}/runs")
        runs: list[dict[str, Any]] = reply.json().get("runs", []) if reply.is_success else []
        return runs if len(runs) >= n else None

    result: list[dict[str, Any]] = wait_for(listed)
    return result


def test_log_get_and_list_runs_over_http(http: httpx.Client) -> None:
    failed = _run(
        "test-workflow",
        "r-failed",
        "RUN_STATUS_FAILED",
        error="ValueError: boom",
        outputs={"text": "nope"},
        node_logs=[
            {"name": "plan", "step": 1, "status": "RUN_STATUS_COMPLETED", "duration_ms": 5},
            {"name": "act", "step": 2, "status": "RUN_STATUS_FAILED", "error": "boom"},
        ],
    )
    reply = http.post("/runs", json=failed)
    assert reply.status_code == 200, reply.text
    first = reply.json()
    assert first["run_id"] == "r-failed" and first["created"] is True and first["id"]
    again = http.post("/runs", json=failed).json()
    assert again == {**first, "created": False}  # idempotent, through HTTP too
    for i in range(3):
        assert http.post("/runs", json=_run("test-workflow", f"r{i}")).status_code == 200

    run = http.get("/runs/test-workflow/r-failed").json()["run"]
    assert run["status"] == "RUN_STATUS_FAILED" and run["error"] == "ValueError: boom"
    assert [n["name"] for n in run["node_logs"]] == ["plan", "act"]
    assert run["duration_ms"] == "120"  # protobuf's JSON mapping: int64 as a string
    assert "wpk_id" in run and "wpkId" not in run  # proto field names

    runs = _wait_listed(http, "test-workflow", 4)
    assert [r["run_id"] for r in runs] == ["r2", "r1", "r0", "r-failed"]  # newest first
    page = http.get("/workflows/test-workflow/runs", params={"page_size": 3}).json()
    assert len(page["runs"]) == 3 and page["next_page_token"]
    rest = http.get(
        "/workflows/test-workflow/runs",
        params={"page_size": 3, "page_token": page["next_page_token"]},
    ).json()
    assert [r["run_id"] for r in rest["runs"]] == ["r-failed"] and rest["next_page_token"] == ""

    workflows = http.get("/workflows").json()["workflows"]
    assert [w["workflow_id"] for w in workflows] == ["test-workflow"]
    wf = http.get("/workflows/test-workflow").json()["workflow"]
    assert wf["latest_run_id"] == "r2" and wf["latest_run_status"] == "RUN_STATUS_COMPLETED"


def test_body_star_route_and_escaped_path_variables(http: httpx.Client) -> None:
    reply = http.post(
        "/runs:batchLog",
        json={"runs": [_run("batch-wf", "a/b c"), _run("batch-wf", "plain")]},
    )
    assert reply.status_code == 200, reply.text
    assert [r["run_id"] for r in reply.json()["results"]] == ["a/b c", "plain"]
    got = http.get("/runs/batch-wf/a%2Fb%20c")
    assert got.status_code == 200 and got.json()["run"]["run_id"] == "a/b c"


def test_created_workflow_via_body_field(http: httpx.Client) -> None:
    reply = http.post("/workflows", json={"workflow_id": "made-by-http", "description": "d"})
    assert reply.status_code == 200, reply.text
    assert reply.json()["workflow"]["description"] == "d"
    dup = http.post("/workflows", json={"workflow_id": "made-by-http"})
    assert dup.status_code == 409 and dup.json()["status"] == "ALREADY_EXISTS"
    empty = http.get("/workflows/made-by-http/runs").json()
    assert empty == {"runs": [], "next_page_token": ""}  # the array is there even when empty


def test_not_found_carries_the_grpc_code_and_reason(http: httpx.Client) -> None:
    reply = http.get("/runs/test-workflow/no-such-run")
    assert reply.status_code == 404
    code, message, details = _error(reply)
    assert code == 5 and reply.json()["status"] == "NOT_FOUND"
    assert "no-such-run" in message
    assert _reason(details) == "RUN_NOT_FOUND"
    missing = http.get("/workflows/no-such-workflow")
    assert missing.status_code == 404 and _error(missing)[0] == 5


def test_invalid_input_is_400_naming_the_field(http: httpx.Client) -> None:
    # Refused by the gateway (the value cannot be a page_size) ...
    reply = http.get("/workflows/test-workflow/runs", params={"page_size": "ten"})
    assert reply.status_code == 400
    code, message, details = _error(reply)
    assert code == 3 and "page_size" in message and _violations(details) == ["page_size"]
    # ... and by the server's own validation, passed through unchanged.
    reply = http.post("/runs", json={"run_id": "x", "status": "RUN_STATUS_COMPLETED"})
    assert reply.status_code == 400
    code, message, details = _error(reply)
    assert code == 3 and "run.wpk_id" in _violations(details)
    reply = http.post("/runs", content=b"{not json", headers={"content-type": "application/json"})
    assert reply.status_code == 400 and _violations(_error(reply)[2]) == ["body"]
    reply = http.get("/signals", params={"start_time": "yesterday"})
    assert reply.status_code == 400 and _violations(_error(reply)[2]) == ["start_time"]
    reply = http.get("/signals", params={"no_such_filter": "1"})
    assert reply.status_code == 400 and _violations(_error(reply)[2]) == ["no_such_filter"]


def test_signals_and_probe_routes(http: httpx.Client) -> None:
    reply = http.get("/signals", params={"metric": "up", "page_size": 5})
    assert reply.status_code == 200 and reply.json() == {"signals": [], "next_page_token": ""}
    # No PROM_URL in this stack: Probe's FAILED_PRECONDITION is 400, as grpc-gateway maps it.
    reply = http.post("/signals:probe", json={"query": "up", "threshold": 2, "step": "15s"})
    assert reply.status_code == 400 and reply.json()["status"] == "FAILED_PRECONDITION"
    assert "PROM_URL" in reply.json()["message"]


def test_unknown_routes_and_methods(http: httpx.Client) -> None:
    reply = http.get("/no/such/route")
    assert reply.status_code == 404 and reply.json()["status"] == "NOT_FOUND"
    reply = http.delete("/workflows")
    assert reply.status_code == 405
    routes = http.get("/api/routes").json()
    assert {"method": "GET", "path": "/signals"} in [
        {"method": r["method"], "path": r["path"]} for r in routes
    ]
    # The console's series pass-through needs PROM_URL, and a query.
    no_prom = http.get("/api/series", params={"query": "up"})
    assert no_prom.status_code == 400 and "PROM_URL" in no_prom.json()["message"]
    console = http.get("/")
    assert console.status_code == 200 and "NeuralOps console" in console.text
    assert http.get("/static/console.js").status_code == 200


def test_acceptance_curls_against_neuralops_serve(tmp_path: Path) -> None:
    """The product's two curl checks, verbatim apart from the port, on `neuralops serve`."""
    port = free_port()
    proc = ServerProcess(tmp_path / "serve", extra_env={"NEURALOPS_HTTP_PORT": str(port)}).start()
    try:
        assert f"HTTP/JSON and console on http://127.0.0.1:{port}/" in proc.log.read_text()
        base = f"http://localhost:{port}"
        body = json.dumps(_run("test-workflow", "r1", outputs={"text": "ok"}))
        logged = _sh(f"curl -s -X POST {base}/runs -d '{body}'")
        assert json.loads(logged)["created"] is True

        def runs() -> list[dict[str, Any]]:
            out = json.loads(_sh(f"curl -s {base}/workflows/test-workflow/runs | jq ."))
            listed: list[dict[str, Any]] = out["runs"]
            return listed

        from tests.helpers import wait_for

        assert wait_for(runs)[0]["run_id"] == "r1"
        signals = json.loads(_sh(f"curl -s {base}/signals | jq ."))
        assert signals == {"signals": [], "next_page_token": ""}
    finally:
        assert proc.stop() == 0


def test_a_taken_http_port_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = HttpServer(Gateway({}), "127.0.0.1", port)
        with pytest.raises(HttpPortUnavailable, match="NEURALOPS_HTTP_PORT"):
            server.start()


def _sh(command: str) -> str:
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


class _TokenRegistry(registry_pb2_grpc.RegistryServiceServicer):
    """A Registry that wants a bearer token, as the servers do when tokens are configured:
    the gateway must pass the caller's header through, and map the refusal to 401."""

    def GetWorkflow(
        self, request: registry_pb2.GetWorkflowRequest, context: grpc.ServicerContext
    ) -> registry_pb2.GetWorkflowResponse:
        metadata = dict(context.invocation_metadata())
        if metadata.get("authorization") != "Bearer s3cret":
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or unknown bearer token")
        return registry_pb2.GetWorkflowResponse(
            workflow=registry_pb2.Workflow(
                workflow_id=request.workflow_id, description=str(metadata.get("x-trace", ""))
            )
        )


def test_authorization_travels_as_metadata_and_refusals_are_401() -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    registry_pb2_grpc.add_RegistryServiceServicer_to_server(_TokenRegistry(), server)  # type: ignore[abstract]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    gateway = Gateway({"neuralops.registry.v1.RegistryService": f"127.0.0.1:{port}"})
    http_server = HttpServer(gateway, "127.0.0.1", free_port()).start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{http_server.port}", timeout=30) as client:
            refused = client.get("/workflows/wf")
            assert refused.status_code == 401
            assert refused.json()["code"] == 16 and "bearer" in refused.json()["message"]
            wrong = client.get("/workflows/wf", headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
            ok = client.get(
                "/workflows/wf",
                headers={"Authorization": "Bearer s3cret", "Grpc-Metadata-X-Trace": "t-1"},
            )
            assert ok.status_code == 200, ok.text
            assert ok.json()["workflow"]["description"] == "t-1"
            # A service this gateway has no address for is 503, not a hang or a 500.
            missing = client.get("/signals")
            assert missing.status_code == 503 and missing.json()["status"] == "UNAVAILABLE"
    finally:
        http_server.stop()
        server.stop(0)


def test_run_integers_stay_integers_over_http(http: httpx.Client) -> None:
    run = _run("ints-wf", "r-int", "RUN_STATUS_COMPLETED", inputs={"n": 15, "f": 1.5})
    run["thread_id"] = "t-7"
    assert http.post("/runs", json=run).status_code == 200
    got = http.get("/runs/ints-wf/r-int").json()["run"]
    assert got["inputs"] == {"n": 15, "f": 1.5} and isinstance(got["inputs"]["n"], int)


def test_list_runs_route_filters_and_pages(http: httpx.Client) -> None:
    wf = "listruns-http"
    usage = {"model_calls": 2, "tool_calls": 1, "tokens": {"input_tokens": 30, "total_tokens": 42}}
    runs = [
        _run(
            wf,
            f"r{i}",
            "RUN_STATUS_FAILED" if i % 3 == 0 else "RUN_STATUS_COMPLETED",
            thread_id="t-a" if i % 2 else "t-b",
            usage=usage,
        )
        for i in range(7)
    ]
    for run in runs:  # one at a time, so created_at orders them
        assert http.post("/runs", json=run).status_code == 200
    # GET /runs/{wpk_id} is ListRuns; /runs/{wpk_id}/{run_id} is still GetRun.
    page = http.get(f"/runs/{wf}", params={"page_size": 3})
    assert page.status_code == 200, page.text
    body = page.json()
    assert [r["run_id"] for r in body["runs"]] == ["r6", "r5", "r4"]
    assert body["runs"][0]["usage"]["tokens"]["total_tokens"] == "42"  # int64 as JSON text
    assert body["runs"][0]["usage"]["model_calls"] == "2"
    rest = http.get(f"/runs/{wf}", params={"page_size": 3, "page_token": body["next_page_token"]})
    assert [r["run_id"] for r in rest.json()["runs"]] == ["r3", "r2", "r1"]
    assert http.get(f"/runs/{wf}/r3").json()["run"]["thread_id"] == "t-a"
    failed = http.get(f"/runs/{wf}", params={"status": "failed"}).json()["runs"]
    assert [r["run_id"] for r in failed] == ["r6", "r3", "r0"]
    both = http.get(f"/runs/{wf}", params={"status": "RUN_STATUS_FAILED", "thread_id": "t-a"})
    assert [r["run_id"] for r in both.json()["runs"]] == ["r3"]
    # An unknown workflow is an empty list (the contract); the console asks the registry.
    assert http.get("/runs/no-such-workflow").json()["runs"] == []
    bad = http.get(f"/runs/{wf}", params={"page_size": -1})
    assert bad.status_code == 400 and "page_size" in _violations(_error(bad)[2])
    bad = http.get(f"/runs/{wf}", params={"status": "sideways"})
    assert bad.status_code == 400 and _violations(_error(bad)[2]) == ["status"]
    bad = http.get(f"/runs/{wf}", params={"page_token": "garbage"})
    assert bad.status_code == 400 and "page_token" in _violations(_error(bad)[2])


def test_backtest_route_with_inline_series(http: httpx.Client) -> None:
    t0 = 1_700_000_000
    values = [10.0 + (k % 5) * 0.1 for k in range(60)] + [95.0] + [10.0] * 5
    series = {
        "labels": {"job": "api"},
        "points": [
            {"time": f"{datetime.fromtimestamp(t0 + 60 * k, UTC).isoformat()}", "value": v}
            for k, v in enumerate(values)
        ],
    }
    reply = http.post(
        "/signals:backtest",
        json={
            "series": [series],
            "detector": {"method": "METHOD_Z_SCORE", "window": 30, "min_points": 30},
        },
    )
    assert reply.status_code == 200, reply.text
    (result,) = reply.json()["results"]
    assert result["labels"] == {"job": "api"} and result["points"] == len(values) - 30
    (episode,) = result["episodes"]
    assert episode["peak_value"] == 95.0
    assert episode["peak_time"].startswith(
        datetime.fromtimestamp(t0 + 60 * 60, UTC).strftime("%Y-%m-%dT%H:%M")
    )
    bad = http.post("/signals:backtest", json={"series": [series], "detector": {"alpha": 7}})
    assert bad.status_code == 400 and any("alpha" in f for f in _violations(_error(bad)[2]))
    bad = http.post("/signals:backtest", json={"series": [series], "bogus": 1})
    assert bad.status_code == 400 and _violations(_error(bad)[2]) == ["body"]


def test_watch_crud_over_http(http: httpx.Client) -> None:
    made = http.post("/watches", json={"name": "api up", "query": "up", "interval": "30s"})
    assert made.status_code == 200, made.text
    watch = made.json()["watch"]
    wid = watch["id"]
    assert watch["name"] == "api up" and watch["interval"] == "30s"
    assert http.get(f"/watches/{wid}").json()["watch"]["query"] == "up"
    listed = http.get("/watches", params={"page_size": 1000}).json()["watches"]
    assert wid in [w["id"] for w in listed]
    # PATCH with update_mask from the query string: only the name changes.
    patched = http.patch(
        f"/watches/{wid}",
        params={"update_mask": "name"},
        json={"name": "api liveness", "query": "not applied"},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["watch"]["name"] == "api liveness"
    assert http.get(f"/watches/{wid}").json()["watch"]["query"] == "up"
    bad = http.post("/watches", json={"name": "no query"})
    assert bad.status_code == 400 and any("query" in f for f in _violations(_error(bad)[2]))
    bad = http.patch(f"/watches/{wid}", params={"update_mask": "nope"}, json={"name": "x"})
    assert bad.status_code == 400 and any("update_mask" in f for f in _violations(_error(bad)[2]))
    assert http.delete(f"/watches/{wid}").status_code == 200
    gone = http.get(f"/watches/{wid}")
    assert gone.status_code == 404 and _error(gone)[0] == grpc.StatusCode.NOT_FOUND.value[0]
    assert http.delete(f"/watches/{wid}").status_code == 404
    missing = http.patch("/watches/00000000-0000-4000-8000-000000000000", json={"name": "x"})
    assert missing.status_code == 404


def test_json_twins_over_http_are_base64_and_never_printed_empty(http: httpx.Client) -> None:
    # A twin is bytes: base64 in protobuf's JSON mapping. Text that is not base64 is
    # refused naming the field (json_format alone would skip its characters and store
    # nothing); a base64 twin is stored, and read back in its Struct field.
    text = base64.b64encode(b'{"q": "refund", "n": 15}').decode()
    run = _run("twin-wf", "r-twin", "RUN_STATUS_COMPLETED")
    run["inputs_json"] = text
    run["node_logs"] = [{"name": "a", "output_json": text}]
    assert http.post("/runs", json=run).status_code == 200
    got = http.get("/runs/twin-wf/r-twin").json()["run"]
    assert got["inputs"] == {"q": "refund", "n": 15}
    assert got["node_logs"][0]["output"] == {"q": "refund", "n": 15}
    # Write-only: no empty twin on the run, its nodes or their calls.
    assert not [k for k in got if k.endswith("_json")]
    assert not [k for k in got["node_logs"][0] if k.endswith("_json")]
    for bad in ("!!!", '{"a": 1}'):
        run = _run("twin-wf", "r-bad", "RUN_STATUS_COMPLETED")
        run["node_logs"] = [{"name": "a"}, {"name": "b", "input_json": bad}]
        reply = http.post("/runs", json=run)
        assert reply.status_code == 400, reply.text
        assert _violations(_error(reply)[2]) == ["run.node_logs[1].input_json"]
    assert http.get("/runs/twin-wf/r-bad").status_code == 404


def test_bodies_json_cannot_hold_as_protobuf_are_400s_not_500s(http: httpx.Client) -> None:
    deep = b"[" * 5000 + b"]" * 5000  # past Python's recursion limit when parsed
    for path in ("/runs", "/runs:batchLog"):
        reply = http.post(path, content=deep, headers={"content-type": "application/json"})
        assert reply.status_code == 400 and _violations(_error(reply)[2]) == ["body"]
    nested = b'{"wpk_id": "w", "run_id": "r1", "inputs": ' + b'{"a": ' * 3000 + b"1" + b"}" * 3001
    reply = http.post("/runs", content=nested, headers={"content-type": "application/json"})
    assert reply.status_code == 400 and reply.json()["code"] == 3
    huge = b'{"wpk_id": "w", "run_id": "r2", "inputs": {"n": 1' + b"0" * 400 + b"}}"
    reply = http.post("/runs", content=huge, headers={"content-type": "application/json"})
    assert reply.status_code == 400 and reply.json()["code"] == 3  # a number past a double
    assert http.get("/workflows").status_code == 200  # the connection still serves


def test_page_tokens_a_database_cannot_take_are_invalid_argument(http: httpx.Client) -> None:
    import base64
    import json

    def token(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    surrogate = token({"s": "workflows", "a": "\ud800"})
    reply = http.get("/workflows", params={"page_token": surrogate})
    assert reply.status_code == 400 and _violations(_error(reply)[2]) == ["page_token"]
    edge = {"t": "0001-01-01T00:00:00+14:00", "i": "00000000-0000-0000-0000-000000000000"}
    for path in ("/watches", "/signals"):
        reply = http.get(path, params={"page_token": token({"s": "x", **edge})})
        assert reply.status_code == 400 and _violations(_error(reply)[2]) == ["page_token"]


def test_a_json_twin_sent_as_an_object_names_its_field(http: httpx.Client) -> None:
    run = _run("twins", "r-obj", inputs_json={"a": 1})  # bytes: base64 text, not an object
    reply = http.post("/runs", json=run)
    assert reply.status_code == 400
    code, message, details = _error(reply)
    assert code == 3 and _violations(details) == ["run.inputs_json"] and "base64" in message
