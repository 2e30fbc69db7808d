"""The pipeline: an arm is run from its stage list in theory.arms.ARMS (no second arm list here).

    teacher = grpo(teacher, labels[:n_T])          # stage 1   (sparse reward on the teacher)
    student = fkl_warmup(student, teacher)         # stage 2a  (dense, teacher rollouts)
    student = opd(student, teacher)                # stage 2b  (dense, student rollouts)
    student = grpo(student, labels[n_T:])          # stage 3   (sparse reward on the student)

`run_pipeline` runs one arm at one seed: it builds the models and the world (reference.assemble),
walks `arm.stages` through `run_stage`, the one cached-stage runner (reference.stage_runner, which
reads each stage's facts from `theory.arms.STAGES` and checkpoints it under `workdir/stages/<key>`),
records a validation point after each stage (reference.curves.CurveRecorder), and evaluates the final
student. The run itself lives under `workdir/runs/<name>/` (reference.runs): its manifest, and its
result once evaluated; a restart with another config refuses and names the changed fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
import time
from typing import Callable

import torch

from reference import tracking as _tracking
from reference.assemble import Models, build_models, build_world, engine_for
from reference.config import Config
from reference.curves import CurveRecorder
from reference.evaluate import EvalResult, evaluate
from reference.runs import RunResult, check_manifest, load_result, write_result
from reference.seeds import seed_from
from reference.stage_runner import FinishedStage, Slot, TrainingSetup, run_stage, seed_key, stage_key
from reference.world import World
from theory.arms import STUDENT, Arm, LabelAccount, Stage, get_arm, stage_labels
from theory.errors import InputError


def run_pipeline(cfg: Config, arm: str | Arm, seed: int, *, workdir: str | Path,
                 teacher_labels: int | None = None, split: str = "test",
                 report: Callable[[int, float], None] | None = None, progress: bool = True,
                 stop_after: int | None = None) -> RunResult:
    """Run one arm for one seed; resume from finished stages in workdir. `split` in {"val", "test"}.

    `stop_after=i` (tests) stops after stage i is checkpointed, as a kill would.
    """
    arm = get_arm(arm) if isinstance(arm, str) else arm
    if split not in ("val", "test"):
        raise InputError(f"split must be 'val' or 'test', got {split!r}")
    if cfg.engine.tracker:  # before any work: one line naming the install when the package is missing
        _tracking.check_available(cfg.engine.tracker)
    torch.set_num_threads(cfg.engine.threads)
    acct = arm.labels(cfg.world.labels, teacher_labels)
    book = _open_run(cfg, arm, seed, acct, split, Path(workdir), progress)
    if book.result_path.is_file():  # finished before (same config, checked above): nothing to redo
        return load_result(book.result_path)
    book.open_tracker()
    try:
        models = build_models(cfg, need_teacher=arm.teacher.value != "none", engine=book.engine)
        setup = TrainingSetup(cfg, models, build_world(cfg, models.tokenizer), acct)
        curves = CurveRecorder(cfg, setup.world, models, report)
        stage_log, prefix = [], []
        for i, stage in enumerate(arm.stages):
            prefix.append((stage.value, stage_labels(stage, acct)))
            key = stage_key(cfg, seed, prefix)
            slot = Slot(book.workdir / "stages" / key, seed_key(cfg, seed, prefix),
                        meta={"stage": stage.value, "prefix": prefix, "seed": seed, "config_hash": cfg.hash()})
            done = run_stage(stage, setup, slot, curves.hooks(stage, key, bar=book.bar_title(stage),
                                                              on_entry=book.on_entry(stage)))
            stage_log.append(book.record(stage, done))
            curves.stage_done(stage, done.info)
            if stop_after is not None and i >= stop_after:
                raise Stopped(i)
        return _final_eval(book, models, setup.world, stage_log)
    finally:
        book.close_tracker()


class Stopped(Exception):
    """`run_pipeline(stop_after=i)` stopped after stage i was checkpointed, as a kill would (tests)."""

    def __init__(self, stage_index: int):
        super().__init__(f"stopped after stage {stage_index}")
        self.stage_index = stage_index


@dataclass
class _Bookkeeping:
    """Where a run lives and who it runs with: under accelerate every rank trains (its shard) and rank 0
    alone writes manifests, checkpoints and results; the experiment tracker; the progress bars."""

    cfg: Config
    arm: Arm
    seed: int
    acct: LabelAccount
    split: str
    workdir: Path
    engine: object  # None: one plain process
    progress: bool
    tracker: object = None

    @property
    def name(self) -> str:
        return f"{self.arm.name}_s{self.seed}_t{self.acct.teacher}"

    @property
    def main(self) -> bool:
        return self.engine is None or self.engine.is_main

    @property
    def result_path(self) -> Path:
        return self.workdir / "runs" / self.name / f"result_{self.split}.json"

    def barrier(self) -> None:
        if self.engine is not None:
            self.engine.accelerator.wait_for_everyone()

    def open_tracker(self) -> None:
        self.tracker = _tracking.open_tracker(self.cfg, self.name, self.workdir) if self.main else None

    def close_tracker(self) -> None:
        if self.tracker is not None:
            self.tracker.finish()

    def bar_title(self, stage: Stage) -> str | None:
        return f"{self.arm.name} s{self.seed} {stage.value}" if self.progress and self.main else None

    def on_entry(self, stage: Stage) -> Callable[[int, dict], None] | None:
        """The tracker's hook for every per-step log entry of a stage (None without a tracker)."""
        if self.tracker is None:
            return None
        return lambda step, entry: self.tracker.log_entry(stage.value, step, entry)

    def record(self, stage: Stage, done: FinishedStage) -> dict:
        """The stage's line of the run log. A resumed run still shows every stage to the tracker; after a
        trained stage every rank waits until rank 0 has written its checkpoint."""
        if done.cached and self.tracker is not None:
            self.tracker.log_stage(stage.value, done.log)
        if not done.cached:
            self.barrier()
        return dict(done.info, cached=done.cached)


def _open_run(cfg: Config, arm: Arm, seed: int, acct: LabelAccount, split: str, workdir: Path,
              progress: bool) -> _Bookkeeping:
    """The run's bookkeeping, once rank 0 has checked (or written) its manifest."""
    book = _Bookkeeping(cfg, arm, seed, acct, split, workdir, engine_for(cfg), progress)
    if book.main:
        check_manifest(workdir / "runs" / book.name, cfg, {"arm": arm.name, "seed": seed,
                                                           "teacher_labels": acct.teacher, "split": split})
    book.barrier()
    return book


def plateau_metrics(cfg: Config, stage_log: list[dict]) -> dict[str, float]:
    """A plateau-protocol run's account, as metrics of the run table: the validation labels V (reports
    give N + V), the training tokens to the stages' best checkpoints, the tokens spent (training with its
    patience steps, plus validation, as each stage's record counts them), the validation passes' generated
    tokens, and how many of its stages reached their plateau. The training tokens alone are the run's
    `compute_tokens`."""
    recs = [s["plateau"] for s in stage_log if s.get("plateau", {}).get("validated")]
    return {"validation_labels": float(cfg.plateau.problems),
            "tokens_to_best": float(sum(r["best_tokens"] for r in recs)),
            "tokens_spent": float(sum(r["tokens_spent"] for r in recs)),
            "val_tokens": float(sum(r["val_tokens"] for r in recs)),
            "stages_trained": float(len(recs)),
            "stages_at_plateau": float(sum(bool(r["reached"]) for r in recs))}


def _final_eval(book: _Bookkeeping, models: Models, world: World, stage_log: list[dict]) -> RunResult:
    """The final student on the run's split; rank 0 writes the result."""
    cfg, arm, seed, acct, split = book.cfg, book.arm, book.seed, book.acct, book.split
    t0 = time.perf_counter()
    # curve_every only adds validation points; it must not move the final evaluation's seed
    eval_hash = cfg.override({"eval.curve_every": 0}).hash()
    torch.manual_seed(seed_from(f"eval/{eval_hash}/{seed}/{arm.name}/{acct.teacher}/{split}"))
    problems = world.split(split)
    final: EvalResult = evaluate(models.student, problems, models.ctx, cfg.eval)
    eval_s = time.perf_counter() - t0
    compute = sum(int(s["tokens"]) for s in stage_log)
    metrics = dict(final.metrics)
    if cfg.plateau.enabled:
        metrics.update(plateau_metrics(cfg, stage_log))
    stage_log = stage_log + [{"name": "eval", "model": STUDENT, "seconds": eval_s, "tokens": 0, "steps": 0,
                              "curve": {}, "cached": False}]
    res = RunResult(arm.name, seed, cfg.world.name, split, acct, compute, metrics, tuple(stage_log),
                    final.problems.assign(model=f"{arm.name}/s{seed}"))
    if book.tracker is not None:
        book.tracker.log_final(final.metrics)
    if book.main:
        write_result(res, book.result_path)
    book.barrier()
    return res
