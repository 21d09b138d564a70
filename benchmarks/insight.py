"""Insight: scoring cost for many series x points, and Probe latency over the raw query."""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import grpc
import httpx
import numpy as np
import orjson
from google.protobuf import duration_pb2, timestamp_pb2
from neuralops.insight.v1 import insight_pb2 as ipb
from neuralops.insight.v1 import insight_pb2_grpc
from neuralops.servers.insight import detector, scoring
from neuralops.servers.insight.detector import DetectorSettings
from neuralops.servers.insight.model import Watch
from neuralops.servers.insight.prometheus import CHUNK_POINTS, PrometheusClient
from neuralops.servers.insight.service import Insight
from neuralops.servers.insight.storage import SignalStore
from neuralops.servers.runtime.db import SqliteDatabase
from neuralops.servers.runtime.migrate import migrate
from neuralops.servers.tooling.localprom import LocalPrometheus, Series

from benchmarks.common import Section, free_port, start_server, stats_ms


def run(section: Section, postgres_dsn: str | None = None) -> None:
    _scoring(section)
    _probe(section, postgres_dsn)
    _backtest_and_watch(section)


def _floor(prom_url: str, query: str, start: float, end: float, step: float) -> int:
    """Fetch and decode the range alone (orjson, chunks of 10,000 points, like the
    service): the floor Backtest and watches are measured against."""
    samples = 0
    with httpx.Client(timeout=120) as http:
        t = start
        while t <= end:
            c_end = min(end, t + (CHUNK_POINTS - 1) * step)
            reply = http.post(
                f"{prom_url}/api/v1/query_range",
                data={"query": query, "start": str(t), "end": str(c_end), "step": str(step)},
            )
            for series in orjson.loads(reply.content)["data"]["result"]:
                samples += len(np.asarray(series["values"], dtype=np.float64))
            t = c_end + step
    return samples


def _backtest_and_watch(
    section: Section, series: int = 100, points: int = 20_000, watched: int = 1000
) -> None:
    step = 300.0
    d = DetectorSettings()
    end = (int(datetime.now(UTC).timestamp()) // 300) * 300 - 3600
    start = end - (points - 1) * step
    rng = np.random.default_rng(4)
    planted: list[Series] = []
    base = np.arange(points) * step + start
    for i in range(series):
        v = 10 + rng.normal(0, 1, points)
        v[rng.integers(points // 5, points)] += 15
        planted.append(
            ("bench_backtest", {"s": str(i)}, list(zip(base.tolist(), v.tolist(), strict=True)))
        )
    w_points = detector.history_points(d, step) + 1  # what a watch fetches
    w_base = end - np.arange(w_points)[::-1] * step
    for i in range(watched):
        v = 10 + rng.normal(0, 1, w_points)
        planted.append(
            ("bench_watch", {"s": str(i)}, list(zip(w_base.tolist(), v.tolist(), strict=True)))
        )
    with tempfile.TemporaryDirectory() as tmp:
        prom = LocalPrometheus(Path(tmp) / "prom", free_port())
        t0 = time.perf_counter()
        prom.plant(planted, max_block="2000h")  # a few blocks, not one per 2 hours
        del planted
        prom.start()
        section.add(
            f"planting {series * points + watched * w_points:,} samples (promtool, not timed below)",
            f"{time.perf_counter() - t0:.0f} s",
        )
        server = start_server(
            Path(tmp) / "srv", services="insight", extra_env={"PROM_URL": prom.url}
        )
        try:
            stub = insight_pb2_grpc.InsightServiceStub(
                grpc.insecure_channel(
                    server.address("insight"),
                    options=[("grpc.max_receive_message_length", 64 << 20)],
                )
            )
            req = ipb.BacktestRequest(
                query="bench_backtest",
                start_time=timestamp_pb2.Timestamp(seconds=int(start)),
                end_time=timestamp_pb2.Timestamp(seconds=int(end)),
                step=duration_pb2.Duration(seconds=int(step)),
            )
            floor, served = [], []
            for _ in range(3):
                t0 = time.perf_counter()
                n = _floor(prom.url, "bench_backtest", start, end, step)
                t1 = time.perf_counter()
                reply = stub.Backtest(req, timeout=600)
                t2 = time.perf_counter()
                floor.append(t1 - t0)
                served.append(t2 - t1)
            assert n == series * points and len(reply.results) == series
            f, b = min(floor), min(served)
            section.add(
                f"fetch + decode {series} series x {points:,} points (floor), best of 3",
                f"{f * 1000:.0f} ms",
            )
            section.add("Backtest of that query over gRPC, best of 3", f"{b * 1000:.0f} ms")
            section.add("Backtest / floor (target <= 2)", f"{b / f:.2f}")
            episodes = sum(len(r.episodes) for r in reply.results)
            section.add("episodes found (one spike planted per series)", str(episodes))

            client = PrometheusClient(prom.url, 120)
            insight = Insight(SignalStore(_sqlite()), client)
            grid = datetime.fromtimestamp(end, UTC)
            watch = Watch("bench", "bench", "bench_watch", {}, step)
            w_floor, w_eval = [], []
            for _ in range(3):
                t0 = time.perf_counter()
                n = _floor(prom.url, "bench_watch", end - (w_points - 1) * step, end, step)
                t1 = time.perf_counter()
                insight.evaluate_watch(watch, grid)
                t2 = time.perf_counter()
                w_floor.append(t1 - t0)
                w_eval.append(t2 - t1)
            assert n == watched * w_points
            f, e = min(w_floor), min(w_eval)
            section.add(
                f"fetch + decode {watched} series x {w_points} points (a watch's range), best of 3",
                f"{f * 1000:.0f} ms",
            )
            section.add(
                "one watch evaluation over them (fetch, score, episodes), best of 3",
                f"{e * 1000:.0f} ms",
            )
            section.add("watch evaluation / floor (target <= 2)", f"{e / f:.2f}")
        finally:
            server.stop()
            prom.stop()


def _sqlite() -> SqliteDatabase:
    """The watch benchmark measures evaluation, not storage: a scratch SQLite file."""
    db = SqliteDatabase(Path(tempfile.mkdtemp()) / "bench.sqlite3")
    migrate(db)
    return db


def _scoring(section: Section) -> None:
    rng = np.random.default_rng(1)
    for n, t in ((1000, 1000), (10_000, 100)):
        values = rng.normal(1.0, 0.1, size=(n, t))
        values[rng.random(values.shape) < 0.01] = np.nan
        for name, fn in (("z-score", scoring.zscore), ("EWMA", scoring.ewma)):
            fn(values)  # warm-up
            samples = []
            for _ in range(10):
                t0 = time.perf_counter()
                fn(values)
                samples.append(time.perf_counter() - t0)
            section.add(
                f"{name}, {n:,} series x {t:,} points, p50", f"{stats_ms(samples)['p50']:.1f} ms"
            )


def _probe(
    section: Section, postgres_dsn: str | None, series: int = 200, points: int = 240, step: int = 15
) -> None:
    end = (int(datetime.now(UTC).timestamp()) // step) * step - 3600
    rng = np.random.default_rng(2)
    planted: list[Series] = [
        (
            "bench_latency_seconds",
            {"route": f"/r{i}"},
            [
                (float(end - (points - 1 - k) * step), float(v))
                for k, v in enumerate(rng.normal(0.5, 0.05, points))
            ],
        )
        for i in range(series)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        prom = LocalPrometheus(Path(tmp) / "prom", free_port())
        prom.plant(planted)
        prom.start()
        server = start_server(
            Path(tmp) / "srv",
            services="insight",
            postgres_dsn=postgres_dsn,
            extra_env={"PROM_URL": prom.url},
        )
        try:
            params = {
                "query": "bench_latency_seconds",
                "start": str(end - (points - 1) * step),
                "end": str(end),
                "step": str(step),
            }
            http = httpx.Client()
            stub = insight_pb2_grpc.InsightServiceStub(
                grpc.insecure_channel(server.address("insight"))
            )
            at = timestamp_pb2.Timestamp(seconds=end)
            req = ipb.ProbeRequest(
                query="bench_latency_seconds",
                threshold=1000,
                points=points,
                step=duration_pb2.Duration(seconds=step),
                evaluation_time=at,
            )
            raw, probe = [], []
            for i in range(110):  # alternate the two so both see the same machine state
                t0 = time.perf_counter()
                response = http.post(f"{prom.url}/api/v1/query_range", data=params)
                body = response.json()
                t1 = time.perf_counter()
                reply = stub.Probe(req)
                t2 = time.perf_counter()
                if i >= 10:
                    raw.append(t1 - t0)
                    probe.append(t2 - t1)
            assert len(body["data"]["result"]) == series and len(reply.series) == series
            section.add(
                "Prometheus JSON answer for that range", f"{len(response.content) / 1e6:.1f} MB"
            )
            r, p = stats_ms(raw), stats_ms(probe)
            section.add(
                f"raw query_range + JSON decode, {series} series x {points} points, p50 / p99",
                f"{r['p50']:.1f} ms / {r['p99']:.1f} ms",
            )
            section.add(
                "Probe (same range, scored, over gRPC), p50 / p99",
                f"{p['p50']:.1f} ms / {p['p99']:.1f} ms",
            )
            paired = sorted(b - a for a, b in zip(raw, probe, strict=True))
            extra = paired[len(paired) // 2]
            section.add(
                "Probe overhead over the raw query (median of paired differences), "
                "and as a share of the raw query's p50 (target <= 10%)",
                f"{extra * 1000:.1f} ms, {100 * extra * 1000 / r['p50']:.0f}%",
            )
        finally:
            server.stop()
            prom.stop()
