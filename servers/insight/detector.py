"""The production anomaly detector and the episode rule, vectorised with numpy.

Input is a matrix ``values[series, step]`` on one time grid (NaN where a series has no
sample). :func:`score_matrix` gives every point from ``first`` on a score against the
points before it; :func:`episodes` turns scores into episodes.

Methods:

- ``robust`` (the production default): the score of ``x_t`` is
  ``|x_t - median(B)| / spread(B)`` where ``B`` is the baseline, the last ``window``
  points before ``t``. ``spread`` is ``1.4826 * MAD`` with floors: a ``spread_floor``
  fraction of the baseline's 1%-99% range and of ``|median|`` (so a flat series moving
  from 1.0 to 1.5 scores 25, not 782 sigma, and a change of a few percent of the level
  is no incident however quiet the series was), half the series' resolution (its
  smallest step: one step of an integer gauge is no incident), and a tiny absolute
  epsilon. A
  rise is also measured against the baseline's upper tail (p99 - median) and a fall
  against its lower one, so a skewed series' ordinary bursts are not news while a drop
  as large is. Median and quantiles ignore outliers inside the baseline, so one spike
  does not hide the next one. Baselines are recomputed every ``block`` points (the
  statistics of a long window barely move in a few points) which keeps the cost at
  a few sorts per block across all series at once. When the history covers at least
  two days and removing the daily profile (the median of the same time of day on
  previous days) shrinks the spread by a quarter or more, the series is scored on
  its residual instead: a daily peak is then normal, a flat noon is not. Two more
  terms, the score being the largest: the *level* term scores the median of the last
  ``level_points`` points against the baseline of those medians (its own spread, so
  autocorrelated noise does not alarm and a sustained small shift that no single point
  shows does), times ``level_gain``; the *flatline* term scores a run of identical
  values against the longest run the window showed (:func:`flat_scores`).
- ``z_score``: ``|x_t - mean(B)| / std(B)``; ``ewma``: exponentially weighted mean and
  deviation with factor ``alpha``. Both kept for comparison; they use the same floor.

The threshold is in units of the robust spread, and a point must also beat the highest
score of its own window (capped), so 5 means "unusual for this series" on every series.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view
from scipy.ndimage import maximum_filter1d

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

METHODS = ("robust", "z_score", "ewma")
TAIL = 0.01
TAIL_Z = 4.65  # (p99 - p1) of a normal distribution, in standard deviations
DAY_S = 86_400.0
QUANTUM = 0.5  # the spread is at least this x the series' resolution (its smallest step)


@dataclass(frozen=True)
class DetectorSettings:
    """A detector; the defaults are the production default (see reports/nab.md)."""

    method: str = "robust"
    threshold: float = 5.0
    window: int = 720  # baseline points (2.5 days at 5-minute steps)
    min_points: int = 30  # baseline points needed before a point is scored
    close_after: int = 144  # normal points in a row that close an episode (12 h at 5 min)
    alpha: float = 0.02  # EWMA factor
    spread_floor: float = 0.02  # fraction of the baseline's range and of |median|
    seasonal: bool = True  # use the daily profile where the history covers it
    surprise: float = 1.0  # robust: a point must also beat this x the window's highest score
    surprise_cap: float = 2.0  # ... that bar capped at this x the threshold
    level_points: int = 12  # robust: also score the median of the last this many points
    level_gain: float = 1.0  # ... times this (a sustained shift of threshold/gain alerts)
    flat_points: int = 12  # robust: a run of identical values this long may be a flatline (<2: off)
    flat_ratio: float = 3.0  # ... when also this x the longest run in the window before it

    def check(self) -> list[tuple[str, str]]:
        """Violations as (field, description); empty when valid."""
        bad: list[tuple[str, str]] = []
        if self.method not in METHODS:
            bad.append(("method", "must be ROBUST, Z_SCORE or EWMA"))
        if not (self.threshold > 0 and math.isfinite(self.threshold)):
            bad.append(("threshold", "must be a positive finite number"))
        if not 3 <= self.window <= 100_000:
            bad.append(("window", "must be 3 to 100,000 points"))
        if not 2 <= self.min_points <= self.window:
            bad.append(("min_points", f"must be 2 to window ({self.window})"))
        if not 1 <= self.level_points <= 10_000:
            bad.append(("level_points", "must be 1 to 10,000 points"))
        if not (self.level_gain >= 0 and math.isfinite(self.level_gain)):
            bad.append(("level_gain", "must be a non-negative finite number"))
        if not 1 <= self.close_after <= 100_000:
            bad.append(("close_after", "must be 1 to 100,000 points"))
        if not 0 < self.alpha <= 1:
            bad.append(("alpha", "must be in (0, 1]"))
        return bad


@dataclass(frozen=True)
class Scored:
    """Per-point results, each ``[series, step]``; NaN score where not scored;
    ``hot`` marks the anomalous points, ``stuck`` those the flatline rule scored."""

    score: FloatArray
    baseline: FloatArray
    hot: npt.NDArray[np.bool_]
    stuck: npt.NDArray[np.bool_]  # the flatline term set the score (a run of one value)


def _hot(score: FloatArray, flat: FloatArray, settings: DetectorSettings) -> npt.NDArray[np.bool_]:
    """Over the threshold and, for ROBUST, at least ``surprise`` x the highest score in
    the point's own window, that bar capped at ``surprise_cap`` x the threshold. A
    series whose ordinary week reaches score 7 now and then does not alarm at 7 (the
    threshold then means "unusual for this series", the same on every series), and one
    huge past spike cannot mask a later clear incident."""
    with np.errstate(invalid="ignore"):
        over = score >= settings.threshold
    if settings.method != "robust" or settings.surprise <= 0 or not over.any():
        return over
    with np.errstate(invalid="ignore"):
        stuck = flat >= settings.threshold
    z = np.nan_to_num(score, nan=0.0)
    w = settings.window
    padded = np.concatenate([np.zeros((z.shape[0], 1)), z], axis=1)
    past: FloatArray = np.asarray(
        maximum_filter1d(padded, size=w, axis=1, origin=(w - 1) // 2, mode="nearest"),
        dtype=np.float64,
    )[:, :-1]  # the highest of the w scores before each point
    bar = settings.surprise * np.minimum(past, settings.surprise_cap * settings.threshold)
    return (over & (z >= bar)) | stuck


def _rows_quantiles(sorted_rows: FloatArray, count: IntArray, qs: tuple[float, ...]) -> FloatArray:
    """Quantiles of rows sorted ascending with NaNs last (``count`` valid each)."""
    out = np.full((len(qs), sorted_rows.shape[0]), np.nan)
    ok = count > 0
    rows = np.flatnonzero(ok)
    last = count[ok] - 1
    for j, q in enumerate(qs):
        pos = last * q
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, last)
        frac = pos - lo
        a = sorted_rows[rows, lo]
        b = sorted_rows[rows, hi]
        out[j, rows] = a + (b - a) * frac
    return out


def _robust_stats(
    hist: FloatArray, floor: float
) -> tuple[FloatArray, FloatArray, FloatArray, IntArray]:
    """Median, floored robust spread above and below it, and usable count per row."""
    s = np.sort(hist, axis=1)
    count = np.sum(~np.isnan(hist), axis=1).astype(np.int64)
    p01, med, p99 = _rows_quantiles(s, count, (TAIL, 0.5, 1 - TAIL))
    dev = np.sort(np.abs(hist - med[:, None]), axis=1)
    (mad,) = _rows_quantiles(dev, count, (0.5,))
    # The tail term: a heavy-tailed series' own 1%/99% points are not news.
    spread = np.fmax(1.4826 * mad, floor * (p99 - p01))
    spread = np.fmax(spread, floor * np.abs(med))
    spread = np.fmax(spread, 1e-9)
    # A quantised series (integer counts, CPU in 0.5% steps) cannot move by less than its
    # resolution: one step of it is at most 1/QUANTUM spreads, however still it sat.
    steps = np.diff(s, axis=1)
    with np.errstate(invalid="ignore"):
        quantum = np.min(np.where(steps > 0, steps, np.inf), axis=1, initial=np.inf)
    spread = np.fmax(spread, np.where(np.isfinite(quantum), QUANTUM * quantum, 0.0))
    up = np.fmax(spread, (p99 - med) / (TAIL_Z / 2))
    down = np.fmax(spread, (med - p01) / (TAIL_Z / 2))
    return med, up, down, count


def _mean_stats(
    hist: FloatArray, floor: float
) -> tuple[FloatArray, FloatArray, FloatArray, IntArray]:
    count = np.sum(~np.isnan(hist), axis=1).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        total = np.nansum(hist, axis=1)
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        sq = np.nansum((hist - mean[:, None]) ** 2, axis=1)
        std = np.sqrt(sq / np.maximum(count - 1, 1))
    rng = np.nanmax(np.where(count[:, None] > 0, hist, 0.0), axis=1) - np.nanmin(
        np.where(count[:, None] > 0, hist, 0.0), axis=1
    )
    spread = np.fmax(np.fmax(np.fmax(std, floor * rng), floor * np.abs(mean)), 1e-9)
    return mean, spread, spread, count


def _block(window: int) -> int:
    return max(1, min(144, window // 10))


def _windowed(
    values: FloatArray, first: int, settings: DetectorSettings, robust: bool
) -> tuple[FloatArray, FloatArray]:
    n_series, n = values.shape
    score = np.full((n_series, n), np.nan)
    base = np.full((n_series, n), np.nan)
    w, k = settings.window, _block(settings.window)
    stats = _robust_stats if robust else _mean_stats
    lvl_k = settings.level_points
    use_level = robust and lvl_k > 1 and settings.level_gain > 0
    if use_level:
        level = _causal_median(values, lvl_k)
        lscore = np.full((n_series, n), np.nan)
    b = max(first, 1)
    while b < n:
        # Short histories move fast: recompute the baseline every 1/8 of its length.
        e = min(n, b + min(k, max(1, min(b, w) // 8)))
        hist = values[:, max(0, b - w) : b]
        med, up, down, count = stats(hist, settings.spread_floor)
        seg = values[:, b:e]
        ok = (count >= settings.min_points)[:, None] & ~np.isnan(seg)
        z = _sided(seg - med[:, None], up, down)
        score[:, b:e] = np.where(ok, z, np.nan)
        base[:, b:e] = med[:, None]
        if use_level:
            lmed, lup, ldown, _ = stats(level[:, max(0, b - w) : b], settings.spread_floor)
            root = math.sqrt(lvl_k)
            lz = _sided(
                level[:, b:e] - lmed[:, None], np.fmax(lup, up / root), np.fmax(ldown, down / root)
            )
            lscore[:, b:e] = np.where(ok, lz, np.nan)
        b = e
    if not robust:
        return np.abs(score), base
    if not use_level:
        return np.abs(score), base
    out: FloatArray = np.where(
        np.isnan(score),
        np.nan,
        np.fmax(np.abs(score), settings.level_gain * np.abs(np.nan_to_num(lscore))),
    )
    return out, base


def _sided(dev: FloatArray, up: FloatArray, down: FloatArray) -> FloatArray:
    out: FloatArray = np.where(dev > 0, dev / up[:, None], dev / down[:, None])
    return out


def _causal_median(values: FloatArray, k: int) -> FloatArray:
    """The (upper) median of each point and the ``k - 1`` before it; gaps carry the
    last value (NaNs before a series' first sample sort last, so they count as high). Sliding windows partitioned a few rows at a time (bounded memory)."""
    filled = values
    if np.isnan(values).any():
        idx = np.where(np.isnan(values), 0, np.arange(values.shape[1])[None, :])
        np.maximum.accumulate(idx, axis=1, out=idx)
        filled = np.take_along_axis(values, idx, axis=1)  # NaN only before the first sample
    pad = np.concatenate([np.repeat(filled[:, :1], k - 1, axis=1), filled], axis=1)
    out = np.empty_like(filled)
    rows = max(1, (1 << 22) // max(1, k * filled.shape[1]))
    for r in range(0, filled.shape[0], rows):
        win = sliding_window_view(pad[r : r + rows], k, axis=1)
        out[r : r + rows] = np.partition(win, k // 2, axis=2)[..., k // 2]
    return out


def _ewma(
    values: FloatArray, first: int, settings: DetectorSettings
) -> tuple[FloatArray, FloatArray]:
    n_series, n = values.shape
    a = settings.alpha
    score = np.full((n_series, n), np.nan)
    base = np.full((n_series, n), np.nan)
    mean = np.full(n_series, np.nan)
    var = np.zeros(n_series)
    count = np.zeros(n_series, dtype=np.int64)
    for t in range(n):  # one vectorised update per step, across all series
        col = values[:, t]
        present = ~np.isnan(col)
        if t >= first:
            spread = np.fmax(np.fmax(np.sqrt(var), settings.spread_floor * np.abs(mean)), 1e-9)
            ok = present & (count >= settings.min_points)
            score[ok, t] = np.abs(col[ok] - mean[ok]) / spread[ok]
            base[:, t] = mean
        fresh = present & np.isnan(mean)
        mean[fresh] = col[fresh]
        upd = present & ~fresh
        diff = col[upd] - mean[upd]
        mean[upd] = mean[upd] + a * diff
        var[upd] = (1 - a) * (var[upd] + a * diff * diff)
        count += present
    return score, base


# Days of history the daily profile looks back on.
PROFILE_DAYS = 7
# A watch fetches at most this many points of history per series (two Prometheus
# chunks): a week of minutes. Finer steps get fewer days of profile (at 15 s, about
# three days), so each evaluation stays a bounded fetch.
MAX_HISTORY_POINTS = 20_000


def history_points(settings: DetectorSettings, step_s: float) -> int:
    """Points before a scored window that give it all the context it has in a long
    range (a Backtest): the baseline window, and for a seasonal detector the days its
    daily profile looks back on. A watch fetches these, so a point scores as it would
    in a Backtest of the same days, not against two days' profile."""
    n = settings.window
    if settings.method == "robust" and settings.seasonal and step_s > 0:
        period = round(DAY_S / step_s)
        if period >= 3:
            n += PROFILE_DAYS * period
    return max(settings.window, min(n, MAX_HISTORY_POINTS))


def daily_profile(values: FloatArray, period: int, days: int = PROFILE_DAYS) -> FloatArray:
    """For every point, the median over up to ``days`` previous days of the same time
    of day (each day's value the median of that step and its two neighbours); NaN
    where fewer than two days are behind it."""
    n_series, n = values.shape
    out = np.full((n_series, n), np.nan)
    if period < 3 or n <= 2 * period:
        return out
    near = _median3(values)
    lags = [d * period for d in range(1, days + 1) if d * period < n]
    stack = np.full((len(lags), n_series, n), np.nan)
    for j, lag in enumerate(lags):
        stack[j, :, lag:] = near[:, : n - lag]
    stack.sort(axis=0)  # NaNs last
    count = np.sum(~np.isnan(stack), axis=0)
    enough = count >= 2
    lo = np.maximum(count - 1, 0) // 2
    hi = np.maximum(count, 1) // 2
    a = np.take_along_axis(stack, lo[None], axis=0)[0]
    b = np.take_along_axis(stack, hi[None], axis=0)[0]
    out[enough] = ((a + b) / 2.0)[enough]
    return out


def _median3(values: FloatArray) -> FloatArray:
    """The median of each point and its two neighbours (NaNs ignored where possible)."""
    a = np.empty_like(values)
    c = np.empty_like(values)
    a[:, 1:], a[:, 0] = values[:, :-1], np.nan
    c[:, :-1], c[:, -1] = values[:, 1:], np.nan
    b = values
    with np.errstate(invalid="ignore"):
        m: FloatArray = np.fmax(np.fmin(a, b), np.fmin(np.fmax(a, b), c))
    # where only one neighbour is missing fmin/fmax pick from the other two: close enough
    return np.where(np.isnan(b), np.nan, m)


def _spread_of(x: FloatArray) -> FloatArray:
    """Robust spread per row (NaNs ignored)."""
    s = np.sort(x, axis=1)
    count = np.sum(~np.isnan(x), axis=1).astype(np.int64)
    (med,) = _rows_quantiles(s, count, (0.5,))
    dev = np.sort(np.abs(x - med[:, None]), axis=1)
    mad: FloatArray = _rows_quantiles(dev, count, (0.5,))[0]
    return mad


def score_matrix(
    values: FloatArray, settings: DetectorSettings, *, first: int = 0, step_s: float = 300.0
) -> Scored:
    """Scores for columns ``first`` onwards (earlier columns are history only)."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] == 0:
        empty = np.full(values.shape, np.nan)
        none = np.zeros(values.shape, dtype=bool)
        return Scored(empty, empty.copy(), none, none.copy())
    values = np.where(np.isfinite(values), values, np.nan)
    if settings.method == "ewma":
        score, base = _ewma(values, first, settings)
    else:
        score, base = _scores(values, first, settings, step_s)
    flat = np.zeros_like(score)
    if settings.method == "robust" and settings.flat_points > 1:
        flat = np.where(np.isnan(score), np.nan, flat_scores(values, settings))
        score = np.fmax(score, flat)
    with np.errstate(invalid="ignore"):
        stuck = (flat >= settings.threshold) & (flat >= score)
    return Scored(score, base, _hot(score, flat, settings), stuck)


def flat_scores(values: FloatArray, settings: DetectorSettings) -> FloatArray:
    """``threshold x run / bar``: ``run`` is how many identical values in a row end at
    each point, ``bar`` the larger of ``flat_points`` and ``flat_ratio`` x the longest
    run that ended in the window before the current one began. A stuck exporter or
    sensor scores the threshold once its run is clearly longer than any the series
    showed lately; a quantised series whose value often sits still does not, nor does
    one that has not moved at all in the window."""
    n_series, n = values.shape
    same = np.zeros((n_series, n), dtype=bool)
    same[:, 1:] = values[:, 1:] == values[:, :-1]  # NaN never equals: gaps break runs
    idx = np.arange(n)[None, :]
    starts = np.where(same, 0, idx)
    np.maximum.accumulate(starts, axis=1, out=starts)
    run = (idx - starts + 1).astype(np.float64)
    ended = np.zeros((n_series, n))
    ended[:, :-1] = np.where(same[:, 1:], 0.0, run[:, :-1])  # a run's length at its last point
    ended[np.isnan(values)] = 0.0  # a gap is no run
    w = settings.window
    past = np.zeros((n_series, n))
    past[:, 1:] = maximum_filter1d(ended, size=w, axis=1, origin=(w - 1) // 2, mode="constant")[
        :, :-1
    ]
    # the bar in force when the current run began (its own length never raises it)
    bar_then = np.take_along_axis(past, starts, axis=1)
    # A series that never moved in the window (a constant gauge) has no completed run:
    # staying constant is its normal, so it never scores here.
    bar = np.where(
        bar_then > 0, np.fmax(float(settings.flat_points), settings.flat_ratio * bar_then), np.inf
    )
    out: FloatArray = settings.threshold * run / bar
    return out


def _scores(
    values: FloatArray, first: int, settings: DetectorSettings, step_s: float
) -> tuple[FloatArray, FloatArray]:
    robust = settings.method == "robust"
    plain = _windowed(values, first, settings, robust)
    if not (robust and settings.seasonal):
        return plain
    period = round(DAY_S / step_s) if step_s > 0 else 0
    profile = daily_profile(values, period)
    has = ~np.all(np.isnan(profile), axis=1)
    if not has.any():
        return plain
    rows = np.flatnonzero(has)
    resid = values[rows] - profile[rows]
    # Seasonal only where removing the daily profile shrinks the spread clearly.
    with np.errstate(invalid="ignore"):
        gain = _spread_of(resid) < 0.75 * _spread_of(
            np.where(np.isnan(profile[rows]), np.nan, values[rows])
        )
    rows = rows[gain]
    if rows.size == 0:
        return plain
    seasonal = _windowed(values[rows] - profile[rows], first, settings, True)
    score, base = plain[0].copy(), plain[1].copy()
    have = ~np.isnan(seasonal[0])
    s_sub, b_sub = score[rows], base[rows]
    s_sub[have] = seasonal[0][have]
    b_sub[have] = (seasonal[1] + profile[rows])[have]
    score[rows], base[rows] = s_sub, b_sub
    return score, base


@dataclass(frozen=True)
class Span:
    """One episode on the grid: column indexes; ``end`` is -1 while open."""

    start: int
    end: int
    peak: int
    last: int  # last anomalous column


def episodes(
    score: FloatArray, hot_mask: npt.NDArray[np.bool_], close_after: int, threshold: float
) -> list[Span]:
    """Episodes of one series: opened by an anomalous (``hot``) point, kept open by
    every point at or over ``threshold``, closed ``close_after`` scored points after the
    last such point (still open when the series ends sooner). Missing points neither
    open nor close an episode."""
    with np.errstate(invalid="ignore"):
        over = np.flatnonzero((score >= threshold) | hot_mask)
    if over.size == 0 or not hot_mask.any():
        return []
    # Count only scored points as "normal" when measuring the gap between hot points.
    scored_upto = np.cumsum(~np.isnan(score))
    gaps = scored_upto[over[1:]] - scored_upto[over[:-1]] - 1
    cuts = np.flatnonzero(gaps >= close_after) + 1
    out: list[Span] = []
    for group in np.split(over, cuts):
        opens = group[hot_mask[group]]
        if opens.size == 0:
            continue
        span = group[group >= opens[0]]
        first, last = int(span[0]), int(span[-1])
        peak = int(span[np.argmax(score[span])])
        after = np.flatnonzero(~np.isnan(score[last + 1 :]))
        end = int(last + 1 + after[close_after - 1]) if after.size >= close_after else -1
        out.append(Span(first, end, peak, last))
    return out
