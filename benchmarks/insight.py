"""Insight: scoring cost for many series x points, and Probe latency over the raw query."""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import grpc
import httpx
import numpy as np
from google.protobuf import duration_pb2, timestamp_pb2
from neuralops.insight.v1 import insight_pb2 as ipb
from neuralops.insight.v1 import insight_pb2_grpc
from neuralops.servers.insight import scoring
from neuralops.servers.localprom import LocalPrometheus, Series

from benchmarks.common import Section, free_port, start_server, stats_ms


def run(section: Section, postgres_dsn: str | None = None) -> None:
    _scoring(section)
    _probe(section, postgres_dsn)


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
            for i in range(70):  # alternate the two so both see the same machine state
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
            section.add("Probe overhead over the raw query, p50", f"{p['p50'] - r['p50']:.1f} ms")
        finally:
            server.stop()
            prom.stop()
