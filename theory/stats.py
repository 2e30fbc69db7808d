"""Bootstrap intervals over seeds, shared by the reference (learning curves) and the tuner (reports):
percentile bootstrap (scipy.stats.bootstrap). numpy/scipy only; randomness passed in.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from theory.errors import InputError


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float

    def to_dict(self) -> dict:
        return asdict(self)


def _bootstrap(data: tuple, statistic, rng: np.random.Generator, n_resamples: int, paired: bool) -> Interval:
    est = float(statistic(*data))
    if all(np.ptp(d) == 0 for d in data) or len(data[0]) < 2:
        return Interval(est, est, est)  # no spread: the interval is the point (scipy would warn/NaN)
    res = stats.bootstrap(data, statistic, n_resamples=n_resamples, confidence_level=0.95,
                          method="percentile", paired=paired, vectorized=False, rng=rng)
    return Interval(est, float(res.confidence_interval.low), float(res.confidence_interval.high))


def mean_ci(x, rng: np.random.Generator, n_resamples: int = 5000) -> Interval:
    x = np.asarray(x, dtype=float)
    if x.size == 0:
        raise InputError("mean_ci: no values")
    return _bootstrap((x,), np.mean, rng, n_resamples, paired=False)


def paired_difference(a, b, rng: np.random.Generator, n_resamples: int = 5000) -> Interval:
    """Mean of b - a over seeds paired by index (the same evaluation seed for both arms)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.size == 0:
        raise InputError(f"paired_difference: need equal, non-empty seed lists, got {a.size} and {b.size}")
    return _bootstrap((b - a,), np.mean, rng, n_resamples, paired=False)
