"""InsightService against a real Prometheus holding planted data."""

from __future__ import annotations

import json
import math
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf import duration_pb2, timestamp_pb2
from neuralops.insight.v1 import insight_pb2 as ipb
from neuralops.insight.v1 import insight_pb2_grpc
from neuralops.servers.insight import scoring
from neuralops.servers.insight.model import ProbeSpec
from neuralops.servers.insight.prometheus import PrometheusClient
from neuralops.servers.insight.service import Insight, hint_for
from neuralops.servers.insight.storage import SignalStore
from neuralops.servers.runtime.app import App
from neuralops.servers.runtime.config import Config
from neuralops.servers.runtime.db import Database
from neuralops.servers.runtime.errors import InvalidArgument
from scipy import stats

from tests.conftest import free_port
from tests.helpers import field_violations
from tests.procs import ServerProcess, grpcurl
from tests.prometheus import PrometheusProcess

STEP = 15
POINTS = 60
# The planted range ends on the step grid, half an hour ago.
END = (int(datetime.now(UTC).timestamp()) // STEP) * STEP - 1800
NOISE = [0.8 + 0.05 * math.sin(k * 1.7) for k in range(POINTS)]
SPIKE = [*NOISE[:-1], 3.4]
FLAT = [*NOISE[:-1], 0.81]


def _grid(values: list[float], last: int = END) -> list[tuple[float, float]]:
    return [(last - (len(values) - 1 - k) * STEP, v) for k, v in enumerate(values)]


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusProcess]:
    prom = PrometheusProcess(tmp_path_factory.mktemp("prom"))
    prom.plant(
        [
            ("latency_p95_seconds", {"route": "/spike"}, _grid(SPIKE)),
            ("latency_p95_seconds", {"route": "/flat"}, _grid(FLAT)),
            ("latency_p95_seconds", {"route": "/const"}, _grid([1.0] * POINTS)),
            ("latency_p95_seconds", {"route": "/short"}, _grid([0.5, 0.6, 0.7])),
            ("latency_p95_seconds", {"route": "/stale"}, _grid([0.5] * 20, last=END - 900)),
            ("up", {"job": "planted", "instance": "a"}, _grid([1.0] * POINTS)),
            ("up", {"job": "planted", "instance": "b"}, _grid([*([1.0] * (POINTS - 1)), 0.0])),
        ]
    )
    prom.start()
    yield prom
    prom.stop()


@pytest.fixture
def insight(config: Config, prometheus: PrometheusProcess) -> Iterator[App]:
    app = App(
        config.with_(prom_url=prometheus.url), services=("insight",), ports={"insight": 0}
    ).start()
    yield app
    app.stop(grace=1)


def _stub(app: App) -> insight_pb2_grpc.InsightServiceStub:
    return insight_pb2_grpc.InsightServiceStub(grpc.insecure_channel(app.address("insight")))


def _at(ts: int) -> timestamp_pb2.Timestamp:
    t = timestamp_pb2.Timestamp()
    t.FromSeconds(ts)
    return t


def _probe(query: str, **kw: object) -> ipb.ProbeRequest:
    fields: dict[str, object] = {
        "threshold": 3.0,
        "method": ipb.METHOD_Z_SCORE,
        "points": POINTS,
        "step": duration_pb2.Duration(seconds=STEP),
        "evaluation_time": _at(END),
        **kw,
    }
    return ipb.ProbeRequest(query=query, **fields)  # type: ignore[arg-type]


def _count(app: App) -> int:
    assert app.db is not None
    with app.db.transaction(write=False) as tx:
        return int(tx.execute("SELECT COUNT(*) AS n FROM insight_episodes")[0]["n"])


def test_spike_yields_one_signal_and_flat_series_none(insight: App) -> None:
    reply = _stub(insight).Probe(_probe('latency_p95_seconds{route=~"/spike|/flat"}'))
    by_route = {s.labels["route"]: s for s in reply.series}
    assert set(by_route) == {"/spike", "/flat"}
    spike, flat = by_route["/spike"], by_route["/flat"]
    window = np.array(SPIKE[:-1])
    assert spike.score == pytest.approx(
        abs(3.4 - stats.tmean(window)) / stats.tstd(window), rel=1e-9
    )
    assert spike.anomalous and spike.signal_id and spike.value == pytest.approx(3.4)
    assert spike.labels["__name__"] == "latency_p95_seconds"
    assert "σ above its 15m mean" in spike.hint and "3.4" in spike.hint
    assert not flat.anomalous and flat.signal_id == "" and flat.score < 3
    assert reply.anomalies == 1
    assert _count(insight) == 1


def test_reprobing_the_same_sample_adds_no_row(insight: App) -> None:
    stub = _stub(insight)
    first = stub.Probe(_probe('latency_p95_seconds{route="/spike"}')).series[0]
    again = stub.Probe(_probe('latency_p95_seconds{route="/spike"}')).series[0]
    assert again.signal_id == first.signal_id
    assert _count(insight) == 1


def test_every_series_is_scored_on_its_own_with_clear_outcomes(insight: App) -> None:
    reply = _stub(insight).Probe(_probe("latency_p95_seconds"))
    outcomes = {s.labels["route"]: ipb.SeriesOutcome.Name(s.outcome) for s in reply.series}
    assert outcomes == {
        "/spike": "SERIES_OUTCOME_SCORED",
        "/flat": "SERIES_OUTCOME_SCORED",
        "/const": "SERIES_OUTCOME_CONSTANT",
        "/short": "SERIES_OUTCOME_TOO_FEW_POINTS",
        "/stale": "SERIES_OUTCOME_STALE",
    }
    assert reply.anomalies == 1


def test_up_with_threshold_2_flags_the_target_that_went_down(insight: App) -> None:
    reply = _stub(insight).Probe(_probe("up", threshold=2.0))
    by_instance = {s.labels["instance"]: s for s in reply.series}
    assert (
        by_instance["a"].outcome == ipb.SERIES_OUTCOME_CONSTANT and not by_instance["a"].anomalous
    )
    # The spread floor (2% of |median|) keeps a flat series' score finite: |0 - 1| / 0.02.
    assert by_instance["b"].anomalous and by_instance["b"].score == pytest.approx(50.0)
    signals = _stub(insight).ListSignals(ipb.ListSignalsRequest(metric="up")).signals
    assert [(s.labels["instance"], s.value) for s in signals] == [("b", 0.0)]


def test_ewma_method_scores_too(insight: App) -> None:
    reply = _stub(insight).Probe(
        _probe('latency_p95_seconds{route="/spike"}', method=ipb.METHOD_EWMA)
    )
    assert reply.series[0].anomalous
    signal = _stub(insight).ListSignals(ipb.ListSignalsRequest()).signals[0]
    assert signal.method == ipb.METHOD_EWMA and "EWMA" in signal.hint


def test_repeated_probes_of_one_incident_make_one_open_episode(insight: App) -> None:
    stub = _stub(insight)
    ids = set()
    for back in (4, 3, 2, 1, 0):  # five evaluation times, one step apart, all flagged
        reply = stub.Probe(
            _probe(
                'latency_p95_seconds{route="/spike"}',
                evaluation_time=_at(END - back * STEP),
                threshold=0.01,
            )
        )
        ids.add(reply.series[0].signal_id)
    assert _count(insight) == 1 and len(ids) == 1
    (ep,) = stub.ListSignals(ipb.ListSignalsRequest(state=ipb.EPISODE_STATE_OPEN)).signals
    assert ep.open and ep.start_time.seconds == END - 4 * STEP
    assert ep.last_seen_time.seconds == END
    assert not stub.ListSignals(ipb.ListSignalsRequest(state=ipb.EPISODE_STATE_CLOSED)).signals


def test_list_signals_newest_first_paginated_and_filtered(insight: App) -> None:
    stub = _stub(insight)
    selectors = ['="/spike"', '=~"/spike"', '=~"/spik.*"', '=~"/sp.*"', '=~"/s.*ke"']
    for sel in selectors:  # five probes (five sources), each opens its own episode
        stub.Probe(_probe(f"latency_p95_seconds{{route{sel}}}", threshold=0.01))
    assert _count(insight) == 5
    stub.Probe(_probe("up", threshold=2.0))
    pages, token = [], ""
    while True:
        page = stub.ListSignals(
            ipb.ListSignalsRequest(page_size=2, page_token=token, metric="latency_p95_seconds")
        )
        pages.append(page.signals)
        token = page.next_page_token
        if not token:
            break
    listed = [s for p in pages for s in p]
    times = [(s.sample_time.seconds, s.id) for s in listed]
    assert times == sorted(times, reverse=True)
    assert all(s.metric == "latency_p95_seconds" for s in listed)
    assert len({s.id for s in listed}) == len(listed)
    windowed = stub.ListSignals(
        ipb.ListSignalsRequest(start_time=_at(END), end_time=_at(END + 1))
    ).signals
    assert {s.metric for s in windowed} == {"latency_p95_seconds", "up"}
    with pytest.raises(grpc.RpcError) as err:
        stub.ListSignals(ipb.ListSignalsRequest(page_token=token or "bm90LWEtdG9rZW4"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_empty_result_is_an_empty_answer(insight: App) -> None:
    reply = _stub(insight).Probe(_probe("no_such_metric"))
    assert list(reply.series) == [] and reply.anomalies == 0


def test_bad_promql_is_invalid_argument_with_prometheus_text(insight: App) -> None:
    with pytest.raises(grpc.RpcError) as err:
        _stub(insight).Probe(_probe("rate(up[5m]"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "parse error" in (err.value.details() or "")
    assert field_violations(err.value) == ["query"]


@pytest.mark.parametrize(
    ("request_kw", "field"),
    [
        ({"points": 20_000}, "points"),
        ({"points": 2}, "points"),
        ({"threshold": -1.0}, "threshold"),
        ({"step": duration_pb2.Duration(nanos=1000)}, "step"),
        ({"lookback": duration_pb2.Duration(seconds=86400 * 3)}, "lookback"),
    ],
)
def test_oversized_or_malformed_probes_are_refused_with_the_limit(
    insight: App, request_kw: dict[str, object], field: str
) -> None:
    req = _probe("up")
    for k, v in request_kw.items():
        if isinstance(v, duration_pb2.Duration):
            getattr(req, k).CopyFrom(v)
        else:
            setattr(req, k, v)
    with pytest.raises(grpc.RpcError) as err:
        _stub(insight).Probe(req)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(err.value) == [field]


def test_too_many_series_is_refused(db: Database, prometheus: PrometheusProcess) -> None:
    insight = Insight(SignalStore(db), PrometheusClient(prometheus.url), max_series=3)
    spec = ProbeSpec(
        query="latency_p95_seconds",
        points=POINTS,
        step=timedelta(seconds=STEP),
        evaluation_time=datetime.fromtimestamp(END, UTC),
    )
    with pytest.raises(InvalidArgument) as err:
        insight.probe(spec)
    assert "returned 5 series; at most 3" in err.value.message


def test_prom_url_unset_is_failed_precondition(config: Config) -> None:
    app = App(config, services=("insight",), ports={"insight": 0}).start()
    try:
        with pytest.raises(grpc.RpcError) as err:
            _stub(app).Probe(ipb.ProbeRequest(query="up"))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "PROM_URL" in (err.value.details() or "")
    finally:
        app.stop(grace=1)


def test_prometheus_down_is_unavailable(config: Config) -> None:
    app = App(
        config.with_(prom_url=f"http://127.0.0.1:{free_port()}"),
        services=("insight",),
        ports={"insight": 0},
    ).start()
    try:
        with pytest.raises(grpc.RpcError) as err:
            _stub(app).Probe(ipb.ProbeRequest(query="up"))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        app.stop(grace=1)


def test_prometheus_timing_out_is_unavailable(config: Config) -> None:
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        app = App(
            config.with_(prom_url=url, prom_timeout_s=0.5),
            services=("insight",),
            ports={"insight": 0},
        ).start()
        try:
            with pytest.raises(grpc.RpcError) as err:
                _stub(app).Probe(ipb.ProbeRequest(query="up"), timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "timed out" in (err.value.details() or "")
        finally:
            app.stop(grace=1)


def test_grpcurl_probe_and_list_signals(
    config: Config, prometheus: PrometheusProcess, tmp_path: Path
) -> None:
    server = ServerProcess(
        tmp_path / "srv",
        postgres_dsn=config.postgres_dsn,
        services="insight",
        extra_env={"PROM_URL": prometheus.url},
    ).start()
    try:
        svc = "neuralops.insight.v1.InsightService"
        at = datetime.fromtimestamp(END, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        reply = json.loads(
            grpcurl(
                server.address("insight"),
                f"{svc}/Probe",
                data={"query": "up", "threshold": 2, "evaluation_time": at},
            ).stdout
        )
        assert {s["labels"]["instance"] for s in reply["series"]} == {"a", "b"}
        flagged = [s for s in reply["series"] if s.get("anomalous")]
        assert len(flagged) == 1 and flagged[0]["signal_id"]
        listed = json.loads(
            grpcurl(server.address("insight"), f"{svc}/ListSignals", data={}).stdout
        )
        assert [s["id"] for s in listed["signals"]] == [flagged[0]["signal_id"]]
        live = json.loads(
            grpcurl(
                server.address("insight"), f"{svc}/Probe", data={"query": "up", "threshold": 2}
            ).stdout
        )
        assert "series" not in live or isinstance(
            live["series"], list
        )  # answered, whatever the data now
    finally:
        server.stop()


def test_a_hint_far_from_a_positive_median_says_how_many_times() -> None:
    common: dict[str, Any] = {
        "labels": {"__name__": "run_seconds", "wpk_id": "w"},
        "query": "run_seconds",
        "method": "robust",
        "window": timedelta(seconds=30),
        "outcome": scoring.Outcome.SCORED,
    }
    slow = hint_for(value=1.504, baseline=0.003, score=1250.8, **common)
    assert "is 501x its 30s median 0.003 (score 1250.8)" in slow
    fast = hint_for(value=0.001, baseline=0.5, score=9.0, **common)
    assert "is 1/500 of its 30s median 0.5" in fast
    near = hint_for(value=0.62, baseline=0.5, score=6.1, **common)
    assert "6.1x its robust spread above its 30s median 0.5" in near
    assert "is 12,500x its" in hint_for(value=12.5, baseline=0.001, score=9e4, **common)
    assert "is 1/3 of its" in hint_for(value=0.1, baseline=0.3, score=7.0, **common)
    # Ratios past what a double holds fall back to spreads instead of failing.
    assert "robust spread" in hint_for(value=1e-200, baseline=1e200, score=8.0, **common)


def test_every_detector_method_has_a_proto_value() -> None:
    from neuralops.servers.insight.detector import METHODS
    from neuralops.servers.insight.servicer import METHOD, MethodName

    assert {m.value for m in MethodName} == set(METHODS)
    assert len(ipb.Method.values()) - 1 == len(MethodName)
    for m in MethodName:
        assert METHOD.from_proto(METHOD.to_proto(m)) is m
