"""The NAB scoring rules in benchmarks/nab.py (the figures in reports/nab.md rest on them)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks import nab

N = 4000  # probation: 600 points
WINDOWS = nab.nab_windows(N, [1500, 3000])


def test_windows_are_a_tenth_of_the_series_shared_by_its_anomalies_and_merged() -> None:
    assert WINDOWS == [(1400, 1600), (2900, 3100)]
    assert nab.nab_windows(N, [1500, 1550]) == [(1400, 1650)]
    assert nab.probation(N) == 600 and nab.probation(22_000) == 750


def test_null_detector_scores_0_and_perfect_one_100_on_every_profile() -> None:
    series = [nab.Labelled("a", "cpu", 0.0, np.zeros(N), [1500, 3000], WINDOWS)]
    for profile in nab.PROFILES:
        assert nab.evaluate({}, series)[profile] == pytest.approx(0.0)
        perfect = {"a": [s for s, _ in WINDOWS]}
        assert nab.evaluate(perfect, series)[profile] == pytest.approx(100.0)


def test_only_the_first_detection_in_a_window_counts_and_earlier_is_better() -> None:
    once = nab.score_series(N, [1450], WINDOWS, "standard")
    assert nab.score_series(N, [1450, 1460, 1590], WINDOWS, "standard") == once
    later = nab.score_series(N, [1590], WINDOWS, "standard")
    assert once > later > -2.0  # a late hit still beats the miss (-1)


def test_false_positives_cost_their_profile_weight_and_probation_is_free() -> None:
    far = nab.score_series(N, [1000], WINDOWS, "standard")  # before any window
    assert far == pytest.approx(-0.11 - 2.0)
    assert nab.score_series(N, [1000], WINDOWS, "reward_low_FP_rate") == pytest.approx(-0.22 - 2.0)
    assert nab.score_series(N, [100], WINDOWS, "standard") == -2.0  # in the probation
    just_after = nab.score_series(N, [1601], WINDOWS, "standard") + 2.0
    long_after = nab.score_series(N, [2600], WINDOWS, "standard") + 2.0
    assert -0.11 < long_after < just_after < 0  # nearer the window costs less


def test_scaled_sigmoid_matches_nab() -> None:
    assert nab.scaled_sigmoid(0.0) == 0.0
    assert nab.scaled_sigmoid(-1.0) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    assert nab.scaled_sigmoid(3.5) == -1.0


def test_the_corpus_is_reproducible_and_labelled_after_the_probation() -> None:
    a, b = nab.corpus(3), nab.corpus(3)
    assert [s.name for s in a] == [s.name for s in b]
    assert all(
        np.array_equal(x.values, y.values, equal_nan=True) for x, y in zip(a, b, strict=True)
    )
    assert {s.kind for s in a} == set(nab.KINDS)
    for s in a:
        assert all(nab.probation(len(s.values)) < at < len(s.values) for at in s.anomalies)
