"""Statistics of the fairness report against hand-computed values."""

import numpy as np
import pytest

from theory.errors import InputError
from tuning import stats


def test_expected_max_matches_hand_computation():
    # scores 1, 2, 3; n = 2 draws with replacement: P(max=1)=1/9, P(max=2)=3/9, P(max=3)=5/9
    c = stats.expected_max_curve([3.0, 1.0, 2.0])
    assert c.mean[0] == pytest.approx(2.0)
    assert c.std[0] == pytest.approx(np.sqrt(2 / 3))
    assert c.mean[1] == pytest.approx(22 / 9)
    assert c.std[1] == pytest.approx(np.sqrt((1 + 12 + 45) / 9 - (22 / 9) ** 2))
    long = stats.expected_max_curve([3.0, 1.0, 2.0], n_max=200)
    assert np.all(np.diff(long.mean) >= -1e-12)  # more trials never lower the expected best
    assert long.mean[-1] == pytest.approx(3.0, abs=1e-6)
    assert list(long.to_frame().columns) == ["n_trials", "expected_best", "std"]


def test_expected_max_rejects_empty_and_nan():
    with pytest.raises(InputError):
        stats.expected_max_curve([])
    with pytest.raises(InputError):
        stats.expected_max_curve([1.0, float("nan")])


def test_probability_of_improvement_counts_ties_half():
    # pairs: 2>1, 2=2 (half), 3>1, 3>2 -> 3.5 / 4
    assert stats.probability_of_improvement([2, 3], [1, 2]) == pytest.approx(0.875)
    assert stats.probability_of_improvement([1, 2], [2, 3]) == pytest.approx(0.125)
    ci = stats.probability_of_improvement_ci([2, 3, 4], [1, 2, 3], np.random.default_rng(0), n_resamples=300)
    assert 0 <= ci.low <= ci.estimate <= ci.high <= 1


def test_paired_difference_is_paired_and_seeded():
    rng = np.random.default_rng(0)
    a = rng.normal(50, 10, size=12)  # large seed-to-seed spread ...
    b = a + 2.0 + rng.normal(0, 0.1, size=12)  # ... that the pairing removes
    d = stats.paired_difference(a, b, np.random.default_rng(1))
    assert d.estimate == pytest.approx(np.mean(b - a))
    assert 1.8 < d.low < d.estimate < d.high < 2.2
    again = stats.paired_difference(a, b, np.random.default_rng(1))
    assert (again.low, again.high) == (d.low, d.high)
    const = stats.paired_difference([1.0, 2.0, 3.0], [2.0, 3.0, 4.0], np.random.default_rng(0))
    assert (const.estimate, const.low, const.high) == (1.0, 1.0, 1.0)
    with pytest.raises(InputError):
        stats.paired_difference([1.0, 2.0], [1.0], np.random.default_rng(0))


def test_mean_ci_narrows_with_more_seeds():
    rng = np.random.default_rng(3)
    x_small, x_big = rng.normal(60, 5, 10), rng.normal(60, 5, 200)
    small = stats.mean_ci(x_small, np.random.default_rng(0))
    big = stats.mean_ci(x_big, np.random.default_rng(0))
    assert small.low < small.estimate < small.high
    assert big.high - big.low < small.high - small.low


def test_still_improving_and_iqm():
    assert stats.still_improving([10, 20, 30, 40])
    assert not stats.still_improving([50, 20, 30, 40])
    assert stats.iqm([0, 10, 10, 10, 10, 10, 10, 100]) == pytest.approx(10.0)
