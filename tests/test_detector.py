"""The production detector's rules on small made-up series (no servers needed)."""

from __future__ import annotations

import numpy as np
from neuralops.servers.insight import detector
from neuralops.servers.insight.detector import DetectorSettings

D = DetectorSettings()


def _episodes(values: np.ndarray, settings: DetectorSettings = D) -> list[detector.Span]:
    sc = detector.score_matrix(values[None, :], settings, step_s=300.0)
    return detector.episodes(sc.score[0], sc.hot[0], settings.close_after, settings.threshold)


def test_a_constant_gauge_never_opens_an_episode() -> None:
    assert _episodes(np.full(3000, 7.0)) == []
    late = np.full(3000, np.nan)
    late[500:] = 1.0  # a series that appears later and never moves
    assert _episodes(late) == []


def test_a_noisy_series_that_gets_stuck_opens_one_episode_within_the_hour() -> None:
    x = 50 + np.random.default_rng(1).normal(0, 2, 3000)
    x[2000:2300] = x[1999]  # a dead exporter repeating its last value
    spans = _episodes(x)
    assert len(spans) == 1 and 2000 <= spans[0].start <= 2000 + 12
    sc = detector.score_matrix(x[None, :], D, step_s=300.0)
    assert sc.stuck[0, spans[0].start] and not sc.stuck[0, :1999].any()  # says why
    off = DetectorSettings(flat_points=0)  # what Probe uses: no flatline judgement
    assert not detector.score_matrix(x[None, :], off, step_s=300.0).stuck.any()


def test_a_quantised_series_does_not_alarm_on_its_ordinary_runs() -> None:
    rng = np.random.default_rng(2)
    x = np.round(20 + np.cumsum(rng.normal(0, 0.05, 4000)) + rng.normal(0, 0.2, 4000))
    assert np.max(np.diff(np.flatnonzero(np.diff(x) != 0))) > D.flat_points  # long runs
    assert _episodes(x) == []


def test_a_skewed_series_tail_is_ordinary_but_a_drop_as_large_is_news() -> None:
    x = 10 + np.random.default_rng(3).exponential(1.0, 2501)  # a long upper tail, none below
    assert _episodes(x[:2500]) == []
    med = float(np.median(x[1780:2500]))
    x[2500] = med + 4.0
    up = detector.score_matrix(x[None, :], D, step_s=300.0).score[0, -1]
    x[2500] = med - 4.0
    down = detector.score_matrix(x[None, :], D, step_s=300.0).score[0, -1]
    assert up < D.threshold <= down


def test_a_small_sustained_shift_is_caught_by_the_level_term() -> None:
    x = 10 + np.random.default_rng(4).normal(0, 1, 3000)
    x[2000:] += 2.5  # 2.5 standard deviations: few single points reach the threshold
    sc = detector.score_matrix(x[None, :], D, step_s=300.0)
    assert not sc.hot[0, 1000:2000].any()
    assert sc.hot[0, 2000:2024].any()  # within two hours at 5-minute steps


def test_scores_never_look_ahead() -> None:
    rng = np.random.default_rng(5)
    x = 5 + rng.normal(0, 1, (2, 4000))
    x[1, 3000:3200] = x[1, 2999]
    changed = x.copy()
    changed[:, 2500:] = rng.normal(40, 9, (2, 1500))
    a = detector.score_matrix(x, D, step_s=300.0)
    b = detector.score_matrix(changed, D, step_s=300.0)
    np.testing.assert_array_equal(a.score[:, :2500], b.score[:, :2500])
    np.testing.assert_array_equal(a.hot[:, :2500], b.hot[:, :2500])


def test_a_daily_cycle_is_normal_and_a_flat_noon_is_not() -> None:
    t = np.arange(288 * 8)
    x = 100 + 40 * np.sin(2 * np.pi * t / 288) + np.random.default_rng(6).normal(0, 2, t.size)
    assert _episodes(x) == []
    noon = x.copy()
    day7 = 288 * 7
    noon[day7 + 60 : day7 + 84] = 100.0  # the peak does not come
    spans = _episodes(noon)
    assert len(spans) == 1 and day7 + 60 <= spans[0].start <= day7 + 84
