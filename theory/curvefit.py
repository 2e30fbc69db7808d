"""A theory-free naive predictor from pilot curves (issue 23, item 4): a saturating fit per arm, fed
the same pilot curves as the planner and extrapolated in the label budget N and in training tokens.

What it is
  Per (world, arm), every pilot run's best-so-far validation curve (the running max over its
  cumulative training tokens, as reference.frontier.best_by reads a curve) is fitted by one surface

      acc(N, T) = a0 + (A(N) - a0) (1 - exp(-T / tau(N)))
      A(N)      = alpha + beta log2 N               (the plateau, percent)
      log tau(N) = g0 + g1 log2 N                   (tokens to reach 63% of the way there)

  with a0 the arm's accuracy before training (T -> 0), shared by every N. The five parameters are
  fitted by least squares over all the arm's pilot points (scipy.optimize.least_squares), within
  bounds that keep a0 and A(N) at the smallest and largest pilot N in [0, 100] and tau in
  [1, 100 x the largest pilot token count] (a longer tau is not identified by the pilot). The plateau
  is acc(N, T = inf) = A(N). An A(N) below a0 (extrapolating down in N) is floored at a0, since a
  best-so-far curve never falls.
  Interval: a bootstrap over seeds: within each N the runs are resampled with replacement and the
  surface refitted (200 resamples, rng seed 0); the percentile interval of the refits' predictions
  at the requested level (0.9 by default). The point estimate is the fit to all runs. Every number
  returned is clipped to [0, 100].

Why theory-free
  It reads nothing but the arm's own pilot curves: no teacher, no stage dynamics, no label account, no
  informativeness or compute model from the planner. It is the baseline the issue asks the theory to
  beat ("a saturating fit per arm fed the same pilot curves, extrapolated in N and compute"); if the
  theory does not beat it, the report says so.

Assumptions, and where it fails
  - Each arm's best-so-far curve saturates exponentially in tokens, with a plateau log-linear in N and
    a time constant power-law in N. A curve with two phases (a bridge's teacher stage, then its
    student stages, all on one token axis) is forced into one exponential.
  - It knows nothing of teachers or label splits: runs of one arm at one N with different teacher /
    student splits are one cloud of points, and a prediction depends on N and T alone.
  - The log-linear plateau is extrapolated from N <= 64 to N = 256 or 1024 with nothing to bend it:
    A(N) can run past any real ceiling (the clip at 100 is the only one), and a pilot that has not
    saturated leaves A and tau traded off against each other (wide intervals, or a tau at its bound).
  - The interval reflects seed-to-seed variation of the pilots only, not the error of the functional
    form: it is too narrow wherever the surface is wrong, above all in extrapolation.
  - Fitting the running max lifts a noisy curve: with per-point noise sd s the plateau is biased up by
    about s x (the expected max of the points near the plateau).

Table
  pilot curves (CURVES_COLUMNS): one row per validation point of a pilot run: world, arm, labels (N),
  teacher_labels, student_labels (the registry's LabelAccount), seed, stage, step, tokens (cumulative
  training tokens of the run at that point, every stage before counted), accuracy (validation, percent).
  A run is (world, arm, labels, teacher_labels, student_labels, seed).

numpy / scipy / pandas only (theory never imports torch).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import optimize

from theory.arms import ARMS
from theory.errors import InputError
from theory.tables import check_percent, check_table

CURVES_COLUMNS: dict[str, str] = {
    "world": "str",
    "arm": "str",
    "labels": "int",  # the budget N of the run
    "teacher_labels": "int",
    "student_labels": "int",
    "seed": "int",
    "stage": "str",
    "step": "int",
    "tokens": "int",  # cumulative training tokens of the run at this point, every stage before counted
    "accuracy": "float",  # validation accuracy, percent
}
RUN = ["world", "arm", "labels", "teacher_labels", "student_labels", "seed"]
N_PARAMS = 5  # a0, alpha, beta, g0, g1
MIN_BUDGETS = 2
N_RESAMPLES = 200
BOOTSTRAP_SEED = 0
TAU_MAX_OVER_TOKENS = 100.0  # tau's upper bound, in units of the largest pilot token count
PLATEAU = "plateau"


def validate_curves(df: pd.DataFrame) -> pd.DataFrame:
    """Check a pilot-curves table and return it normalised. Raises InputError (one line)."""
    what = "pilot curves"
    out = check_table(df, CURVES_COLUMNS, what, nonnegative=("teacher_labels", "student_labels", "step", "tokens"))
    check_percent(out["accuracy"], what, "column 'accuracy'")
    if (out["labels"] < 1).any():
        raise InputError(f"{what}: column 'labels' must be >= 1 (the budget N, read on log2 N)")
    for (arm, n, t, s), _ in out.groupby(["arm", "labels", "teacher_labels", "student_labels"]):
        a = ARMS[arm]
        try:
            acct = a.labels(int(n), int(t) if a.splits_labels else None)
        except InputError as e:
            raise InputError(f"{what}: arm={arm} labels={n} teacher_labels={t}: {e}") from None
        if (acct.teacher, acct.student) != (t, s):
            raise InputError(f"{what}: arm={arm} labels={n} teacher_labels={t} student_labels={s} disagrees with the "
                             f"registry's label account (teacher_labels={acct.teacher}, student_labels={acct.student})")
    dup = out.duplicated(subset=[*RUN, "stage", "step"])
    if dup.any():
        r = out[dup].iloc[0]
        raise InputError(f"{what}: duplicate point for world={r['world']} arm={r['arm']} labels={r['labels']} "
                         f"seed={r['seed']} stage={r['stage']} step={r['step']}")
    return out.reset_index(drop=True)


def best_so_far(curves: pd.DataFrame) -> pd.DataFrame:
    """Each run's points sorted by tokens with `best` = the running max of accuracy (validated curves)."""
    out = curves.sort_values([*RUN, "tokens", "step"], kind="stable").copy()
    out["best"] = out.groupby(RUN, sort=False)["accuracy"].cummax()
    return out.reset_index(drop=True)


def surface(params, log2n, tokens) -> np.ndarray:
    """acc(N, T) for params (a0, alpha, beta, g0, g1), at log2 N and tokens T (np.inf: the plateau)."""
    a0, alpha, beta, g0, g1 = params
    log2n, tokens = np.broadcast_arrays(np.asarray(log2n, dtype=float), np.asarray(tokens, dtype=float))
    gain = np.maximum(alpha + beta * log2n - a0, 0.0)  # a best-so-far curve never falls below a0
    tau = np.exp(g0 + g1 * log2n)
    frac = np.where(np.isinf(tokens), 1.0, -np.expm1(-np.where(np.isinf(tokens), 0.0, tokens) / tau))
    return a0 + gain * frac


def _fit(x: np.ndarray, t: np.ndarray, y: np.ndarray, x_lo: float, x_hi: float, t_max: float,
         starts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Least squares in the box-bounded parametrisation z = (a0, A(N_lo), A(N_hi), log tau(N_lo),
    log tau(N_hi)) from each start; returns the best fit's (a0, alpha, beta, g0, g1) and its z."""
    def params(z):
        a0, a_lo, a_hi, l_lo, l_hi = z
        beta, g1 = (a_hi - a_lo) / (x_hi - x_lo), (l_hi - l_lo) / (x_hi - x_lo)
        return np.array([a0, a_lo - beta * x_lo, beta, l_lo - g1 * x_lo, g1])

    lo = np.array([0.0, 0.0, 0.0, 0.0, 0.0])
    hi = np.array([100.0, 100.0, 100.0, np.log(TAU_MAX_OVER_TOKENS * t_max), np.log(TAU_MAX_OVER_TOKENS * t_max)])
    best = None
    for z0 in starts:
        r = optimize.least_squares(lambda z: surface(params(z), x, t) - y, np.clip(z0, lo, hi), bounds=(lo, hi),
                                   method="trf", x_scale=np.array([10.0, 10.0, 10.0, 1.0, 1.0]))
        if best is None or r.cost < best.cost:
            best = r
    return params(best.x), best.x


@dataclass(frozen=True)
class CurveFit:
    """One arm's fitted surface (`params` = a0, alpha, beta, g0, g1) and its bootstrap refits."""
    world: str
    arm: str
    params: np.ndarray = field(repr=False)
    boot: np.ndarray = field(repr=False)  # (n_resamples, 5)
    budgets: tuple[int, ...]  # the pilot budgets N
    n_points: int

    def predict(self, labels, tokens=np.inf, *, level: float = 0.9) -> tuple[float, float, float]:
        """(mean, lo, hi) accuracy in percent at budget `labels` after `tokens` (np.inf: the plateau)."""
        if not 0 < level < 1:
            raise InputError(f"level must lie in (0, 1) (e.g. 0.9), got {level!r}")
        if labels < 1:
            raise InputError(f"labels must be >= 1, got {labels!r}")
        if tokens < 0:
            raise InputError(f"tokens must be >= 0 (np.inf for the plateau), got {tokens!r}")
        x = np.log2(float(labels))
        mean = float(surface(self.params, x, tokens))
        if len(self.boot):
            draws = np.array([surface(p, x, tokens) for p in self.boot], dtype=float)
            lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
        else:
            lo = hi = mean
        return tuple(float(np.clip(v, 0.0, 100.0)) for v in (mean, lo, hi))

    def tau(self, labels) -> float:
        """The fitted time constant at budget `labels`, in tokens."""
        return float(np.exp(self.params[3] + self.params[4] * np.log2(float(labels))))

    def plateau(self, labels) -> float:
        """A(N), unclipped (the log-linear plateau; may pass 100 far outside the pilot budgets)."""
        return float(self.params[1] + self.params[2] * np.log2(float(labels)))


def fit_curves(curves: pd.DataFrame, world: str, arm: str, *, n_resamples: int = N_RESAMPLES,
               seed: int = BOOTSTRAP_SEED) -> CurveFit:
    """Fit one arm's pilot curves (module docstring). Raises InputError when the fit cannot be made."""
    curves = validate_curves(curves)
    mine = best_so_far(curves[(curves["world"] == world) & (curves["arm"] == arm)])
    budgets = sorted(int(n) for n in mine["labels"].unique())
    if len(budgets) < MIN_BUDGETS or len(mine) < N_PARAMS:
        raise InputError(f"pilot curves: world={world} arm={arm} has {len(budgets)} distinct N and {len(mine)} "
                         f"point(s); the naive fit needs >= {MIN_BUDGETS} distinct N and >= {N_PARAMS} points")
    x = np.log2(mine["labels"].to_numpy(dtype=float))
    t = mine["tokens"].to_numpy(dtype=float)
    y = mine["best"].to_numpy(dtype=float)
    x_lo, x_hi = np.log2(budgets[0]), np.log2(budgets[-1])
    t_max = max(float(t.max()), 1.0)
    first = mine.groupby(RUN, sort=False)["best"].first()
    last = mine.groupby(["labels", *RUN[3:]], sort=False)["best"].last().groupby(level="labels").mean()
    a0 = float(first.mean())
    starts = [np.array([a0, last[budgets[0]], last[budgets[-1]], np.log(f * t_max), np.log(f * t_max)])
              for f in (0.05, 0.3, 2.0)]
    params, z = _fit(x, t, y, x_lo, x_hi, t_max, starts)

    # bootstrap over seeds: resample the runs within each N, refit from the full fit's optimum
    rng = np.random.default_rng(seed)
    runs = {n: [g[["labels", "tokens", "best"]].to_numpy(dtype=float)
                for _, g in mine[mine["labels"] == n].groupby(RUN, sort=True)] for n in budgets}
    boot = []
    for _ in range(n_resamples):
        pick = np.concatenate([runs[n][k] for n in budgets for k in rng.integers(len(runs[n]), size=len(runs[n]))])
        boot.append(_fit(np.log2(pick[:, 0]), pick[:, 1], pick[:, 2], x_lo, x_hi, t_max, [z])[0])
    return CurveFit(world=str(world), arm=str(arm), params=params, boot=np.array(boot).reshape(-1, N_PARAMS),
                    budgets=tuple(budgets), n_points=int(len(mine)))


def naive_table(curves: pd.DataFrame, configs, level: float = 0.9, *, n_resamples: int = N_RESAMPLES,
                seed: int = BOOTSTRAP_SEED) -> pd.DataFrame:
    """naive_mean, naive_lo, naive_hi for each (world, arm, labels, tokens) of `configs` (tokens: a
    number, or np.inf / "plateau" for the plateau), one fit per (world, arm). Columns: world, arm,
    labels, tokens (the number, or "plateau"), naive_mean, naive_lo, naive_hi."""
    fits, rows = {}, []
    for world, arm, labels, tokens in configs:
        if isinstance(tokens, str):
            if tokens != PLATEAU:
                raise InputError(f"naive_table: tokens must be a number or {PLATEAU!r}, got {tokens!r}")
            tokens = np.inf
        if (world, arm) not in fits:
            fits[(world, arm)] = fit_curves(curves, world, arm, n_resamples=n_resamples, seed=seed)
        mean, lo, hi = fits[(world, arm)].predict(labels, tokens, level=level)
        rows.append({"world": world, "arm": arm, "labels": int(labels),
                     "tokens": PLATEAU if np.isinf(tokens) else int(tokens),
                     "naive_mean": mean, "naive_lo": lo, "naive_hi": hi})
    return pd.DataFrame(rows, columns=["world", "arm", "labels", "tokens", "naive_mean", "naive_lo", "naive_hi"])
