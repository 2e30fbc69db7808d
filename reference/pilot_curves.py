"""Pilot curves (issue 23, item 3): short, capped runs of chosen arms at small label budgets, and their
validation curves, for `calibrate` to fit how accuracy grows with training length.

A pilot run is one arm at one budget N and one seed, under the config's plateau protocol with two
changes: every stage cap (`stage_runner.CAP_FIELDS`: GRPO's passes over the labels and its step ceiling,
FKL's and OPD's steps) is scaled by the cap fraction, rounded up to a whole step, and the early stop is
off (`plateau.stop = false`), so each stage validates at step 0 and every `plateau.every` of its capped
length and runs to the cap: the pilot records the whole capped curve. N is `[world] labels`; the world
draws its labeled set last and nested, so a pilot at N reads the first N of the config's labels (N is at
most the config's `labels`) and the same validation, unlabeled and test problems. The stage seed key
leaves out the caps and [plateau] (stage_runner.seed_key): a pilot's first steps are those of a full-cap
run at the same seed, hence the pilot seeds (700 on) differ from the runs they predict (0 on) and from
the protocol checks' (900 on).

The runs go through `run_pipeline`, the driver of `reference-pipeline run`: every stage is checkpointed
(mid-stage too) under `workdir/labels_<N>/`, so a killed pilot resumes where it stopped and a finished
run is read back, not rerun. Each is evaluated on the validation split: a pilot never reads the test set.

    pilot_curves.csv      CURVE_FILE_COLUMNS: the student's validation points on the run's cumulative training
                          tokens (reference.frontier.run_curve), with the arm's label account at N
                          (theory.arms.ARMS[arm].labels(N))
    pilot_curve_runs.csv  the runs' run-table rows (theory.tables, split "val")
    pilot_curves.json     the config (path, hash), the cap fraction, the caps (the config's, the pilot's, and per
                          run and stage the cap it ran to), and the pilot's cost: tokens spent, each stage once

An arm that reads no label (raw_teacher_bridge) runs at the smallest N only: at another N it would repeat
itself at other seeds, and its run-table rows, which carry no N, would collide.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
import json
import math
from pathlib import Path
import time

import pandas as pd

from reference.config import Config
from reference.frontier import run_curve
from reference.runs import RunResult
from reference.stage_runner import CAP_FIELDS, replay_steps, stage_key
from reference.stages import grpo_steps
from theory.arms import ARMS, STAGES, Stage, parse_arms, stage_labels
from theory.errors import InputError

CURVE_FILE_COLUMNS = ["world", "arm", "labels", "teacher_labels", "student_labels", "seed", "stage", "step",
                      "tokens", "accuracy"]
RESERVED_SEEDS = 900  # seeds 900+ are the plateau protocol's checks (scripts/plateau_check.py)
SPLIT = "val"


def scaled_caps(cfg: Config, fraction: float) -> dict[str, float | int]:
    """The cap fields (stage_runner.CAP_FIELDS) of `cfg` scaled by `fraction`: GRPO's passes over the
    labels times it (its steps, ceil(passes N / P), are whole), its step ceiling (0: none) and FKL's and
    OPD's steps rounded up to a whole step, at least 1."""
    def up(steps: int) -> int:
        return max(1, math.ceil(round(steps * fraction, 9)))  # round: 0.1 * 30 must not become 4
    out = {"grpo.epochs": round(cfg.grpo.epochs * fraction, 9),
           "grpo.max_steps": up(cfg.grpo.max_steps) if cfg.grpo.max_steps > 0 else 0,
           "fkl.steps": up(cfg.fkl.steps), "opd.steps": up(cfg.opd.steps)}
    assert set(out) == set(CAP_FIELDS)
    return out


def config_cap(stage: Stage, cfg: Config, n: int, arm: str) -> int:
    """The steps `stage` of `arm` runs at most at budget `n` under `cfg` (stage_runner.stage_cap, from the
    label account instead of a built world)."""
    spec, acct = STAGES[stage], ARMS[arm].labels(n)
    if spec.update == "grpo":
        return grpo_steps(stage_labels(stage, acct), cfg.grpo)
    if spec.replays:
        return replay_steps(cfg, stage_labels(stage, acct))[0]
    return getattr(cfg, spec.update).steps


@dataclass(frozen=True)
class PilotCurvesPlan:
    """What a pilot runs, checked on construction, before any work: a plateau-protocol config, the arms,
    the budgets N (each in [1, the config's labels]), the cap fraction in (0, 1], and the seeds."""

    cfg: Config
    arms: tuple[str, ...]
    labels: tuple[int, ...]
    cap_fraction: float
    seeds: tuple[int, ...]

    def __post_init__(self) -> None:
        cfg, where = self.cfg, self.cfg.source or "the config"
        if not cfg.plateau.enabled:
            raise InputError(f"{where} does not run the plateau protocol: pilot curves are its validation curves "
                             "(set [plateau] enabled = true, as configs/plateau/paper_world.toml does)")
        if cfg.engine.trainer != "reference":
            raise InputError("pilot curves run on engine.trainer = 'reference' (the plateau protocol's trainer)")
        if cfg.plateau.problems > cfg.world.val:
            raise InputError(f"plateau.problems={cfg.plateau.problems} exceeds world.val={cfg.world.val}")
        for a in self.arms:
            if a not in ARMS:
                raise InputError(f"unknown arm {a!r}; known arms: {', '.join(ARMS)}")
        if not self.labels:
            raise InputError("--labels: give at least one budget N")
        for n in self.labels:
            if not 1 <= n <= cfg.world.labels:
                raise InputError(f"--labels: N={n} must lie in [1, {cfg.world.labels}] (the config's world.labels: a "
                                 "pilot reads a prefix of the config's labels)")
        f = self.cap_fraction
        if not (isinstance(f, (int, float)) and 0 < f <= 1):
            raise InputError(f"--cap-fraction must lie in (0, 1], got {f!r}")
        if not self.seeds or min(self.seeds) < 0 or max(self.seeds) >= RESERVED_SEEDS:
            raise InputError(f"pilot seeds must lie in [0, {RESERVED_SEEDS}) (seeds {RESERVED_SEEDS}+ are reserved for "
                             f"the protocol checks), got {min(self.seeds, default=None)}..{max(self.seeds, default=None)}")

    def config_for(self, n: int) -> Config:
        """The config of a pilot run at budget `n`: labels = n, the caps scaled, the early stop off."""
        return self.cfg.override({"world.labels": n, **scaled_caps(self.cfg, self.cap_fraction), "plateau.stop": False})

    def runs(self) -> list[tuple[int, str, int]]:
        """(N, arm, seed) of every run, the largest budgets first (the longest runs start first); an arm that
        reads no label runs at the smallest N only."""
        out = []
        for n in sorted(self.labels, reverse=True):
            for arm in self.arms:
                acct = ARMS[arm].labels(n)
                if acct.teacher + acct.student == 0 and n != min(self.labels):
                    continue
                out += [(n, arm, s) for s in self.seeds]
        return out


def plan_pilot_curves(cfg: Config, *, arms: str, labels: str, cap_fraction: float, seeds: int,
                      seed_base: int) -> PilotCurvesPlan:
    """The plan from the command line's comma lists ('direct_grpo,rl_teacher_bridge', '16,32,64')."""
    names = tuple(dict.fromkeys(a.name for a in parse_arms(arms)))
    budgets = []
    for text in (x.strip() for x in labels.split(",")):
        if not text:
            continue
        try:
            budgets.append(int(text))
        except ValueError:
            raise InputError(f"--labels: {text!r} is not a whole number (give a comma list such as 16,32,64)") from None
    return PilotCurvesPlan(cfg, names, tuple(sorted(set(budgets))), cap_fraction,
                           tuple(range(seed_base, seed_base + seeds)))


@dataclass(frozen=True)
class PilotRun:
    """One finished pilot run: its budget, its result, and whether it was read back (finished before)."""

    labels: int
    result: RunResult
    reused: bool


@dataclass(frozen=True)
class PilotCurves:
    """What a pilot measured: its runs, their curves and run-table rows, the caps and the tokens it spent."""

    plan: PilotCurvesPlan
    runs: tuple[PilotRun, ...]
    seconds: float = field(compare=False, default=0.0)

    def curves_frame(self) -> pd.DataFrame:
        """CURVE_FILE_COLUMNS: every run's student validation points on cumulative training tokens."""
        frames = []
        for r in self.runs:
            c, acct = run_curve(r.result), ARMS[r.result.arm].labels(r.labels)
            frames.append(c.assign(world=r.result.world, labels=r.labels, teacher_labels=acct.teacher,
                                   student_labels=acct.student))
        return pd.concat(frames, ignore_index=True)[CURVE_FILE_COLUMNS]

    def runs_frame(self) -> pd.DataFrame:
        """The runs' rows in the run-table schema."""
        return pd.concat([r.result.to_frame() for r in self.runs], ignore_index=True)

    def stage_caps(self) -> list[dict]:
        """Per run and trained stage: the config's cap at that N, the pilot's cap, the steps it ran and the
        step of the checkpoint it returned (the next stage starts from it)."""
        out = []
        for r in self.runs:
            res, arm = r.result, ARMS[r.result.arm]
            for stage, rec in zip(arm.stages, res.stages):
                p = rec["plateau"]
                out.append({"labels": r.labels, "arm": res.arm, "seed": res.seed, "stage": stage.value,
                            "config_cap": config_cap(stage, self.plan.cfg, r.labels, res.arm), "cap": p["cap"],
                            "steps_run": p["steps_run"], "best_step": p["best_step"],
                            "stopped_early": p["stopped_early"]})
        return out

    def tokens(self) -> dict[str, int]:
        """The pilot's cost: training tokens and the validation passes' generated tokens, each stage counted
        once (arms sharing a stage prefix share its checkpoint), as the plateau records count them."""
        seen: dict[str, dict] = {}
        for r in self.runs:
            res, arm = r.result, ARMS[r.result.arm]
            cfg, acct, prefix = self.plan.config_for(r.labels), res.label_account, []
            for stage, rec in zip(arm.stages, res.stages):
                prefix.append((stage.value, stage_labels(stage, acct)))
                seen[stage_key(cfg, res.seed, prefix)] = rec["plateau"]
        train = sum(int(p["train_tokens"]) for p in seen.values())
        val = sum(int(p["val_tokens"]) for p in seen.values())
        return {"train": train, "validation": val, "spent": train + val, "stages": len(seen)}

    def to_dict(self) -> dict:
        plan, d = self.plan, self.plan.cfg.to_dict()
        return {"config": plan.cfg.source, "config_hash": plan.cfg.hash(), "cap_fraction": plan.cap_fraction,
                "arms": list(plan.arms), "labels": list(plan.labels), "seeds": list(plan.seeds), "split": SPLIT,
                "validation_labels": plan.cfg.plateau.problems,
                "caps": {"config": {k: d[k.split(".")[0]][k.split(".")[1]] for k in CAP_FIELDS},
                         "pilot": scaled_caps(plan.cfg, plan.cap_fraction)},
                "stage_caps": self.stage_caps(), "runs": len(self.runs), "tokens": self.tokens()}


def _run_job(job: tuple) -> tuple[int, RunResult]:
    """One pilot run, in this process or a spawned worker (one thread)."""
    cfg, n, arm, seed, workdir = job
    from reference.models import quiet
    from reference.pipeline import run_pipeline
    quiet()
    return n, run_pipeline(cfg, arm, seed, workdir=Path(workdir) / f"labels_{n}", split=SPLIT, progress=False)


def run_pilot_curves(plan: PilotCurvesPlan, workdir: str | Path, *, jobs: int = 1,
                     progress: Callable[[str], None] | None = None) -> PilotCurves:
    """Run (or read back) every run of `plan` under `workdir`, `jobs` processes at a time (1: this one)."""
    t0 = time.perf_counter()
    todo = [(plan.config_for(n), n, arm, seed, str(workdir)) for n, arm, seed in plan.runs()]
    done = []

    def finished(n: int, res: RunResult) -> None:
        # a result read back marks every stage cached, its final evaluation too; a fresh one evaluated now
        reused = all(s.get("cached") for s in res.stages)
        done.append(PilotRun(n, res, reused))
        if progress is not None:
            progress(f"[{len(done)} of {len(todo)}] N={n} {res.arm} seed={res.seed}: "
                     f"val {res.metrics['accuracy']:.1f}%, {int(res.metrics['tokens_spent'])} tokens"
                     + (" (finished before: read back)" if reused else f" ({time.perf_counter() - t0:.0f} s so far)"))
    if jobs == 1 or len(todo) == 1:
        for job in todo:
            finished(*_run_job(job))
    else:
        import multiprocessing as mp
        # one spawned worker per core; a stage two runs share is trained once (the stage lock), the other waits
        with mp.get_context("spawn").Pool(min(jobs, len(todo))) as pool:
            for n, res in pool.imap_unordered(_run_job, todo):
                finished(n, res)
    order = {(n, arm, seed): i for i, (n, arm, seed) in enumerate(plan.runs())}
    runs = sorted(done, key=lambda r: order[(r.labels, r.result.arm, r.result.seed)])
    return PilotCurves(plan, tuple(runs), time.perf_counter() - t0)


def write_pilot_curves(res: PilotCurves, out: str | Path) -> list[Path]:
    """Write the three files into `out` (module doc), each atomically; returns their paths."""
    from theory.tables import write_table
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    curves, runs, meta = out / "pilot_curves.csv", out / "pilot_curve_runs.csv", out / "pilot_curves.json"
    tmp = curves.with_name(curves.name + ".tmp")
    # stable: within a run the points keep run_curve's order (a stage's last point and the next stage's step 0
    # share their tokens)
    res.curves_frame().sort_values(["labels", "arm", "seed"], kind="stable").to_csv(tmp, index=False)
    tmp.replace(curves)
    write_table(res.runs_frame().sort_values(["arm", "teacher_labels", "student_labels", "seed", "metric"]), runs, "runs")
    tmp = meta.with_name(meta.name + ".tmp")
    tmp.write_text(json.dumps(res.to_dict(), indent=1, default=float))
    tmp.replace(meta)
    return [curves, runs, meta]
