"""Predictive uncertainty beyond the parameters: the model's structural error and evaluation noise.

A prediction of a *measured* accuracy of arm a in configuration x is (docs/theory.md section 9)

    y = f(x; z) + delta_k(x) + eps,    z ~ posterior draws,
    delta_k ~ N(0, sigma_delta^2)      one draw per effective configuration k(x) (`config_key`): two arms
                                       that run the same stages on the same labels share it; an arm that
                                       trains nothing (direct GRPO with 0 labels) has none
    eps ~ N(0, sigma_m^2),             sigma_m = max(eval_se, 100 sqrt(a (1 - a) / (I k)))  (`measurement_sd`)

sigma_delta is learned from held-out residuals: leave one published number out, fit the rest, predict it
(`theory.audit.leave_one_out`), and take the maximum-likelihood sigma_delta of
r_j ~ N(0, se_j^2 + v_j + sigma_delta^2) (`learn_sd`; v_j = the posterior predictive variance of f). The
same sigma_delta enters the calibration likelihood (an observation is f + delta + noise), so the learning
is a fixed point (`theory.audit.audit`). numpy/scipy only.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from theory._lazy import LazyModule
from theory.arms import STAGES, TEACHER, Arm, LabelAccount, Teacher, stage_labels

optimize = LazyModule("scipy.optimize")

# Learned by `python scripts/loo_audit.py` on paper-qwen3-math (leave-one-out over its 10 published
# numbers; docs/theory.md section 9). The default for scenarios that do not state `inputs.discrepancy_sd`.
DEFAULT_SD = 0.6
DEFAULT_NOTE = ("structural error learned by leave-one-out over the paper's 10 published numbers "
                "(scripts/loo_audit.py); no stable-protocol toy runs exist yet to add")


def discrepancy_sd(scn) -> tuple[float, str]:
    """(sigma_delta in accuracy points, where it comes from) for a scenario."""
    if scn.has("inputs.discrepancy_sd"):
        t = scn.get("inputs.discrepancy_sd")
        return float(t.value), t.note
    return DEFAULT_SD, f"default: {DEFAULT_NOTE}"


def config_key(arm: Arm, acct: LabelAccount) -> tuple:
    """What an arm actually does with its labels: the stages that change something, the teacher it
    distils from. Arms with equal keys are the same experiment (e.g. at 0 labels the RL-teacher bridge
    is the raw-teacher bridge) and share one structural error; () = nothing trained (no error)."""
    # a stage sized by labels does nothing when the account gives it none
    kept = [s for s in arm.stages if STAGES[s].labels is None or stage_labels(s, acct) > 0]
    stages = [s.value for s in kept]
    teacher = arm.teacher
    if teacher is Teacher.RL and acct.teacher == 0:
        teacher = Teacher.RAW
    bridged = any(STAGES[s].scorer == TEACHER for s in kept)
    if not stages:
        return ()
    return (tuple(stages), teacher.value if bridged else "none")


def measurement_sd(eval_se, acc_pct, n_problems=None, samples=None):
    """sd (points) of one measured accuracy: the seed-to-seed spread, or the binomial sampling bound
    of I problems x k samples per problem when that is larger (a small benchmark, e.g. AIME's 30)."""
    eval_se = np.asarray(eval_se, dtype=float)
    if n_problems is None or samples is None:
        return eval_se
    a = np.clip(np.asarray(acc_pct, dtype=float) / 100.0, 0.0, 1.0)
    return np.maximum(eval_se, 100.0 * np.sqrt(a * (1.0 - a) / (float(n_problems) * float(samples))))


def _nll(s, r2, v):
    tot = v + s * s
    return 0.5 * np.sum(np.log(tot) + r2 / tot, axis=-1)


def learn_sd(resid, var, *, estimate: str = "posterior_mean") -> float:
    """sigma >= 0 of resid_j ~ N(0, var_j + sigma^2).

    "ml": the maximum-likelihood value (0 when the residuals are no larger than var predicts).
    "posterior_mean" (the default, what the planner uses): the mean of sigma's posterior under a flat
    prior on [0, 20] points. Ten residuals cannot tell 0 from 2 points; the ML value 0 would declare the
    model structurally exact, the posterior mean carries what the data cannot exclude."""
    r2, v = np.asarray(resid, dtype=float) ** 2, np.asarray(var, dtype=float)
    if estimate == "ml":
        res = optimize.minimize_scalar(lambda s: _nll(s, r2, v), bounds=(0.0, 20.0), method="bounded",
                                       options={"xatol": 1e-4})
        return float(res.x) if _nll(res.x, r2, v) < _nll(0.0, r2, v) else 0.0
    grid = np.linspace(0.0, 20.0, 4001)
    ll = -_nll(grid[:, None], r2[None, :], v[None, :])
    w = np.exp(ll - ll.max())
    return float(np.sum(grid * w) / np.sum(w))


def sd_upper(resid, var, level: float = 0.9) -> float:
    """The `level` quantile of sigma's posterior (flat prior on [0, 20])."""
    r2, v = np.asarray(resid, dtype=float) ** 2, np.asarray(var, dtype=float)
    grid = np.linspace(0.0, 20.0, 4001)
    w = np.exp(-_nll(grid[:, None], r2[None, :], v[None, :]) + _nll(grid[:, None], r2[None, :], v[None, :]).min())
    c = np.cumsum(w) / np.sum(w)
    return float(grid[np.searchsorted(c, level)])


def with_sd(scn, sd: float, note: str):
    """The scenario with `inputs.discrepancy_sd` set (tagged measured: learned from residuals)."""
    from theory.scenario import Tagged
    t = Tagged("inputs.discrepancy_sd", float(sd), "measured", note, "positive", 0.5)
    inputs = tuple(x for x in scn.inputs if x.path != "inputs.discrepancy_sd") + (t,)
    return replace(scn, inputs=inputs)
