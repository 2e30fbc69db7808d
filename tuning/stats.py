"""Statistics for a matched comparison: expected-max tuning curves, bootstrap intervals, probability of
improvement. numpy/scipy only; randomness passed in.

- Expected best score after n trials (Dodge et al. 2019, "Show Your Work", eq. 1): with N observed
  scores sorted v_(1) <= ... <= v_(N) and n draws with replacement,
      E[max_n] = sum_i v_(i) * ((i/N)^n - ((i-1)/N)^n),
  and the band is +-1 standard deviation of that max (the paper's shading). It treats trials as i.i.d.
  draws from the tuning process; TPE trials are not quite, so the report also shows best-so-far.
- Bootstrap intervals: percentile bootstrap over seeds (theory.stats, shared with the reference's curves).
- Probability of improvement (Agarwal et al. 2021, rliable): P(X > Y) + 0.5 P(X = Y) over all pairs
  of runs, X from arm A, Y from arm B.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from theory.errors import InputError
from theory.stats import Interval, mean_ci, paired_difference  # noqa: F401  (the report's statistics, in one place)


@dataclass(frozen=True)
class Curve:
    n_trials: np.ndarray
    mean: np.ndarray
    std: np.ndarray

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"n_trials": self.n_trials, "expected_best": self.mean, "std": self.std})


def expected_max_curve(scores, n_max: int | None = None) -> Curve:
    v_N = np.sort(np.asarray(scores, dtype=float))
    if v_N.size == 0 or not np.isfinite(v_N).all():
        raise InputError("expected_max_curve: needs at least one finite score")
    N = v_N.size
    n_max = N if n_max is None else int(n_max)
    n = np.arange(1, n_max + 1)
    i = np.arange(1, N + 1)
    # P(max of n draws is the i-th order statistic), rows: n, cols: i
    p_nN = (i[None, :] / N) ** n[:, None] - ((i[None, :] - 1) / N) ** n[:, None]
    mean = p_nN @ v_N
    var = p_nN @ v_N**2 - mean**2
    return Curve(n, mean, np.sqrt(np.clip(var, 0.0, None)))


def probability_of_improvement(x, y) -> float:
    """P(X > Y) + 0.5 P(X = Y) over all pairs: the chance a run of arm X beats a run of arm Y."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.size == 0 or y.size == 0:
        raise InputError("probability_of_improvement: no values")
    gt = (x[:, None] > y[None, :]).mean()
    eq = (x[:, None] == y[None, :]).mean()
    return float(gt + 0.5 * eq)


def probability_of_improvement_ci(x, y, rng: np.random.Generator, n_resamples: int = 2000) -> Interval:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    est = probability_of_improvement(x, y)
    boots = np.array([probability_of_improvement(rng.choice(x, x.size), rng.choice(y, y.size))
                      for _ in range(n_resamples)])
    return Interval(est, float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975)))


def iqm(x) -> float:
    """Interquartile mean: the mean of the middle 50% (robust to one outlier seed)."""
    return float(stats.trim_mean(np.asarray(x, dtype=float), 0.25))


def still_improving(scores_in_order) -> bool:
    """Did the best-so-far rise within the last quarter of the trials (at least the last one)?"""
    v = np.asarray(scores_in_order, dtype=float)
    if v.size < 2:
        return True
    k = max(1, int(np.ceil(v.size / 4)))
    return bool(v[-k:].max() > v[:-k].max())
