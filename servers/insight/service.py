"""Insight domain logic: fetch a range from Prometheus, score every series, store anomalies."""

from __future__ import annotations

import dataclasses
import logging
import math
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt
from neuralops.servers.insight import detector, scoring
from neuralops.servers.insight.detector import DetectorSettings, FloatArray
from neuralops.servers.insight.model import (
    Episode,
    ProbeResult,
    ProbeSpec,
    SeriesResult,
    Watch,
)
from neuralops.servers.insight.prometheus import PrometheusClient
from neuralops.servers.insight.storage import SignalStore, series_key, watch_position
from neuralops.servers.runtime import metrics, pagination
from neuralops.servers.runtime.db import utcnow
from neuralops.servers.runtime.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)

log = logging.getLogger(__name__)

MAX_POINTS = 11_000  # Prometheus' own per-series limit for query_range
MAX_SERIES = 10_000
MIN_POINTS = 3
DEFAULT_SIGNALS_PAGE = 50
MAX_SIGNALS_PAGE = 1000
METHODS = detector.METHODS
MAX_WORK_POINTS = 25_000_000  # series x points per Probe/Backtest call
MAX_INLINE_POINTS = 100_000  # per inline Backtest series
MAX_WATCH_CATCHUP = 1_000  # grid points a watch scores after a pause, at most
DEFAULT_WATCH_INTERVAL_S = 60.0


def human_duration(d: timedelta) -> str:
    """``timedelta(seconds=5445)`` -> ``1h30m45s``."""
    s = round(d.total_seconds())
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if s >= size:
            parts.append(f"{s // size}{unit}")
            s %= size
    return "".join(parts) or "0s"


def _series_name(labels: dict[str, str], query: str) -> str:
    name = labels.get("__name__", "")
    rest = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__")
    base = name or (query if len(query) <= 60 else query[:57] + "...")
    return f"{base}{{{rest}}}" if rest else base


def hint_for(
    *,
    labels: dict[str, str],
    query: str,
    method: str,
    value: float,
    baseline: float,
    score: float,
    window: timedelta,
    outcome: scoring.Outcome,
    constant: bool = False,
    stuck: bool = False,
) -> str:
    name = _series_name(labels, query)
    span = human_duration(window)
    what = {"z_score": "mean", "ewma": "EWMA"}.get(method, "median")
    if outcome is scoring.Outcome.STALE:
        return f"{name}: no fresh sample at the end of the range"
    if outcome is scoring.Outcome.TOO_FEW_POINTS:
        return f"{name}: too few points in the last {span} to score"
    if outcome is scoring.Outcome.CONSTANT:
        return f"{name} {value:.4g} equals its constant {span} {what}"
    if stuck:
        return (
            f"{name} has stayed at {value:.4g} for longer than any run of one value in its "
            f"{span} window (a stuck exporter or sensor? score {score:.1f})"
        )
    side = "above" if value >= baseline else "below"
    if math.isinf(score) or constant:
        return f"{name} {value:.4g} moved off its constant {span} value {baseline:.4g}" + (
            "" if math.isinf(score) else f" (score {score:.1f})"
        )
    if method == "robust" and value > 0 and baseline > 0:
        # Far from a positive median, the ratio says more than a score in spreads
        # (a 1.5 s run against a 3 ms median is "501x", not "1250.8 spreads").
        up, down = value / baseline, baseline / value
        far = 3 - 1e-9  # 0.3 / 0.1 is 2.9999999999999996 in doubles
        if math.isfinite(up) and up >= far:
            times = f"{_times(up)}x its"
        elif math.isfinite(down) and down >= far:
            times = f"1/{_times(down)} of its"
        else:
            times = ""
        if times:
            return f"{name} {value:.4g} is {times} {span} median {baseline:.4g} (score {score:.1f})"
    unit = "x its robust spread" if method == "robust" else "σ"
    return f"{name} {value:.4g} is {score:.1f}{unit} {side} its {span} {what} {baseline:.4g}"


def _times(ratio: float) -> str:
    """A ratio for people: 3.2, 41.5, 501, 12,500 (never 1.25e+04)."""
    return f"{ratio:.3g}" if ratio < 100 else f"{ratio:,.0f}"


def watch_key(text: str) -> str | None:
    """A watch id as stored (any spelling of a UUID, case or braces, is one watch);
    None when ``text`` is no UUID."""
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return None


def check_work(series: int, points: int, field: str) -> None:
    if series * points > MAX_WORK_POINTS:
        raise ResourceExhausted(
            field,
            f"{series:,} series x {points:,} points is over the per-call limit of "
            f"{MAX_WORK_POINTS:,} points (MAX_WORK_POINTS): narrow the query or the range",
        )


def settings_from(d: dict[str, object]) -> DetectorSettings:
    """Detector settings from a stored/requested dict (zero or missing = default)."""
    base = DetectorSettings()
    method = str(d.get("method") or "robust")
    thr = float(d.get("threshold") or 0) or (base.threshold if method == "robust" else 3.0)  # type: ignore[arg-type]
    return DetectorSettings(
        method=method,
        threshold=thr,
        window=int(d.get("window") or base.window),  # type: ignore[call-overload]
        min_points=int(d.get("min_points") or base.min_points),  # type: ignore[call-overload]
        close_after=int(d.get("close_after") or base.close_after),  # type: ignore[call-overload]
        alpha=float(d.get("alpha") or base.alpha),  # type: ignore[arg-type]
        seasonal=not bool(d.get("no_seasonal")),
    )


def checked(settings: DetectorSettings, prefix: str = "detector.") -> DetectorSettings:
    bad = settings.check()
    if bad:
        raise InvalidArgument([FieldViolation(prefix + f, d) for f, d in bad])
    return settings


@dataclass(frozen=True)
class BacktestSeries:
    labels: dict[str, str]
    times: FloatArray  # unix seconds
    spans: list[detector.Span]
    score: FloatArray
    values: FloatArray


def _ts(t: float) -> datetime:
    return datetime.fromtimestamp(float(t), UTC)


class Walker:
    """The episode rule point by point, for evaluations that continue stored state
    (watches and Probe). Backtest uses :func:`detector.episodes`, the same rule over a
    whole array; a test checks the two agree."""

    def __init__(self, settings: DetectorSettings, source: str, watch_id: str, query: str):
        self.s, self.source, self.watch_id, self.query = settings, source, watch_id, query

    def advance(
        self,
        current: Episode | None,
        labels: dict[str, str],
        *,
        times: Sequence[datetime],
        score: FloatArray,
        hot: npt.NDArray[np.bool_],
        values: FloatArray,
        base: FloatArray,
    ) -> tuple[list[Episode], list[Episode]]:
        """Walk the new points from the series' open episode (if any); returns the
        episodes opened (final state) and the stored ones changed."""
        touched: dict[str, Episode] = {}
        new_ids: set[str] = set()
        ep = current
        for k, t in enumerate(times):
            if current is not None and t <= current.evaluated_time:
                continue
            sc = float(score[k])
            if math.isnan(sc):
                continue
            is_open = ep is not None and ep.end_time is None
            if bool(hot[k]) or (is_open and sc >= self.s.threshold):
                if ep is None or ep.end_time is not None:
                    ep = Episode(
                        id=str(uuid.uuid4()),
                        source=self.source,
                        watch_id=self.watch_id,
                        metric=labels.get("__name__") or self.query,
                        labels=labels,
                        method=self.s.method,
                        query=self.query,
                        threshold=self.s.threshold,
                        start_time=t,
                        end_time=None,
                        peak_time=t,
                        peak_score=sc,
                        peak_value=float(values[k]),
                        baseline=float(base[k]),
                        last_seen_time=t,
                        evaluated_time=t,
                        normal_points=0,
                        hint="",
                    )
                    new_ids.add(ep.id)
                else:
                    peak = sc > ep.peak_score
                    ep = dataclasses.replace(
                        ep,
                        peak_time=t if peak else ep.peak_time,
                        peak_score=sc if peak else ep.peak_score,
                        peak_value=float(values[k]) if peak else ep.peak_value,
                        baseline=float(base[k]) if peak else ep.baseline,
                        last_seen_time=t,
                        evaluated_time=t,
                        normal_points=0,
                    )
            elif ep is not None and ep.end_time is None:
                n = ep.normal_points + 1
                ep = dataclasses.replace(
                    ep,
                    normal_points=n,
                    evaluated_time=t,
                    end_time=t if n >= self.s.close_after else None,
                )
            else:
                continue
            touched[ep.id] = ep
        opened = [e for i, e in touched.items() if i in new_ids]
        updated = [e for i, e in touched.items() if i not in new_ids]
        return opened, updated


class Insight:
    def __init__(
        self,
        store: SignalStore,
        prometheus: PrometheusClient | None,
        *,
        max_series: int = MAX_SERIES,
    ) -> None:
        self._store = store
        self._prom = prometheus
        self._max_series = max_series

    def _need_prom(self, what: str) -> PrometheusClient:
        if self._prom is None:
            raise FailedPrecondition(
                f"{what} needs a Prometheus: set PROM_URL (e.g. http://localhost:9090) and restart",
                reason="PROM_URL_UNSET",
            )
        return self._prom

    # --------------------------------------------------------------------- Probe

    def probe(self, spec: ProbeSpec) -> ProbeResult:
        prom = self._need_prom("Probe")
        if not spec.query.strip():
            raise InvalidArgument.one("query", "is required")
        if spec.method not in METHODS:
            raise InvalidArgument.one("method", "must be ROBUST, Z_SCORE or EWMA")
        threshold = spec.threshold or (
            DetectorSettings().threshold if spec.method == "robust" else 3.0
        )
        if not threshold > 0 or not math.isfinite(threshold):
            raise InvalidArgument.one(
                "threshold", "must be a positive number (0 means the default)"
            )
        step_s = spec.step.total_seconds()
        if step_s < 0.001 or step_s > 366 * 86400:
            raise InvalidArgument.one("step", "must be 1ms to 366 days (0 means 15s)")
        if spec.lookback is not None:
            if spec.lookback.total_seconds() <= 0:
                raise InvalidArgument.one("lookback", "must be positive")
            points = int(spec.lookback.total_seconds() // step_s) + 1
            field = "lookback"
        else:
            points, field = spec.points, "points"
        if points < MIN_POINTS or points > MAX_POINTS:
            raise InvalidArgument.one(
                field, f"gives {points} points per series; must be {MIN_POINTS} to {MAX_POINTS}"
            )
        if spec.min_points < 2 or spec.min_points > points - 1:
            raise InvalidArgument.one("min_points", f"must be between 2 and {points - 1}")
        if not 0 < spec.alpha <= 1:
            raise InvalidArgument.one("alpha", "must be in (0, 1] (0 means 0.3)")
        if not 1 <= spec.close_after <= 100_000:
            raise InvalidArgument.one(
                "close_after", f"must be 1 to 100,000 (0 means {DetectorSettings().close_after})"
            )
        settings = DetectorSettings(
            method=spec.method,
            threshold=threshold,
            window=max(3, points - 1),
            min_points=spec.min_points,
            close_after=spec.close_after,
            alpha=spec.alpha,
            seasonal=False,
            # A one-shot look at a short range scores the latest point alone: a level or
            # flatline judgement needs more history than Probe's few dozen points.
            level_points=1,
            flat_points=0,
        )

        # The range ends on the step grid, so probing again within one step scores the
        # same sample and stores nothing new.
        try:
            raw_end = (spec.evaluation_time or utcnow()).timestamp()
            end = datetime.fromtimestamp(math.floor(raw_end / step_s) * step_s, UTC)
            start = end - timedelta(seconds=step_s * (points - 1))
        except (OverflowError, ValueError, OSError) as exc:
            raise InvalidArgument.one(
                "evaluation_time", f"with this step and points gives a range out of bounds: {exc}"
            ) from exc
        data = prom.query_range(
            spec.query, start, end, step_s, self._max_series, max_points=MAX_WORK_POINTS
        )
        if not data.labels:
            return ProbeResult(
                [],
                start,
                end,
                hint=f"no series matched {spec.query!r} between {start:%Y-%m-%dT%H:%M:%SZ} and {end:%Y-%m-%dT%H:%M:%SZ}",
            )
        n = data.values.shape[1]
        sc = detector.score_matrix(data.values, settings, first=n - 1, step_s=step_s)
        window = end - start + spec.step  # each of the points stands for one step
        count = np.sum(~np.isnan(data.values[:, :-1]), axis=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows
            flat = np.nanmin(data.values[:, :-1], axis=1) == np.nanmax(data.values[:, :-1], axis=1)
        source = "probe:" + spec.query
        walker = Walker(settings, source, "", spec.query)
        current = self._store.open_episodes(source)
        results: list[SeriesResult] = []
        opened: list[Episode] = []
        updated: list[Episode] = []
        open_id: dict[int, str] = {}
        for i, labels in enumerate(data.labels):
            value = float(data.values[i, -1])
            score = float(sc.score[i, -1])
            base = float(sc.baseline[i, -1])
            if math.isnan(value):
                outcome = scoring.Outcome.STALE
            elif count[i] < spec.min_points or math.isnan(score):
                outcome = scoring.Outcome.TOO_FEW_POINTS
            elif flat[i] and value == base:
                outcome = scoring.Outcome.CONSTANT
            else:
                outcome = scoring.Outcome.SCORED
            anomalous = outcome is scoring.Outcome.SCORED and bool(sc.hot[i, -1])
            hint = hint_for(
                labels=labels,
                query=spec.query,
                method=spec.method,
                value=value,
                baseline=base,
                score=score if not math.isnan(score) else 0.0,
                window=window,
                outcome=outcome,
                constant=bool(flat[i]),
            )
            cur = current.get(series_key(labels)) if current else None
            new, changed = (
                walker.advance(
                    cur,
                    labels,
                    times=[end],
                    score=sc.score[i, -1:],
                    hot=sc.hot[i, -1:] & (outcome is scoring.Outcome.SCORED),
                    values=data.values[i, -1:],
                    base=sc.baseline[i, -1:],
                )
                if anomalous or cur is not None
                else ([], [])  # nothing open and nothing new: the walk would do nothing
            )
            opened += [dataclasses.replace(e, hint=hint) for e in new]
            updated += [
                dataclasses.replace(e, hint=hint) if e.last_seen_time == end else e for e in changed
            ]
            if new:
                open_id[i] = new[-1].id
            elif cur is not None:
                open_id[i] = cur.id
            results.append(
                SeriesResult(
                    labels=labels,
                    value=0.0 if math.isnan(value) else value,
                    score=0.0 if math.isnan(score) else score,
                    baseline=0.0 if math.isnan(base) else base,
                    sample_time=end,
                    outcome=outcome.value,
                    anomalous=anomalous,
                    hint=hint,
                )
            )
        saved = self._store.write(opened, updated)
        ids = {e.id: sid for e, (sid, _) in zip(opened, saved, strict=True)}
        for e, (_, created) in zip(opened, saved, strict=True):
            if created:
                metrics.SIGNALS_CREATED.labels(metrics.metric_label(e.metric)).inc()
        for i, r in enumerate(results):
            if r.anomalous and i in open_id:
                results[i] = dataclasses.replace(r, signal_id=ids.get(open_id[i], open_id[i]))
        hint = ""
        if not np.any(~np.isnan(data.values)):
            hint = f"{len(data.labels)} series matched but none has samples in the range"
        return ProbeResult(results, start, end, hint=hint)

    # ---------------------------------------------------------------- ListSignals

    def list_signals(
        self,
        size: int,
        token: str,
        metric: str,
        start: datetime | None,
        end: datetime | None,
        *,
        state: str = "",
        watch_id: str = "",
    ) -> tuple[list[Episode], str]:
        limit = pagination.page_size(size, default=DEFAULT_SIGNALS_PAGE, maximum=MAX_SIGNALS_PAGE)
        scope = "signals:" + "|".join(
            (
                metric,
                start.isoformat() if start else "",
                end.isoformat() if end else "",
                state,
                watch_id,
            )
        )
        after = pagination.decode_position(token, scope)
        found = self._store.list_episodes(
            limit + 1,
            metric=metric,
            start=start,
            end=end,
            state=state,
            watch_id=watch_id,
            after=after,
        )
        return pagination.keyset_page(found, limit, scope, lambda e: (e.start_time, e.id))

    # ------------------------------------------------------------------ Backtest

    def backtest_inline(
        self,
        series: Sequence[tuple[dict[str, str], FloatArray, FloatArray]],
        settings: DetectorSettings,
    ) -> list[BacktestSeries]:
        """Series as (labels, times, values); groups series of one shape and step so
        each group is scored as one matrix."""
        checked(settings)
        total = sum(len(t) for _, t, _ in series)
        check_work(1, total, "series")
        for i, (_, t, _) in enumerate(series):
            if len(t) > MAX_INLINE_POINTS:
                raise InvalidArgument.one(
                    f"series[{i}].points", f"has {len(t):,} points; at most {MAX_INLINE_POINTS:,}"
                )
            if len(t) > 1 and np.any(np.diff(t) <= 0):
                raise InvalidArgument.one(
                    f"series[{i}].points", "must be in strictly increasing time order"
                )
        groups: dict[tuple[int, float], list[int]] = {}
        for i, (_, t, _) in enumerate(series):
            step = float(np.median(np.diff(t))) if len(t) > 1 else 300.0
            groups.setdefault((len(t), step), []).append(i)
        out: list[BacktestSeries | None] = [None] * len(series)
        for (n, step), members in groups.items():
            values = np.stack([series[i][2] for i in members]) if n else np.zeros((len(members), 0))
            sc = detector.score_matrix(values, settings, step_s=step)
            for row, i in enumerate(members):
                labels, t, v = series[i]
                spans = detector.episodes(
                    sc.score[row], sc.hot[row], settings.close_after, settings.threshold
                )
                out[i] = BacktestSeries(labels, t, spans, sc.score[row], v)
        return [o for o in out if o is not None]

    def backtest_query(
        self,
        query: str,
        start: datetime,
        end: datetime,
        step_s: float,
        settings: DetectorSettings,
        *,
        keep_going: Callable[[], bool] = lambda: True,
    ) -> tuple[list[BacktestSeries], str]:
        prom = self._need_prom("Backtest with a query")
        checked(settings)
        if not query.strip():
            raise InvalidArgument.one("query", "is required (or give series inline)")
        if not 1 <= step_s <= 366 * 86400:
            raise InvalidArgument.one("step", "must be 1s to 366 days (0 means 5m)")
        if not end > start:
            raise InvalidArgument.one("start_time", "must be before end_time")
        n = round((end.timestamp() - start.timestamp()) / step_s) + 1
        if n > MAX_WORK_POINTS:
            raise ResourceExhausted(
                "start_time",
                f"start_time..end_time at this step is {n:,} points per series; at most "
                f"{MAX_WORK_POINTS:,} (MAX_WORK_POINTS)",
            )
        data = prom.query_range_chunked(
            query,
            start,
            end,
            step_s,
            max_series=self._max_series,
            max_points=MAX_WORK_POINTS,
            keep_going=keep_going,
        )
        if not data.labels:
            return [], f"no series matched {query!r} in the range"
        sc = detector.score_matrix(data.values, settings, step_s=step_s)
        times = np.asarray(data.start + step_s * np.arange(data.values.shape[1]), np.float64)
        out = [
            BacktestSeries(
                labels,
                times,
                detector.episodes(sc.score[i], sc.hot[i], settings.close_after, settings.threshold),
                sc.score[i],
                data.values[i],
            )
            for i, labels in enumerate(data.labels)
        ]
        hint = (
            ""
            if np.any(~np.isnan(data.values))
            else "series matched but none has samples in the range"
        )
        return out, hint

    # ------------------------------------------------------------------- Watches

    def _check_watch(self, w: Watch) -> Watch:
        if not w.query.strip():
            raise InvalidArgument.one("watch.query", "is required")
        if not 1 <= w.interval_s <= 86400:
            raise InvalidArgument.one("watch.interval", "must be 1s to 1 day (0 means 1m)")
        s = checked(settings_from(w.detector), "watch.detector.")
        if s.window + MAX_WATCH_CATCHUP > MAX_POINTS:
            raise InvalidArgument.one(
                "watch.detector.window", f"must be at most {MAX_POINTS - MAX_WATCH_CATCHUP}"
            )
        return w

    def create_watch(self, w: Watch) -> Watch:
        return self._store.create_watch(self._check_watch(w))

    def get_watch(self, wid: str) -> Watch:
        key = watch_key(wid)
        if key is None:
            raise InvalidArgument.one("id", "must be a watch id (UUID)")
        wid = key
        got = self._store.get_watch(wid)
        if got is None:
            raise NotFound(f"watch {wid} not found")
        return got

    def list_watches(self, size: int, token: str) -> tuple[list[Watch], str]:
        limit = pagination.page_size(size, default=DEFAULT_SIGNALS_PAGE, maximum=MAX_SIGNALS_PAGE)
        after = pagination.decode_position(token, "watches")
        found = self._store.list_watches(limit + 1, after)
        return pagination.keyset_page(found, limit, "watches", watch_position)

    def update_watch(self, w: Watch) -> Watch:
        w = dataclasses.replace(w, id=self.get_watch(w.id).id)
        got = self._store.update_watch(self._check_watch(w))
        if got is None:
            raise NotFound(f"watch {w.id} not found")
        return got

    def delete_watch(self, wid: str) -> None:
        self._store.delete_watch(self.get_watch(wid).id)

    def evaluate_watch(self, w: Watch, grid: datetime) -> int:
        """Score the watch's new grid points up to ``grid`` and store the episode
        changes; returns the number of episodes opened."""
        prom = self._need_prom("A watch")
        s = settings_from(w.detector)
        step = w.interval_s
        if w.evaluated_time is None:
            new = 1
        else:
            new = round((grid.timestamp() - w.evaluated_time.timestamp()) / step)
            new = max(1, min(new, MAX_WATCH_CATCHUP))
        # The context a Backtest of the same days gives each point (the daily profile's
        # days, the baseline window): a watch must not alarm on what a Backtest calls
        # an ordinary day.
        n = detector.history_points(s, step) + new
        start = grid - timedelta(seconds=step * (n - 1))
        data = prom.query_range_chunked(
            w.query,
            start,
            grid,
            step,
            max_series=self._max_series,
            max_points=MAX_WORK_POINTS,
        )
        if not data.labels:
            return 0
        # The window before the new points is scored too (cheap, blockwise) so the
        # "beats its own window" rule sees the window's scores.
        sc = detector.score_matrix(data.values, s, first=max(0, n - new - s.window), step_s=step)
        times = [_ts(data.start + step * k) for k in range(n - new, n)]
        source = "watch:" + w.id
        walker = Walker(s, source, w.id, w.query)
        current = self._store.open_episodes(source)
        opened: list[Episode] = []
        updated: list[Episode] = []
        window = timedelta(seconds=step * s.window)
        for i, labels in enumerate(data.labels):
            key = series_key(labels)
            cur = current.get(key)
            new_eps, changed = walker.advance(
                cur,
                labels,
                times=times,
                score=sc.score[i, n - new :],
                hot=sc.hot[i, n - new :],
                values=data.values[i, n - new :],
                base=sc.baseline[i, n - new :],
            )
            for e in (*new_eps, *changed):
                k = round((e.peak_time.timestamp() - data.start) / step)
                e2 = dataclasses.replace(
                    e,
                    hint=hint_for(
                        labels=labels,
                        query=w.query,
                        method=s.method,
                        value=e.peak_value,
                        baseline=e.baseline,
                        score=e.peak_score,
                        window=window,
                        outcome=scoring.Outcome.SCORED,
                        stuck=0 <= k < n and bool(sc.stuck[i, k]),
                    ),
                )
                (opened if e in new_eps else updated).append(e2)
            last = sc.score[i, -1]
            still_open = any(e.end_time is None for e in new_eps) or (
                cur is not None and not any(e.end_time is not None for e in changed)
            )
            metrics.observe_anomaly(
                w.id,
                _series_name(labels, w.query),
                None if math.isnan(last) else float(last),
                still_open,
            )
        saved = self._store.write(opened, updated)
        made = sum(1 for _, created in saved if created)
        for e, (_, created) in zip(opened, saved, strict=True):
            if created:
                metrics.SIGNALS_CREATED.labels(metrics.metric_label(e.metric)).inc()
        return made


class Scheduler:
    """Evaluates every watch once per interval, on this server or another: each
    evaluation is claimed with a lease row (one conditional UPDATE), recorded with the
    grid time it covered, and a later claim skips a covered interval. After a pause
    (restart, outage) the next evaluation scores every missed grid point, up to
    MAX_WATCH_CATCHUP, continuing the stored open episodes."""

    def __init__(self, insight: Insight, store: SignalStore) -> None:
        self._insight, self._store = insight, store
        self.owner = f"insight-{uuid.uuid4()}"

    def run_once(self, now: datetime | None = None) -> int:
        now = now or utcnow()
        done = 0
        for w in self._store.due_watches(now):
            grid = datetime.fromtimestamp(
                math.floor(now.timestamp() / w.interval_s) * w.interval_s, UTC
            )
            if w.evaluated_time is not None and w.evaluated_time >= grid:
                continue
            lease = timedelta(seconds=max(30.0, 2 * w.interval_s))
            if not self._store.claim(w.id, self.owner, grid, lease):
                continue
            try:
                self._insight.evaluate_watch(w, grid)
            except Exception as exc:
                log.warning("watch %s at %s failed: %s", w.id, grid.isoformat(), exc)
                self._store.finish(w.id, self.owner, None, str(exc)[:500])
                continue
            self._store.finish(w.id, self.owner, grid, "")
            done += 1
        return done
