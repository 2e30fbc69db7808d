"""The pipeline: an arm is run from its stage list in theory.arms.ARMS (no second arm list here).

    teacher = grpo(teacher, labels[:n_T])          # stage 1   (sparse reward on the teacher)
    student = fkl_warmup(student, teacher)         # stage 2a  (dense, teacher rollouts)
    student = opd(student, teacher)                # stage 2b  (dense, student rollouts)
    student = grpo(student, labels[n_T:])          # stage 3   (sparse reward on the student)

`run_pipeline` walks `arm.stages` through `STAGES` (one entry per stage). Every finished stage is
checkpointed atomically under `workdir/stages/<key>`, where key hashes the config, the seed and the
stage prefix with its label counts: arms that share a prefix (e.g. the RL teacher) share the work, and
a killed run resumes from its last finished stage with the same numbers (each stage reseeds torch
from its key). `workdir/runs/<run>/manifest.json` holds the config a run started with; a restart with
another config refuses and names the changed fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import hashlib
import json
from pathlib import Path
import time
from typing import Callable

import pandas as pd
import torch

from reference import checkpoint as ckpt
from reference import stages as st
from reference import tracking as _tracking
from reference.config import Config, diff_fields
from reference.evaluate import EvalResult, evaluate
from reference.rollout import HFRollout
from reference.world import World, make_world
from theory.arms import Arm, LabelAccount, Stage, get_arm
from theory.errors import InputError

STUDENT, TEACHER = "student", "teacher"


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


def make_engine(cfg: Config):
    """The accelerate engine when `engine.launcher = "accelerate"` (its launch config picks DDP / FSDP2 /
    ZeRO-3), None for one plain process (the toy world; the stages then run exactly as before)."""
    if cfg.engine.launcher != "accelerate":
        return None
    from reference.engines import make_engine as _make
    return _make(cpu=cfg.engine.device == "cpu")


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
    return {k: getattr(mcfg, k) for k in keys}


def _label_slices(acct: LabelAccount) -> dict[str, slice]:
    return {TEACHER: slice(0, acct.teacher), STUDENT: slice(acct.teacher, acct.teacher + acct.student)}


def replay_steps(cfg: Config, student_labels: int) -> tuple[int, int]:
    """The replay control's OPD schedule: as many student rollouts as stage-3 GRPO would draw."""
    return st.grpo_steps(student_labels, cfg.grpo), cfg.grpo.prompts_per_step * cfg.grpo.group_size


def _stage_labels(stage: Stage, acct: LabelAccount) -> int:
    """Labels a stage spends; the replay control is sized by the labels held back from the teacher
    (the ones stage-3 GRPO would have used), though it never reads them."""
    return {Stage.TEACHER_GRPO: acct.teacher, Stage.STUDENT_GRPO: acct.student,
            Stage.REPLAY_OPD: acct.total - acct.teacher}.get(stage, 0)


def stage_key(cfg: Config, seed: int, prefix: list[tuple[str, int]]) -> str:
    # every section but [eval] and [engine.threads]-like knobs that cannot change numbers would be
    # fine to exclude; we hash everything except eval for safety and simplicity
    return cfg.section_hash(("world", "student", "teacher", "grpo", "fkl", "opd", "engine"),
                            extra={"seed": seed, "prefix": prefix})


def _seed_from(key: str) -> int:
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)


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
    workdir = Path(workdir)
    run_name = f"{arm.name}_s{seed}_t{acct.teacher}"
    run_dir = workdir / "runs" / run_name
    engine = make_engine(cfg)
    # under accelerate every rank trains (its shard); rank 0 alone writes manifests, checkpoints, results
    main = engine is None or engine.is_main
    rank = 0 if engine is None else engine.rank

    def barrier() -> None:
        if engine is not None:
            engine.accelerator.wait_for_everyone()

    if main:
        _check_manifest(run_dir, cfg, {"arm": arm.name, "seed": seed, "teacher_labels": acct.teacher,
                                       "split": split})
    barrier()
    result_path = run_dir / f"result_{split}.json"
    if result_path.is_file():  # finished before (same config, checked above): nothing to redo
        return _load_result(result_path)

    tracker = _tracking.open_tracker(cfg, run_name, workdir) if main else None
    try:
        return _run_stages(cfg, arm, seed, acct, workdir, engine, main, rank, barrier, tracker, result_path,
                           split, report, progress, stop_after)
    finally:
        if tracker is not None:
            tracker.finish()


def _run_stages(cfg, arm, seed, acct, workdir, engine, main, rank, barrier, tracker, result_path, split,
                report, progress, stop_after) -> RunResult:
    need_teacher = arm.teacher.value != "none"
    models = build_models(cfg, need_teacher=need_teacher, engine=engine)
    world = build_world(cfg, models.tokenizer)
    if cfg.world.labels > len(world.labeled):
        raise InputError(f"world.labels={cfg.world.labels} exceeds the {len(world.labeled)} labeled problems available")
    labeled = {role: world.labeled[s] for role, s in _label_slices(acct).items()}
    curve_set = world.val[: cfg.eval.curve_problems]
    ctx = models.ctx

    def curve_point(model, tag: str) -> dict:
        # forked RNG: a validation point never changes the training stream (eval is not in the stage key)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_seed_from(f"curve/{tag}"))
            return evaluate(model, curve_set, ctx, cfg.eval, extras=False).metrics

    done_steps = 0  # student training steps so far: the x-axis of `report` (monotone for a pruner)

    stage_log: list[dict] = []
    prefix: list[tuple[str, int]] = []
    for i, stage in enumerate(arm.stages):
        prefix.append((stage.value, _stage_labels(stage, acct)))
        key = stage_key(cfg, seed, prefix)
        sdir = workdir / "stages" / key
        role = TEACHER if stage is Stage.TEACHER_GRPO else STUDENT
        model = models.teacher if role == TEACHER else models.student
        if (sdir / "meta.json").exists():
            meta = ckpt.load_weights(model, sdir)
            stage_log.append(dict(meta["result"], cached=True))
            if tracker is not None:  # a resumed run still shows every stage
                tracker.log_stage(stage.value, meta.get("log") or [])
        else:
            torch.manual_seed(_seed_from(key) + rank)  # ranks sample their shards independently; rank 0 as one process
            bar = _bar(progress and main, f"{arm.name} s{seed} {stage.value}")
            inner: list[dict] = []

            def on_step(step: int, total: int, _model=model, _key=key, _role=role) -> None:
                every = cfg.eval.curve_every
                if every and _role == STUDENT and step % every == 0 and step < total:
                    point = curve_point(_model, f"{_key}/{step}")
                    inner.append({"step": step, "accuracy": point["accuracy"], "compliance": point["compliance"]})
                    if report is not None:
                        report(done_steps + step, float(point["accuracy"]))
            lora = role == TEACHER and cfg.engine.lora_rank > 0
            if lora:  # teacher RL trains LoRA adapters only; merged back after the stage (plain weights)
                from reference.engines import apply_lora
                models.teacher = apply_lora(models.teacher, rank=cfg.engine.lora_rank)
            on_entry = None if tracker is None else (
                lambda step, entry, _name=stage.value: tracker.log_entry(_name, step, entry))
            result = _run_stage(stage, cfg, models, world, labeled, _seed_from(key + "/data"), bar, on_step,
                                on_entry)
            if lora:
                models.teacher = model = models.teacher.merge_and_unload()
            if bar is not None:
                bar.close()
            info = {"name": stage.value, "model": role, "seconds": result.seconds, "tokens": result.tokens,
                    "steps": result.steps, "last": result.log[-1] if result.log else {},
                    "curve": curve_point(model, key), "inner_curve": inner}
            if main:
                ckpt.save_weights(model, sdir, {"stage": stage.value, "prefix": prefix, "seed": seed,
                                                "config_hash": cfg.hash(), "result": info,
                                                "log": list(result.log)})
            barrier()
            stage_log.append(dict(info, cached=False))
        if role == STUDENT:
            done_steps += int(stage_log[-1]["steps"])
            if report is not None:
                report(done_steps, float(stage_log[-1]["curve"]["accuracy"]))
        if stop_after is not None and i >= stop_after:
            raise _Stopped(i)

    t0 = time.perf_counter()
    # curve_every only adds validation points; it must not move the final evaluation's seed
    eval_hash = cfg.override({"eval.curve_every": 0}).hash()
    torch.manual_seed(_seed_from(f"eval/{eval_hash}/{seed}/{arm.name}/{acct.teacher}/{split}"))
    problems = world.split(split)
    final: EvalResult = evaluate(models.student, problems, ctx, cfg.eval)
    eval_s = time.perf_counter() - t0
    compute = sum(int(s["tokens"]) for s in stage_log)
    stage_log.append({"name": "eval", "model": STUDENT, "seconds": eval_s, "tokens": 0, "steps": 0,
                      "curve": {}, "cached": False})
    res = RunResult(arm.name, seed, cfg.world.name, split, acct, compute, final.metrics, tuple(stage_log),
                    final.problems.assign(model=f"{arm.name}/s{seed}"))
    if tracker is not None:
        tracker.log_final(final.metrics)
    if main:
        tmp = result_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(res.to_dict(), indent=1, default=str))
        tmp.replace(result_path)
    barrier()
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


def _bar(progress: bool, desc: str):
    if not progress:
        return None
    from tqdm.auto import tqdm
    return tqdm(desc=desc, leave=False, dynamic_ncols=True)


def _run_stage(stage: Stage, cfg: Config, m: Models, world: World, labeled: dict, seed: int, bar,
               on_step: Callable[[int, int], None] | None = None,
               on_entry: Callable[[int, dict], None] | None = None) -> st.StageResult:
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

    if stage is Stage.TEACHER_GRPO:
        return st.grpo(m.teacher, labeled[TEACHER], cfg.grpo, m.ctx, role=TEACHER, seed=seed, progress=progress,
                       name=stage.value)
    if stage is Stage.STUDENT_GRPO:
        return st.grpo(m.student, labeled[STUDENT], cfg.grpo, m.ctx, role=STUDENT, seed=seed, progress=progress,
                       name=stage.value)
    if stage is Stage.FKL_WARMUP:
        return st.fkl_warmup(m.student, m.teacher, world.unlabeled, cfg.fkl, m.ctx, seed=seed, progress=progress)
    if stage is Stage.OPD:
        return st.opd(m.student, m.teacher, world.unlabeled, cfg.opd, m.ctx, seed=seed, progress=progress)
    if stage is Stage.REPLAY_OPD:
        steps, per_step = replay_steps(cfg, cfg.world.labels - len(labeled[TEACHER]))
        return st.opd(m.student, m.teacher, world.unlabeled, cfg.opd, m.ctx, seed=seed, steps=steps,
                      prompts_per_step=per_step, progress=progress, name=stage.value)
    raise InputError(f"unknown stage {stage!r}")
