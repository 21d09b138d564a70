"""Scoring math against hand-computed values and scipy/reference implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from neuralops.servers.insight import scoring
from neuralops.servers.insight.scoring import Outcome
from scipy import stats


def test_zscore_matches_hand_computed_value() -> None:
    s = scoring.zscore(np.array([[1.0, 2.0, 3.0, 4.0, 5.0, 10.0]]))
    # window 1..5: mean 3, sample std sqrt(2.5); (10 - 3) / 1.5811388 = 4.4271887
    assert s.outcome == [Outcome.SCORED]
    assert s.baseline[0] == pytest.approx(3.0)
    assert s.spread[0] == pytest.approx(math.sqrt(2.5))
    assert s.score[0] == pytest.approx(4.427188724235731)


def test_zscore_matches_scipy_on_random_series() -> None:
    rng = np.random.default_rng(7)
    values = rng.normal(10, 2, size=(50, 40))
    s = scoring.zscore(values)
    for i in range(values.shape[0]):
        window, latest = values[i, :-1], values[i, -1]
        expected = abs(latest - stats.tmean(window)) / stats.tstd(window)
        assert s.score[i] == pytest.approx(expected, rel=1e-12)


def test_zscore_ignores_gaps_in_the_window() -> None:
    row = np.array([[1.0, np.nan, 2.0, 3.0, np.nan, 4.0, 5.0, 10.0]])
    assert scoring.zscore(row).score[0] == pytest.approx(4.427188724235731)


def _ewma_reference(window: list[float], alpha: float) -> tuple[float, float]:
    mean, var = window[0], 0.0
    for x in window[1:]:
        diff = x - mean
        mean += alpha * diff
        var = (1 - alpha) * (var + alpha * diff * diff)
    return mean, var


def test_ewma_matches_the_recursive_definition() -> None:
    window = [1.0, 2.0, 1.5, 3.0, 2.5, 2.0]
    s = scoring.ewma(np.array([[*window, 6.0]]), alpha=0.5)
    mean, var = _ewma_reference(window, 0.5)
    assert s.baseline[0] == pytest.approx(mean)
    assert s.score[0] == pytest.approx(abs(6.0 - mean) / math.sqrt(var))
    # hand check of the first two steps: m=1 -> m=1.5, v=0.5*(0+0.5*1)=0.25
    assert _ewma_reference([1.0, 2.0], 0.5) == (1.5, 0.25)


def test_ewma_is_vectorised_across_series_with_gaps() -> None:
    rng = np.random.default_rng(3)
    values = rng.normal(5, 1, size=(20, 30))
    values[3, 4] = np.nan
    values[7, 0] = np.nan
    s = scoring.ewma(values, alpha=0.2)
    for i in range(20):
        window = [x for x in values[i, :-1] if not np.isnan(x)]
        mean, var = _ewma_reference(window, 0.2)
        assert s.score[i] == pytest.approx(abs(values[i, -1] - mean) / math.sqrt(var), rel=1e-10)


@pytest.mark.parametrize("score_fn", [scoring.zscore, scoring.ewma])
def test_edge_cases_have_clear_outcomes_and_no_division_by_zero(score_fn: object) -> None:
    rows = np.array(
        [
            [1.0] * 9 + [1.0],  # constant, unchanged
            [1.0] * 9 + [2.0],  # constant, then moved
            [np.nan] * 7 + [1.0, 2.0, 3.0],  # too few points
            [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, np.nan],  # no latest sample
            [np.nan] * 10,  # nothing at all
        ]
    )
    with np.errstate(all="raise"):
        s = score_fn(rows)  # type: ignore[operator]
    assert s.outcome == [
        Outcome.CONSTANT,
        Outcome.SCORED,
        Outcome.TOO_FEW_POINTS,
        Outcome.STALE,
        Outcome.STALE,
    ]
    assert s.score[0] == 0.0
    assert math.isinf(s.score[1])
    assert s.score[2] == 0.0 and s.score[3] == 0.0


def test_empty_input_scores_nothing() -> None:
    s = scoring.zscore(np.empty((0, 10)))
    assert s.outcome == [] and s.score.shape == (0,)
