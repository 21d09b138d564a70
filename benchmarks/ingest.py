"""RunHistory ingest against its raw floors, and server memory under a burst (issue 12).

* Throughput: BatchLogRuns (batches of 200 ~1 KB runs with 3 node logs, no embeddings)
  into Postgres, interleaved round by round with the floor: psycopg ``executemany ...
  ON CONFLICT DO NOTHING`` of the same rows into the same table shape, one commit per
  batch, from this process.
* Unary latency: LogRun against the floor of a bare grpcio server (another process)
  that echoes the same request bytes after one committed INSERT of the same row;
  calls alternate between the two.
* Memory: concurrent ~31 MB BatchLogRuns against a fresh server with its in-flight byte
  budget; the server's RSS is sampled before, during and after the burst. Refused calls
  wait for the RetryInfo delay and try again, so every run is stored in the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import psycopg
from google.protobuf import json_format
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from neuralops.runhistory.v1 import runhistory_pb2 as pb
from neuralops.servers.runtime.budget import CHARGE_PER_BYTE
from neuralops.servers.runtime.db import PostgresDatabase, scratch_schema
from neuralops.servers.runtime.migrate import migrate

from benchmarks.common import Section, free_port, start_server, stats_ms

SERVICE = "/neuralops.runhistory.v1.RunHistoryService/"
FLOOR_METHOD = "/bench.Floor/InsertEcho"
COLUMNS = (
    "id, wpk_id, run_id, inputs, outputs, status, duration_ms, node_logs, error,"
    " created_at, updated_at, embedding_status, embedding_next_at"
)
FLOOR_INSERT = (
    f"INSERT INTO workflow_runs ({COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (wpk_id, run_id) DO NOTHING"
)


def make_run(run_id: str, wpk_id: str = "bench-ingest", text: str = "") -> pb.Run:
    """A ~1 KB run with 3 node logs (the hook's shape)."""
    run = pb.Run(wpk_id=wpk_id, run_id=run_id, status=pb.RUN_STATUS_COMPLETED, duration_ms=42)
    run.inputs.update(
        {"question": "what is the weather like in paris today? " * 2, "n": 3, "flags": [True, None]}
    )
    run.outputs.update(
        {"text": text or "the weather in paris is sunny with a light breeze " * 3, "score": 0.87}
    )
    for i, name in enumerate(("plan", "search", "answer")):
        node = run.node_logs.add(
            name=name, step=i + 1, duration_ms=10 + i, status=pb.RUN_STATUS_COMPLETED
        )
        node.start_time.FromMilliseconds(1_700_000_000_000 + i)
        node.end_time.FromMilliseconds(1_700_000_000_010 + i)
        node.input.update({"q": "hello there " * 3})
        node.output.update({"r": "result " * 5, "k": [1, 2, 3]})
    return run


def floor_row(run: pb.Run) -> tuple[Any, ...]:
    """The row the service stores for ``run``, made outside the timed part."""
    d = json_format.MessageToDict(run, preserving_proto_field_name=True)
    nodes = d.get("node_logs", [])
    at = datetime.now(UTC)
    return (
        str(uuid.uuid4()),
        run.wpk_id,
        run.run_id,
        json.dumps(d.get("inputs", {})),
        json.dumps(d.get("outputs", {})),
        "completed",
        run.duration_ms,
        json.dumps(nodes),
        "",
        at,
        at,
        "skipped",
        None,
    )


def run(section: Section, base_dsn: str) -> None:
    section.add(
        "load average (1, 5, 15 min) at the start (2 cores, shared)",
        ", ".join(f"{x:.2f}" for x in os.getloadavg()),
    )
    with (
        scratch_schema(base_dsn, "nops_ingest") as svc_dsn,
        scratch_schema(base_dsn, "nops_floor") as floor_dsn,
    ):
        for dsn in (svc_dsn, floor_dsn):
            db = PostgresDatabase(dsn)
            migrate(db)
            db.close()
        with tempfile.TemporaryDirectory() as tmp:
            server = start_server(Path(tmp), services="runhistory", postgres_dsn=svc_dsn)
            try:
                channel = grpc.insecure_channel(server.address("runhistory"))
                _throughput(section, channel, floor_dsn)
                _unary(section, channel, floor_dsn, svc_dsn)
                channel.close()
            finally:
                server.stop()
    with scratch_schema(base_dsn, "nops_burst") as dsn:
        db = PostgresDatabase(dsn)
        migrate(db)
        db.close()
        _burst(section, dsn)
    section.add(
        "load average (1, 5, 15 min) at the end", ", ".join(f"{x:.2f}" for x in os.getloadavg())
    )


# ------------------------------------------------------------------ throughput


def _throughput(
    section: Section, channel: grpc.Channel, floor_dsn: str, rounds: int = 6, per_round: int = 8
) -> None:
    batch = 200
    call = _raw(channel, SERVICE + "BatchLogRuns")
    service_s: list[float] = []
    floor_s: list[float] = []
    runs_n = rounds * per_round * batch
    with psycopg.connect(floor_dsn) as conn:
        for r in range(-1, rounds):  # round -1 warms both up and is not counted
            requests = [
                pb.BatchLogRunsRequest(
                    runs=[make_run(f"t{r}-{b}-{i}") for i in range(batch)]
                ).SerializeToString()
                for b in range(per_round)
            ]
            rows = [
                [floor_row(make_run(f"t{r}-{b}-{i}")) for i in range(batch)]
                for b in range(per_round)
            ]
            # Batch by batch, one of each in turn, so a change in the machine's load
            # falls on both sides alike.
            for req, chunk in zip(requests, rows, strict=True):
                t0 = time.perf_counter()
                call(req, timeout=60)
                t1 = time.perf_counter()
                with conn.cursor() as cur:
                    cur.executemany(FLOOR_INSERT, chunk)
                conn.commit()
                t2 = time.perf_counter()
                if r >= 0:
                    service_s.append(t1 - t0)
                    floor_s.append(t2 - t1)
    size = len(requests[0]) / batch
    service_rate, floor_rate = runs_n / sum(service_s), runs_n / sum(floor_s)
    s, f = stats_ms(service_s), stats_ms(floor_s)
    section.add(
        "BatchLogRuns into Postgres (batches of 200)",
        f"{service_rate:,.0f} runs/s ({runs_n:,} runs of {size:,.0f} B, 3 node logs); "
        f"{s['p50']:.1f} ms per batch (p50)",
    )
    section.add(
        "floor: psycopg executemany ... ON CONFLICT DO NOTHING, same rows",
        f"{floor_rate:,.0f} rows/s; {f['p50']:.1f} ms per batch (p50)",
    )
    section.add(
        "BatchLogRuns / floor (target >= 0.5): all batches; p50 batch",
        f"{service_rate / floor_rate:.2f}x; {f['p50'] / s['p50']:.2f}x",
    )


# ----------------------------------------------------------------------- unary


def floor_server(port: int, dsn: str, template: str) -> None:
    """The unary floor, run in a child process: echo the request bytes after one
    committed INSERT of the row (each call its own run_id)."""
    row = json.loads(template)
    conn = psycopg.connect(dsn, autocommit=True)
    lock = threading.Lock()

    def handle(request: bytes, context: grpc.ServicerContext) -> bytes:
        at = datetime.now(UTC)
        params = [str(uuid.uuid4()), row[1], uuid.uuid4().hex, *row[3:9], at, at, "skipped", None]
        with lock:
            conn.execute(FLOOR_INSERT, params)
        return request

    from concurrent import futures

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "bench.Floor", {"InsertEcho": grpc.unary_unary_rpc_method_handler(handle)}
            ),
        )
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()


def _unary(
    section: Section, channel: grpc.Channel, floor_dsn: str, svc_dsn: str, rounds: int = 10
) -> None:
    per_round = 60
    template = floor_row(make_run("template"))
    port = free_port()
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "benchmarks.ingest",
            "floor-server",
            str(port),
            floor_dsn,
            json.dumps([str(v) if isinstance(v, datetime) else v for v in template]),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        floor_channel = grpc.insecure_channel(f"localhost:{port}")
        floor = _raw(floor_channel, FLOOR_METHOD)
        log_run = _raw(channel, SERVICE + "LogRun")
        service_s: list[float] = []
        floor_s: list[float] = []
        for r in range(-1, rounds):
            requests = [
                pb.LogRunRequest(run=make_run(f"u{r}-{i}")).SerializeToString()
                for i in range(per_round)
            ]
            for req in requests:
                for target, out in ((log_run, service_s), (floor, floor_s)):
                    t0 = time.perf_counter()
                    target(req, timeout=10)
                    if r >= 0:
                        out.append(time.perf_counter() - t0)
        floor_channel.close()
    finally:
        child.terminate()
        child.wait(10)
    s, f = stats_ms(service_s), stats_ms(floor_s)
    section.add("LogRun p50 / p99", f"{s['p50']:.2f} ms / {s['p99']:.2f} ms")
    section.add(
        "floor: grpcio echo of the same bytes + one committed INSERT, p50 / p99",
        f"{f['p50']:.2f} ms / {f['p99']:.2f} ms",
    )
    section.add("LogRun p50 / floor p50 (target <= 2)", f"{s['p50'] / f['p50']:.2f}x")


# ---------------------------------------------------------------------- memory


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _big_request(tag: str, runs: int, run_bytes: int) -> bytes:
    text = ("lorem ipsum dolor sit amet " * (run_bytes // 27 + 1))[:run_bytes]
    return pb.BatchLogRunsRequest(
        runs=[make_run(f"{tag}-{i}", wpk_id="bench-burst", text=text) for i in range(runs)]
    ).SerializeToString()


def _burst(
    section: Section,
    dsn: str,
    *,
    calls: int = 16,
    runs: int = 200,
    run_bytes: int = 155_000,
    budget_mb: int = 128,
) -> None:
    metrics_port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(
            Path(tmp),
            services="runhistory",
            postgres_dsn=dsn,
            extra_env={
                "NEURALOPS_MAX_INFLIGHT_BYTES": str(budget_mb * 1024 * 1024),
                "NEURALOPS_METRICS_PORT": str(metrics_port),
            },
        )
        try:
            assert server.proc is not None
            pid = server.proc.pid
            requests = [_big_request(f"b{c}", runs, run_bytes) for c in range(calls)]
            size_mb = len(requests[0]) / 1e6
            channel = grpc.insecure_channel(
                server.address("runhistory"),
                options=[("grpc.max_send_message_length", 64 * 1024 * 1024)],
            )
            call = _raw(channel, SERVICE + "BatchLogRuns")
            call(_big_request("warm", 1, 1000), timeout=30)
            time.sleep(1.0)
            base = _rss_mb(pid)
            peak = base
            refused = [0]
            done = threading.Event()

            def sample() -> None:
                nonlocal peak
                while not done.is_set():
                    peak = max(peak, _rss_mb(pid))
                    time.sleep(0.01)

            def send(req: bytes) -> None:
                while True:
                    try:
                        call(req, timeout=300)
                        return
                    except grpc.RpcError as exc:
                        if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                            raise
                        refused[0] += 1
                        time.sleep(_retry_delay(exc))

            sampler = threading.Thread(target=sample)
            sampler.start()
            t0 = time.perf_counter()
            _all(send, requests)
            took = time.perf_counter() - t0
            done.set()
            sampler.join()
            after = {}
            for s in (1, 3, 5):
                _sleep_until(t0 + took + s)
                after[s] = _rss_mb(pid)
            admitted_peak = _gauge(metrics_port, "neuralops_inflight_request_bytes_peak") / 1e6
            channel.close()
        finally:
            server.stop()
    stored = calls * runs
    section.add(
        f"burst: {calls} concurrent BatchLogRuns of {size_mb:.1f} MB",
        f"all {stored:,} runs stored in {took:.1f} s; {refused[0]} answers RESOURCE_EXHAUSTED "
        f"(retried after the RetryInfo delay)",
    )
    budget = budget_mb * 1.048576  # MB
    section.add(
        "in-flight budget (NEURALOPS_MAX_INFLIGHT_BYTES; a call is charged "
        f"{CHARGE_PER_BYTE} bytes per request byte: wire bytes, decoded message, values)",
        f"{budget_mb} MiB ({budget:,.0f} MB); most admitted at once: {admitted_peak:,.0f} MB "
        f"charged = {admitted_peak / CHARGE_PER_BYTE:,.0f} MB of requests",
    )
    section.add(
        "server RSS: base -> peak; (peak - base) / budget and / most admitted (target <= 2)",
        f"{base:,.0f} MB -> {peak:,.0f} MB; {(peak - base) / budget:.2f} x budget, "
        f"{(peak - base) / admitted_peak:.2f} x admitted",
    )
    section.add(
        "server RSS 1 s / 3 s / 5 s after the burst",
        " / ".join(f"{v:,.0f} MB" for v in after.values()),
    )


def _gauge(port: int, name: str) -> float:
    """One unlabelled value from the server's /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise LookupError(f"{name} not on /metrics")


def _raw(channel: grpc.Channel, method: str) -> grpc.UnaryUnaryMultiCallable[bytes, bytes]:
    """A call taking and giving bytes: both sides of a comparison send the same bytes."""
    return channel.unary_unary(method, request_serializer=None, response_deserializer=None)


def _sleep_until(t: float) -> None:
    time.sleep(max(0.0, t - time.perf_counter()))


def _retry_delay(exc: grpc.RpcError) -> float:
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    for detail in status.details if status else []:
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return float(info.retry_delay.ToTimedelta().total_seconds())
    return 1.0


def _all(fn: Callable[[bytes], None], items: list[bytes]) -> None:
    errors: list[BaseException] = []

    def guarded(item: bytes) -> None:
        try:
            fn(item)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(i,)) for i in items]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


if __name__ == "__main__" and sys.argv[1:2] == ["floor-server"]:
    floor_server(int(sys.argv[2]), sys.argv[3], sys.argv[4])
