"""The fit: MAP of the free rates and assumed inputs to observed runs, Laplace uncertainty, and draws
pushed through the forward model.

Parameters z live on transformed scales (logit for probabilities/percents, log for positives). Each
assumed input i has a Gaussian prior z_i ~ N(T(value_i), sd_i^2). Observations y_j (percent) with
standard errors se_j. The MAP solves, with scipy.optimize.least_squares,
    min_z  sum_j ((f_j(z) - y_j) / se_j)^2 + sum_i ((z_i - mu_i) / sd_i)^2           -> `fit_scenario`
and the Laplace covariance is Cov = (J^T J)^-1 with J the Jacobian of the stacked, scaled residuals
(= J_obs^T W J_obs + prior precision). Posterior draws come from importance resampling with the
Laplace Gaussian (widened) as proposal (`_importance_resample`: the model saturates, so the Gaussian
alone is a poor posterior); the draws go through the forward model (`theory.dynamics`) to give
predictive intervals; a predicted *measurement* adds N(0, eval_se^2).

A scenario from a user's pilot is built by `theory.calibrate` (see docs/theory.md and docs/examples/).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

from theory import irt
from theory._lazy import LazyModule
from theory.arms import ARMS
from theory.discrepancy import discrepancy_sd
from theory.dynamics import Policy, Rates, Setting, predict_arm
from theory.scenario import Scenario, Tagged

pd = LazyModule("pandas")
optimize = LazyModule("scipy.optimize")

_EPS = 1e-6


def to_z(t: Tagged, value=None) -> np.ndarray:
    v = np.asarray(t.value if value is None else value, dtype=float)
    if t.kind == "percent":
        return special.logit(np.clip(v / 100.0, _EPS, 1 - _EPS))
    if t.kind == "probability":
        return special.logit(np.clip(v, _EPS, 1 - _EPS))
    if t.kind == "real":
        return v
    return np.log(v)


def from_z(t: Tagged, z) -> np.ndarray:
    z = np.asarray(z, dtype=float)
    if t.kind == "percent":
        return 100.0 * special.expit(z)
    if t.kind == "probability":
        return special.expit(z)
    if t.kind == "real":
        return z
    return np.exp(np.clip(z, -50, 50))


def values_from_z(scn: Scenario, z_RP: np.ndarray) -> dict[str, np.ndarray]:
    """Every input's natural value, shape R = z_RP.shape[:-1] (fixed inputs broadcast)."""
    fitted = scn.fitted_inputs()
    shape = z_RP.shape[:-1]
    vals: dict[str, np.ndarray] = {}
    for t in scn.inputs:
        vals[t.path] = np.full(shape, t.value)
    for i, t in enumerate(fitted):
        vals[t.path] = from_z(t, z_RP[..., i])
    return vals


def build_setting(scn: Scenario, vals: dict[str, np.ndarray], benchmarks: tuple[str, ...] | None = None) -> Setting:
    """Start states and rates from input values (shape R each)."""
    bench = tuple(benchmarks or scn.benchmarks)
    if scn.train_benchmark not in bench:
        bench = bench + (scn.train_benchmark,)
    s_d_B = np.stack([vals[f"benchmarks.{b}.s_d"] for b in bench], -1)

    def policy(role: str) -> Policy:
        th, cs = [], []
        us, has_u = [], False
        for i, b in enumerate(bench):
            base = f"{role}.benchmarks.{b}"
            c = vals.get(f"{base}.compliance", vals.get(f"{role}.compliance"))
            if f"{base}.accuracy_given_compliance" in vals:
                ability = vals[f"{base}.accuracy_given_compliance"] / 100.0
            else:
                ability = vals[f"{base}.accuracy"] / (100.0 * c)
            u = vals.get(f"{base}.ceiling")
            if u is not None:
                # ability within reach: the start accuracy is u x E_d[sigmoid(theta - d)]; a draw whose
                # ceiling falls below the start is held just above it
                has_u = True
                u = np.maximum(u / 100.0, ability / 0.999)
                ability = ability / u
            us.append(np.ones_like(np.asarray(ability, dtype=float)) if u is None else u)
            th.append(irt.solve_theta(ability, s_d_B[..., i]))
            cs.append(c)
        return Policy(np.stack(th, -1), np.stack(cs, -1), np.stack(us, -1) if has_u else 1.0)

    rates = Rates(kappa=vals["rates.kappa"], rho=vals["rates.rho"], phi_w=vals["rates.phi_w"],
                  phi_o=vals["rates.phi_o"], kl_c=vals["rates.kl_c"], kl0=vals["inputs.kl0"],
                  gamma=vals.get("rates.gamma", 0.0), cost_fkl=vals.get("rates.cost_fkl", 0.0),
                  kl0_style=vals.get("inputs.kl0_style"),
                  cost_opd=vals.get("rates.cost_opd", 0.0), kappa_ratio=vals.get("rates.kappa_ratio", 1.0),
                  k_explore=vals["inputs.k_explore"], group_size=vals["inputs.group_size"],
                  reuse=vals.get("lengths.reuse", np.inf), bridge_reach=vals.get("lengths.bridge_reach", 1.0))
    return Setting(benchmarks=bench, train=bench.index(scn.train_benchmark), s_d_B=s_d_B,
                 student=policy("student"), teacher=policy("teacher"), rates=rates, compute=scn.compute)


def predict_observations(scn: Scenario, z_RP: np.ndarray, observations=None) -> np.ndarray:
    """Model prediction (percent) of each observation, shape R + (J,)."""
    obs = scn.observations if observations is None else observations
    vals = values_from_z(scn, z_RP)
    setting = build_setting(scn, vals)
    out = []
    for o in obs:
        n = scn.budget if o.labels is None else o.labels
        acc = predict_arm(setting, ARMS[o.arm], n, o.teacher_labels)
        out.append(acc[..., setting.benchmarks.index(o.benchmark)])
    return np.stack(out, -1) if out else np.zeros(z_RP.shape[:-1] + (0,))


def measured_interval(acc_D) -> tuple[np.ndarray, np.ndarray]:
    """95% interval over the draw axis (0) of a measured accuracy (draws + evaluation noise); a
    measurement cannot leave [0, 100], so neither can its interval."""
    lo, hi = np.percentile(acc_D, [2.5, 97.5], axis=0)
    return np.clip(lo, 0.0, 100.0), np.clip(hi, 0.0, 100.0)


@dataclass(frozen=True)
class Fit:
    """A calibrated scenario: MAP, Laplace covariance, posterior draws (transformed scale)."""

    scenario: Scenario
    names: tuple[str, ...]  # fitted input paths, the columns of z
    z_map: np.ndarray  # (P,)
    cov: np.ndarray  # (P, P)
    z_draws: np.ndarray  # (D, P)
    chi2: float  # sum of squared observation residuals at the MAP
    warnings: tuple[str, ...]
    labels_range: tuple[int, int] | None  # observed label budgets (min, max)
    ess: float = float("nan")  # effective sample size of the importance weights

    def map_values(self) -> dict[str, float]:
        vals = values_from_z(self.scenario, self.z_map[None, :])
        return {k: float(v[0]) for k, v in vals.items()}

    def draw_values(self) -> dict[str, np.ndarray]:
        return values_from_z(self.scenario, self.z_draws)

    def residuals(self, holdout: bool = False) -> pd.DataFrame:
        """Observed vs predicted (MAP and 95% predictive interval incl. eval noise)."""
        scn = self.scenario
        obs = scn.holdout if holdout else scn.observations
        if not obs:
            return pd.DataFrame(columns=["arm", "benchmark", "labels", "teacher_labels", "observed", "se",
                                         "predicted", "lo", "hi", "residual", "z"])
        pm = predict_observations(scn, self.z_map[None, :], obs)[0]
        pd_DJ = predict_observations(scn, self.z_draws, obs)
        vals = self.draw_values()
        rng = np.random.default_rng(scn.seed + 1)
        noise = np.stack([rng.normal(0, 1, len(self.z_draws)) * vals[f"benchmarks.{o.benchmark}.eval_se"]
                          for o in obs], -1)
        lo, hi = measured_interval(pd_DJ + noise)
        rows = []
        for j, o in enumerate(obs):
            rows.append({"arm": o.arm, "benchmark": o.benchmark,
                         "labels": scn.budget if o.labels is None else o.labels,
                         "teacher_labels": o.teacher_labels, "observed": o.value, "se": o.se,
                         "predicted": pm[j], "lo": lo[j], "hi": hi[j], "residual": o.value - pm[j],
                         "z": (o.value - pm[j]) / np.sqrt(o.se**2 + np.var(pd_DJ[:, j]))})
        return pd.DataFrame(rows)

    def parameters(self) -> pd.DataFrame:
        """Every input: tag, prior, MAP and 95% interval (natural scale); fitted ones first."""
        scn = self.scenario
        sd = np.sqrt(np.diag(self.cov)) if len(self.names) else np.zeros(0)
        rows = []
        for i, path in enumerate(self.names):
            t = scn.get(path)
            lo, hi = from_z(t, self.z_map[i] - 1.96 * sd[i]), from_z(t, self.z_map[i] + 1.96 * sd[i])
            rows.append({"input": path, "tag": t.tag, "fitted": True, "prior": t.value, "prior_sd_z": t.sd,
                         "map": float(from_z(t, self.z_map[i])), "lo": float(lo), "hi": float(hi),
                         "shrink": float(sd[i] ** 2 / t.sd**2), "note": t.note})
        for t in scn.inputs:
            if not t.fitted:
                rows.append({"input": t.path, "tag": t.tag, "fitted": False, "prior": t.value, "prior_sd_z": None,
                             "map": t.value, "lo": t.value, "hi": t.value, "shrink": None, "note": t.note})
        return pd.DataFrame(rows)


_CACHE: dict[str, Fit] = {}  # insertion-ordered: the oldest entry is dropped past _CACHE_MAX
_CACHE_MAX = 64
IS_FACTOR = 16  # proposal draws per kept draw
IS_WIDEN = 1.1  # proposal sd / Laplace sd: slightly heavier than the target; wider costs ESS in the
# many prior-only directions (1.5 gave an ESS of 41/4096 on paper-qwen3-math, 1.1 gives ~10x more)


def _named_normals(names, n: int, seed: int, round_: int) -> np.ndarray:
    """(n, P) standard normals, column i drawn from a generator keyed by (seed, names[i], round): common
    random numbers, so fixing or freeing one input leaves every other input's proposal draws as they
    were (an interval then changes by what the input does, not by Monte-Carlo reshuffling)."""
    import zlib
    cols = [np.random.default_rng([int(seed), zlib.crc32(str(nm).encode()), round_]).standard_normal(n)
            for nm in names]
    return np.stack(cols, -1) if cols else np.zeros((n, 0))


def _importance_resample(resid_R, z_map, cov, n_keep: int, rng, rounds: int = 3, names=None,
                         seed: int = 0) -> tuple[np.ndarray, float, int]:
    """Posterior draws by adaptive importance sampling, then systematic resampling to n_keep.

    Round 0 proposes from the Laplace Gaussian N(z_MAP, IS_WIDEN^2 Cov); weights are
    exp(-||r(z)||^2 / 2) / q(z) (the exact unnormalised posterior over the proposal). While the
    effective sample size (ESS) is below n_keep, the next round proposes from the weighted mean and
    covariance of the last one (population Monte Carlo), at most `rounds` rounds.

    Why not plain Laplace draws: the bridge's tau saturates (phi_o near 1), so the MAP sits where the
    Jacobian is flat; Gaussian draws then fall on the concave side and a quantity fitted to +-0.9
    points got a 10-point-wide interval. Weighting by the exact posterior repairs that.
    The rounds' draws are pooled at the end when that raises the ESS (each is weighted against its own
    proposal). Returns the draws, the ESS of the weights they were resampled with, and how many
    proposal draws those weights cover.
    """
    P = len(z_map)
    mean, C = z_map, cov * IS_WIDEN**2
    pool_z, pool_logw = [], []
    for round_ in range(rounds):
        L = np.linalg.cholesky(C + 1e-10 * np.eye(P))
        eps = (rng.standard_normal((IS_FACTOR * n_keep, P)) if names is None
               else _named_normals(names, IS_FACTOR * n_keep, seed, round_))
        z = mean[None, :] + eps @ L.T
        # log target - log q (q's normalising constant kept, so rounds can be pooled)
        logw = -0.5 * np.sum(resid_R(z) ** 2, -1) + 0.5 * np.sum(eps**2, -1) + np.sum(np.log(np.diag(L)))
        logw = np.where(np.isfinite(logw), logw, -np.inf)
        pool_z.append(z)
        pool_logw.append(logw)
        w = np.exp(logw - logw.max())
        w /= w.sum()
        ess = float(1.0 / np.sum(w**2))
        if ess >= n_keep:
            break
        mean = w @ z
        d = z - mean
        C = (d * w[:, None]).T @ d * IS_WIDEN**2 + 0.05 * cov  # keep a floor of the Laplace spread
    if len(pool_z) > 1:
        # every round's draws are properly weighted samples of the same posterior: pooling them keeps
        # the work of the early rounds (used when it raises the effective sample size)
        zz, lw = np.concatenate(pool_z), np.concatenate(pool_logw)
        ww = np.exp(lw - lw.max())
        ww /= ww.sum()
        ess_pool = float(1.0 / np.sum(ww**2))
        if ess_pool > ess:
            z, w, ess = zz, ww, ess_pool
    u = (rng.random() + np.arange(n_keep)) / n_keep
    idx = np.minimum(np.searchsorted(np.cumsum(w), u), len(w) - 1)
    return z[idx], ess, len(w)


def fit_scenario(scn: Scenario) -> Fit:
    """MAP + Laplace + draws, cached by the scenario's content."""
    key = scn.key()
    fit = _CACHE.get(key)
    _hold(key, _fit(scn) if fit is None else fit)
    return _CACHE[key]


def cached_fit(scn: Scenario) -> Fit | None:
    """The fit of `scn` held in memory (calibrated in this process, or put there by `remember_fit`)."""
    return _CACHE.get(scn.key())


def remember_fit(fit: Fit) -> None:
    """Hold `fit` in memory as the calibration of its scenario (e.g. one read back from disk by
    budget_planner/fitcache.py)."""
    _hold(fit.scenario.key(), fit)


def _hold(key: str, fit: Fit) -> None:
    """Most recently used last; past _CACHE_MAX fits the oldest is dropped."""
    _CACHE.pop(key, None)
    _CACHE[key] = fit
    while len(_CACHE) > _CACHE_MAX:
        del _CACHE[next(iter(_CACHE))]


def _fit(scn: Scenario) -> Fit:
    fitted = scn.fitted_inputs()
    names = tuple(t.path for t in fitted)
    mu = np.array([float(to_z(t)) for t in fitted])
    sd = np.array([t.sd for t in fitted])
    y = np.array([o.value for o in scn.observations])
    # an observation is f + structural error + its measurement noise (docs/theory.md section 9)
    sd_delta = discrepancy_sd(scn)[0]
    se = np.sqrt(np.array([o.se for o in scn.observations]) ** 2 + sd_delta**2)
    warnings: list[str] = []

    n_obs = len(y)
    infl = 1.0  # likelihood tempering when the model cannot fit the observations (see below)

    def resid_R(z_RP):
        pred = predict_observations(scn, z_RP)
        return np.concatenate([(pred - y) / (se * np.sqrt(infl)), (z_RP - mu) / sd], -1)

    def fun(z):
        return resid_R(z[None, :])[0]

    def jac(z):
        # all one-sided perturbations in one vectorised forward pass (R = P + 1)
        h = 1e-5
        Z = np.vstack([z, z + h * np.eye(len(z))])
        r = resid_R(Z)
        return ((r[1:] - r[0]) / h).T

    z_map = mu.copy()
    if len(names) and n_obs:
        z_map = optimize.least_squares(fun, mu.copy(), jac=jac, method="trf", x_scale="jac").x
    r_obs = (predict_observations(scn, z_map[None, :])[0] - y) / se if n_obs else np.zeros(0)
    chi2 = float(np.sum(r_obs**2))
    if n_obs and chi2 / n_obs > 4.0:
        # the model misses the data by more than their standard errors: widen every interval by
        # tempering the likelihood (se -> se * sqrt(chi2/n)) rather than report false precision
        infl = chi2 / n_obs
        warnings.append(f"observations fit poorly (chi2/n = {infl:.1f}): intervals widened by x{np.sqrt(infl):.1f}")
    cov = np.zeros((0, 0))
    if len(names):
        J = jac(z_map)
        try:
            cov = np.linalg.inv(J.T @ J)
        except np.linalg.LinAlgError:
            cov = np.diag(sd**2)
            warnings.append("Laplace Hessian is singular: intervals fall back to the priors")
        cov = 0.5 * (cov + cov.T)

    if n_obs == 0:
        warnings.append("no observations: every prediction is the prior's (nothing calibrated)")
    elif len(names):
        # how many parameter directions the data pin down, and how many only the priors do
        J_obs = jac(z_map)[:n_obs]
        n_data = int(np.linalg.matrix_rank(J_obs * sd[None, :], tol=1e-3 * np.sqrt(n_obs)))
        prior_only = [n for n, v, s in zip(names, np.diag(cov), sd) if v / s**2 > 0.9]
        warnings.append(
            f"{n_obs} observation(s) inform at most {n_data} of {len(names)} fitted directions; "
            f"{len(prior_only)} inputs are set by their priors alone (intervals there are the priors')")
    rng = np.random.default_rng(scn.seed)
    ess = float("nan")
    if len(names):
        z_draws, ess, n_prop = _importance_resample(resid_R, z_map, cov, scn.draws, rng, names=names,
                                                    seed=scn.seed)
        if ess < scn.draws / 4:
            warnings.append(f"importance resampling kept an effective {ess:.0f} of {n_prop} "
                            "proposal draws: intervals are approximate")
    else:
        z_draws = np.zeros((scn.draws, 0))
    labs = [scn.budget if o.labels is None else o.labels for o in scn.observations]
    labs = [n for n in labs if n > 0]
    lrange = (min(labs), max(labs)) if labs else None
    return Fit(scenario=scn, names=names, z_map=z_map, cov=cov, z_draws=z_draws, chi2=chi2,
               warnings=tuple(warnings), labels_range=lrange, ess=ess)
