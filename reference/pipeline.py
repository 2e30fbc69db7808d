"""The pipeline: an arm is run from its stage list in theory.arms.ARMS (no second arm list here).

    teacher = grpo(teacher, labels[:n_T])          # stage 1   (sparse reward on the teacher)
    student = fkl_warmup(student, teacher)         # stage 2a  (dense, teacher rollouts)
    student = opd(student, teacher)                # stage 2b  (dense, student rollouts)
    student = grpo(student, labels[n_T:])          # stage 3   (sparse reward on the student)

`run_pipeline` walks `arm.stages`, reading each stage's facts (the model it trains, the labels that size
it) from `theory.arms.STAGES`, and runs each through `run_stage`, the one cached-stage runner (the
pilot's self-distillation uses it too). Every finished stage is checkpointed atomically under
`workdir/stages/<key>`, where key hashes the config, the seed and the stage prefix with its label
counts: arms that share a prefix (e.g. the RL teacher) share the work, and a killed run resumes from
its last finished stage with the same numbers (each stage reseeds torch from its key).
`workdir/runs/<run>/manifest.json` holds the config a run started with; a restart with another config
refuses and names the changed fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import json
from pathlib import Path
import time
from typing import Callable

import pandas as pd
import torch

from reference import checkpoint as ckpt
from reference import engines
from reference import stages as st
from reference import tracking as _tracking
from reference.config import Config, diff_fields
from reference.evaluate import EvalResult, evaluate
from reference.rollout import HFRollout
from reference.seeds import seed_from, seeded
from reference.world import World, make_world
from theory.arms import STAGES, STUDENT, TEACHER, Arm, LabelAccount, Stage, get_arm, stage_labels
from theory.errors import InputError


@dataclass
class Models:
    """The models an arm works with, their tokenizer, and what the stages need to sample and score."""

    student: torch.nn.Module
    teacher: torch.nn.Module | None
    ctx: st.StageContext
    tokenizer: object


def build_world(cfg: Config, tokenizer=None) -> World:
    if cfg.world.kind == "toy":
        return make_world(cfg.world)
    from reference import data  # SCALE: hub / JSONL / Parquet problems in the same World shape
    return data.load_world(cfg.world, tokenizer)


def engine_for(cfg: Config):
    """The accelerate engine when `engine.launcher = "accelerate"` (its launch config picks DDP / FSDP2 /
    ZeRO-3), None for one plain process (the toy world; the stages then run exactly as before)."""
    if cfg.engine.launcher != "accelerate":
        return None
    from reference.engines import make_engine
    return make_engine(cpu=cfg.engine.device == "cpu")


def build_models(cfg: Config, *, need_teacher: bool, engine=None) -> Models:
    from reference.rewards import is_compliant, score_batch
    device = cfg.engine.device if engine is None else engine.device  # under accelerate: this rank's GPU
    if cfg.student.is_tiny:
        from reference.tokenizer import toy_tokenizer
        tok = toy_tokenizer()

        def make(mcfg, role):
            m = ckpt.tiny_qwen3(mcfg, len(tok), pad_id=tok.pad_token_id, eos_id=tok.eos_token_id)
            if mcfg.asset:
                ckpt.load_asset(m, mcfg.asset, expected_spec=asset_spec(mcfg))
            return m.to(device)
        vocab = len(tok)
    else:
        from reference import models as hf
        tok = hf.load_tokenizer(cfg.student.path)
        if need_teacher:
            if cfg.teacher.is_tiny:
                raise InputError("teacher is a tiny spec but student has a path: give both a path (one tokenizer)")
            hf.check_same_tokenizer(hf.load_tokenizer(cfg.teacher.path), tok)

        def make(mcfg, role):
            return hf.load_causal_lm(mcfg.path, dtype=mcfg.dtype, device=device,
                                     gradient_checkpointing=cfg.engine.gradient_checkpointing and role == STUDENT)
        vocab = None
    student = make(cfg.student, STUDENT)
    teacher = make(cfg.teacher, TEACHER) if need_teacher else None
    if vocab is None:
        from reference import models as hf
        vocab = hf.logit_vocab_size(tok, student.config)
    if cfg.engine.rollout == "vllm":
        from reference.rollout_vllm import VLLMRollout  # SCALE, optional extra
        rollout = VLLMRollout(tok, cfg)
    else:
        rollout = HFRollout(tok, static_cache=cfg.engine.static_cache, micro_batch=cfg.engine.micro_batch)
    ctx = st.StageContext(rollout=rollout, vocab_size=vocab, eos_id=tok.eos_token_id,
                          score_batch=lambda c, g: score_batch(c, g), is_compliant=is_compliant,
                          engine=engine, micro_batch=cfg.engine.micro_batch)
    return Models(student, teacher, ctx, tok)


def asset_spec(mcfg) -> dict:
    """The ModelConfig fields a base checkpoint depends on (architecture + pre-training recipe)."""
    keys = ("hidden", "layers", "heads", "kv_heads", "head_dim", "intermediate", "max_position", "tie_embeddings",
            "style", "protocol_break", "pretrain_steps", "pretrain_lr", "pretrain_batch", "init_seed")
    spec = {k: getattr(mcfg, k) for k in keys}
    if mcfg.style == "mix":  # only mixed-style assets carry it: older assets' specs stay as committed
        spec["steps_share"] = mcfg.steps_share
    if mcfg.step_drills:
        spec["step_drills"] = mcfg.step_drills
    return spec


def replay_steps(cfg: Config, student_labels: int) -> tuple[int, int]:
    """The replay control's OPD schedule: as many student rollouts as stage-3 GRPO would draw."""
    return st.grpo_steps(student_labels, cfg.grpo), cfg.grpo.prompts_per_step * cfg.grpo.group_size


def stage_key(cfg: Config, seed: int, prefix: list[tuple[str, int]]) -> str:
    # every section but [eval] and [engine.threads]-like knobs that cannot change numbers would be
    # fine to exclude; we hash everything except eval for safety and simplicity
    return cfg.section_hash(("world", "student", "teacher", "grpo", "fkl", "opd", "engine"),
                            extra={"seed": seed, "prefix": prefix})


@dataclass(frozen=True)
class RunResult:
    arm: str
    seed: int
    world: str
    split: str
    label_account: LabelAccount
    compute_tokens: int
    metrics: dict[str, float]
    stages: tuple[dict, ...]  # per stage: name, seconds, tokens, steps, curve (val metrics after it), cached
    problems: pd.DataFrame = field(repr=False, compare=False, default=None)

    def to_frame(self) -> pd.DataFrame:
        """Rows in the theory.tables run-table schema (percent metrics in percent)."""
        rows = [{"arm": self.arm, "seed": self.seed, "world": self.world,
                 "teacher_labels": self.label_account.teacher, "student_labels": self.label_account.student,
                 "compute_tokens": self.compute_tokens, "split": self.split, "metric": m, "value": v}
                for m, v in self.metrics.items()]
        return pd.DataFrame(rows)

    def curves_frame(self) -> pd.DataFrame:
        rows = []
        for i, s in enumerate(self.stages):
            for m, v in (s.get("curve") or {}).items():
                rows.append({"arm": self.arm, "seed": self.seed, "world": self.world, "stage_index": i,
                             "stage": s["name"], "model": s["model"], "metric": m, "value": v})
        return pd.DataFrame(rows)

    def to_dict(self) -> dict:
        return {"arm": self.arm, "seed": self.seed, "world": self.world, "split": self.split,
                "label_account": vars(self.label_account), "compute_tokens": self.compute_tokens,
                "metrics": self.metrics, "stages": list(self.stages)}


def _check_manifest(run_dir: Path, cfg: Config, ident: dict) -> None:
    """Refuse to resume a run directory that was started with another config."""
    m = run_dir / "manifest.json"
    if m.is_file():
        try:
            old = json.loads(m.read_text())
        except json.JSONDecodeError:
            raise InputError(f"run manifest {str(m)!r} is corrupt; delete the run directory to start over") from None
        changed = diff_fields(old.get("config", {}), cfg.to_dict())
        if changed:
            raise InputError(f"config changed since run {run_dir.name} started (field {changed[0]}"
                             + (f" and {len(changed) - 1} more" if len(changed) > 1 else "")
                             + "); use another --workdir or delete the run directory")
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = m.with_suffix(".tmp")
    tmp.write_text(json.dumps({"config": cfg.to_dict(), "run": ident}, indent=1, default=str))
    tmp.replace(m)


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
    run = _open_run(cfg, arm, seed, acct, split, Path(workdir), progress)
    if run.result_path.is_file():  # finished before (same config, checked above): nothing to redo
        return _load_result(run.result_path)
    run.open_tracker()
    try:
        models = build_models(cfg, need_teacher=arm.teacher.value != "none", engine=run.engine)
        world = build_world(cfg, models.tokenizer)
        labeled, curves = _labeled(cfg, world, acct), _Curves(cfg, world, models, report)
        stage_log, prefix = [], []
        for i, stage in enumerate(arm.stages):
            prefix.append((stage.value, stage_labels(stage, acct)))
            key = stage_key(cfg, seed, prefix)
            on_step, describe = curves.hooks(stage, key)
            done = run_stage(stage, cfg, models, world, labeled, run.workdir / "stages" / key, key,
                             meta={"stage": stage.value, "prefix": prefix, "seed": seed, "config_hash": cfg.hash()},
                             describe=describe, rank=run.rank, write=run.main, bar=run.bar_title(stage),
                             on_step=on_step, on_entry=run.on_entry(stage))
            stage_log.append(run.record(stage, done))
            curves.stage_done(stage, done.info)
            if stop_after is not None and i >= stop_after:
                raise _Stopped(i)
        return _final_eval(run, models, world, stage_log)
    finally:
        run.close_tracker()


@dataclass
class _Run:
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
    def rank(self) -> int:
        return 0 if self.engine is None else self.engine.rank

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

    def record(self, stage: Stage, done: StageRun) -> dict:
        """The stage's line of the run log. A resumed run still shows every stage to the tracker; after a
        trained stage every rank waits until rank 0 has written its checkpoint."""
        if done.cached and self.tracker is not None:
            self.tracker.log_stage(stage.value, done.log)
        if not done.cached:
            self.barrier()
        return dict(done.info, cached=done.cached)


def _open_run(cfg: Config, arm: Arm, seed: int, acct: LabelAccount, split: str, workdir: Path,
              progress: bool) -> _Run:
    """The run's context, once rank 0 has checked (or written) its manifest."""
    run = _Run(cfg, arm, seed, acct, split, workdir, engine_for(cfg), progress)
    if run.main:
        _check_manifest(workdir / "runs" / run.name, cfg, {"arm": arm.name, "seed": seed,
                                                            "teacher_labels": acct.teacher, "split": split})
    run.barrier()
    return run


def _labeled(cfg: Config, world: World, acct: LabelAccount) -> dict[str, tuple]:
    """The labeled problems each model's GRPO reads: the teacher's share first, then the student's."""
    if cfg.world.labels > len(world.labeled):
        raise InputError(f"world.labels={cfg.world.labels} exceeds the {len(world.labeled)} labeled problems available")
    return {TEACHER: world.labeled[0:acct.teacher], STUDENT: world.labeled[acct.teacher:acct.teacher + acct.student]}


class _Curves:
    """Validation points of a run: one after every stage (`eval.curve_problems` problems), and inside a
    student stage every `eval.curve_every` steps; `report(step, accuracy)` sees the student's against
    its training steps so far (monotone, for a pruner)."""

    def __init__(self, cfg: Config, world: World, models: Models, report: Callable[[int, float], None] | None):
        self.cfg, self.models, self.report = cfg, models, report
        self.problems = world.val[: cfg.eval.curve_problems]
        self.done_steps = 0

    def point(self, model, tag: str) -> dict:
        # forked RNG: a validation point never changes the training stream (eval is not in the stage key)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed_from(f"curve/{tag}"))
            return evaluate(model, self.problems, self.models.ctx, self.cfg.eval, extras=False).metrics

    def hooks(self, stage: Stage, key: str):
        """(on_step, describe) for `run_stage`: the inner points of a student stage, and the stage's record."""
        trains, inner, every = STAGES[stage].trains, [], self.cfg.eval.curve_every

        def on_step(step: int, total: int) -> None:
            if every and trains == STUDENT and step % every == 0 and step < total:
                point = self.point(self.models.student, f"{key}/{step}")
                inner.append({"step": step, "accuracy": point["accuracy"], "compliance": point["compliance"]})
                if self.report is not None:
                    self.report(self.done_steps + step, float(point["accuracy"]))

        def describe(model, result: st.StageResult) -> dict:
            return {"name": stage.value, "model": trains, "seconds": result.seconds, "tokens": result.tokens,
                    "steps": result.steps, "last": result.log[-1] if result.log else {},
                    "curve": self.point(model, key), "inner_curve": inner}
        return on_step, describe

    def stage_done(self, stage: Stage, info: dict) -> None:
        if STAGES[stage].trains == STUDENT:
            self.done_steps += int(info["steps"])
            if self.report is not None:
                self.report(self.done_steps, float(info["curve"]["accuracy"]))


def _final_eval(run: _Run, models: Models, world: World, stage_log: list[dict]) -> RunResult:
    """The final student on the run's split; rank 0 writes the result."""
    cfg, arm, seed, acct, split = run.cfg, run.arm, run.seed, run.acct, run.split
    t0 = time.perf_counter()
    # curve_every only adds validation points; it must not move the final evaluation's seed
    eval_hash = cfg.override({"eval.curve_every": 0}).hash()
    torch.manual_seed(seed_from(f"eval/{eval_hash}/{seed}/{arm.name}/{acct.teacher}/{split}"))
    problems = world.split(split)
    final: EvalResult = evaluate(models.student, problems, models.ctx, cfg.eval)
    eval_s = time.perf_counter() - t0
    compute = sum(int(s["tokens"]) for s in stage_log)
    stage_log = stage_log + [{"name": "eval", "model": STUDENT, "seconds": eval_s, "tokens": 0, "steps": 0,
                              "curve": {}, "cached": False}]
    res = RunResult(arm.name, seed, cfg.world.name, split, acct, compute, final.metrics, tuple(stage_log),
                    final.problems.assign(model=f"{arm.name}/s{seed}"))
    if run.tracker is not None:
        run.tracker.log_final(final.metrics)
    if run.main:
        tmp = run.result_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(res.to_dict(), indent=1, default=str))
        tmp.replace(run.result_path)
    run.barrier()
    return res


def _load_result(path: Path) -> RunResult:
    try:
        d = json.loads(path.read_text())
        return RunResult(d["arm"], int(d["seed"]), d["world"], d["split"], LabelAccount(**d["label_account"]),
                         int(d["compute_tokens"]), {k: float(v) for k, v in d["metrics"].items()},
                         tuple(dict(s, cached=True) for s in d["stages"]))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise InputError(f"run result {str(path)!r} is corrupt; delete it to re-evaluate") from None


class _Stopped(Exception):
    def __init__(self, stage_index: int):
        super().__init__(f"stopped after stage {stage_index}")
        self.stage_index = stage_index


@dataclass(frozen=True)
class StageRun:
    """One finished stage: its record (as its checkpoint's meta.json keeps it under "result"), its
    per-step log, and whether it was loaded from the checkpoint rather than trained now."""

    info: dict
    log: list
    cached: bool


def run_stage(stage: Stage, cfg: Config, models: Models, world: World, labeled: dict, directory: Path,
              seed_key: str, *, meta: dict, describe: Callable[[torch.nn.Module, st.StageResult], dict],
              rank: int = 0, write: bool = True, bar: str | None = None,
              on_step: Callable[[int, int], None] | None = None,
              on_entry: Callable[[int, dict], None] | None = None) -> StageRun:
    """The one cached-stage runner (the pipeline's and the pilot's self-distillation's).

    A finished checkpoint in `directory` is loaded into the model the stage trains. Otherwise the stage
    trains in a forked torch RNG seeded from `seed_key` (+ `rank`: ranks sample their shards
    independently, rank 0 as one process) with its data order seeded from `seed_key/data`, and, when
    `write` (rank 0), its weights are saved atomically with `meta`, `describe(model, result)` as
    "result" and the per-step log. A writer holds the stage's lock (`checkpoint.claim`) from the cache
    check to the save, so processes sharing a workdir never train one stage twice. `bar` titles a progress bar (None: no bar); `on_step(step, total)`
    and `on_entry(step, log_entry)` see every step.
    """
    directory = Path(directory)
    trains = STAGES[stage].trains
    with ckpt.claim(directory, enabled=write):  # another process training this stage: wait, then load it
        if (directory / "meta.json").exists():
            saved = ckpt.load_weights(getattr(models, trains), directory)
            return StageRun(saved["result"], saved.get("log") or [], cached=True)
        with seeded(cfg.engine.device, seed_from(seed_key) + rank):
            pbar = _bar(bar)
            result = _train(stage, cfg, models, world, labeled, seed_from(seed_key, "data"),
                            _progress(pbar, on_step, on_entry))
            if pbar is not None:
                pbar.close()
            model = getattr(models, trains)
            info = describe(model, result)
        # a model sharded by FSDP2: every rank takes part in the gather, rank 0 receives the full state
        # dict and writes the same checkpoint one process writes
        state = engines.full_state_dict(model) if engines.is_sharded(model) else None
        if write:
            ckpt.save_weights(model, directory, dict(meta, result=info, log=list(result.log)), state=state)
    return StageRun(info, list(result.log), cached=False)


def _bar(desc: str | None):
    if desc is None:
        return None
    from tqdm.auto import tqdm
    return tqdm(desc=desc, leave=False, dynamic_ncols=True)


def _progress(bar, on_step: Callable[[int, int], None] | None, on_entry: Callable[[int, dict], None] | None):
    """The stages' per-step callback: the tracker's hook, the caller's, then the progress bar."""
    def progress(step, total, entry):
        if on_entry is not None:  # the experiment tracker: every per-step log entry of the stage
            on_entry(step, entry)
        if on_step is not None:
            on_step(step, total)
        if bar is not None:
            bar.total = total
            bar.n = step
            keep = ("reward", "compliance", "forward_kl", "kl_to_teacher")
            bar.set_postfix({k: round(v, 3) for k, v in entry.items() if k in keep}, refresh=False)
            bar.refresh()
    return progress


def _train(stage: Stage, cfg: Config, models: Models, world: World, labeled: dict, seed: int,
           progress) -> st.StageResult:
    """`train_stage`; teacher RL under `engine.lora_rank` > 0 trains LoRA adapters only, merged back
    after the stage (the checkpoint holds plain weights)."""
    lora = STAGES[stage].trains == TEACHER and cfg.engine.lora_rank > 0
    if lora and models.ctx.engine is not None and models.ctx.engine.sharding != "none":
        raise InputError("engine.lora_rank > 0 under an FSDP2 launch is not supported (the adapters are merged "
                         "after the stage): launch LoRA runs with configs/accelerate/ddp.yaml")
    if lora:
        from reference.engines import apply_lora
        models.teacher = apply_lora(models.teacher, rank=cfg.engine.lora_rank)
    result = train_stage(stage, cfg, models, world, labeled, seed, progress)
    if lora:
        models.teacher = models.teacher.merge_and_unload()
    return result


def train_stage(stage: Stage, cfg: Config, m: Models, world: World, labeled: dict, seed: int,
                progress: Callable[[int, int, dict], None] | None = None) -> st.StageResult:
    """Train, in place, the model `stage` updates by its update rule (theory.arms.STAGES): GRPO on the
    labels of that model's share, the forward-KL warmup or OPD on the world's unlabeled prompts with
    the teacher scoring. The replay control draws as many student rollouts as stage-3 GRPO would have
    drawn on the held-back labels (`replay_steps`). `engine.trainer = "trl"` runs the same dispatch on
    TRL's trainers (reference.trl_backend.stage_functions)."""
    from reference.trl_backend import stage_functions
    run = stage_functions(cfg.engine.trainer)  # reference.stages, or TRL's trainers under trainer = "trl"
    spec = STAGES[stage]
    model = getattr(m, spec.trains)
    if spec.update == "grpo":
        return run.grpo(model, labeled[spec.labels], cfg.grpo, m.ctx, role=spec.trains, seed=seed,
                        progress=progress, name=stage.value)
    scorer = getattr(m, spec.scorer)
    if spec.update == "fkl":
        return run.fkl_warmup(model, scorer, world.unlabeled, cfg.fkl, m.ctx, seed=seed, progress=progress)
    if spec.labels is None:
        return run.opd(model, scorer, world.unlabeled, cfg.opd, m.ctx, seed=seed, progress=progress)
    steps, per_step = replay_steps(cfg, cfg.world.labels - len(labeled[TEACHER]))
    return run.opd(model, scorer, world.unlabeled, cfg.opd, m.ctx, seed=seed, steps=steps,
                   prompts_per_step=per_step, progress=progress, name=stage.value)
