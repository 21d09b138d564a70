"""`neuralops demo`: the example workflow through the hook, then an anomaly probe.

Against a running stack (`neuralops up`), it runs two workflows built from the
example graph — ``support-triage`` and ``billing-triage`` — for a while at a steady
pace (about one run in ten fails), then makes one ``support-triage`` run very slow.
It then asks Insight to probe Prometheus for run-duration anomalies and prints what
was stored: runs per workflow, each workflow's latest run, and the signals raised.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import duration_pb2
from neuralops.clients.channels import open_channel
from neuralops.clients.delivery import sender_for
from neuralops.clients.enums import RUN_STATUS
from neuralops.clients.example import ReviewRejected, build_graph
from neuralops.clients.langgraph import RunHistoryCallback
from neuralops.insight.v1 import insight_pb2 as ipb
from neuralops.insight.v1 import insight_pb2_grpc
from neuralops.registry.v1 import registry_pb2 as rpb
from neuralops.registry.v1 import registry_pb2_grpc
from neuralops.servers.runtime import auth
from neuralops.servers.runtime.config import Config
from tqdm import tqdm

WORKFLOWS = ("support-triage", "billing-triage")
SLOW_WORKFLOW = "support-triage"
DURATION_QUERY = "neuralops_workflow_last_run_duration_seconds"
TICKETS = [
    {"subject": "refund for a double charge", "body": "my invoice shows the plan twice"},
    {"subject": "dashboard is down", "body": "500 error since this morning"},
    {"subject": "how do I invite a teammate", "body": "looking for the settings page"},
]


@dataclass(frozen=True)
class DemoResult:
    runs: int
    failed: int
    stored: dict[str, int]
    latest: dict[str, tuple[str, str]]
    signals: list[tuple[str, str]]  # raised by this run
    earlier: int = 0  # signals on the same metric that were stored before this run


def _wait_ready(channel: grpc.Channel, what: str, timeout_s: float = 10.0) -> None:
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout_s)
    except grpc.FutureTimeoutError:
        raise SystemExit(
            f"neuralops demo: {what} is not answering; start the stack first (make up)"
        ) from None


def _count_runs(reg: registry_pb2_grpc.RegistryServiceStub, workflow_id: str) -> int:
    n, token = 0, ""
    while True:
        page = reg.ListWorkflowRuns(
            rpb.ListWorkflowRunsRequest(workflow_id=workflow_id, page_size=1000, page_token=token),
            timeout=10,
        )
        n += len(page.runs)
        token = page.next_page_token
        if not token:
            return n


def run_demo(
    config: Config,
    *,
    normal_s: float,
    rate: float,
    slow_s: float,
    seed: int = 7,
    quiet: bool = False,
) -> DemoResult:
    security = auth.client_security(config)
    rh_channel = open_channel(config.runhistory_addr, security)
    reg_channel = open_channel(config.registry_addr, security)
    ins_channel = open_channel(config.insight_addr, security)
    for ch, what in (
        (rh_channel, "RunHistory"),
        (reg_channel, "Registry"),
        (ins_channel, "Insight"),
    ):
        _wait_ready(ch, f"{what}")
    reg = registry_pb2_grpc.RegistryServiceStub(reg_channel)
    insight = insight_pb2_grpc.InsightServiceStub(ins_channel)
    before = _signal_ids(insight)
    # Progress bars only on a terminal: piped or logged, they are one long line of noise.
    quiet = quiet or not sys.stdout.isatty()

    sender = sender_for(config.runhistory_addr)
    hook = RunHistoryCallback(sender=sender)
    graphs = {w: build_graph(w) for w in WORKFLOWS}
    rng = random.Random(seed)
    ticks = max(1, int(normal_s * rate))
    runs = failed = 0
    bar = tqdm(
        total=ticks + 1, desc="running workflows", unit="tick", disable=quiet, file=sys.stdout
    )
    start = time.monotonic()
    for tick in range(ticks):
        for graph in graphs.values():
            ticket: dict[str, Any] = {**rng.choice(TICKETS), "fail": rng.random() < 0.1}
            try:
                graph.invoke(ticket, config={"callbacks": [hook], "run_id": str(uuid.uuid4())})
            except ReviewRejected:
                failed += 1
            runs += 1
        bar.update(1)
        time.sleep(max(0.0, start + (tick + 1) / rate - time.monotonic()))
    # The incident: one very slow support-triage run.
    graphs[SLOW_WORKFLOW].invoke(
        {**TICKETS[0], "slow": True, "slow_s": slow_s},
        config={"callbacks": [hook], "run_id": str(uuid.uuid4())},
    )
    runs += 1
    bar.update(1)
    bar.close()
    sender.flush(30)

    signals = [
        (w, hint) for sid, w, hint in _probe_until_signal(insight, quiet=quiet) if sid not in before
    ]
    time.sleep(1.5)  # the outbox relay links the last runs within a second
    stored, latest = {}, {}
    for w in WORKFLOWS:
        stored[w] = _count_runs(reg, w)
        wf = reg.GetWorkflow(rpb.GetWorkflowRequest(workflow_id=w), timeout=10).workflow
        latest[w] = (
            wf.latest_run_id,
            RUN_STATUS.text(wf.latest_run_status),
        )
    return DemoResult(runs, failed, stored, latest, signals, len(before))


def _signal_ids(insight: insight_pb2_grpc.InsightServiceStub) -> set[str]:
    """Ids of the run-duration signals already stored (from earlier demos)."""
    ids: set[str] = set()
    token = ""
    while True:
        try:
            page = insight.ListSignals(
                ipb.ListSignalsRequest(metric=DURATION_QUERY, page_size=1000, page_token=token),
                timeout=10,
            )
        except grpc.RpcError as exc:
            raise SystemExit(
                f"neuralops demo: ListSignals failed: {exc.code().name}: {exc.details()}"
            ) from None
        ids.update(s.id for s in page.signals)
        token = page.next_page_token
        if not token:
            return ids


def _probe_until_signal(
    insight: insight_pb2_grpc.InsightServiceStub, *, quiet: bool, timeout_s: float = 15.0
) -> list[tuple[str, str, str]]:
    """Probe run durations once a second until the slow run's workflow is anomalous
    (Prometheus scrapes every second; another workflow's series may score first), then
    list the stored signals."""
    req = ipb.ProbeRequest(
        query=DURATION_QUERY,
        points=30,
        step=duration_pb2.Duration(seconds=1),
    )
    deadline = time.monotonic() + timeout_s
    with tqdm(desc="probing Prometheus", unit="probe", disable=quiet, file=sys.stdout) as bar:
        while time.monotonic() < deadline:
            try:
                reply = insight.Probe(req, timeout=10)
            except grpc.RpcError as exc:
                raise SystemExit(
                    f"neuralops demo: Probe failed: {exc.code().name}: {exc.details()}"
                ) from None
            bar.update(1)
            if any(x.anomalous and x.labels.get("wpk_id") == SLOW_WORKFLOW for x in reply.series):
                break
            time.sleep(1.0)
    listed = insight.ListSignals(
        ipb.ListSignalsRequest(metric=DURATION_QUERY, page_size=50), timeout=10
    )
    return [(s.id, s.labels.get("wpk_id", s.metric), s.hint) for s in listed.signals]


def summary(r: DemoResult) -> str:
    lines = [
        f"\nRan {r.runs} workflow runs through the hook ({r.failed} failed on purpose).",
        "",
        "Runs stored per workflow:",
    ]
    for w, n in r.stored.items():
        lines.append(f"  {w:<16} {n:>5} runs   latest: {r.latest[w][0]} ({r.latest[w][1]})")
    lines += ["", f"Signals raised by this run ({len(r.signals)}):"]
    lines += [f"  [{w}] {hint}" for w, hint in r.signals] or ["  none"]
    if r.earlier:
        lines.append(f"({r.earlier} signals from earlier runs were already stored; not counted.)")
    return "\n".join(lines)


def cmd_demo(config: Config, args: argparse.Namespace) -> int:
    result = run_demo(
        config, normal_s=args.seconds, rate=args.rate, slow_s=args.slow, quiet=args.quiet
    )
    print(summary(result))
    return 0 if result.signals else 1


def add_command(sub: Any) -> None:
    p = sub.add_parser(
        "demo", help="run the example workflow through the hook, then probe for anomalies"
    )
    p.add_argument(
        "--seconds", type=float, default=20.0, help="length of the steady phase (default 20)"
    )
    p.add_argument(
        "--rate", type=float, default=5.0, help="runs per second per workflow in that phase"
    )
    p.add_argument("--slow", type=float, default=1.5, help="seconds the one slow run takes")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_demo)
