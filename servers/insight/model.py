"""Insight domain values."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class ProbeSpec:
    query: str
    threshold: float = 0.0  # 0: the method's default
    method: str = "robust"  # or "z_score", "ewma"
    points: int = 60
    lookback: timedelta | None = None
    step: timedelta = timedelta(seconds=15)
    evaluation_time: datetime | None = None
    alpha: float = 0.3
    min_points: int = 5
    close_after: int = 144  # the detector's default (DetectorSettings.close_after)


@dataclass(frozen=True)
class SeriesResult:
    labels: dict[str, str]
    value: float
    score: float
    baseline: float
    sample_time: datetime
    outcome: str
    anomalous: bool
    hint: str
    signal_id: str = ""


@dataclass(frozen=True)
class ProbeResult:
    series: list[SeriesResult]
    start: datetime
    end: datetime
    hint: str = ""

    @property
    def anomalies(self) -> int:
        return sum(1 for s in self.series if s.anomalous)


@dataclass(frozen=True)
class Signal:
    id: str
    metric: str
    value: float
    score: float
    hint: str
    labels: dict[str, str]
    method: str
    sample_time: datetime
    query: str
    threshold: float
    baseline: float
    created_at: datetime | None = None


@dataclass(frozen=True)
class Episode:
    """One incident on one series (a stored signal is an episode)."""

    id: str
    source: str  # "watch:<id>" or "probe:<query>"
    watch_id: str
    metric: str
    labels: dict[str, str]
    method: str
    query: str
    threshold: float
    start_time: datetime
    end_time: datetime | None
    peak_time: datetime
    peak_score: float
    peak_value: float
    baseline: float
    last_seen_time: datetime
    evaluated_time: datetime
    normal_points: int
    hint: str
    created_at: datetime | None = None

    @property
    def open(self) -> bool:
        return self.end_time is None


@dataclass(frozen=True)
class Watch:
    id: str
    name: str
    query: str
    detector: dict[str, object]
    interval_s: float
    created_at: datetime | None = None
    updated_at: datetime | None = None
    evaluated_time: datetime | None = None
    evaluations: int = 0
    last_error: str = ""
