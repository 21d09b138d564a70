"""Auth, TLS and mTLS on real servers: tokens and roles, encrypted transport, and the
hook, client and outbox relay sending the credentials from the environment."""

from __future__ import annotations

import contextlib
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import timestamp_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from neuralops.clients import channels
from neuralops.clients.channels import Security
from neuralops.clients.delivery import RunSender
from neuralops.clients.example import build_graph
from neuralops.clients.langgraph import RunHistoryCallback
from neuralops.registry.v1 import registry_pb2 as rpb
from neuralops.registry.v1 import registry_pb2_grpc
from neuralops.runhistory.v1 import runhistory_pb2 as pb
from neuralops.runhistory.v1 import runhistory_pb2_grpc
from neuralops.servers import auth
from neuralops.servers.app import App
from neuralops.servers.config import Config, ConfigError

from tests.certs import Certs, make_certs
from tests.conftest import ALL_ZERO
from tests.procs import grpcurl_path

APP_TOKEN = "app-" + uuid.uuid4().hex
SERVICE_TOKEN = "svc-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


def _start(config: Config) -> Iterator[App]:
    app = App(config, ports=dict(ALL_ZERO), relay_backoff_s=0.2).start()
    yield app
    app.stop(grace=1)


@pytest.fixture
def token_stack(tmp_path: Path) -> Iterator[App]:
    cfg = Config(
        data_dir=tmp_path / "data",
        metrics_port=0,
        app_tokens=(APP_TOKEN,),
        service_tokens=(SERVICE_TOKEN,),
    )
    yield from _start(cfg)


@pytest.fixture
def mtls_stack(tmp_path: Path, certs: Certs) -> Iterator[App]:
    cfg = Config(
        data_dir=tmp_path / "data",
        metrics_port=0,
        app_tokens=(APP_TOKEN,),
        service_tokens=(SERVICE_TOKEN,),
        tls_cert=certs.server_cert,
        tls_key=certs.server_key,
        tls_client_ca=certs.ca,
        tls_ca=certs.ca,
    )
    yield from _start(cfg)


def _registry(app: App, security: Security) -> registry_pb2_grpc.RegistryServiceStub:
    return registry_pb2_grpc.RegistryServiceStub(
        channels.open_channel(app.address("registry"), security)
    )


def _code(method: Callable[..., object], request: object) -> grpc.StatusCode:
    try:
        method(request, timeout=5)
    except grpc.RpcError as exc:
        assert isinstance(exc, grpc.Call)
        return exc.code()
    return grpc.StatusCode.OK


NOTIFY = rpb.NotifyRunRequest(
    workflow_id="wf",
    run_id="r1",
    id="00000000-0000-4000-8000-000000000001",
    status=pb.RUN_STATUS_COMPLETED,
    created_at=timestamp_pb2.Timestamp(seconds=1_767_225_600),
)


def test_tokens_and_roles(token_stack: App) -> None:
    get = rpb.GetWorkflowRequest(workflow_id="nope")
    none = _registry(token_stack, Security())
    wrong = _registry(token_stack, Security(token="not-a-token"))
    app = _registry(token_stack, Security(token=APP_TOKEN))
    svc = _registry(token_stack, Security(token=SERVICE_TOKEN))

    assert _code(none.GetWorkflow, get) == grpc.StatusCode.UNAUTHENTICATED
    assert _code(wrong.GetWorkflow, get) == grpc.StatusCode.UNAUTHENTICATED
    assert _code(none.NotifyRun, NOTIFY) == grpc.StatusCode.UNAUTHENTICATED
    # Past auth: the workflow does not exist.
    assert _code(app.GetWorkflow, get) == grpc.StatusCode.NOT_FOUND
    assert _code(svc.GetWorkflow, get) == grpc.StatusCode.NOT_FOUND
    # NotifyRun is for the services only.
    assert _code(app.NotifyRun, NOTIFY) == grpc.StatusCode.PERMISSION_DENIED
    # Past auth, the Registry asks RunHistory (with its own service credentials, else
    # this would be UNAVAILABLE): a notice of a run never stored is refused, and one of a
    # stored run is taken.
    assert _code(svc.NotifyRun, NOTIFY) == grpc.StatusCode.NOT_FOUND
    history = runhistory_pb2_grpc.RunHistoryServiceStub(
        channels.open_channel(token_stack.address("runhistory"), Security(token=APP_TOKEN))
    )
    history.LogRun(pb.LogRunRequest(run=pb.Run(wpk_id="wf", run_id="r1", status=NOTIFY.status)))
    assert svc.NotifyRun(NOTIFY, timeout=5).latest_run_id == "r1"

    # Health and reflection need no token.
    health = health_pb2_grpc.HealthStub(
        channels.open_channel(token_stack.address("runhistory"), Security())
    )
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == 1
    listed = subprocess.run(
        [grpcurl_path(), "-plaintext", token_stack.address("runhistory"), "list"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "neuralops.runhistory.v1.RunHistoryService" in listed.stdout, listed.stderr
    # ... and grpcurl with the README's header reaches an RPC.
    got = subprocess.run(
        [
            grpcurl_path(),
            "-plaintext",
            "-H",
            f"authorization: Bearer {APP_TOKEN}",
            "-d",
            '{"workflow_id":"wf"}',
            token_stack.address("registry"),
            "neuralops.registry.v1.RegistryService/GetWorkflow",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert got.returncode == 0 and '"latest_run_id": "r1"' in got.stdout, got.stderr


def test_role_table_defaults() -> None:
    assert (
        auth.required_role("/neuralops.registry.v1.RegistryService/NotifyRun") is auth.Role.SERVICE
    )
    # RPCs not in the table (e.g. added later) are for applications.
    assert (
        auth.required_role("/neuralops.runhistory.v1.RunHistoryService/ListRuns") is auth.Role.APP
    )
    assert auth.required_role("/grpc.health.v1.Health/Check") is auth.Role.PUBLIC
    assert auth.required_role("/grpc.health.v1.Health/Check", public_health=False) is auth.Role.APP
    assert auth.required_role("/other.Service/Method") is auth.Role.SERVICE


def test_tokens_from_a_file(tmp_path: Path) -> None:
    f = tmp_path / "tokens"
    f.write_text("# app tokens\ntok-one\ntok-two, tok-3\n")
    cfg = Config.from_env({"NEURALOPS_APP_TOKENS": f"@{f}", "NEURALOPS_SERVICE_TOKENS": "s1,s2"})
    assert cfg.app_tokens == ("tok-one", "tok-two", "tok-3")
    assert cfg.service_tokens == ("s1", "s2")
    assert "tok-" not in repr(cfg) and "s1" not in repr(cfg)
    with pytest.raises(ConfigError, match="NEURALOPS_APP_TOKENS"):
        Config.from_env({"NEURALOPS_APP_TOKENS": f"@{tmp_path / 'missing'}"})


def test_tls_works_and_plaintext_is_refused(tmp_path: Path, certs: Certs) -> None:
    cfg = Config(
        data_dir=tmp_path / "data",
        metrics_port=0,
        tls_cert=certs.server_cert,
        tls_key=certs.server_key,
    )
    for app in _start(cfg):
        get = rpb.GetWorkflowRequest(workflow_id="nope")
        tls = _registry(app, Security.from_files(ca=certs.ca))
        assert _code(tls.GetWorkflow, get) == grpc.StatusCode.NOT_FOUND
        plain = _registry(app, Security())
        assert _code(plain.GetWorkflow, get) == grpc.StatusCode.UNAVAILABLE
        untrusted = _registry(app, Security.from_files(ca=certs.other_ca))
        assert _code(untrusted.GetWorkflow, get) == grpc.StatusCode.UNAVAILABLE


def test_mtls_needs_a_client_certificate(mtls_stack: App, certs: Certs) -> None:
    get = rpb.GetWorkflowRequest(workflow_id="nope")
    no_cert = _registry(mtls_stack, Security.from_files(APP_TOKEN, certs.ca))
    assert _code(no_cert.GetWorkflow, get) == grpc.StatusCode.UNAVAILABLE
    full = _registry(
        mtls_stack, Security.from_files(APP_TOKEN, certs.ca, certs.client_cert, certs.client_key)
    )
    assert _code(full.GetWorkflow, get) == grpc.StatusCode.NOT_FOUND
    # A certificate alone is not a token.
    cert_only = _registry(
        mtls_stack, Security.from_files(None, certs.ca, certs.client_cert, certs.client_key)
    )
    assert _code(cert_only.GetWorkflow, get) == grpc.StatusCode.UNAUTHENTICATED


@pytest.fixture
def client_env(monkeypatch: pytest.MonkeyPatch, certs: Certs) -> Iterator[None]:
    """The client variables a user sets, read by the hook and the typed client."""
    monkeypatch.setenv("NEURALOPS_TOKEN", APP_TOKEN)
    monkeypatch.setenv("NEURALOPS_TLS_CA", str(certs.ca))
    monkeypatch.setenv("NEURALOPS_TLS_CLIENT_CERT", str(certs.client_cert))
    monkeypatch.setenv("NEURALOPS_TLS_CLIENT_KEY", str(certs.client_key))
    channels.default_security.cache_clear()
    yield
    channels.default_security.cache_clear()


def test_hook_delivers_with_a_token_over_mtls_and_the_relay_notifies(
    mtls_stack: App, client_env: None, tmp_path: Path, certs: Certs
) -> None:
    sender = RunSender(mtls_stack.address("runhistory"), spool_dir=tmp_path / "spool")
    try:
        run_id = str(uuid.uuid4())
        build_graph().invoke(
            {"subject": "refund", "body": "the invoice is wrong"},
            config={
                "callbacks": [RunHistoryCallback(sender=sender)],
                "run_id": run_id,
                "metadata": {"wpk_id": "secure-wf"},
            },
        )
        assert sender.flush(10)
    finally:
        sender.close()
    from neuralops.clients.runhistory import RunHistoryClient

    run = RunHistoryClient(mtls_stack.address("runhistory")).get_run("secure-wf", run_id)
    assert run.status == pb.RUN_STATUS_COMPLETED
    # The outbox relay called NotifyRun with the service token over mTLS.
    reg = _registry(
        mtls_stack, Security.from_files(APP_TOKEN, certs.ca, certs.client_cert, certs.client_key)
    )
    deadline = time.monotonic() + 15
    latest = ""
    while time.monotonic() < deadline and latest != run_id:
        with contextlib.suppress(grpc.RpcError):
            latest = reg.GetWorkflow(
                rpb.GetWorkflowRequest(workflow_id="secure-wf"), timeout=5
            ).workflow.latest_run_id
        time.sleep(0.1)
    assert latest == run_id


def test_runhistory_client_without_token_is_refused(token_stack: App) -> None:
    stub = runhistory_pb2_grpc.RunHistoryServiceStub(
        channels.open_channel(token_stack.address("runhistory"), Security())
    )
    req = pb.GetRunRequest(wpk_id="w", run_id="r")
    assert _code(stub.GetRun, req) == grpc.StatusCode.UNAUTHENTICATED


def test_exposed_without_auth_warns(caplog: pytest.LogCaptureFixture) -> None:
    auth.warn_if_exposed(Config(bind_host="0.0.0.0"))
    assert "authentication OFF" in caplog.text
    caplog.clear()
    auth.warn_if_exposed(Config(bind_host="127.0.0.1"))
    assert caplog.text == ""


def test_http_gateway_forwards_the_callers_token_and_lends_none(tmp_path: Path) -> None:
    import httpx

    from tests.conftest import free_port

    cfg = Config(
        data_dir=tmp_path / "data",
        metrics_port=0,
        app_tokens=(APP_TOKEN,),
        service_tokens=(SERVICE_TOKEN,),
        client_token=SERVICE_TOKEN,  # the server's own token (NEURALOPS_TOKEN)
    )
    port = free_port()
    app = App(cfg, ports={**ALL_ZERO, "http": port}).start()
    try:
        url = f"http://127.0.0.1:{port}/workflows"
        assert httpx.get(url, timeout=10).status_code == 401
        ok = httpx.get(url, headers={"authorization": f"Bearer {APP_TOKEN}"}, timeout=10)
        assert ok.status_code == 200, ok.text
    finally:
        app.stop(grace=1)
