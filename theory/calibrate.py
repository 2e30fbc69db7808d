"""Calibration: MAP fit of the free rates and assumed inputs to observed runs, Laplace uncertainty,
and draws pushed through the forward model.

Parameters z live on transformed scales (logit for probabilities/percents, log for positives). Each
assumed input i has a Gaussian prior z_i ~ N(T(value_i), sd_i^2). Observations y_j (percent) with
standard errors se_j. The MAP solves, with scipy.optimize.least_squares,
    min_z  sum_j ((f_j(z) - y_j) / se_j)^2 + sum_i ((z_i - mu_i) / sd_i)^2           -> `fit_scenario`
and the Laplace covariance is Cov = (J^T J)^-1 with J the Jacobian of the stacked, scaled residuals
(= J_obs^T W J_obs + prior precision). Posterior draws come from importance resampling with the
Laplace Gaussian (widened) as proposal (`_importance_resample`: the model saturates, so the Gaussian
alone is a poor posterior); the draws go through the forward model (`theory.dynamics`) to give
predictive intervals; a predicted *measurement* adds N(0, eval_se^2).

`calibrate(run_table, problem_table)` builds a Scenario from a user's pilot (see docs/theory.md and
docs/examples/).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

from theory import irt
from theory._lazy import LazyModule
from theory.arms import ARMS, Stage
from theory.dynamics import Policy, Rates, World, predict_arm
from theory.errors import InputError
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


def build_world(scn: Scenario, vals: dict[str, np.ndarray], benchmarks: tuple[str, ...] | None = None) -> World:
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
                  k_explore=vals["inputs.k_explore"], group_size=vals["inputs.group_size"])
    return World(benchmarks=bench, train=bench.index(scn.train_benchmark), s_d_B=s_d_B,
                 student=policy("student"), teacher=policy("teacher"), rates=rates, compute=scn.compute)


def predict_observations(scn: Scenario, z_RP: np.ndarray, observations=None) -> np.ndarray:
    """Model prediction (percent) of each observation, shape R + (J,)."""
    obs = scn.observations if observations is None else observations
    vals = values_from_z(scn, z_RP)
    world = build_world(scn, vals)
    out = []
    for o in obs:
        n = scn.budget if o.labels is None else o.labels
        acc = predict_arm(world, ARMS[o.arm], n, o.teacher_labels)
        out.append(acc[..., world.benchmarks.index(o.benchmark)])
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
    if key in _CACHE:
        _CACHE[key] = _CACHE.pop(key)  # most recently used last
    else:
        _CACHE[key] = _fit(scn)
        while len(_CACHE) > _CACHE_MAX:
            del _CACHE[next(iter(_CACHE))]
    return _CACHE[key]


def _fit(scn: Scenario) -> Fit:
    fitted = scn.fitted_inputs()
    names = tuple(t.path for t in fitted)
    mu = np.array([float(to_z(t)) for t in fitted])
    sd = np.array([t.sd for t in fitted])
    y = np.array([o.value for o in scn.observations])
    # an observation is f + structural error + its measurement noise (docs/theory.md section 9)
    from theory.discrepancy import discrepancy_sd
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


# ------------------------------------------------------------------------------------------------
# calibrate(run_table, problem_table) -> Scenario: a scenario from a user's pilot
# ------------------------------------------------------------------------------------------------

CEILING_PRIOR = 97.0  # percent given compliance, prior mean of a pilot's accuracy ceiling (sd 1 logit)
_PILOT_PRIORS = {  # generic priors for a pilot without stated ones (wide; tagged assumed)
    "kappa": (0.1, 1.5, "generic wide prior: GRPO moves pass@1 part of the way to pass@k per 1000 labels"),
    "rho": (0.6, 1.0, "generic prior: a smaller student absorbs a good part, not all, of a teacher's ability gap"),
    "phi_w": (0.5, 1.0, "generic prior: off-policy warmup suffers exposure bias and closes about half the gap"),
    "phi_o": (0.9, 1.0, "generic prior: on-policy distillation closes most of the gap inside its trust region"),
    "kl_c": (0.5, 1.0, "generic prior: OPD's trust region is a few tenths of a nat per token"),
    "gamma": (0.1, 1.5, "generic wide prior: a student that crosses a style gap of KL_0 nats/token loses "
                        "~0.1 ability logits per nat (0 = no displacement; docs/theory.md)"),
}


def _obs_labels(arm: str, t: int, s: int, stage3_by_t: dict[int, int]) -> tuple[int | None, int | None, str | None]:
    """(labels, teacher_labels, note) for one run-table configuration, via the registry's accounting."""
    a = ARMS[arm]
    if Stage.REPLAY_OPD in a.stages:
        # the registry leaves the replay's held-back labels unused (student_labels = 0): recover the
        # budget from a stage-3 run with the same teacher share, else assume the default half split
        if t in stage3_by_t:
            return stage3_by_t[t], t, None
        return 2 * t, t, f"replay_control with teacher_labels={t}: budget assumed {2 * t} (half split)"
    if a.splits_labels:
        return t + s, t, None
    acct_total = t + s
    if acct_total == 0:
        return None, None, None  # labels unused by this arm (raw teacher bridge)
    return acct_total, None, None


def irt_measurements(fit: irt.IRTFit, problems: pd.DataFrame) -> dict:
    """model -> ((accuracy_given_compliance %, sd on logit scale), (compliance, sd on logit scale)).

    The standard errors make these measured inputs fitted too, with their measurement as the prior
    (a pilot of 200 problems pins a start state to ~1-2 points, not exactly).
    """
    out = {}
    for m in fit.models:
        theta, c = fit.get(m)
        se = fit.theta_se[fit.models.index(m)]
        se = se if np.isfinite(se) else 1.0
        lo, hi = (irt.ability_accuracy(theta + d, fit.s_d) for d in (-se, se))
        a = float(np.clip(irt.ability_accuracy(theta, fit.s_d), 1e-5, 1 - 1e-5))
        a_sd = float(abs(special.logit(np.clip(hi, 1e-5, 1 - 1e-5)) - special.logit(np.clip(lo, 1e-5, 1 - 1e-5))) / 2)
        n_k = float(problems.loc[problems["model"] == m, "k"].sum())
        # a pilot where every sample complied (or none did) measures a rate within half a sample of
        # the edge, not exactly 0 or 1 (a probability given with an sd must lie inside (0, 1))
        edge = 0.5 / max(n_k, 1.0)
        c_ = float(np.clip(c, edge, 1 - edge))
        c_sd = float(np.sqrt(c_ * (1 - c_) / n_k) / (c_ * (1 - c_)))
        out[m] = ((100 * a, float(np.clip(a_sd, 1e-3, 10))), (c_, float(np.clip(c_sd, 1e-3, 10))))
    return out


def posterior_priors(fit: Fit, prefixes: tuple[str, ...] = ("rates.", "inputs.k_explore", "benchmarks.")) -> dict:
    """path -> {value, tag, sd, why}: a fit's posterior (mean and sd of its draws, transformed scale) as
    the prior of the same input in another scenario -- a Gaussian approximation, stated in `why`.
    Only fitted inputs whose path starts with one of `prefixes` (per-benchmark entries keep their
    leaf name, e.g. 'benchmarks.eval_se')."""
    out = {}
    for i, path in enumerate(fit.names):
        if not path.startswith(prefixes):
            continue
        t = fit.scenario.get(path)
        z = fit.z_draws[:, i]
        key = "benchmarks." + path.split(".")[-1] if path.startswith("benchmarks.") else path
        out[key] = {"value": float(from_z(t, z.mean())), "tag": "assumed", "sd": float(max(z.std(), 1e-3)),
                    "why": f"posterior of scenario {fit.scenario.name!r} ({len(z)} draws, Gaussian on the "
                           f"transformed scale) used as the prior here"}
    return out


# problem-table model names written by `reference-pipeline pilot --self-distill`: the student after the
# FKL warmup / after warmup + OPD, both distilled from a frozen copy of itself
SELF_DISTILL_MODELS = ("self_distill_fkl_warmup", "self_distill_opd")


def stage_costs(fit: irt.IRTFit, student: str, src: str) -> dict:
    """rates.cost_fkl / cost_opd (ability logits) measured from a self-distillation pilot, if present:
    what each bridge stage costs the student when the teacher is the student itself (no gap to close,
    no style to cross: what is left is the optimiser's drift). sd = the two abilities' standard errors."""
    out = {}
    prev = student
    for name, m in (("cost_fkl", SELF_DISTILL_MODELS[0]), ("cost_opd", SELF_DISTILL_MODELS[1])):
        if m not in fit.models:
            break
        i, j = fit.models.index(prev), fit.models.index(m)
        ses = [fit.theta_se[k] if np.isfinite(fit.theta_se[k]) else 1.0 for k in (i, j)]
        out[name] = {"value": float(fit.theta[i] - fit.theta[j]), "tag": "measured",
                     "sd": float(np.clip(np.hypot(*ses), 1e-3, 10)),
                     "source": f"self-distillation pilot: ability of {prev!r} minus {m!r} ({src})"}
        prev = m
    return out


def calibrate(runs: pd.DataFrame, problems: pd.DataFrame, *, student: str = "student", teacher: str = "teacher",
              benchmark: str = "pilot", name: str = "pilot", split: str = "test", group_size: int = 8,
              seed: int = 0, rates_from: Fit | None = None, same_models: dict[str, str] | None = None) -> Scenario:
    """A Scenario from a pilot: problem table -> (theta, c, s_d) per model (measured); run table ->
    observations (mean accuracy over seeds per arm and label split, se from the seed spread).

    Refuses (InputError) with fewer than 2 distinct observations; the fit itself reports how many
    parameter directions the observations inform (`fit_scenario(...).warnings`).

    `rates_from`: an earlier calibration (same training recipe, another student/teacher pair) whose
    posterior becomes the prior of the rates, k_explore and eval_se (`posterior_priors`); then the run
    table may hold no accuracy rows at all (a pilot of the new pair's base models is enough: the
    prediction is the earlier world's dynamics applied to the new start states).
    `same_models` (with `rates_from`): role here -> role there, for a model that IS a checkpoint of the
    earlier calibration (e.g. {"student": "student", "teacher": "student"} when the new teacher is a copy
    of the old student): its start state is the earlier posterior, not this pilot's, so one checkpoint
    has one calibrated state in both scenarios (the pilot still supplies KL_0 and the other model).
    """
    from theory.scenario import parse_scenario
    from theory.tables import validate_problems, validate_runs

    runs = validate_runs(runs)
    problems = validate_problems(problems)
    present = set(problems["model"])
    sd_models = [m for m in SELF_DISTILL_MODELS if m in present]
    fit = irt.fit_problems(problems, models=[student, teacher, *sd_models])
    src = f"fitted from the pilot problem table ({fit.n_items} problems, IRT marginal ML)"
    acc = runs[(runs["metric"] == "accuracy") & (runs["split"] == split)]
    if acc.empty and rates_from is None:
        raise InputError(f"run table: no rows with metric 'accuracy' and split {split!r} to calibrate on")
    if acc["world"].nunique() > 1:
        raise InputError(f"run table: several worlds ({', '.join(sorted(acc['world'].unique()))}); "
                         "give the rows of one student/teacher pair")
    grp = acc.groupby(["arm", "teacher_labels", "student_labels"])["value"]
    stats = grp.agg(["mean", "std", "count"]).reset_index()
    if len(stats) < 2 and rates_from is None:
        raise InputError(f"calibrate: need accuracy rows for at least 2 arms or label budgets; found {len(stats)} "
                         "(too few to fit any rate)")
    notes: list[str] = []
    multi = stats[stats["count"] >= 2]
    borrowed = posterior_priors(rates_from) if rates_from is not None else {}
    if rates_from is not None and "benchmarks.eval_se" not in borrowed:
        # a measured (unfitted) seed spread carries over as measured
        t = rates_from.scenario.get(f"benchmarks.{rates_from.scenario.target_benchmark}.eval_se")
        borrowed["benchmarks.eval_se"] = {"value": t.value, "tag": t.tag, "source": f"{t.note} (scenario "
                                          f"{rates_from.scenario.name!r})"} if t.tag != "assumed" else \
            {"value": t.value, "tag": "assumed", "sd": t.sd, "why": t.note}
    if "benchmarks.eval_se" in borrowed and not len(multi):
        eval_se = borrowed["benchmarks.eval_se"]
    elif len(multi):
        pooled = float(np.sqrt(np.average(multi["std"] ** 2, weights=multi["count"] - 1)))
        eval_se = {"value": max(pooled, 0.1), "tag": "measured",
                   "source": f"pooled seed-to-seed std of {int(multi['count'].sum())} pilot runs"}
    else:
        eval_se = {"value": 1.0, "tag": "assumed", "sd": 0.7,
                   "why": "one seed per configuration: seed spread unknown, assumed 1 point"}
        notes.append("every configuration has one seed: standard errors assumed (1 point)")
    s3 = stats[stats["arm"].map(lambda n: Stage.STUDENT_GRPO in ARMS[n].stages and ARMS[n].splits_labels)]
    stage3_by_t = {int(r.teacher_labels): int(r.teacher_labels + r.student_labels) for r in s3.itertuples()}
    observations = []
    for r in stats.itertuples():
        labels, tl, note = _obs_labels(r.arm, int(r.teacher_labels), int(r.student_labels), stage3_by_t)
        if note:
            notes.append(note)
        se = float(r.std / np.sqrt(r.count)) if r.count >= 2 else float(eval_se["value"])
        o = {"arm": r.arm, "benchmark": benchmark, "value": float(r.mean), "se": max(se, 0.1), "tag": "measured",
             "source": f"pilot run table: mean of {int(r.count)} seed(s)"}
        if labels is not None:
            o["labels"] = int(labels)
        if tl is not None:
            o["teacher_labels"] = int(tl)
        observations.append(o)
    budget = max([o.get("labels", 0) for o in observations] + [1])
    budget_src = "largest label budget in the pilot runs"
    if not observations and rates_from is not None:  # nothing run with this pair: plan at the earlier budget
        budget, budget_src = rates_from.scenario.budget, f"budget of scenario {rates_from.scenario.name!r}"
    kl = runs[runs["metric"].isin(["kl0_per_token", "kl_to_teacher"])]
    if len(kl):
        # a teacher identical to the student measures KL_0 = 0 exactly; the input lives on a log scale
        kl0 = {"value": max(float(kl["value"].mean()), 1e-6), "tag": "measured",
               "source": f"mean of {len(kl)} run-table row(s) with metric kl0_per_token/kl_to_teacher"}
    else:
        kl0 = {"value": 0.3, "tag": "assumed", "sd": 1.0,
               "why": "not in the pilot tables (add metric 'kl0_per_token'); generic wide prior"}
        notes.append("KL_0 not measured: assumed (add run-table rows with metric 'kl0_per_token')")

    if rates_from is not None:
        notes.append(f"rates, k_explore and eval_se borrowed from scenario {rates_from.scenario.name!r}'s posterior")
    kls = runs[runs["metric"] == "kl0_compliant_per_token"]
    kl0_style = ({"value": max(float(kls["value"].mean()), 1e-6), "tag": "measured",
                  "source": f"mean of {len(kls)} run-table row(s) with metric kl0_compliant_per_token"}
                 if len(kls) else None)
    meas = irt_measurements(fit, problems)

    same_models = dict(same_models or {})
    if same_models and rates_from is None:
        raise InputError("same_models needs rates_from (the calibration those models come from)")
    for role, src in same_models.items():
        if role not in ("student", "teacher") or src not in ("student", "teacher"):
            raise InputError(f"same_models: roles are 'student'/'teacher', got {role!r} -> {src!r}")

    def model(role: str, name_: str) -> dict:
        if role in same_models:
            src_role, src_bench = same_models[role], rates_from.scenario.target_benchmark
            got = posterior_priors(rates_from, (f"{src_role}.benchmarks.{src_bench}.",))
            leaf = {p.split(".")[-1]: v for p, v in got.items()}
            if {"accuracy_given_compliance", "compliance"} - set(leaf):
                raise InputError(f"same_models: {src_role}'s start state is not a fitted input of "
                                 f"scenario {rates_from.scenario.name!r}")
            return {"name": name_, "benchmarks": {benchmark: {k: leaf[k] for k in ("accuracy_given_compliance",
                                                                                  "compliance")}}}
        (a, a_sd), (c, c_sd) = meas[name_]
        return {"name": name_, "benchmarks": {benchmark: {
            "accuracy_given_compliance": {"value": a, "tag": "measured", "sd": a_sd, "source": src},
            "compliance": {"value": c, "tag": "measured", "sd": c_sd, "source": src},
            "ceiling": {"value": float(max(CEILING_PRIOR, (a + 100.0) / 2.0)), "tag": "assumed", "sd": 1.0,
                        "why": "generic wide prior: a few problems are mislabeled or beyond the model whatever "
                               "it is trained on; a pilot does not measure it"}}}}

    doc = {
        "name": name,
        "description": "; ".join([f"calibrated from a pilot ({len(observations)} observations)", *notes]),
        "target_benchmark": benchmark, "train_benchmark": benchmark, "seed": seed, "draws": 256,
        "inputs": {
            "budget": {"value": int(budget), "tag": "measured", "source": budget_src},
            "group_size": {"value": int(group_size), "tag": "assumed", "sd": 0.1, "why": "GRPO group size of the pilot"},
            "k_explore": borrowed.get("inputs.k_explore", {
                "value": float(group_size), "tag": "assumed", "sd": 0.5,
                "why": "RLVR raises pass@1 toward pass@k with k of the order of the group size (Yue et al. 2504.13837)"}),
            "kl0": kl0,
            **({"kl0_style": kl0_style} if kl0_style else {}),
        },
        "rates": {**{k: borrowed.get(f"rates.{k}", {"value": v, "tag": "assumed", "sd": sd, "why": why})
                     for k, (v, sd, why) in _PILOT_PRIORS.items()},
                  **{k.split(".", 1)[1]: v for k, v in borrowed.items() if k in ("rates.cost_fkl", "rates.cost_opd")},
                  "kappa_ratio": borrowed.get("rates.kappa_ratio", {
                      "value": 1.0, "tag": "assumed", "sd": 0.5,
                      "why": "teacher / student GRPO efficiency: tied at 1 (one recipe for both); observations "
                             "of both GRPO stages can move it"}),
                  **stage_costs(fit, student, src)},
        "benchmarks": {benchmark: {"s_d": {"value": float(fit.s_d), "tag": "measured", "source": src,
                                           "sd": float(np.clip(fit.s_d_se / fit.s_d, 1e-3, 10))},
                                   "eval_se": eval_se}},
        "student": model("student", student),
        "teacher": model("teacher", teacher),
        "observations": observations,
    }
    return parse_scenario(doc, source="calibrate()")


def simulate_pilot(truth: Scenario, configs, *, seeds: int, n_items: int, k: int, rng: np.random.Generator,
                   benchmark: str | None = None, world: str = "synthetic") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Pilot tables drawn from the model itself, at the truth scenario's stated input values.

    `configs`: iterable of (arm, labels, teacher_labels or None). Run rows get the model's accuracy
    plus N(0, eval_se^2) per seed; the problem table samples k answers per problem for the student
    and teacher (named as in `truth`). For calibration-recovery tests and docs/examples.
    """
    from theory.scenario import Observation

    bench = benchmark or truth.target_benchmark
    z_true = np.array([float(to_z(t)) for t in truth.fitted_inputs()])
    vals = values_from_z(truth, z_true[None, :])
    world_ = build_world(truth, vals, (bench,))
    b = world_.benchmarks.index(bench)
    obs = [Observation(arm=a, benchmark=bench, value=0.0, se=1.0, labels=n, teacher_labels=t, tag="measured",
                       note="simulated") for a, n, t in configs]
    mean_J = predict_observations(truth, z_true[None, :], obs)[0]
    se = float(vals[f"benchmarks.{bench}.eval_se"][0])
    rows = []
    for (arm, n, t), m in zip(configs, mean_J):
        acct = ARMS[arm].labels(n, t)
        for s in range(seeds):
            rows.append({"arm": arm, "seed": s, "world": world, "teacher_labels": acct.teacher,
                         "student_labels": acct.student,
                         "compute_tokens": ARMS[arm].total_compute_tokens(n, truth.compute, t),
                         "split": "test", "metric": "accuracy",
                         "value": float(np.clip(m + rng.normal(0, se), 0, 100))})
    if truth.has("inputs.kl0") and truth.get("inputs.kl0").tag == "measured":
        rows.append({"arm": "raw_teacher_bridge", "seed": 0, "world": world, "teacher_labels": 0, "student_labels": 0,
                     "compute_tokens": 0, "split": "probe", "metric": "kl0_per_token",
                     "value": truth.get("inputs.kl0").value})
    runs = pd.DataFrame(rows)
    theta_M = [float(world_.student.theta_B[0, b]), float(world_.teacher.theta_B[0, b])]
    c_M = [float(world_.student.c_B[0, b]), float(world_.teacher.c_B[0, b])]
    problems = irt.simulate_problems(theta_M, c_M, float(world_.s_d_B[0, b]), n_items=n_items, k=k, rng=rng,
                                     models=[truth.student, truth.teacher])
    return runs, problems
