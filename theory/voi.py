"""What to measure next: the expected value of a pilot measurement for the arm decision.

Letters: D = posterior draws (the planner's belief, equally weighted), A = candidate experiments.
value_DA = the accuracy each experiment would reach in each draw (model + structural error); the
decision without more data takes a0 = argmax_a mean_D value_DA, with expected regret

    R = E_D[max_a value_DA] - E_D[value_{D, a0}]                                    (`expected_regret`)

(the expected value of perfect information). A measurement m yields y = g_m(draw) + N(0, s_m^2); its
expected value of sample information (preposterior analysis over the same draws) is

    EVSI_m = E_{d, y ~ d}[ value_{d, a*(y)} ] - E_D[value_{D, a0}],
    a*(y) = argmax_a sum_d' w_d'(y) value_d'a,  w_d'(y) ∝ N(y; g_m(d'), s_m^2)        (`evsi`)

= the expected reduction in decision regret. Ranked per pilot cost (tokens generated and trained, the
same count the arms use: `theory.arms.ComputeModel`). `update` is the belief after an observation (the
same weights), used to test the ranking on simulated worlds. numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Measurement:
    name: str
    description: str
    cost_tokens: int
    y_D: np.ndarray  # predicted noise-free outcome in each draw
    noise_sd: float  # sd of the outcome's measurement noise (same units as y_D)


def expected_regret(value_DA: np.ndarray, w_D: np.ndarray | None = None) -> float:
    w = np.full(len(value_DA), 1.0 / len(value_DA)) if w_D is None else w_D / w_D.sum()
    return float(w @ value_DA.max(-1) - (w @ value_DA).max())


def _bandwidth(y_D, w_D=None) -> float:
    """Kernel bandwidth of a particle belief in outcome space (Silverman's rule on the draws' outcomes,
    with the effective number of distinct weighted draws): a posterior represented by a few hundred
    draws cannot resolve an outcome more finely than their spacing, so a precise measurement is
    smoothed to it instead of collapsing the belief onto one or two draws."""
    w = np.full(len(y_D), 1.0 / len(y_D)) if w_D is None else w_D / w_D.sum()
    m = w @ y_D
    sd = float(np.sqrt(max(w @ (y_D - m) ** 2, 0.0)))
    n_eff = 1.0 / float(np.sum(w**2))
    return 1.06 * sd * n_eff ** (-0.2)


def _weights(y, y_D, sd, w0_D=None):
    """Posterior weights over the draws after observing y (shape (..., D)); w0_D = prior weights. The
    likelihood's sd is the measurement's, widened by the belief's kernel bandwidth (`_bandwidth`)."""
    sd = float(np.hypot(sd, _bandwidth(y_D, w0_D)))
    logw = -0.5 * ((np.asarray(y)[..., None] - y_D) / sd) ** 2
    if w0_D is not None:
        logw = logw + np.log(np.maximum(w0_D, 1e-300))
    logw -= logw.max(-1, keepdims=True)
    w = np.exp(logw)
    return w / w.sum(-1, keepdims=True)


def evsi(value_DA: np.ndarray, m: Measurement, rng: np.random.Generator, w_D: np.ndarray | None = None,
         reps: int = 4) -> float:
    """Expected reduction in decision regret from observing m (accuracy points), under belief w_D;
    `reps` simulated outcomes per draw taken as the truth."""
    D = len(value_DA)
    w0 = np.full(D, 1.0 / D) if w_D is None else w_D / w_D.sum()
    a0 = int(np.argmax(w0 @ value_DA))
    y = m.y_D + rng.standard_normal((reps, D)) * m.noise_sd
    W = _weights(y, m.y_D, m.noise_sd, w0)  # (reps, D truths, D draws)
    choice = np.argmax(W @ value_DA, -1)  # (reps, D)
    gain = value_DA[np.arange(D), choice] - value_DA[:, a0]
    return float((gain @ w0).mean())


def update(w_D: np.ndarray, m: Measurement, y: float) -> np.ndarray:
    """Belief after observing y for measurement m."""
    return _weights(y, m.y_D, m.noise_sd, w_D / w_D.sum())


def rank(value_DA: np.ndarray, measurements: list[Measurement], rng: np.random.Generator,
         w_D: np.ndarray | None = None) -> list[dict]:
    """Rows sorted by expected regret reduction per 1e9 pilot tokens (best first)."""
    rows = []
    for m in measurements:
        g = max(0.0, evsi(value_DA, m, rng, w_D))
        rows.append({"measurement": m.name, "description": m.description, "cost_tokens": int(m.cost_tokens),
                     "regret_reduction": g, "per_1e9_tokens": g / (m.cost_tokens / 1e9)})
    rows.sort(key=lambda r: -r["per_1e9_tokens"])
    return rows
