"""Anomaly scores for many series at once (numpy, vectorised across series).

Input is a matrix ``values[series, step]`` on one time grid, NaN where a series has
no sample. For each series the *latest* point (last column) is scored against the
*window* (every earlier column):

- z-score: ``|latest - mean(window)| / std(window, ddof=1)``
- EWMA: the window is smoothed with ``m_t = a x_t + (1-a) m_{t-1}`` and
  ``v_t = (1-a) (v_{t-1} + a (x_t - m_{t-1})^2)`` (NaNs skipped); the score is
  ``|latest - m| / sqrt(v)``.

Outcomes never divide by zero: a missing/NaN latest point is STALE, fewer than
``min_points`` window points is TOO_FEW_POINTS, a zero spread with the latest point
equal to the baseline is CONSTANT (score 0), and a zero spread with the latest point
away from it scores +inf (any change of a perfectly flat series is maximal news).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from enum import Enum

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


class Outcome(Enum):
    SCORED = "scored"
    TOO_FEW_POINTS = "too_few_points"
    CONSTANT = "constant"
    STALE = "stale"


@dataclass(frozen=True)
class Scores:
    """Per-series results, each an array of length n_series."""

    latest: FloatArray
    baseline: FloatArray
    spread: FloatArray
    score: FloatArray
    outcome: list[Outcome]


def _finish(
    latest: FloatArray,
    base: FloatArray,
    spread: FloatArray,
    count: npt.NDArray[np.int64],
    min_points: int,
) -> Scores:
    stale = np.isnan(latest)
    few = ~stale & (count < min_points)
    flat = ~stale & ~few & ~(spread > 0)
    ok = ~stale & ~few & ~flat
    score = np.zeros_like(latest)
    with np.errstate(divide="ignore", invalid="ignore"):
        score[ok] = np.abs(latest[ok] - base[ok]) / spread[ok]
    moved = flat & (latest != base)
    score[moved] = np.inf
    outcome = [
        Outcome.STALE
        if s
        else Outcome.TOO_FEW_POINTS
        if f
        else Outcome.SCORED
        if (o or m)
        else Outcome.CONSTANT
        for s, f, o, m in zip(stale, few, ok, moved, strict=True)
    ]
    return Scores(latest, base, spread, score, outcome)


def zscore(values: FloatArray, min_points: int = 5) -> Scores:
    values = np.asarray(values, dtype=np.float64)
    window, latest = values[:, :-1], values[:, -1].copy()
    count = np.sum(~np.isnan(window), axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: handled below
        mean = np.nanmean(window, axis=1)
        std = np.nanstd(window, axis=1, ddof=1)
    return _finish(latest, mean, np.nan_to_num(std, nan=0.0), count, min_points)


def ewma(values: FloatArray, alpha: float = 0.3, min_points: int = 5) -> Scores:
    if not 0 < alpha <= 1:
        raise ValueError("alpha must be in (0, 1]")
    values = np.asarray(values, dtype=np.float64)
    window, latest = values[:, :-1], values[:, -1].copy()
    n = values.shape[0]
    mean = np.full(n, np.nan)
    var = np.zeros(n)
    count = np.zeros(n, dtype=np.int64)
    for col in window.T:  # one vectorised update per time step, across all series
        present = ~np.isnan(col)
        first = present & np.isnan(mean)
        mean[first] = col[first]
        upd = present & ~first
        diff = col[upd] - mean[upd]
        mean[upd] = mean[upd] + alpha * diff
        var[upd] = (1 - alpha) * (var[upd] + alpha * diff * diff)
        count += present
    return _finish(latest, mean, np.sqrt(var), count, min_points)
