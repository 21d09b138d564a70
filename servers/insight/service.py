"""Insight domain logic: fetch a range from Prometheus, score every series, store anomalies."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime, timedelta

from neuralops.servers import metrics, pagination
from neuralops.servers.db import utcnow
from neuralops.servers.errors import FailedPrecondition, InvalidArgument
from neuralops.servers.insight import scoring
from neuralops.servers.insight.model import ProbeResult, ProbeSpec, SeriesResult, Signal
from neuralops.servers.insight.prometheus import PrometheusClient
from neuralops.servers.insight.storage import SignalStore

MAX_POINTS = 11_000  # Prometheus' own per-series limit for query_range
MAX_SERIES = 10_000
MIN_POINTS = 3
DEFAULT_SIGNALS_PAGE = 50
MAX_SIGNALS_PAGE = 1000
METHODS = ("z_score", "ewma")


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
) -> str:
    name = _series_name(labels, query)
    span = human_duration(window)
    what = "mean" if method == "z_score" else "EWMA"
    if outcome is scoring.Outcome.STALE:
        return f"{name}: no fresh sample at the end of the range"
    if outcome is scoring.Outcome.TOO_FEW_POINTS:
        return f"{name}: too few points in the last {span} to score"
    if outcome is scoring.Outcome.CONSTANT:
        return f"{name} {value:.4g} equals its constant {span} {what}"
    side = "above" if value >= baseline else "below"
    if math.isinf(score):
        return f"{name} {value:.4g} moved off its constant {span} value {baseline:.4g}"
    return f"{name} {value:.4g} is {score:.1f}σ {side} its {span} {what} {baseline:.4g}"


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

    def probe(self, spec: ProbeSpec) -> ProbeResult:
        if self._prom is None:
            raise FailedPrecondition(
                "Probe needs a Prometheus: set PROM_URL (e.g. http://localhost:9090) and restart",
                reason="PROM_URL_UNSET",
            )
        if not spec.query.strip():
            raise InvalidArgument.one("query", "is required")
        if not spec.threshold > 0 or not math.isfinite(spec.threshold):
            raise InvalidArgument.one("threshold", "must be a positive number (0 means 3)")
        if spec.method not in METHODS:
            raise InvalidArgument.one("method", "must be Z_SCORE or EWMA")
        step_s = spec.step.total_seconds()
        if step_s < 0.001:
            raise InvalidArgument.one("step", "must be at least 1ms (0 means 15s)")
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

        # The range ends on the step grid, so probing again within one step scores the
        # same sample and stores nothing new.
        raw_end = (spec.evaluation_time or utcnow()).timestamp()
        end = datetime.fromtimestamp(math.floor(raw_end / step_s) * step_s, UTC)
        start = end - timedelta(seconds=step_s * (points - 1))
        data = self._prom.query_range(spec.query, start, end, step_s, self._max_series)
        if spec.method == "z_score":
            scores = scoring.zscore(data.values, spec.min_points)
        else:
            scores = scoring.ewma(data.values, spec.alpha, spec.min_points)

        window = end - start + spec.step  # each of the points stands for one step
        results: list[SeriesResult] = []
        anomalies: list[tuple[int, Signal]] = []
        for i, labels in enumerate(data.labels):
            value, base, score = (
                float(scores.latest[i]),
                float(scores.baseline[i]),
                float(scores.score[i]),
            )
            outcome = scores.outcome[i]
            scored = outcome is scoring.Outcome.SCORED
            anomalous = scored and score >= spec.threshold
            hint = hint_for(
                labels=labels,
                query=spec.query,
                method=spec.method,
                value=value,
                baseline=base,
                score=score,
                window=window,
                outcome=outcome,
            )
            results.append(
                SeriesResult(
                    labels=labels,
                    value=0.0 if math.isnan(value) else value,
                    score=score,
                    baseline=0.0 if math.isnan(base) else base,
                    sample_time=end,
                    outcome=outcome.value,
                    anomalous=anomalous,
                    hint=hint,
                )
            )
            if anomalous:
                metric = labels.get("__name__") or spec.query
                anomalies.append(
                    (
                        i,
                        Signal(
                            "",
                            metric,
                            value,
                            score,
                            hint,
                            labels,
                            spec.method,
                            end.astimezone(UTC),
                            spec.query,
                            spec.threshold,
                            base,
                        ),
                    )
                )
        saved = self._store.save([s for _, s in anomalies])
        for (i, sig), (signal_id, created) in zip(anomalies, saved, strict=True):
            r = results[i]
            results[i] = dataclasses.replace(r, signal_id=signal_id)
            if created:
                metrics.SIGNALS_CREATED.labels(metrics.metric_label(sig.metric)).inc()
        return ProbeResult(results, start, end)

    def list_signals(
        self, size: int, token: str, metric: str, start: datetime | None, end: datetime | None
    ) -> tuple[list[Signal], str]:
        limit = pagination.page_size(size, default=DEFAULT_SIGNALS_PAGE, maximum=MAX_SIGNALS_PAGE)
        scope = "signals:" + "|".join(
            (metric, start.isoformat() if start else "", end.isoformat() if end else "")
        )
        after = pagination.decode_position(token, scope)
        found = self._store.list_signals(limit + 1, metric, start, end, after)
        return pagination.keyset_page(found, limit, scope, lambda s: (s.sample_time, s.id))
