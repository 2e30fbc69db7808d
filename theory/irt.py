"""A latent model of a policy on a verifiable benchmark: Rasch (1PL) ability times protocol compliance.

Letters (used in array names): D = parameter draws, K = quadrature nodes over item difficulty,
I = items (problems), M = models. Everything broadcasts over leading axes; quadrature appends K last.

    item difficulty      d ~ Normal(0, s_d^2)                       (per benchmark)
    P(correct | d)       = c * sigmoid(theta - d)                   (theta: ability logit, c: compliance)
    accuracy A           = 100 * c * E_d[sigmoid(theta - d)]        -> `accuracy`
    ability-only acc.    = E_d[sigmoid(theta - d)]  (= P(correct | compliant))  -> `ability_accuracy`
    pass@k               = E_d[1 - (1 - c * sigmoid(theta - d))^k]  (inside `theory.dynamics.grpo`)

Compliance is independent of the item (a protocol habit), so P(correct | compliant) = E[sigmoid].
Fitting from k samples per problem (`fit_problems`) is marginal maximum likelihood over d with the
items shared across models (tinyBenchmarks-style IRT, Polo et al. 2024). numpy/scipy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

from theory._lazy import LazyModule
from theory.errors import InputError

pd = LazyModule("pandas")
optimize = LazyModule("scipy.optimize")

# Probabilists' Gauss-Hermite nodes: E_{z~N(0,1)}[f(z)] ~= sum_k w_k f(x_k). With 20 nodes accuracy
# and pass@8 are within 0.02 percentage points of a 100-node rule for s_d <= 2 (0.25 at s_d = 3):
# below any accuracy difference a benchmark can measure.
K_NODES = 20
_X_K, _W_K = np.polynomial.hermite_e.hermegauss(K_NODES)
_W_K = _W_K / _W_K.sum()
# sigmoid(x) ~= Phi(x / 1.702): gives a closed-form start for the Newton inversion.
_PROBIT_SCALE = 1.702


def sigmoid_K(theta, s_d, out: np.ndarray | None = None) -> np.ndarray:
    """sigmoid(theta - d) at the difficulty nodes d_...K = s_d * x_K: P(correct | compliant, d), shape
    (..., K). The logistic via tanh (exact to rounding, faster than scipy's expit), computed in one
    buffer (`out` if given): on the planner's split sweep the array holds millions of numbers."""
    # sigmoid(x) = 0.5 + 0.5 tanh(x / 2); x / 2 = theta / 2 - d / 2 exactly (halving is exact)
    z = np.subtract(0.5 * np.asarray(theta, dtype=float)[..., None], 0.5 * _nodes(s_d), out=out)
    np.tanh(z, out=z)
    z *= 0.5
    z += 0.5
    return z


def _nodes(s_d) -> np.ndarray:
    """Difficulty nodes d_...K = s_d * x_K."""
    return np.asarray(s_d, dtype=float)[..., None] * _X_K


def p_correct_K(theta, c, s_d) -> np.ndarray:
    """P(correct | d) at the quadrature nodes, shape (..., K)."""
    return np.asarray(c, dtype=float)[..., None] * sigmoid_K(theta, s_d)


def expect_K(f_K) -> np.ndarray:
    """E_d[f] from values at the nodes (last axis K)."""
    return f_K @ _W_K


def ability_accuracy(theta, s_d) -> np.ndarray:
    """E_d[sigmoid(theta - d)] in [0, 1]: accuracy given compliance."""
    return expect_K(sigmoid_K(theta, s_d))


def accuracy(theta, c, s_d) -> np.ndarray:
    """Accuracy in percent: 100 * c * E_d[sigmoid(theta - d)]."""
    return 100.0 * np.asarray(c, dtype=float) * ability_accuracy(theta, s_d)


def solve_theta(target, s_d, *, iters: int = 2) -> np.ndarray:
    """The ability logit theta with E_d[sigmoid(theta - d)] = target (vectorised, monotone in theta).

    Start from the probit closed form theta0 = sqrt(1.702^2 + s_d^2) * Phi^-1(target) and take Newton
    steps (derivative E[sigmoid (1 - sigmoid)] > 0). Two steps reach |error| < 1e-4 (0.01 percentage
    points) for targets in [0.01, 0.995] and s_d in [1, 3]; three reach 1e-6 (tests/test_theory_irt.py).
    Targets are clipped to [1e-9, 1 - 1e-9] (a perfect or hopeless policy has an infinite logit).
    """
    target = np.clip(np.asarray(target, dtype=float), 1e-9, 1 - 1e-9)
    s_d = np.asarray(s_d, dtype=float)
    theta = np.sqrt(_PROBIT_SCALE**2 + s_d**2) * special.ndtri(target)
    sig_K = sq_K = None  # two buffers, reused by every step
    for _ in range(iters):
        sig_K = sigmoid_K(theta, s_d, out=sig_K)
        f = expect_K(sig_K) - target
        sq_K = np.multiply(sig_K, sig_K, out=sq_K)
        sig_K -= sq_K  # the derivative's integrand
        fp = np.maximum(expect_K(sig_K), 1e-12)
        theta = theta - f / fp
    return theta


# --------------------------------------------------------------------------------------------
# Fitting from a pilot problem table (k samples per problem: correct and compliant counts).
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class IRTFit:
    """Per-model ability/compliance and the benchmark's difficulty spread, fitted from a problem table."""

    models: tuple[str, ...]
    theta: tuple[float, ...]
    theta_se: tuple[float, ...]
    compliance: tuple[float, ...]
    s_d: float
    s_d_se: float
    n_items: int

    def get(self, model: str) -> tuple[float, float]:
        i = self.models.index(model)
        return self.theta[i], self.compliance[i]

    def ability_accuracy(self, model: str) -> float:
        """Accuracy given compliance in percent, the scenario's `accuracy_given_compliance`."""
        theta, _ = self.get(model)
        return float(100.0 * ability_accuracy(theta, self.s_d))

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"model": self.models, "theta": self.theta, "theta_se": self.theta_se,
                             "compliance": self.compliance, "s_d": self.s_d, "s_d_se": self.s_d_se})

    def to_dict(self) -> dict:
        return {"models": list(self.models), "theta": list(self.theta), "theta_se": list(self.theta_se),
                "compliance": list(self.compliance), "s_d": self.s_d, "s_d_se": self.s_d_se,
                "n_items": self.n_items}


_FIT_NODES = 40
_XF_K, _WF_K = np.polynomial.hermite_e.hermegauss(_FIT_NODES)
_LOGWF_K = np.log(_WF_K / _WF_K.sum())


def marginal_loglik(theta_M, s_d: float, correct_IM, compliant_IM) -> float:
    """log prod_i int prod_m Binomial(correct_im | compliant_im, sigmoid(theta_m - d)) N(d; 0, s_d^2) dd.

    Items are shared across models (one d_i per problem); a model that did not see a problem has
    compliant_im = 0 and contributes a factor 1. The binomial coefficient is constant and dropped.
    """
    d_K = s_d * _XF_K
    eta_MK = np.asarray(theta_M)[:, None] - d_K[None, :]
    log_p_MK = -np.logaddexp(0.0, -eta_MK)  # log sigmoid
    log_q_MK = -np.logaddexp(0.0, eta_MK)  # log (1 - sigmoid)
    wrong_IM = compliant_IM - correct_IM
    ll_IK = correct_IM @ log_p_MK + wrong_IM @ log_q_MK
    return float(special.logsumexp(ll_IK + _LOGWF_K, axis=1).sum())


def fit_problems(problems: pd.DataFrame, *, models: list[str] | None = None) -> IRTFit:
    """Maximum marginal likelihood of (theta_m, s_d) from a problem table; c_m = sum compliant / sum k.

    `correct | compliant ~ Binomial(compliant, sigmoid(theta_m - d_i))`, d_i ~ N(0, s_d^2). Standard
    errors come from the inverse of a finite-difference Hessian of the negative log likelihood.
    """
    from theory.tables import validate_problems

    df = validate_problems(problems)
    names = sorted(df["model"].unique()) if models is None else list(models)
    missing = [m for m in names if m not in set(df["model"])]
    if missing:
        raise InputError(f"problem table: no rows for model {missing[0]!r} (models present: "
                         f"{', '.join(sorted(df['model'].unique()))})")
    df = df[df["model"].isin(names)]
    items = sorted(df["problem_id"].unique())
    if len(items) < 5:
        raise InputError(f"problem table: {len(items)} problems is too few to fit difficulties (need >= 5)")
    wide_c = df.pivot(index="problem_id", columns="model", values="correct").reindex(index=items, columns=names)
    wide_n = df.pivot(index="problem_id", columns="model", values="compliant").reindex(index=items, columns=names)
    correct_IM = wide_c.fillna(0).to_numpy(float)
    compliant_IM = wide_n.fillna(0).to_numpy(float)
    comp = []
    for m in names:
        sub = df[df["model"] == m]
        comp.append(float(sub["compliant"].sum() / sub["k"].sum()))
    for m, n in zip(names, compliant_IM.sum(0)):
        if n == 0:
            raise InputError(f"problem table: model {m!r} has no compliant samples; its ability cannot be fitted")

    n_m = len(names)

    def nll(z):
        return -marginal_loglik(z[:n_m], float(np.exp(z[n_m])), correct_IM, compliant_IM)

    # start: per-model logit of pooled accuracy given compliance, s_d = 1
    frac = np.clip(correct_IM.sum(0) / np.maximum(compliant_IM.sum(0), 1), 0.02, 0.98)
    z0 = np.concatenate([special.logit(frac), [0.0]])
    # bounds keep a perfect/hopeless model finite (logit 12 ~ 99.9994%)
    bounds = [(-12.0, 12.0)] * n_m + [(np.log(0.05), np.log(8.0))]
    res = optimize.minimize(nll, z0, method="L-BFGS-B", bounds=bounds)
    z = res.x
    hess = _fd_hessian(nll, z)
    try:
        cov = np.linalg.inv(hess)
        se = np.sqrt(np.clip(np.diag(cov), 0, np.inf))
    except np.linalg.LinAlgError:
        se = np.full(len(z), np.inf)
    s_d = float(np.exp(z[n_m]))
    return IRTFit(models=tuple(names), theta=tuple(float(t) for t in z[:n_m]),
                  theta_se=tuple(float(s) for s in se[:n_m]), compliance=tuple(comp),
                  s_d=s_d, s_d_se=float(s_d * se[n_m]), n_items=len(items))


def _fd_hessian(f, z, h: float = 1e-3) -> np.ndarray:
    n = len(z)
    H = np.empty((n, n))
    for i in range(n):
        for j in range(i, n):
            ei = np.zeros(n); ei[i] = h
            ej = np.zeros(n); ej[j] = h
            H[i, j] = H[j, i] = (f(z + ei + ej) - f(z + ei - ej) - f(z - ei + ej) + f(z - ei - ej)) / (4 * h * h)
    return H


def simulate_problems(theta_M, c_M, s_d: float, *, n_items: int, k: int, rng: np.random.Generator,
                      models: list[str] | None = None) -> pd.DataFrame:
    """Draw a problem table from the model itself (for recovery tests and docs examples)."""
    theta_M = np.asarray(theta_M, dtype=float)
    c_M = np.asarray(c_M, dtype=float)
    names = models or [f"m{i}" for i in range(len(theta_M))]
    d_I = rng.normal(0.0, s_d, size=n_items)
    rows = []
    for m, (th, c) in enumerate(zip(theta_M, c_M)):
        compliant_I = rng.binomial(k, c, size=n_items)
        correct_I = rng.binomial(compliant_I, special.expit(th - d_I))
        for i in range(n_items):
            rows.append((names[m], f"p{i:04d}", k, int(correct_I[i]), int(compliant_I[i])))
    return pd.DataFrame(rows, columns=["model", "problem_id", "k", "correct", "compliant"])


def irt_measurements(fit: IRTFit, problems: pd.DataFrame) -> dict:
    """model -> ((accuracy_given_compliance %, sd on logit scale), (compliance, sd on logit scale)).

    The standard errors make these measured inputs fitted too, with their measurement as the prior
    (a pilot of 200 problems pins a start state to ~1-2 points, not exactly).
    """
    out = {}
    for m in fit.models:
        theta, c = fit.get(m)
        se = fit.theta_se[fit.models.index(m)]
        se = se if np.isfinite(se) else 1.0
        lo, hi = (ability_accuracy(theta + d, fit.s_d) for d in (-se, se))
        a = float(np.clip(ability_accuracy(theta, fit.s_d), 1e-5, 1 - 1e-5))
        a_sd = float(abs(special.logit(np.clip(hi, 1e-5, 1 - 1e-5)) - special.logit(np.clip(lo, 1e-5, 1 - 1e-5))) / 2)
        n_k = float(problems.loc[problems["model"] == m, "k"].sum())
        # a pilot where every sample complied (or none did) measures a rate within half a sample of
        # the edge, not exactly 0 or 1 (a probability given with an sd must lie inside (0, 1))
        edge = 0.5 / max(n_k, 1.0)
        c_ = float(np.clip(c, edge, 1 - edge))
        c_sd = float(np.sqrt(c_ * (1 - c_) / n_k) / (c_ * (1 - c_)))
        out[m] = ((100 * a, float(np.clip(a_sd, 1e-3, 10))), (c_, float(np.clip(c_sd, 1e-3, 10))))
    return out
