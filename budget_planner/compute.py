"""The label x compute plane of a plan (issue 23): how long to train each arm, what it costs, and what
it reaches.

Each arm is evaluated on a grid of stage lengths (`theory.dynamics.predict_states` with `lengths`):

    GRPO stages   label passes  e = e0 x GRPO_PASSES   (e0 = compute.label_passes, the reference length)
    FKL and OPD   bridge units  b = BRIDGE_UNITS        (one unit = compute.bridge_prompts x samples)
    replay        the label passes of the stage-3 GRPO it replaces (the control's compute stays matched)

the teacher's passes, the bridge units (FKL and OPD stretched together) and the student's passes on
three axes, so one call evaluates every length of every arm; an arm is constant along the axes of the
stages it does not run. Per grid point: the predicted accuracy (the decision rule below), the training
tokens (`ComputeModel.stage_tokens`), and GPU-hours at the cost table's rates (`theory.costs`) plus
the plateau protocol's validation (VALIDATION: every trained stage is scored on V problems x k samples
at 21 points, the reference's `[plateau]` defaults; a test keeps them equal).

Decision rule: the MEAN over the posterior draws of the predicted accuracy (not p_best: the grid has
hundreds of points per arm). Per arm:

    frontier  the grid points no cheaper point beats (accuracy strictly rising with GPU-hours), each with
              the 95% predictive interval of a measured accuracy (model draws + structural error +
              measurement noise, as the plan's table); it never falls as compute grows
    plateau   the cheapest frontier point within PLATEAU_POINTS of the arm's best: its accuracy and
              interval, its stage lengths, tokens and GPU-hours ("trained to its plateau")
    at_budget with a GPU-hour budget H: the best frontier point within H less the pilot's hours

The recommendation at plateau is the candidate arm with the highest plateau accuracy; within a budget,
the one whose best point within H is highest (ties: the cheaper). The exchange rate: at the
recommended point, the GPU-hours 1,000 more labels save at the same predicted accuracy (the
recommended arm's own frontier at N + 1000, same teacher share).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from theory.arms import ARMS, MAX_LABELS, STAGES, STUDENT, Stage, candidate_arms, stage_labels
from theory.costs import CostTable, check_gpus
from theory.discrepancy import config_key
from theory.dynamics import predict_arms
from theory.errors import InputError

GRPO_PASSES = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)  # multiples of the reference label passes
BRIDGE_UNITS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
PLATEAU_POINTS = 0.5  # an arm is at its plateau within this many points of its best predicted accuracy
VALIDATION = {"problems": 64, "samples": 8, "points": 21}  # reference.config.PLATEAU_DEFAULTS (every 5%)
COMPUTE_DRAWS = 64  # posterior draws the grid is evaluated on (the plan's table uses all of them)
RULE = f"mean over {COMPUTE_DRAWS} posterior draws of the predicted accuracy"
AXES = {Stage.TEACHER_GRPO: 0, Stage.FKL_WARMUP: 1, Stage.OPD: 1, Stage.STUDENT_GRPO: 2, Stage.REPLAY_OPD: 2}


@dataclass(frozen=True)
class GridPoint:
    """One grid point of an arm: stage lengths (each in its unit), cost, predicted accuracy."""

    lengths: dict  # stage -> label passes (GRPO, replay) or bridge units (FKL, OPD)
    tokens: int  # training tokens
    gpu_hours: float  # training + validation
    accuracy: float  # the decision rule's value (percent)
    lo: float = float("nan")  # 95% predictive interval of a measured accuracy
    hi: float = float("nan")

    def to_dict(self) -> dict:
        return {"lengths": dict(self.lengths), "tokens": self.tokens, "gpu_hours": self.gpu_hours,
                "accuracy": self.accuracy, "ci": [self.lo, self.hi]}


@dataclass(frozen=True)
class ArmCompute:
    arm: str
    plateau: GridPoint
    frontier: tuple[GridPoint, ...]
    at_budget: GridPoint | None = None  # the best frontier point within the budget (None: none fits, or no budget)

    def to_dict(self) -> dict:
        p = self.plateau
        return {"plateau": {"accuracy": p.accuracy, "ci": [p.lo, p.hi]}, "stage_lengths": dict(p.lengths),
                "tokens_to_plateau": p.tokens, "gpu_hours_to_plateau": p.gpu_hours,
                "frontier": [[q.gpu_hours, q.accuracy, q.lo, q.hi] for q in self.frontier],
                "frontier_tokens": [q.tokens for q in self.frontier],
                "frontier_lengths": [dict(q.lengths) for q in self.frontier],
                "at_budget": None if self.at_budget is None else self.at_budget.to_dict()}


def _rows(setting, rows: slice):
    """The setting restricted to the rows `rows` of its draw axis (the MAP row first)."""
    from dataclasses import fields, replace as _replace

    def cut(x):
        return x if x is None or np.ndim(x) == 0 else np.asarray(x)[rows]
    r = setting.rates
    rates = _replace(r, **{f.name: cut(getattr(r, f.name)) for f in fields(r)})
    pol = lambda p: _replace(p, theta_B=cut(p.theta_B), c_B=cut(p.c_B), u_B=cut(p.u_B))  # noqa: E731
    return _replace(setting, rates=rates, student=pol(setting.student), teacher=pol(setting.teacher),
                    s_d_B=cut(setting.s_d_B))


def _grid(e0: float) -> tuple[np.ndarray, ...]:
    e = e0 * np.asarray(GRPO_PASSES)
    b = np.asarray(BRIDGE_UNITS)
    return e[:, None, None], b[None, :, None], e[None, None, :]


def _validation_hours(arm, compute, table: CostTable, gpus: int) -> float:
    """GPU-hours of the plateau protocol's validation: every stage scores V x k samples at 21 points
    (rollout passes at the stage's rollout rate)."""
    seq = compute.sequence_tokens
    v = VALIDATION["problems"] * VALIDATION["samples"] * VALIDATION["points"] * seq
    return sum(gpus * v / table.rate(s, "rollout", gpus) / 3600.0 for s in arm.stages)


def _grid_tokens(arm, acct, compute, grid) -> dict:
    """{stage: its training tokens over the grid} (each on its own axis of `grid`)."""
    return {s: np.asarray(compute.stage_tokens(s, stage_labels(s, acct), grid[AXES[s]]), dtype=float)
            for s in arm.stages}


def _stage_cost(arm, n: int, tl, compute, table: CostTable, gpus: int, grid) -> tuple[np.ndarray, np.ndarray]:
    """Training tokens and GPU-hours of `arm` over the grid (shape (E, U, E) after broadcasting)."""
    per_stage = _grid_tokens(arm, arm.labels(n, tl if arm.splits_labels else None), compute, grid)
    tokens = sum(per_stage.values(), np.zeros((1, 1, 1)))
    hours = sum((gpus * t / table.tokens_per_s(s, compute, gpus) / 3600.0 for s, t in per_stage.items()),
                np.zeros((1, 1, 1)))
    return tokens, hours


def _mean_interval(setup, key: tuple, name, acc_D: np.ndarray, n_seeds: int, level: float) -> tuple[float, float]:
    """The `level` interval of the mean of `n_seeds` runs of experiment `key` (PlanSetup.mean_of_seeds;
    nothing trained, key (): the model draws alone), clipped to [0, 100]."""
    draws = setup.mean_of_seeds(key, name, acc_D, n_seeds) if key != () else acc_D
    lo, hi = np.clip(np.percentile(draws, [50 * (1 - level), 50 * (1 + level)]), 0.0, 100.0)
    return float(lo), float(hi)


def _lengths_at(arm, grid, idx) -> dict:
    """The stage lengths of grid index `idx` (an arm's own stages only)."""
    return {s.value: float(np.ravel(grid[AXES[s]])[idx[AXES[s]]]) for s in arm.stages}


def evaluate_grid(setup, n: int, tl, table: CostTable, gpus: int, arms=None):
    """Per arm: the grid's accuracy draws (D, E, U, E) and MAP (E, U, E), tokens and hours (E, U, E)."""
    arms = [ARMS[a] for a in (arms or ARMS)]
    gpus = check_gpus(gpus)
    compute = setup.setting.compute
    grid = _grid(float(compute.label_passes))
    rows = slice(0, 1 + COMPUTE_DRAWS)
    wide = _rows(setup.setting, rows).expand().expand().expand()  # R = (1 + D', 1, 1, 1)
    out = {}
    for arm in arms:  # one call per arm: only the axes of its own stages are evaluated
        lengths = {s: grid[AXES[s]] for s in arm.stages}
        acc = predict_arms(wide, (arm,), n, tl if arm.splits_labels else None, lengths)[0, ..., setup.b]
        tokens, hours = _stage_cost(arm, n, tl, compute, table, gpus, grid)
        shape = np.broadcast_shapes(acc.shape[1:], tokens.shape)
        out[arm.name] = (np.broadcast_to(acc, acc.shape[:1] + shape), np.broadcast_to(tokens, shape),
                         np.broadcast_to(hours, shape) + _validation_hours(arm, compute, table, gpus))
    return grid, out


def arm_compute(setup, arm_name: str, n: int, tl, acc_R, tokens, hours, grid, budget_h=None) -> ArmCompute:
    """Frontier, plateau and the best point within `budget_h` of one arm from its grid evaluation."""
    arm = ARMS[arm_name]
    acc_D = acc_R[1:]  # (D', E|1, U|1, E|1): size 1 along the axes of the stages the arm does not run
    mean = acc_D.mean(0).ravel()
    tok, hrs = tokens.ravel(), hours.ravel()
    sub_shape = acc_D.shape[1:]
    order = np.lexsort((-mean, hrs))  # by cost, the best first among equal costs
    front, best = [], -np.inf
    for j in order:
        if mean[j] > best + 1e-9:
            front.append(j)
            best = mean[j]
    acct = arm.labels(n, tl if arm.splits_labels else None)
    key = config_key(arm, acct)
    flat = acc_D.reshape(acc_D.shape[0], -1)[:, front]
    # one experiment (one structural error and noise draw) seen at several lengths: its columns share them
    draws = setup.predictive_columns([key] * len(front), flat) if key != () else flat
    lo, hi = np.clip(np.percentile(draws, [2.5, 97.5], axis=0), 0.0, 100.0)
    frontier = tuple(
        GridPoint(lengths=_lengths_at(arm, grid, tuple(int(i) for i in np.unravel_index(j, sub_shape))),
              tokens=int(round(tok[j])), gpu_hours=float(hrs[j]), accuracy=float(mean[j]), lo=float(lo[k]),
              hi=float(hi[k]))
        for k, j in enumerate(front))
    top = max(q.accuracy for q in frontier)
    plateau = next(q for q in frontier if q.accuracy >= top - PLATEAU_POINTS)
    at_budget = None
    if budget_h is not None:
        fits = [q for q in frontier if q.gpu_hours <= budget_h + 1e-12]
        at_budget = fits[-1] if fits else None
    return ArmCompute(arm=arm_name, plateau=plateau, frontier=frontier, at_budget=at_budget)


def check_pilot_hours(h) -> float:
    try:
        f = float(h)
    except (TypeError, ValueError):
        raise InputError(f"pilot_gpu_hours must be a number >= 0, got {h!r}") from None
    if isinstance(h, bool) or not (np.isfinite(f) and f >= 0):
        raise InputError(f"pilot_gpu_hours must be a number >= 0, got {h!r}")
    return f


def compute_plan(setup, n: int, tl, table: CostTable, gpus: int, budget_h=None, pilot_h: float = 0.0) -> dict:
    """Every arm's frontier and plateau, the recommendation at plateau and (with a budget) within it,
    and the exchange rate between labels and GPU-hours at the recommended point."""
    pilot_h = check_pilot_hours(pilot_h)
    avail = None if budget_h is None else budget_h - pilot_h
    grid, ev = evaluate_grid(setup, n, tl, table, gpus)
    per_arm = {a: arm_compute(setup, a, n, tl, *ev[a], grid, avail) for a in ARMS}
    cands = list(candidate_arms())

    def pick(points: dict) -> str | None:
        ok = {a: p for a, p in points.items() if p is not None}
        return max(ok, key=lambda a: (round(ok[a].accuracy, 9), -ok[a].gpu_hours)) if ok else None

    rec_plateau = pick({a: per_arm[a].plateau for a in cands})
    rec_budget = None if avail is None else pick({a: per_arm[a].at_budget for a in cands})
    if avail is not None and rec_budget is None:
        cheapest = min(cands, key=lambda a: per_arm[a].frontier[0].gpu_hours)
        raise InputError(f"no arm fits {budget_h:g} GPU-hours on {gpus} GPU(s) at any length (the pilot's "
                         f"{pilot_h:g} taken out): the cheapest, {cheapest}, needs "
                         f"{per_arm[cheapest].frontier[0].gpu_hours:.3g} at its shortest lengths; raise the budget")
    rec_name = rec_budget or rec_plateau
    rec_point = per_arm[rec_name].at_budget if rec_budget else per_arm[rec_name].plateau
    return {
        "rule": RULE, "plateau_points": PLATEAU_POINTS, "validation": dict(VALIDATION),
        "grid": {"grpo_label_passes": [float(x) for x in np.ravel(grid[0])],
                 "bridge_units": [float(x) for x in np.ravel(grid[1])],
                 "reference_label_passes": float(setup.setting.compute.label_passes)},
        "budget_gpu_hours": budget_h, "pilot_gpu_hours": pilot_h, "gpus": gpus,
        "arms": per_arm,
        "recommended_at_plateau": rec_plateau,
        "recommended_within_budget": rec_budget,
        "within_budget": None if rec_budget is None else {"arm": rec_budget, **per_arm[rec_budget].at_budget.to_dict()},
        "at_plateau": {"arm": rec_plateau, **per_arm[rec_plateau].plateau.to_dict()},
        "exchange_rate": exchange_rate(setup, rec_name, rec_point, n, tl, table, gpus),
    }


def exchange_rate(setup, arm_name: str, point: GridPoint, n: int, tl, table: CostTable, gpus: int) -> dict:
    """GPU-hours that 1,000 more labels save at the recommended point's predicted accuracy, and the
    points they add at the same GPU-hours (the recommended arm's frontier at N + 1000, same teacher share)."""
    arm = ARMS[arm_name]
    if not any(STAGES[s].labels for s in arm.stages):
        return {"labels": 1000, "gpu_hours_saved": 0.0, "points_gained": 0.0, "note": f"{arm_name} uses no labels"}
    n2 = n + 1000
    if n2 > MAX_LABELS:
        return {"labels": 1000, "gpu_hours_saved": None, "points_gained": None,
                "note": f"N + 1000 exceeds the supported maximum {MAX_LABELS}"}
    tl2 = None if tl is None or not arm.splits_labels else int(round(tl / n * n2)) if n else 500
    grid, ev = evaluate_grid(setup, n2, tl2, table, gpus, arms=[arm_name])
    more = arm_compute(setup, arm_name, n2, tl2, *ev[arm_name], grid)
    h2, a2 = hours_for(more.frontier, point.accuracy), accuracy_at(more.frontier, point.gpu_hours)
    return {"labels": 1000,
            "gpu_hours_saved": None if h2 is None else float(point.gpu_hours - h2),
            "points_gained": None if a2 is None else float(a2 - point.accuracy),
            "note": f"{arm_name} at N = {n2} vs N = {n}, same teacher share; the frontier between its grid "
                    "points read linearly in log GPU-hours"}


def _log_h(frontier) -> tuple[np.ndarray, np.ndarray]:
    return (np.log(np.array([q.gpu_hours for q in frontier])), np.array([q.accuracy for q in frontier]))


def hours_for(frontier, accuracy: float) -> float | None:
    """GPU-hours at which a frontier first reaches `accuracy` (None: never), linear in log hours."""
    x, y = _log_h(frontier)
    if y[-1] < accuracy - 1e-9:
        return None
    j = int(np.argmax(y >= accuracy - 1e-9))
    if j == 0:
        return float(np.exp(x[0]))
    return float(np.exp(x[j - 1] + (x[j] - x[j - 1]) * (accuracy - y[j - 1]) / (y[j] - y[j - 1])))


def accuracy_at(frontier, gpu_hours: float) -> float | None:
    """A frontier's accuracy at `gpu_hours` (None: below its cheapest point), linear in log hours."""
    x, y = _log_h(frontier)
    if gpu_hours < np.exp(x[0]) - 1e-12:
        return None
    return float(np.interp(np.log(gpu_hours), x, y))


CAP_POINTS = 13  # lengths per stage on the capped grid: the cap and 12 below it, log-spaced down to the floor


def predict_capped(setup, arm_name: str, n: int, caps: dict, tokens: float | None = None, *, tl=None,
                   n_seeds: int = 1, level: float = 0.9, floor: float = 1 / 64) -> dict:
    """The best predicted checkpoint of `arm_name` when every stage may run up to its cap (`caps`:
    {stage: length in its unit}) and, with `tokens`, the whole arm up to that many training tokens:
    what a run under the plateau protocol keeps (its best validation checkpoint within the caps, or the
    frontier read at a compute level). Lengths log-spaced from `floor` x cap (the protocol's
    min_fraction: no stage stops before it) to the cap per stage (FKL and OPD together), on every
    posterior draw; the point maximising the mean over the draws, with a
    `level` interval for the mean of `n_seeds` runs (model draws + structural error + measurement noise /
    sqrt(n_seeds)). Returns accuracy, lo, hi, the lengths and the training tokens, and the plateau's
    lengths and tokens (the cheapest point within PLATEAU_POINTS of the best: where the run stops)."""
    arm = ARMS[arm_name]
    compute = setup.setting.compute
    tl = tl if arm.splits_labels else None
    grid = [None, None, None]
    for s in arm.stages:
        cap = float(caps[s.value if s.value in caps else s])
        shape = [1, 1, 1]
        shape[AXES[s]] = CAP_POINTS
        grid[AXES[s]] = np.geomspace(floor * cap, cap, CAP_POINTS).reshape(shape)
    wide = setup.setting.expand().expand().expand()
    lengths = {s: grid[AXES[s]] for s in arm.stages}
    acc = predict_arms(wide, (arm,), n, tl, lengths)[0, ..., setup.b]  # (1 + D, E|1, U|1, E|1)
    acct = arm.labels(n, tl)
    tok = sum(_grid_tokens(arm, acct, compute, grid).values(), np.zeros((1, 1, 1)))
    shape = np.broadcast_shapes(acc.shape[1:], tok.shape)
    mean = np.broadcast_to(acc[1:].mean(0), shape).ravel()
    tok = np.broadcast_to(tok, shape).ravel()
    if tokens is not None:
        mean = np.where(tok <= tokens, mean, -np.inf)
        if not np.isfinite(mean).any():
            return {"accuracy": float("nan"), "lo": float("nan"), "hi": float("nan"), "lengths": {},
                    "tokens": 0, "note": f"no length of {arm_name} fits {tokens:g} tokens"}
    j = int(np.argmax(mean))
    acc_D = np.broadcast_to(acc[1:], (acc.shape[0] - 1,) + shape).reshape(acc.shape[0] - 1, -1)[:, j]
    key = config_key(arm, acct)
    lo, hi = _mean_interval(setup, key, (key, "capped", n_seeds), acc_D, n_seeds, level)

    def lengths_at(i):
        return _lengths_at(arm, grid, np.unravel_index(i, shape))

    # where a run stops under the protocol, as the plan reads a plateau: the cheapest length within
    # PLATEAU_POINTS of the best (the schedule `predict_schedule` walks)
    near = np.flatnonzero(mean >= mean[j] - PLATEAU_POINTS)
    k = int(near[np.argmin(tok[near])])
    return {"accuracy": float(mean[j]), "lo": lo, "hi": hi, "tokens": int(round(tok[j])),
            "lengths": lengths_at(j), "plateau_lengths": lengths_at(k), "plateau_tokens": int(round(tok[k]))}


def predict_schedule(setup, arm_name: str, n: int, lengths: dict, tokens: float, *, tl=None, n_seeds: int = 1,
                     level: float = 0.9) -> dict:
    """What a plateau-protocol run of `arm_name` has by `tokens` training tokens: its stages run in order,
    each to its length in `lengths` (the schedule, e.g. `predict_capped`'s), and the run's best student
    checkpoint by then (what reference.frontier reads at a compute level): the student after each stage
    finished within the budget and the one the budget stops in, the one with the highest mean over the
    draws, with a `level` interval for the mean of `n_seeds` runs. NaN when the budget ends before the
    student's first stage (a teacher still training has no student checkpoint)."""
    from theory.pilotfit import prefix_arm  # the arm that runs this one's stages up to one of them

    arm = ARMS[arm_name]
    tl = tl if arm.splits_labels else None
    acct = arm.labels(n, tl)
    compute = setup.setting.compute
    spent, done, points = 0.0, {}, []
    for s in arm.stages:
        full = float(compute.stage_tokens(s, stage_labels(s, acct), lengths[s.value]))
        part = 1.0 if spent + full <= tokens else max(0.0, (tokens - spent) / full) if full else 1.0
        done[s.value] = part * lengths[s.value]
        if STAGES[s].trains == STUDENT and part > 0:
            points.append(dict(done))
        spent += full
        if part < 1.0:
            break
    nan = {"accuracy": float("nan"), "lo": float("nan"), "hi": float("nan"), "lengths": {}, "tokens": 0}
    if not points:
        return nan
    best, best_mean = None, -np.inf
    for p in points:
        stop = list(p)[-1]
        sub = prefix_arm(arm_name, stop)
        acc_D = predict_arms(setup.setting, (sub,), n, tl if sub.splits_labels else None, p)[0, 1:, setup.b]
        if acc_D.mean() > best_mean:
            best, best_mean, best_D = p, float(acc_D.mean()), acc_D
    key = config_key(arm, acct)
    lo, hi = _mean_interval(setup, key, (key, "schedule", n_seeds), best_D, n_seeds, level)
    used = sum(float(compute.stage_tokens(Stage(s), stage_labels(Stage(s), acct), v)) for s, v in best.items())
    return {"accuracy": best_mean, "lo": lo, "hi": hi, "lengths": best, "tokens": int(round(used))}
