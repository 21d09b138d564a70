"""Insight domain values."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class ProbeSpec:
    query: str
    threshold: float = 3.0
    method: str = "z_score"  # or "ewma"
    points: int = 60
    lookback: timedelta | None = None
    step: timedelta = timedelta(seconds=15)
    evaluation_time: datetime | None = None
    alpha: float = 0.3
    min_points: int = 5


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
