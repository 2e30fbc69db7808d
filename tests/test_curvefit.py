"""theory.curvefit, the theory-free naive predictor: the surface by hand, recovery of known parameters
from synthetic pilot curves (N = 16, 32, 64; 3 seeds), monotonicity, the bootstrap interval, the table
and its one-line errors. Tier 1 (pure; about two seconds, most of it the bootstrap refits)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from theory.arms import ARMS
from theory.curvefit import (CURVES_COLUMNS, best_so_far, fit_curves, naive_table, surface,
                             validate_curves)
from theory.errors import InputError

# a0 = 5; A(N) = -10 + 10 log2 N: A(16) = 30, A(64) = 50, extrapolated A(1024) = 90;
# tau(N) = 12500 N tokens: tau(16) = 2e5, tau(64) = 8e5
TRUE = np.array([5.0, -10.0, 10.0, np.log(12500.0), np.log(2.0)])
PILOT_N = (16, 32, 64)
TOKENS = np.r_[0.0, np.unique(np.geomspace(1e4, 3e6, 12).round())]  # 3e6 = 3.75 tau(64): near saturation


def pilot_curves(*, sd=0.0, rng=None, offsets=(0.0, 0.0, 0.0), arm="direct_grpo", world="w", params=TRUE):
    """Curves from `params`, one run per seed at each pilot N; seed k's plateau shifted by offsets[k];
    iid normal noise of sd `sd` on every point."""
    rows = []
    for n in PILOT_N:
        acct = ARMS[arm].labels(n)
        for seed, off in enumerate(offsets):
            y = surface(params + np.array([0.0, off, 0.0, 0.0, 0.0]), np.log2(n), TOKENS)
            if sd:
                y = np.clip(y + rng.normal(0.0, sd, len(y)), 0.0, 100.0)
            rows += [{"world": world, "arm": arm, "labels": n, "teacher_labels": acct.teacher,
                      "student_labels": acct.student, "seed": seed, "stage": "student_grpo", "step": i,
                      "tokens": int(t), "accuracy": float(v)} for i, (t, v) in enumerate(zip(TOKENS, y))]
    return pd.DataFrame(rows, columns=list(CURVES_COLUMNS))


CLEAN = pilot_curves(offsets=(-1.0, 0.0, 1.0))  # seeds differ in plateau only: the mean curve is the truth


def test_surface_by_hand():
    a0, x = TRUE[0], np.log2(64)
    assert surface(TRUE, x, 0.0) == pytest.approx(a0)
    assert surface(TRUE, x, np.inf) == pytest.approx(50.0)
    assert surface(TRUE, x, 8e5) == pytest.approx(a0 + (50 - a0) * (1 - np.exp(-1)))  # T = tau(64)
    # a plateau below a0 (here A(1) = -10) is floored at a0: a best-so-far curve never falls
    assert surface(TRUE, 0.0, [0.0, 1e5, np.inf]) == pytest.approx([a0] * 3)


def test_best_so_far_is_the_running_max_per_run():
    c = pilot_curves().iloc[:4].assign(accuracy=[5.0, 9.0, 7.0, 8.0], tokens=[0, 10, 20, 30])
    c = pd.concat([c, c.assign(seed=1, accuracy=[1.0, 2.0, 3.0, 0.0])], ignore_index=True)
    b = best_so_far(c)
    assert list(b["best"]) == [5, 9, 9, 9, 1, 2, 3, 3]


def test_fit_recovers_the_extrapolated_plateau_and_tau_from_noisy_pilots():
    # noise sd 1 point on every validation point. Over 100 noise draws (this set-up) the fit's A(1024) had
    # mean 89.2 and sd 1.75 (extremes 85.6, 94.3): extrapolating 4 doublings multiplies the pilot plateaus'
    # errors, and fitting the running max lifts each plateau by about one sd. 6 points is 3.4 sd. tau(64)
    # had sd 3% (extremes -7%, +10%) of its value: 15% tolerance.
    fit = fit_curves(pilot_curves(sd=1.0, rng=np.random.default_rng(7)), "w", "direct_grpo", n_resamples=0)
    assert fit.plateau(1024) == pytest.approx(90.0, abs=6.0)
    assert fit.tau(64) == pytest.approx(8e5, rel=0.15)
    assert fit.params[0] == pytest.approx(5.0, abs=2.0)  # a0, from the points at T = 0 (and their max)
    assert fit.budgets == PILOT_N and fit.n_points == 3 * 3 * len(TOKENS)


def test_clean_case_exact_fit_and_interval_contains_the_truth():
    fit = fit_curves(CLEAN, "w", "direct_grpo")
    np.testing.assert_allclose(fit.params, TRUE, rtol=1e-5, atol=1e-5)
    assert fit.boot.shape == (200, 5)
    for n, t in [(64, 2e5), (256, 1e6), (1024, np.inf), (1024, 3e6), (16, 0.0)]:
        mean, lo, hi = fit.predict(n, t)
        truth = float(surface(TRUE, np.log2(n), t))
        assert mean == pytest.approx(truth, abs=1e-4) and lo - 1e-6 <= truth <= hi + 1e-6, (n, t)
    # the seeds' plateaus differ by +-1: the interval at N = 1024 has width, and a lower level is narrower
    _, lo90, hi90 = fit.predict(1024)
    _, lo50, hi50 = fit.predict(1024, level=0.5)
    assert hi90 - lo90 > 0.5 and lo90 <= lo50 <= hi50 <= hi90
    row = naive_table(CLEAN, [("w", "direct_grpo", 1024, np.inf)]).iloc[0]  # seed 0: the same fit
    assert (row["naive_mean"], row["naive_lo"], row["naive_hi"]) == pytest.approx(fit.predict(1024))


def test_monotone_in_tokens_and_the_plateau_is_the_limit():
    fit = fit_curves(pilot_curves(sd=1.0, rng=np.random.default_rng(3)), "w", "direct_grpo", n_resamples=40)
    grid = np.r_[0.0, np.geomspace(1e3, 1e9, 40)]
    for n in (16, 64, 256, 1024):
        m, lo, hi = np.array([fit.predict(n, t) for t in grid]).T
        for v in (m, lo, hi):
            assert np.all(np.diff(v) >= -1e-9), n
        assert fit.predict(n, 1e12) == pytest.approx(fit.predict(n, np.inf))
    # the log-linear plateau passes 100 far out in N; every returned number is clipped
    assert fit.plateau(2**20) > 100 and fit.predict(2**20) == (100.0, 100.0, 100.0)


def test_naive_table_one_row_per_config():
    curves = pd.concat([CLEAN, pilot_curves(arm="rl_teacher_bridge", params=TRUE + [0, 5, 0, 0, 0])],
                       ignore_index=True)
    tab = naive_table(curves, [("w", "direct_grpo", 1024, np.inf), ("w", "rl_teacher_bridge", 256, "plateau"),
                               ("w", "direct_grpo", 64, 4e5)], n_resamples=20)
    assert list(tab.columns) == ["world", "arm", "labels", "tokens", "naive_mean", "naive_lo", "naive_hi"]
    assert list(tab["tokens"]) == ["plateau", "plateau", 400000]
    assert tab["naive_mean"].to_numpy() == pytest.approx([90.0, 75.0, float(surface(TRUE, 6.0, 4e5))], abs=1e-4)
    assert (tab["naive_lo"] <= tab["naive_mean"]).all() and (tab["naive_mean"] <= tab["naive_hi"]).all()


@pytest.mark.parametrize("change,needle", [
    (lambda d: d.drop(columns=["tokens"]), "missing column 'tokens'"),
    (lambda d: d.assign(accuracy=d["accuracy"] / 100), "looks like fractions"),
    (lambda d: d.assign(tokens=-1), "column 'tokens' must be >= 0"),
    (lambda d: d.assign(labels=0, student_labels=0), "column 'labels' must be >= 1"),
    (lambda d: d.assign(arm="bogus"), "unknown arm 'bogus'"),
    (lambda d: d.assign(student_labels=7), "disagrees with the registry's label account"),
    (lambda d: pd.concat([d, d.iloc[:1]]), "duplicate point for world=w arm=direct_grpo labels=16 seed=0"),
])
def test_bad_curves_one_line_error(change, needle):
    with pytest.raises(InputError) as e:
        validate_curves(change(CLEAN.copy()))
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_a_fit_that_cannot_be_made_says_what_is_missing():
    with pytest.raises(InputError, match=f"has 1 distinct N and {3 * len(TOKENS)} point.*needs >= 2 distinct N"):
        fit_curves(CLEAN[CLEAN["labels"] == 16], "w", "direct_grpo")
    few = CLEAN[(CLEAN["seed"] == 0) & (CLEAN["step"] < 2) & (CLEAN["labels"] < 64)]
    with pytest.raises(InputError, match="2 distinct N and 4 point.*>= 5 points"):
        fit_curves(few, "w", "direct_grpo")
    with pytest.raises(InputError, match="world=v arm=direct_grpo has 0 distinct N"):
        naive_table(CLEAN, [("v", "direct_grpo", 64, np.inf)])
    fit = fit_curves(CLEAN, "w", "direct_grpo", n_resamples=0)
    for kwargs, needle in [({"level": 90}, "level must lie in"), ({"tokens": -5}, "tokens must be >= 0")]:
        with pytest.raises(InputError, match=needle):
            fit.predict(64, **kwargs)
    with pytest.raises(InputError, match="tokens must be a number or 'plateau'"):
        naive_table(CLEAN, [("w", "direct_grpo", 64, "soon")], n_resamples=0)
