"""`neuralops up`: every service, their metrics and a local Prometheus, in one command.

With PROM_URL unset, a Prometheus is started under the data directory, scraping the
services' /metrics every second, and Insight is pointed at it. POSTGRES_DSN,
MILVUS_ENDPOINT and PROM_URL switch to external systems. Ctrl-C (or SIGTERM) stops
the services gracefully, then Prometheus.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import signal
import socket
import sys
import threading
from typing import Any

from neuralops.servers.runtime.app import App, PortUnavailable
from neuralops.servers.runtime.config import Config
from neuralops.servers.tooling import localprom
from neuralops.servers.tooling.processes import follow_parent, free_port, grpcurl_path

log = logging.getLogger("neuralops")


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def wait_for_stop_signal() -> None:
    """Block until SIGINT, SIGTERM or SIGHUP (the terminal closed)."""
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        log.info("received %s: draining in-flight calls", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    stop.wait()


def start_metrics(config: Config) -> None:
    from prometheus_client import start_http_server

    if config.metrics_port:
        try:
            start_http_server(config.metrics_port, addr=config.bind_host)
        except OSError:
            raise PortUnavailable(
                f"{config.bind_host}:{config.metrics_port}", "metrics", "NEURALOPS_METRICS_PORT"
            ) from None
        log.info("metrics on http://%s:%d/metrics", config.bind_host, config.metrics_port)


def _grpcurl_command() -> str:
    try:
        found = grpcurl_path()
    except FileNotFoundError:
        return "grpcurl"
    return "grpcurl" if shutil.which("grpcurl") == found else found


def grpcurl_flags(config: Config) -> str:
    """The grpcurl flags this stack needs (TLS CA, client certificate, token header);
    the token itself is never printed."""
    flags = []
    if not config.tls_enabled:
        flags.append("-plaintext")
    else:
        flags.append(f"-cacert {config.tls_ca or '$NEURALOPS_TLS_CA'}")
        if config.tls_client_ca is not None:
            flags.append("-cert $NEURALOPS_TLS_CLIENT_CERT -key $NEURALOPS_TLS_CLIENT_KEY")
    if config.auth_enabled:
        flags.append("-H 'authorization: Bearer '\"$NEURALOPS_TOKEN\"")
    return " ".join(flags)


def banner(app: App, config: Config, prom: localprom.LocalPrometheus | None) -> str:
    host = config.bind_host
    rh, reg, ins = (f"localhost:{app.port(s)}" for s in ("runhistory", "registry", "insight"))
    storage = app.db.describe() if app.db else "?"
    grpcurl, flags = _grpcurl_command(), grpcurl_flags(config)
    lines = [
        "NeuralOps is up.",
        f"  Registry    {host}:{app.port('registry')}   neuralops.registry.v1.RegistryService",
        f"  Insight     {host}:{app.port('insight')}   neuralops.insight.v1.InsightService",
        f"  RunHistory  {host}:{app.port('runhistory')}   neuralops.runhistory.v1.RunHistoryService",
        f"  metrics     http://{host}:{config.metrics_port}/metrics"
        if config.metrics_port
        else "  metrics     off",
        f"  Prometheus  {config.prom_url or 'none (Insight.Probe answers FAILED_PRECONDITION)'}"
        + (" (local, scraping the metrics every 1s)" if prom else ""),
        f"  HTTP/JSON   http://{host}:{app.http.port}/   console at /, e.g. curl -s http://localhost:{app.http.port}/workflows/test-workflow/runs"
        if app.http
        else "  HTTP/JSON   off (NEURALOPS_HTTP_PORT=0)",
        f"  storage     {storage}",
        f"  embeddings  {'on, vectors in ' + config.milvus_uri if config.embeddings_enabled else 'off (set OPENAI_KEY to turn on)'}",
        "",
        "Try:",
        f"  {grpcurl} {flags} {rh} list",
        f"""  {grpcurl} {flags} -d '{{"run":{{"wpk_id":"test-workflow","run_id":"r1","status":"RUN_STATUS_COMPLETED","outputs":{{"text":"ok"}},"duration_ms":123}}}}' {rh} neuralops.runhistory.v1.RunHistoryService/LogRun""",
        f"""  {grpcurl} {flags} -d '{{"workflow_id":"test-workflow"}}' {reg} neuralops.registry.v1.RegistryService/GetWorkflow""",
        f"""  {grpcurl} {flags} -d '{{"query":"up","threshold":2}}' {ins} neuralops.insight.v1.InsightService/Probe""",
        "  .venv/bin/neuralops demo        # runs the example workflow through the hook, then probes",
        "",
        "Ctrl-C stops everything.",
    ]
    return "\n".join(lines)


def cmd_up(config: Config, args: argparse.Namespace) -> int:
    if args.stop_with_parent and not follow_parent():
        log.warning("--stop-with-parent: not available on this system")
    prom: localprom.LocalPrometheus | None = None
    if not config.prom_url:
        if localprom.available():
            scrape = [f"127.0.0.1:{config.metrics_port}"] if config.metrics_port else []
            port = config.prometheus_port
            if not _port_free(config.bind_host, port):
                # e.g. the Debian package's own Prometheus, started by systemd on 9090
                port = free_port()
                log.warning(
                    "port %d is taken: the local Prometheus uses %d", config.prometheus_port, port
                )
            prom = localprom.LocalPrometheus(
                config.data_dir / "prometheus", port, scrape=scrape
            ).start()
            config = config.with_(prom_url=prom.url)
            log.info("local Prometheus on %s (data in %s)", prom.url, prom.data)
        else:
            print(
                "neuralops: Prometheus is not installed (Debian package 'prometheus'), so none is "
                "started and Insight.Probe will answer FAILED_PRECONDITION. Install it, or set "
                "PROM_URL to an existing Prometheus.",
                file=sys.stderr,
            )
    app = App(config)
    try:
        start_metrics(config)  # first: a taken metrics port fails before anything starts
        app.start()
        if config.prom_url and app.db is not None:  # insight: a default watch on run durations
            from neuralops.servers.insight.defaults import ensure_default_watch

            ensure_default_watch(app.db)
        print(banner(app, config, prom), flush=True)
        print("ready", flush=True)
        wait_for_stop_signal()
        app.stop(grace=args.grace)
    finally:
        app.stop(grace=0)
        if prom is not None:
            prom.stop()
    log.info("stopped")
    return 0


def add_commands(sub: Any) -> None:
    """Register `up`, `demo` and `report` on the `neuralops` parser."""
    p = sub.add_parser("up", help="run all services, their metrics and a local Prometheus")
    p.add_argument(
        "--grace", type=float, default=10.0, help="seconds in-flight calls get on shutdown"
    )
    p.add_argument(
        "--stop-with-parent",
        action="store_true",
        help="stop when the parent process dies or is being stopped by a signal "
        "(make up uses it, so signalling make's pid stops everything)",
    )
    p.set_defaults(func=cmd_up)

    from neuralops.servers.tooling import demo, reports

    demo.add_command(sub)
    reports.add_command(sub)
