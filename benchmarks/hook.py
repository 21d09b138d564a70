"""The LangGraph hook: latency it adds to graph.invoke, and runs/s delivered end to end."""

from __future__ import annotations

import operator
import tempfile
import time
import uuid
from pathlib import Path
from typing import Annotated, Any, TypedDict

import grpc
from langchain_core.callbacks import BaseCallbackHandler
from langgraph.graph import END, START, StateGraph
from neuralops.clients import RunHistoryClient
from neuralops.clients.delivery import RunSender
from neuralops.clients.langgraph import RunHistoryCallback
from neuralops.registry.v1 import registry_pb2 as rpb
from neuralops.registry.v1 import registry_pb2_grpc
from neuralops.runhistory.v1 import runhistory_pb2 as pb
from neuralops.servers.processes import ServerProcess

from benchmarks.common import Section, start_server, stats_ms


class S(TypedDict, total=False):
    x: int
    log: Annotated[list[str], operator.add]


def small_graph() -> Any:
    g: Any = StateGraph(S)
    g.add_node("a", lambda s: {"x": s.get("x", 0) + 1, "log": ["a"]})
    g.add_node("b", lambda s: {"x": s["x"] * 2, "log": ["b"]})
    g.add_node("c", lambda s: {"log": ["c"]})
    g.add_edge(START, "a")
    g.add_edge("a", "b")
    g.add_edge("b", "c")
    g.add_edge("c", END)
    return g.compile(name="bench")


def run(
    section: Section, n: int = 3000, sustained: int = 20000, postgres_dsn: str | None = None
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp) / "srv", services="all", postgres_dsn=postgres_dsn)
        try:
            _latency(section, server, Path(tmp), n)
            _sustained(section, server, Path(tmp), sustained)
        finally:
            server.stop()
    section.notes.append(
        "Latency: the same 3-node graph, `invoke` alternated with and without `RunHistoryCallback` "
        f"({n} each, after warm-up), the server in another process on the same 2 cores. "
        "Sustained: pre-built runs submitted to the hook's sender as fast as possible, timed until "
        "every one is stored (BatchLogRuns, batches of up to 200)."
    )


def _latency(section: Section, server: ServerProcess, tmp: Path, n: int) -> None:
    graph = small_graph()
    sender = RunSender(server.address("runhistory"), spool_dir=tmp / "spool-lat")
    hook = RunHistoryCallback(sender=sender, capture_node_io=True)
    noop = BaseCallbackHandler()  # the floor: what LangChain's callback machinery costs
    variants: dict[str, list[float]] = {
        "no callback": [],
        "do-nothing callback": [],
        "RunHistoryCallback": [],
    }
    configs: dict[str, Any] = {
        "no callback": None,
        "do-nothing callback": {"callbacks": [noop]},
        "RunHistoryCallback": {"callbacks": [hook]},
    }
    for _ in range(300):  # warm up every path
        for cfg in configs.values():
            graph.invoke({"x": 1}, config=cfg)
    for _ in range(n):
        for name, cfg in configs.items():
            t0 = time.perf_counter()
            graph.invoke({"x": 1}, config=cfg)
            variants[name].append(time.perf_counter() - t0)
    sender.flush(60)
    base = stats_ms(variants["no callback"])
    for name, samples in variants.items():
        s = stats_ms(samples)
        section.add(f"invoke, {name}: p50 / p99", f"{s['p50']:.3f} ms / {s['p99']:.3f} ms")
    h, nop = stats_ms(variants["RunHistoryCallback"]), stats_ms(variants["do-nothing callback"])
    section.add(
        "added per invoke by the hook: median / mean",
        f"{(h['p50'] - base['p50']) * 1000:.0f} µs / {(h['mean'] - base['mean']) * 1000:.0f} µs "
        f"(a do-nothing callback adds {(nop['p50'] - base['p50']) * 1000:.0f} µs / {(nop['mean'] - base['mean']) * 1000:.0f} µs)",
    )
    section.add("runs delivered during the latency run", f"{sender.delivered} of {n + 300}")
    sender.close()


def _sustained(section: Section, server: ServerProcess, tmp: Path, total: int) -> None:
    sender = RunSender(
        server.address("runhistory"), spool_dir=tmp / "spool-sus", max_queue=total + 1
    )
    runs = [
        pb.Run(
            wpk_id="sustained",
            run_id=str(uuid.uuid4()),
            status=pb.RUN_STATUS_COMPLETED,
            duration_ms=5,
            node_logs=[
                pb.NodeLog(name=n, status=pb.RUN_STATUS_COMPLETED, duration_ms=1) for n in "abc"
            ],
        )
        for _ in range(total)
    ]
    t0 = time.perf_counter()
    for r in runs:
        sender.submit(r)
    submitted = time.perf_counter() - t0
    sender.flush(300)
    elapsed = time.perf_counter() - t0
    client = RunHistoryClient(server.address("runhistory"))
    assert client.get_run("sustained", runs[-1].run_id).run_id == runs[-1].run_id
    registry = registry_pb2_grpc.RegistryServiceStub(
        grpc.insecure_channel(server.address("registry"))
    )
    linked = 0.0
    while time.perf_counter() - t0 < 300:
        wf = registry.GetWorkflow(rpb.GetWorkflowRequest(workflow_id="sustained")).workflow
        if wf.latest_run_id == runs[-1].run_id:
            linked = time.perf_counter() - t0
            break
        time.sleep(0.05)
    section.add(
        "sustained delivery",
        f"{total / elapsed:,.0f} runs/s ({total:,} runs in {elapsed:.2f} s, {sender.delivered:,} delivered, {sender.spooled} spooled)",
    )
    section.add("submit() cost on the caller's thread", f"{submitted / total * 1e6:.1f} µs per run")
    section.add(
        "registry linked to the last run (outbox relay, NotifyRun)",
        f"{linked:.2f} s after the first submit",
    )
    sender.close()
