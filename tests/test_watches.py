"""Episodes, Backtest and watches: the detector and episode rule over real gRPC, a real
Prometheus holding planted data (promtool backfill) and both databases."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import grpc
import numpy as np
import pytest
from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2
from neuralops.insight.v1 import insight_pb2 as ipb
from neuralops.insight.v1 import insight_pb2_grpc
from neuralops.servers.insight import detector
from neuralops.servers.insight.detector import DetectorSettings
from neuralops.servers.insight.model import Watch
from neuralops.servers.insight.prometheus import PrometheusClient
from neuralops.servers.insight.service import Insight, Scheduler, Walker
from neuralops.servers.insight.storage import SignalStore
from neuralops.servers.runtime.app import App
from neuralops.servers.runtime.config import Config
from neuralops.servers.runtime.db import Database
from prometheus_client import REGISTRY

from tests.helpers import field_violations
from tests.prometheus import PrometheusProcess

STEP = 60
N = 2000
# Planted minute-by-minute series ending half an hour ago, on the minute grid.
END = (int(datetime.now(UTC).timestamp()) // STEP) * STEP - 1800
T0 = END - (N - 1) * STEP
SPIKE_AT, SHIFT_AT, SHIFT_LEN = 500, 800, 120
OPEN_AT, OPEN_LEN = 1300, 100  # the incident a restart falls into
DET = {"window": 240, "min_points": 30, "close_after": 20, "no_seasonal": True}


def _noise(seed: int) -> np.ndarray:
    return 10.0 + np.random.default_rng(seed).normal(0.0, 0.5, N)


def _incidents() -> np.ndarray:
    x = _noise(1)
    x[SPIKE_AT : SPIKE_AT + 3] += 8.0
    x[SHIFT_AT : SHIFT_AT + SHIFT_LEN] += 6.0
    x[OPEN_AT : OPEN_AT + OPEN_LEN] += 6.0
    return x


def _samples(x: np.ndarray) -> list[tuple[float, float]]:
    return [(float(T0 + k * STEP), float(v)) for k, v in enumerate(x)]


def _at(minute: int) -> datetime:
    return datetime.fromtimestamp(T0 + minute * STEP, UTC)


def _ts(seconds: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusProcess]:
    prom = PrometheusProcess(tmp_path_factory.mktemp("prom"))
    prom.plant(
        [
            ("queue_depth", {"svc": "incidents"}, _samples(_incidents())),
            ("queue_depth", {"svc": "clean"}, _samples(_noise(2))),
        ]
    )
    prom.start()
    yield prom
    prom.stop()


def _stub(app: App) -> insight_pb2_grpc.InsightServiceStub:
    return insight_pb2_grpc.InsightServiceStub(grpc.insecure_channel(app.address("insight")))


@pytest.fixture
def insight(config: Config, prometheus: PrometheusProcess) -> Iterator[App]:
    app = App(
        config.with_(prom_url=prometheus.url), services=("insight",), ports={"insight": 0}
    ).start()
    yield app
    app.stop(grace=1)


# ------------------------------------------------------------------ pure rule


def test_walker_and_array_rule_open_and_close_the_same_episodes() -> None:
    rng = np.random.default_rng(5)
    score = np.abs(rng.normal(0, 1, 3000))
    score[rng.random(3000) < 0.01] = np.nan
    for at in (100, 130, 900, 2990):
        score[at : at + 4] = 9.0
    hot = np.nan_to_num(score) >= 5
    spans = detector.episodes(score, hot, 50, 5.0)
    hot[131] = False  # over the threshold but not an opening point: keeps it open
    walker = Walker(DetectorSettings(close_after=50, threshold=5.0), "t", "", "q")
    times = [datetime.fromtimestamp(k * 60, UTC) for k in range(3000)]
    values = np.zeros(3000)
    opened, _ = walker.advance(
        None, {}, times=times, score=score, hot=hot, values=values, base=values
    )
    assert [(s.start, s.end, s.peak) for s in spans] == [
        (
            int(e.start_time.timestamp() // 60),
            -1 if e.end_time is None else int(e.end_time.timestamp() // 60),
            int(e.peak_time.timestamp() // 60),
        )
        for e in opened
    ]
    assert len(spans) == 3 and spans[-1].end == -1  # 100 and 130 are one incident


def test_flat_series_has_a_finite_score_and_an_outlier_in_the_baseline_is_ignored() -> None:
    flat = np.full((1, 100), 1.51)
    flat[0, -1] = 1.6
    got = detector.score_matrix(flat, DetectorSettings(min_points=10), step_s=30)
    assert 2.0 < got.score[0, -1] < 4.0  # 0.09 over a floor of 2% of 1.51, not 782 sigma
    noisy = 5 + np.random.default_rng(3).normal(0, 1, (1, 400))
    noisy[0, 200] = 500.0  # a huge outlier inside the baseline of the last point
    noisy[0, -1] = 25.0
    got = detector.score_matrix(noisy, DetectorSettings(min_points=10), step_s=30)
    # ~20 robust spreads (a mean/std baseline would say ~0.8); the bar after a huge
    # spike is capped at surprise x surprise_cap x threshold (10), so it does not mask this.
    assert got.score[0, -1] > 15.75 and got.hot[0, -1]


# ------------------------------------------------------------------- Backtest


def _inline(values: np.ndarray, name: str) -> ipb.Series:
    s = ipb.Series(labels={"series": name})
    for k, v in enumerate(values.tolist()):
        s.points.add(time=_ts(T0 + k * STEP), value=v)
    return s


def test_backtest_inline_finds_each_incident_once_and_nothing_on_clean(insight: App) -> None:
    reply = _stub(insight).Backtest(
        ipb.BacktestRequest(
            series=[_inline(_incidents(), "incidents"), _inline(_noise(2), "clean")],
            detector=ipb.DetectorSettings(**DET),  # type: ignore[arg-type]
            include_scores=True,
        )
    )
    incidents, clean = reply.results
    assert incidents.labels["series"] == "incidents" and clean.labels["series"] == "clean"
    starts = [(e.start_time.seconds - T0) // STEP for e in incidents.episodes]
    assert [s - a for s, a in zip(starts, (SPIKE_AT, SHIFT_AT, OPEN_AT), strict=True)] == [
        0,
        0,
        0,
    ]
    assert [e.open for e in incidents.episodes] == [False, False, False]
    shift = incidents.episodes[1]
    # Open while the shift stands out, closed 20 normal points later (a 240-point
    # baseline absorbs a 120-point shift part-way, and its end does not reopen it).
    assert SHIFT_AT + 20 < (shift.end_time.seconds - T0) // STEP <= SHIFT_AT + SHIFT_LEN + 20
    assert list(clean.episodes) == []
    assert len(incidents.scores) == N and reply.detector.method == ipb.METHOD_ROBUST
    assert not list(clean.scores)[:30] or all(np.isnan(list(clean.scores)[:30]))


def test_backtest_inline_takes_25000_points_and_refuses_disorder(insight: App) -> None:
    stub = _stub(insight)
    long = 5 + np.random.default_rng(9).normal(0, 1, 25_000)
    long[20_000] = 40.0
    reply = stub.Backtest(ipb.BacktestRequest(series=[_inline(long, "long")]))
    assert [(e.start_time.seconds - T0) // STEP for e in reply.results[0].episodes] == [20_000]
    bad = _inline(np.ones(10), "bad")
    bad.points[5].time.seconds = T0
    with pytest.raises(grpc.RpcError) as err:
        stub.Backtest(ipb.BacktestRequest(series=[bad]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "series[0].points" in (err.value.details() or "")


def test_backtest_query_matches_inline_and_bounds_the_work(insight: App) -> None:
    stub = _stub(insight)
    reply = stub.Backtest(
        ipb.BacktestRequest(
            query="queue_depth",
            start_time=_ts(T0),
            end_time=_ts(END),
            step=duration_pb2.Duration(seconds=STEP),
            detector=ipb.DetectorSettings(**DET),  # type: ignore[arg-type]
        )
    )
    by = {r.labels["svc"]: r for r in reply.results}
    assert [(e.start_time.seconds - T0) // STEP for e in by["incidents"].episodes] == [
        SPIKE_AT,
        SHIFT_AT,
        OPEN_AT,
    ]
    assert list(by["clean"].episodes) == []
    none = stub.Backtest(ipb.BacktestRequest(query="no_such_metric", start_time=_ts(T0)))
    assert list(none.results) == [] and "no series matched" in none.hint
    with pytest.raises(grpc.RpcError) as err:
        stub.Backtest(
            ipb.BacktestRequest(
                query="queue_depth",
                start_time=_ts(0),
                end_time=_ts(END),
                step=duration_pb2.Duration(seconds=1),
            )
        )
    # A per-call limit: INVALID_ARGUMENT (retrying unchanged cannot help), naming the
    # field to narrow.
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "MAX_WORK_POINTS" in (err.value.details() or "")
    assert field_violations(err.value) == ["start_time"]


# -------------------------------------------------------------------- watches


def _engine(db: Database, prom: PrometheusProcess) -> tuple[Insight, SignalStore]:
    store = SignalStore(db)
    return Insight(store, PrometheusClient(prom.url)), store


def test_watch_opens_one_episode_per_incident_and_closes_across_a_restart(
    db: Database, prometheus: PrometheusProcess
) -> None:
    insight, store = _engine(db, prometheus)
    clean = insight.create_watch(
        Watch("", "clean", 'queue_depth{svc="clean"}', dict(DET), float(STEP))
    )
    w = insight.create_watch(
        Watch("", "incidents", 'queue_depth{svc="incidents"}', dict(DET), float(STEP))
    )
    first = Scheduler(insight, store)
    assert first.run_once(_at(300)) == 2  # both watches, latest point only
    assert first.run_once(_at(300)) == 0  # that interval is done
    assert first.run_once(_at(1200)) == 2  # catches up 900 minutes
    eps = store.list_episodes(10, watch_id=w.id)
    assert [round((e.start_time.timestamp() - T0) / STEP) for e in eps] == [SHIFT_AT, SPIKE_AT]
    assert all(not e.open for e in eps)
    assert first.run_once(_at(OPEN_AT + 8)) == 2  # mid-incident: open
    (open_ep,) = store.list_episodes(10, watch_id=w.id, state="open")
    # Exported on /metrics (read from the registry it serves), per watch and series.
    hot = {"watch_id": w.id, "series": 'queue_depth{svc="incidents"}'}
    calm = {"watch_id": clean.id, "series": 'queue_depth{svc="clean"}'}
    assert REGISTRY.get_sample_value("neuralops_anomaly_open_episodes", hot) == 1.0
    assert REGISTRY.get_sample_value("neuralops_anomaly_open_episodes", calm) == 0.0
    assert (REGISTRY.get_sample_value("neuralops_anomaly_score", hot) or 0) >= 5.0

    # A restarted server (new engine, new lease owner) continues the same episode.
    insight2, store2 = _engine(db, prometheus)
    second = Scheduler(insight2, store2)
    assert second.run_once(_at(OPEN_AT + 14)) == 2
    (still,) = store2.list_episodes(10, watch_id=w.id, state="open")
    assert still.id == open_ep.id and still.last_seen_time > open_ep.last_seen_time
    assert second.run_once(_at(OPEN_AT + OPEN_LEN + 60)) == 2
    eps = store2.list_episodes(10, watch_id=w.id)
    assert len(eps) == 3 and eps[0].id == open_ep.id and not eps[0].open
    assert eps[0].end_time is not None
    assert round((eps[0].end_time.timestamp() - T0) / STEP) <= OPEN_AT + OPEN_LEN + 20
    assert store2.list_episodes(10, watch_id=clean.id) == []


def test_two_servers_evaluate_each_interval_once(
    db: Database, prometheus: PrometheusProcess
) -> None:
    a, store_a = _engine(db, prometheus)
    b, store_b = _engine(db, prometheus)
    w = a.create_watch(Watch("", "w", "queue_depth", dict(DET), float(STEP)))
    ticks = [_at(400 + k) for k in range(12)]
    done = {"a": 0, "b": 0}

    def run(name: str, sched: Scheduler) -> None:
        for t in ticks:
            for _ in range(3):  # each server tries every tick a few times
                done[name] += sched.run_once(t)

    threads = [
        threading.Thread(target=run, args=("a", Scheduler(a, store_a))),
        threading.Thread(target=run, args=("b", Scheduler(b, store_b))),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = store_a.get_watch(w.id)
    assert got is not None
    assert done["a"] + done["b"] == got.evaluations <= len(ticks)
    assert got.evaluated_time == ticks[-1]


def test_watch_rpcs_and_the_server_evaluates_on_its_own(
    insight: App, prometheus: PrometheusProcess
) -> None:
    stub = _stub(insight)
    made = stub.CreateWatch(
        ipb.CreateWatchRequest(
            watch=ipb.Watch(
                name="queue",
                query="queue_depth",
                interval=duration_pb2.Duration(seconds=1),
                detector=ipb.DetectorSettings(window=60, min_points=10),
            )
        )
    ).watch
    assert made.id and made.detector.method == ipb.METHOD_ROBUST
    assert made.detector.close_after == DetectorSettings().close_after
    assert stub.GetWatch(ipb.GetWatchRequest(id=made.id)).watch.query == "queue_depth"
    changed = stub.UpdateWatch(
        ipb.UpdateWatchRequest(
            watch=ipb.Watch(id=made.id, name="renamed", query="ignored"),
            update_mask=field_mask_pb2.FieldMask(paths=["name"]),
        )
    ).watch
    assert changed.name == "renamed" and changed.query == "queue_depth"
    # Any spelling of the id is the one watch, on either database.
    assert stub.GetWatch(ipb.GetWatchRequest(id=made.id.upper())).watch.id == made.id
    assert stub.GetWatch(ipb.GetWatchRequest(id="{" + made.id + "}")).watch.name == "renamed"
    with pytest.raises(grpc.RpcError) as err:  # a path that is no field is refused
        stub.UpdateWatch(
            ipb.UpdateWatchRequest(
                watch=ipb.Watch(id=made.id),
                update_mask=field_mask_pb2.FieldMask(paths=["detector.nonexistent"]),
            )
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(err.value) == ["update_mask"]
    tuned = stub.UpdateWatch(  # one setting changes; the others stay as they were
        ipb.UpdateWatchRequest(
            watch=ipb.Watch(id=made.id, detector=ipb.DetectorSettings(threshold=7)),
            update_mask=field_mask_pb2.FieldMask(paths=["detector.threshold"]),
        )
    ).watch
    assert tuned.detector.threshold == 7
    assert (tuned.detector.window, tuned.detector.min_points) == (60, 10)
    assert [w.id for w in stub.ListWatches(ipb.ListWatchesRequest()).watches] == [made.id]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        got = stub.GetWatch(ipb.GetWatchRequest(id=made.id)).watch
        if got.HasField("last_evaluated_time"):
            break
        time.sleep(0.2)
    assert got.HasField("last_evaluated_time") and got.last_error == ""
    for bad, field in (
        (ipb.Watch(query=""), "watch.query"),
        (ipb.Watch(query="up", interval=duration_pb2.Duration(seconds=-5)), "watch.interval"),
        (
            ipb.Watch(query="up", detector=ipb.DetectorSettings(threshold=-1)),
            "watch.detector.threshold",
        ),
    ):
        with pytest.raises(grpc.RpcError) as err:
            stub.CreateWatch(ipb.CreateWatchRequest(watch=bad))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in (err.value.details() or "")
    stub.DeleteWatch(ipb.DeleteWatchRequest(id=made.id))
    with pytest.raises(grpc.RpcError) as err:
        stub.GetWatch(ipb.GetWatchRequest(id=made.id))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_probe_matching_nothing_says_so(insight: App) -> None:
    reply = _stub(insight).Probe(ipb.ProbeRequest(query="no_such_metric"))
    assert list(reply.series) == [] and "no series matched" in reply.hint


def test_prometheus_non_numeric_values_are_missing_samples() -> None:
    from neuralops.servers.insight.prometheus import _pairs

    got = _pairs([[1.0, "1.5"], [2.0, "abc"], [3.0, None], ["x", "2"], [4.0, "NaN"]])
    assert got.shape == (5, 2) and got[0, 1] == 1.5
    assert np.isnan(got[1, 1]) and np.isnan(got[2, 1]) and np.isnan(got[3, 0])


def test_a_backtest_stops_when_its_caller_goes_away(
    db: Database, prometheus: PrometheusProcess
) -> None:
    # A long range is fetched in chunks; between them the server asks whether the caller
    # is still there (gRPC's context.is_active), so a deadline that passed stops the work.
    from neuralops.servers.runtime.errors import Cancelled
    from neuralops.servers.runtime.interceptors import status_code

    insight, _ = _engine(db, prometheus)
    asked: list[int] = []

    def still_there() -> bool:
        asked.append(1)
        return len(asked) < 2  # the caller leaves after the first chunk

    start = datetime.fromtimestamp(T0, UTC)
    end = datetime.fromtimestamp(T0 + 3 * 10_000, UTC)  # 30,001 points at 1 s: 4 chunks
    with pytest.raises(Cancelled):
        insight.backtest_query(
            "queue_depth", start, end, 1.0, DetectorSettings(), keep_going=still_there
        )
    assert len(asked) == 2  # one chunk fetched, then it stopped
    assert status_code(Cancelled("gone")) == grpc.StatusCode.CANCELLED
    results, _ = insight.backtest_query("queue_depth", start, end, 1.0, DetectorSettings())
    assert results  # a caller that stays gets the whole range


# Ordinary daily traffic (requests per 5 minutes, a 50% daily swing, a little
# autocorrelated noise), ten days of it: no incident anywhere.
DAY_POINTS = 288
DAYS = 10


def _daily_traffic(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = DAYS * DAY_POINTS
    phase = rng.uniform(0, 2 * np.pi)
    swing = 1 + 0.5 * np.sin(2 * np.pi * np.arange(n) / DAY_POINTS + phase)
    noise = np.zeros(n)
    for k in range(1, n):
        noise[k] = 0.8 * noise[k - 1] + rng.normal(0, 0.03)
    return rng.poisson(400 * swing * np.exp(noise)).astype(float)


TRAFFIC_END = (int(datetime.now(UTC).timestamp()) // 300) * 300 - 3600
TRAFFIC_T0 = TRAFFIC_END - (DAYS * DAY_POINTS - 1) * 300
TRAFFIC_SERIES = 4


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusProcess]:
    prom = PrometheusProcess(tmp_path_factory.mktemp("traffic"))
    prom.plant(
        [
            (
                "requests",
                {"pod": str(seed)},
                [
                    (float(TRAFFIC_T0 + k * 300), float(v))
                    for k, v in enumerate(_daily_traffic(seed))
                ],
            )
            for seed in range(TRAFFIC_SERIES)
        ]
    )
    prom.start()
    yield prom
    prom.stop()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # (the detector's business)
def test_a_watch_sees_an_ordinary_day_as_a_backtest_of_the_same_days_does(
    db: Database, traffic: PrometheusProcess
) -> None:
    """A live watch scores each new point on the history a Backtest would give it (the
    daily profile's week, not the last 2.5 days), so daily traffic raises nothing, point
    after point, as in the Backtest of those days."""
    insight, store = _engine(db, traffic)
    w = insight.create_watch(Watch("", "traffic", "requests", {}, 300.0))
    sched = Scheduler(insight, store)
    first = DAYS * DAY_POINTS - DAY_POINTS  # the last day, one point at a time
    for k in range(first, DAYS * DAY_POINTS):
        assert sched.run_once(datetime.fromtimestamp(TRAFFIC_T0 + k * 300, UTC)) == 1
    assert store.list_episodes(50, watch_id=w.id) == []
