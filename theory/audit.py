"""Learning the structural error sigma_delta from held-out residuals (docs/theory.md section 9): each
observation predicted by a fit on all the others (`leave_one_out`), and the fixed point of learning
sigma_delta from those residuals with fits that themselves use it (`audit`; scripts/loo_audit.py).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from theory._lazy import LazyModule
from theory.discrepancy import discrepancy_sd, learn_sd, measurement_sd, with_sd
from theory.fitting import fit_scenario, predict_observations

pd = LazyModule("pandas")


def leave_one_out(scn, *, draws_rng_seed: int = 0) -> pd.DataFrame:
    """Each observation predicted by a fit on all the others (same priors, same sigma_delta).

    Columns: arm, benchmark, labels, teacher_labels, observed, se, predicted (MAP), mean (draw mean),
    var (posterior predictive variance of f), lo90, hi90 (90% predictive interval of a measurement:
    draws + structural error + evaluation noise), residual (observed - predicted), z.
    """
    obs = scn.observations
    sd, _ = discrepancy_sd(scn)
    rows = []
    rng = np.random.default_rng(draws_rng_seed)
    for j, o in enumerate(obs):
        rest = replace(scn, observations=obs[:j] + obs[j + 1:], holdout=())
        fit = fit_scenario(rest)
        pm = float(predict_observations(rest, fit.z_map[None, :], (o,))[0, 0])
        pd_D = predict_observations(rest, fit.z_draws, (o,))[:, 0]
        vals = fit.draw_values()
        se_m = measurement_sd(vals[f"benchmarks.{o.benchmark}.eval_se"], pd_D)
        y_D = pd_D + rng.standard_normal(pd_D.shape) * sd + rng.standard_normal(pd_D.shape) * se_m
        lo, hi = np.percentile(y_D, [5, 95])
        var = float(np.var(pd_D))
        rows.append({"arm": o.arm, "benchmark": o.benchmark,
                     "labels": scn.budget if o.labels is None else o.labels,
                     "teacher_labels": o.teacher_labels, "observed": o.value, "se": o.se, "predicted": pm,
                     "mean": float(pd_D.mean()), "var": var, "lo90": float(lo), "hi90": float(hi),
                     "residual": o.value - pm,
                     "z": (o.value - pm) / np.sqrt(o.se**2 + var + sd**2)})
    return pd.DataFrame(rows)


def audit(scn, rounds: int = 3) -> tuple[float, pd.DataFrame]:
    """Fixed point sigma_delta = learn_sd(LOO residuals of fits that use sigma_delta); returns the final
    sigma_delta and the LOO table computed with it."""
    sd = discrepancy_sd(scn)[0]
    table = None
    for _ in range(rounds):
        s = with_sd(scn, sd, "leave-one-out fixed point")
        table = leave_one_out(s)
        new = learn_sd(table["residual"], table["se"] ** 2 + table["var"])
        if abs(new - sd) < 0.05:
            sd = new
            break
        sd = new
    table = leave_one_out(with_sd(scn, sd, "leave-one-out fixed point"))
    return sd, table
