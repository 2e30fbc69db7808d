"""The stability gate: a config's stages must be able to do nothing, move, and learn, before its
results count.

A toy result that contradicts the paper is first a question about the instrument (an FKL warmup from
an *identical* teacher once cost the student 10 points at the old learning rates). The gate runs the
first `steps` steps of each stage's configured schedule, over several seeds, and checks:

  no-op    FKL warmup and OPD with a frozen exact copy of the student as teacher keep the per-token
           KL to the base <= 0.01 at every step, and the paired 95% interval of the test-accuracy
           change (same problems, same sampling seed before and after) lies within +-2 points;
  moves    the same stages toward the configured teacher after its GRPO (the teacher the claim's
           arm distils from), run over their whole configured schedule, lower the per-token KL to it
           by >= 30% (mean of the last tenth of the logged steps vs the first tenth, at least 5 each):
           a rate too small to do anything fails;
  learns   student and teacher GRPO: the mean training reward of the last 10 steps exceeds that of
           the first 10 by more than 2 standard errors, and no later 10-step block falls below the
           first by more than 2 standard errors.

`run_gate` returns a `GateResult` (`to_dict()`: {config, passed, checks: [{check, value, limit,
passed}]}); `reference-pipeline gate` prints it, writes JSON, and exits 0 (all pass) / 1 / 2. The raw
per-step curves are saved beside the verdict (`save_curves`; with `--record`, in docs/results/gate_curves/),
so a failed check can be studied without rerunning it.
Results are keyed by `gate_key(cfg)` (`Config.hash()` without [plateau]): `gate_status(cfg)` reads them
back for `reference-pipeline run`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
import json
import math
from pathlib import Path
import time
from typing import Callable

import numpy as np

from reference.config import REPO_ROOT, Config
from reference.seeds import seed_from
from theory.errors import InputError

GATE_STEPS = 50
NOOP_KL_MAX = 0.01
NOOP_ACC_BAND = 2.0  # points
MOVE_MIN_DROP = 0.30
REWARD_Z = 2.0
WINDOW = 10  # steps per reward block
KL_WINDOW = 5  # logged steps averaged at each end for the KL drop
RECORD = REPO_ROOT / "docs" / "results" / "stability_gates.csv"
BACKEND = "reference"


@dataclass(frozen=True)
class Check:
    check: str
    value: float
    limit: float
    passed: bool
    detail: str = ""
    op: str = "<="  # how value is compared with limit (for printing; `passed` already holds the verdict)

    def to_dict(self) -> dict:
        return {"check": self.check, "value": _r(self.value), "limit": self.limit, "passed": self.passed,
                "detail": self.detail}


@dataclass(frozen=True)
class GateResult:
    config: str
    config_hash: str
    seeds: int
    steps: int
    seconds: float
    checks: tuple[Check, ...]
    backend: str = BACKEND
    raw: tuple[dict, ...] = field(default=(), repr=False, compare=False)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def to_dict(self) -> dict:
        return {"config": self.config, "config_hash": self.config_hash, "backend": self.backend,
                "passed": self.passed, "seeds": self.seeds, "steps": self.steps, "seconds": round(self.seconds, 1),
                "checks": [c.to_dict() for c in self.checks]}

    def to_frame(self):
        import pandas as pd
        return pd.DataFrame([{"config": self.config, "config_hash": self.config_hash, "backend": self.backend,
                              "check": c.check, "value": _r(c.value), "limit": c.limit, "passed": c.passed}
                             for c in self.checks])


def _r(x: float) -> float:
    return float(f"{x:.4g}") if math.isfinite(x) else x


def gate_seed(cfg: Config, seed: int, *, steps: int = GATE_STEPS, problems: int = 200,
              progress: Callable[[str], None] | None = None) -> dict:
    """One seed of the gate: the raw measurements (per-step logs, paired per-problem accuracy changes)."""
    import torch

    from reference.assemble import build_models, build_world
    from reference.evaluate import evaluate
    from reference.stage_runner import update_rules

    rules = update_rules(cfg.engine.trainer)  # reference.stages, or TRL's trainers under engine.trainer = "trl"
    torch.set_num_threads(cfg.engine.threads)
    models = build_models(cfg, need_teacher=True)
    world = build_world(cfg, models.tokenizer)
    ctx = models.ctx
    base, teacher = models.student, models.teacher
    test = world.test[: problems] if problems else world.test
    labeled = world.labeled[: cfg.world.labels]
    out: dict = {"seed": seed}

    def say(msg: str) -> None:
        if progress is not None:
            progress(f"seed {seed}: {msg}")

    def frozen(m):
        c = copy.deepcopy(m)
        c.requires_grad_(False)
        return c

    def correct(model, tag: str) -> np.ndarray:
        # common random numbers: the same sampling seed before and after, so an unchanged model
        # gives a paired difference of exactly zero
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed_from("gate-eval", seed, tag))
            res = evaluate(model, test, ctx, cfg.eval, extras=False)
        return res.problems["correct"].to_numpy(dtype=float) * 100.0 / res.problems["k"].to_numpy(dtype=float)

    def train(name: str, fn) -> list[dict]:
        """One stage's per-step log, trained on torch and data seeds named by the gate, the seed and `name`."""
        t0 = time.perf_counter()
        torch.manual_seed(seed_from("gate", seed, name))
        res = fn(seed_from("gate-data", seed, name))
        say(f"{name} {res.steps} steps in {time.perf_counter() - t0:.0f}s")
        return list(res.log)

    def bridge(check: str, stage: str, student, towards, limit: int | None) -> list[float]:
        """FKL warmup or OPD of `student` toward the frozen `towards`; returns its per-step KL."""
        fn, scfg, key = rules[stage], getattr(cfg, stage), {"fkl": "forward_kl", "opd": "kl_to_teacher"}[stage]
        log = train(f"{check}_{stage}", lambda s: fn(student, towards, world.unlabeled, scfg, ctx, seed=s, limit=limit))
        return [e[key] for e in log]

    base_correct = correct(base, "noop")
    for stage in ("fkl", "opd"):
        student = copy.deepcopy(base)
        out[f"noop_{stage}_kl"] = bridge("noop", stage, student, frozen(base), steps)
        out[f"noop_{stage}_acc_change"] = (correct(student, "noop") - base_correct).tolist()

    student = copy.deepcopy(base)
    log = train("student_grpo", lambda s: rules["grpo"](student, labeled, cfg.grpo, ctx, role="student", seed=s,
                                                        limit=steps))
    out["student_grpo_reward"] = [e["reward"] for e in log]
    rl_teacher = copy.deepcopy(teacher)
    log = train("teacher_grpo", lambda s: rules["grpo"](rl_teacher, labeled, cfg.grpo, ctx, role="teacher", seed=s,
                                                        limit=steps))
    out["teacher_grpo_reward"] = [e["reward"] for e in log]
    rl_teacher.requires_grad_(False)

    # the bridge stages toward the teacher the claim's arm distils from (the RL teacher just trained),
    # over their whole configured schedule: the question is whether the configured stage moves at all
    for stage in ("fkl", "opd"):
        out[f"move_{stage}_kl"] = bridge("move", stage, copy.deepcopy(base), rl_teacher, None)
    return out


def _noop_checks(raws: list[dict], stage: str) -> list[Check]:
    kl = max(max(r[f"noop_{stage}_kl"]) for r in raws)
    d = np.concatenate([np.asarray(r[f"noop_{stage}_acc_change"], dtype=float) for r in raws])
    mean = float(d.mean())
    se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else float("inf")
    lo, hi = mean - 1.96 * se, mean + 1.96 * se
    worst = max(abs(lo), abs(hi))
    return [Check(f"{stage}_identical_teacher_max_kl", kl, NOOP_KL_MAX, kl <= NOOP_KL_MAX,
                  "max per-token KL to the base over all steps and seeds"),
            Check(f"{stage}_identical_teacher_acc_change", worst, NOOP_ACC_BAND, worst <= NOOP_ACC_BAND,
                  f"paired test-accuracy change {mean:+.2f} [{lo:+.2f}, {hi:+.2f}] points over {len(d)} problem-seeds")]


def kl_drop(kl) -> tuple[float, float, float]:
    """(drop, first, last): 1 - last / first, the means of the per-token KL over the first and the last
    window of a stage's steps (a tenth of them, at least KL_WINDOW, at most half)."""
    kl = np.asarray(kl, dtype=float)
    w = min(max(KL_WINDOW, len(kl) // 10), len(kl) // 2)
    if not w:
        return float("nan"), float("nan"), float("nan")
    first, last = float(kl[:w].mean()), float(kl[-w:].mean())
    return (1.0 - last / first if first > 0 else float("nan")), first, last


def _move_check(raws: list[dict], stage: str) -> Check:
    drops = [kl_drop(r[f"move_{stage}_kl"])[0] for r in raws]
    drop = float(np.mean(drops))
    ok = math.isfinite(drop) and drop >= MOVE_MIN_DROP
    return Check(f"{stage}_kl_to_teacher_drop", drop, MOVE_MIN_DROP, ok,
                 "1 - mean(last tenth of the steps) / mean(first tenth) of the per-token KL to the RL teacher "
                 "over the configured stage, per seed: " + " ".join(f"{x:.2f}" for x in drops), op=">=")


def _reward_checks(raws: list[dict], role: str) -> list[Check]:
    R = np.asarray([r[f"{role}_grpo_reward"] for r in raws], dtype=float)  # [seeds, steps]
    n_steps = R.shape[1]
    if n_steps < 2 * WINDOW:
        msg = f"the stage has {n_steps} steps; the check needs >= {2 * WINDOW}"
        return [Check(f"{role}_grpo_reward_rise", float("nan"), REWARD_Z, False, msg, op=">"),
                Check(f"{role}_grpo_no_dip", float("nan"), -REWARD_Z, False, msg, op=">=")]

    def z(a: np.ndarray, b: np.ndarray) -> float:
        se = math.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
        diff = float(b.mean() - a.mean())
        return diff / se if se > 0 else (0.0 if diff == 0 else math.copysign(float("inf"), diff))

    first, last = R[:, :WINDOW].ravel(), R[:, -WINDOW:].ravel()
    rise = z(first, last)
    blocks = [R[:, i:i + WINDOW].ravel() for i in range(WINDOW, n_steps - WINDOW + 1, WINDOW)]
    dips = [z(first, b) for b in blocks]
    worst = min(dips) if dips else 0.0
    return [Check(f"{role}_grpo_reward_rise", rise, REWARD_Z, rise > REWARD_Z,
                  f"train reward first {WINDOW} steps {first.mean():.3f} -> last {WINDOW} {last.mean():.3f} "
                  f"(z, pooled over seeds)", op=">"),
            Check(f"{role}_grpo_no_dip", worst, -REWARD_Z, worst >= -REWARD_Z,
                  "lowest z of a later 10-step block against the first: "
                  + " ".join(f"{b.mean():.3f}" for b in blocks), op=">=")]


def checks_from(raws: list[dict]) -> tuple[Check, ...]:
    out: list[Check] = []
    for stage in ("fkl", "opd"):
        out += _noop_checks(raws, stage)
    for stage in ("fkl", "opd"):
        out.append(_move_check(raws, stage))
    for role in ("student", "teacher"):
        out += _reward_checks(raws, role)
    return tuple(out)


def _worker(job) -> dict:
    cfg, seed, steps, problems = job
    from reference.models import quiet
    quiet()
    return gate_seed(cfg, seed, steps=steps, problems=problems, progress=lambda m: print("  " + m, flush=True))


def run_gate(cfg: Config, *, seeds: int = 3, steps: int = GATE_STEPS, problems: int = 200, jobs: int = 1,
             progress: Callable[[str], None] | None = None) -> GateResult:
    """Run the gate on `cfg` over seeds 0..seeds-1 (`jobs` processes) and return its checks."""
    for name, v, lo in (("seeds", seeds, 1), ("steps", steps, 2 * WINDOW), ("jobs", jobs, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise InputError(f"--{name} must be an integer >= {lo}, got {v!r}")
    if isinstance(problems, bool) or not isinstance(problems, int) or problems < 0:
        raise InputError(f"--problems must be an integer >= 0, got {problems!r}")
    if not cfg.student.is_tiny:
        raise InputError("the gate runs toy configs (tiny models); for real scale run it on a GPU with a toy-shaped config")
    t0 = time.perf_counter()
    if jobs == 1:
        raws = [gate_seed(cfg, s, steps=steps, problems=problems, progress=progress) for s in range(seeds)]
    else:
        import multiprocessing as mp
        with mp.get_context("spawn").Pool(min(jobs, seeds)) as pool:
            raws = pool.map(_worker, [(cfg, s, steps, problems) for s in range(seeds)])
    return GateResult(config_name(cfg), gate_key(cfg), seeds, steps, time.perf_counter() - t0,
                      checks_from(raws), backend=cfg.engine.trainer, raw=tuple(raws))


def config_name(cfg: Config) -> str:
    """The config's path relative to the repository when it lies inside it (stable across clones)."""
    if not cfg.source:
        return "<config>"
    p = Path(cfg.source).resolve()
    try:
        return str(p.relative_to(REPO_ROOT))
    except ValueError:
        return str(p)


def format_gate(res: GateResult) -> str:
    lines = [f"stability gate: {res.config} (hash {res.config_hash}, backend {res.backend}, {res.seeds} seeds, "
             f"first {res.steps} steps of each stage, {res.seconds:.0f} s)",
             f"{'check':38s} {'value':>9s} {'limit':>7s}  result",]
    for c in res.checks:
        lines.append(f"{c.check:38s} {c.value:9.4g} {c.op}{c.limit:<6g}  {'pass' if c.passed else 'FAIL'}  {c.detail}")
    lines.append("gate: " + ("PASSED" if res.passed else "FAILED"))
    return "\n".join(lines)


def record(res: GateResult, path: Path = RECORD) -> None:
    """Replace this config's rows in the committed gate table (one row per check)."""
    import pandas as pd
    path = Path(path)
    new = res.to_frame()
    if path.is_file():
        old = pd.read_csv(path)
        old = old[~((old["config"] == res.config) & (old["backend"] == res.backend))]
        new = pd.concat([old, new], ignore_index=True)
    tmp = path.with_suffix(".tmp")
    new.sort_values(["config", "backend"], kind="stable").to_csv(tmp, index=False)
    tmp.replace(path)


def save(res: GateResult, workdir: str | Path) -> Path:
    """The verdict as `workdir/gates/<key>.json` (what `gate_status` reads), the per-step curves beside it."""
    p = Path(workdir) / "gates" / f"{res.config_hash}.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(res.to_dict(), indent=1))
    tmp.replace(p)
    save_curves(res, p.with_name(f"{res.config_hash}.curves.json"))
    return p


def save_curves(res: GateResult, path: str | Path) -> Path:
    """Every seed's raw measurements (per-step KL of the no-op and "moves" stages, GRPO training reward,
    per-problem accuracy changes), so a check can be studied after the run: `checks_from(curves["raw"])`
    gives the recorded checks back."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = [{k: np.asarray(v, dtype=float).round(6).tolist() for k, v in r.items()} for r in res.raw]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"config": res.config, "config_hash": res.config_hash, "backend": res.backend,
                               "steps": res.steps, "raw": raw}))
    tmp.replace(path)
    return path


def curves_path(res: GateResult, table: Path = RECORD) -> Path:
    """Where `--record` keeps a gate's curves: beside the committed table, one file per config and backend."""
    return Path(table).parent / "gate_curves" / f"{res.config_hash}_{res.backend}.json"


def gate_key(cfg: Config) -> str:
    """The key a gate result is stored under: the config's hash with [plateau] left out. The gate runs
    each stage's configured schedule (the cap) without the plateau protocol, so the protocol's settings
    cannot change its verdict; a config without the protocol keeps its plain `Config.hash()`."""
    from reference.config import PLATEAU_DEFAULTS
    return cfg.override(PLATEAU_DEFAULTS).hash()


def gate_status(cfg: Config, workdir: str | Path | None = None, table: Path = RECORD) -> str:
    """'passed' / 'failed' / 'not run' for this exact config (by `gate_key`): a gate run saved in
    `workdir/gates/`, else the committed table."""
    h = gate_key(cfg)
    if workdir is not None:
        p = Path(workdir) / "gates" / f"{h}.json"
        if p.is_file():
            try:
                return "passed" if json.loads(p.read_text())["passed"] else "failed"
            except (json.JSONDecodeError, KeyError):
                pass
    if Path(table).is_file():
        import pandas as pd
        t = pd.read_csv(table)
        rows = t[t["config_hash"].astype(str) == h]
        if len(rows):
            return "passed" if rows["passed"].astype(str).str.lower().eq("true").all() else "failed"
    return "not run"
