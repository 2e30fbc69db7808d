"""The one cached-stage runner: `run_stage` trains a stage (or loads its finished checkpoint) for the
pipeline and for the pilot's self-distillation alike.

What a stage does is read from the stage table, `theory.arms.STAGES`: the model it trains (`trains`,
a role), its update rule (`update`: "grpo", "fkl", "opd", also its config section), the frozen
scorer of a bridge stage (`scorer`), the labels that size it (`stage_labels`), and whether it is the
replay control (`replays`). `update_rules(engine.trainer)` maps each update rule to the function that
runs it: this project's loop (reference.stages), or TRL's trainers (reference.trl_backend, imported
only under `trainer = "trl"`).

A finished stage is checkpointed atomically under its directory; `stage_key` hashes the config, the
seed and the stage prefix with its label counts, so arms that share a prefix share the work and a
killed run resumes from its last finished stage with the same numbers (each stage reseeds torch from
its key).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from reference import checkpoint as ckpt
from reference import engines
from reference import stages
from reference.assemble import Models
from reference.config import PLATEAU_DEFAULTS, Config
from reference.seeds import seed_from, seeded
from reference.stage_plan import DTYPES, stage_plan, to_master
from reference.stage_plan import apply as apply_plan
from reference.world import Problem, World
from theory.arms import STAGES, STUDENT, TEACHER, LabelAccount, Stage, stage_labels
from theory.errors import InputError


@dataclass(frozen=True)
class TrainingSetup:
    """What a sequence of stages trains with: the config, the models, the world, and the label account
    that splits the world's labeled problems (the teacher's share first, then the student's)."""

    cfg: Config
    models: Models
    world: World
    account: LabelAccount

    def __post_init__(self) -> None:
        if self.account.total > len(self.world.labeled):
            raise InputError(f"world.labels={self.account.total} exceeds the {len(self.world.labeled)} labeled "
                             "problems available")

    def labeled(self, role: str) -> tuple[Problem, ...]:
        """The labeled problems the GRPO of `role` ("teacher" or "student") reads."""
        t, s = self.account.teacher, self.account.student
        return {TEACHER: self.world.labeled[0:t], STUDENT: self.world.labeled[t:t + s]}[role]


@dataclass(frozen=True)
class Slot:
    """Where a stage's checkpoint lives, the key its training is seeded from, and the `meta` it records."""

    directory: Path
    seed_key: str
    meta: dict


@dataclass(frozen=True)
class Hooks:
    """What a caller sees of a training stage: `describe(model, result)` makes its record; `bar` titles a
    progress bar (None: no bar); `on_step(step, total)` and `on_entry(step, log_entry)` see every step."""

    describe: Callable[[torch.nn.Module, stages.StageResult], dict]
    bar: str | None = None
    on_step: Callable[[int, int], None] | None = None
    on_entry: Callable[[int, dict], None] | None = None


@dataclass(frozen=True)
class FinishedStage:
    """One finished stage: its record (as its checkpoint's meta.json keeps it under "result"), its
    per-step log, and whether it was loaded from the checkpoint rather than trained now."""

    info: dict
    log: list
    cached: bool


# the sections a stage's checkpoint and seed keys hash ([plateau] drops out while the protocol is off)
KEY_SECTIONS = ("world", "student", "teacher", "grpo", "fkl", "opd", "engine", "plateau")


def stage_key(cfg: Config, seed: int, prefix: list[tuple[str, int]]) -> str:
    """The checkpoint key of the last stage of `prefix` ((stage name, labels) pairs) at `seed`."""
    # every section but [eval] and [engine.threads]-like knobs that cannot change numbers would be
    # fine to exclude; we hash everything except eval for safety and simplicity
    extra = {"seed": seed, "prefix": prefix}
    if cfg.plateau.to_cap and not cfg.plateau.to_cap & {name for name, _ in prefix}:
        # plateau.run_to_cap changes only the stages it names and those after them: the others keep their keys
        cfg = cfg.override({"plateau.run_to_cap": ""})
    if cfg.plateau.enabled:  # the validation passes choose the stage's length and checkpoint
        e = cfg.eval
        extra["validation_sampling"] = [e.temperature, e.top_p, e.top_k, e.max_new_tokens]
    # [plateau] is left out of the hash while the protocol is off (Config.section_hash): keys as before
    return cfg.section_hash(KEY_SECTIONS, extra=extra)


# the fields that set a stage's length: its cap under the plateau protocol
CAP_FIELDS = {"grpo.epochs": 1.0, "grpo.max_steps": 0, "fkl.steps": 1, "opd.steps": 1}


def seed_key(cfg: Config, seed: int, prefix: list[tuple[str, int]]) -> str:
    """The key a stage's torch seed and data order are drawn from: its checkpoint key, except under the
    plateau protocol, where the caps (CAP_FIELDS) and the validation settings are left out (validation
    samples on a forked RNG), so that a longer cap or another validation schedule replays the same steps
    and, with a cap-free learning-rate schedule, trains the same trajectory."""
    if not cfg.plateau.enabled:
        return stage_key(cfg, seed, prefix)
    neutral = {**CAP_FIELDS, **PLATEAU_DEFAULTS, "plateau.enabled": True}
    return cfg.override(neutral).section_hash(KEY_SECTIONS, extra={"seed": seed, "prefix": prefix})


def replay_steps(cfg: Config, held_back: int) -> tuple[int, int]:
    """The replay control's OPD schedule (steps, prompts per step): as many student rollouts as stage-3
    GRPO would draw on the `held_back` labels."""
    return stages.grpo_steps(held_back, cfg.grpo), cfg.grpo.prompts_per_step * cfg.grpo.group_size


def run_stage(stage: Stage, setup: TrainingSetup, slot: Slot, hooks: Hooks) -> FinishedStage:
    """Train `stage`, or load its finished checkpoint from `slot.directory` into the model it trains.

    Training runs in a forked torch RNG seeded from `slot.seed_key` (+ the rank: ranks sample their
    shards independently, rank 0 as one process) with its data order seeded from `seed_key/data`; the
    writer (rank 0 under an engine) saves the weights atomically with `slot.meta`, `hooks.describe(model,
    result)` as "result" and the per-step log. The writer holds the stage's lock (`checkpoint.claim`)
    from the cache check to the save, so processes sharing a workdir never train one stage twice.
    """
    directory, engine = Path(slot.directory), setup.models.ctx.engine
    rank, write = (0, True) if engine is None else (engine.rank, engine.is_main)
    trains = STAGES[stage].trains
    with ckpt.claim(directory, enabled=write):  # another process training this stage: wait, then load it
        if (directory / "meta.json").exists():
            model = setup.models.for_role(trains)
            plan = stage_plan(setup.cfg, stage)
            if plan.mixed:  # the checkpoint holds the fp32 master an uninterrupted run would hold now
                to_master(model, DTYPES[plan.compute_dtype])
            saved = ckpt.load_weights(model, directory)
            return FinishedStage(saved["result"], saved.get("log") or [], cached=True)
        with seeded(setup.cfg.engine.device, seed_from(slot.seed_key) + rank):
            pbar = _bar(hooks.bar)
            watch = stage_watch(stage, setup, slot)
            result = _train(stage, setup, seed_from(slot.seed_key, "data"), _progress(pbar, hooks), watch)
            if pbar is not None:
                pbar.close()
            model = setup.models.for_role(trains)
            info = hooks.describe(model, result)
        # a model sharded by FSDP2: every rank takes part in the gather, rank 0 receives the full state
        # dict and writes the same checkpoint one process writes
        state = engines.full_state_dict(model) if engines.is_sharded(model) else None
        if write:
            ckpt.save_weights(model, directory, dict(slot.meta, result=info, log=list(result.log)), state=state)
        if watch is not None:
            watch.discard()
    return FinishedStage(info, list(result.log), cached=False)


def stage_cap(stage: Stage, setup: TrainingSetup) -> int:
    """The steps `stage` runs at most: its configured length (the cap under the plateau protocol)."""
    spec, cfg = STAGES[stage], setup.cfg
    if spec.update == "grpo":
        return stages.grpo_steps(len(setup.labeled(spec.labels)), cfg.grpo)
    if spec.replays:
        return replay_steps(cfg, stage_labels(stage, setup.account))[0]
    return getattr(cfg, spec.update).steps


def validation_score(setup: TrainingSetup):
    """The plateau protocol's validation score (reference.plateau.Score): avg@k of a model on the first
    `plateau.problems` validation problems at [eval]'s sampling, on a forked RNG seeded from the tag."""
    import dataclasses
    from reference.evaluate import evaluate
    cfg = setup.cfg
    problems, k = setup.world.val[:cfg.plateau.problems], cfg.plateau.k
    eval_cfg = dataclasses.replace(cfg.eval, k=k)
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []

    def score(model, tag: str):
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed_from(f"plateau/{tag}"))
            res = evaluate(model, problems, setup.models.ctx, eval_cfg, extras=False)
        per_problem = res.problems["correct"].to_numpy(dtype=float) / k
        return per_problem, int(round(res.metrics["length"] * len(problems) * k))
    return score


def stage_watch(stage: Stage, setup: TrainingSetup, slot: Slot):
    """What watches the stage while it trains: the plateau protocol's `reference.plateau.Watch` under
    `plateau.enabled`, a plain mid-stage checkpointer (`reference.midstage.MidStage`) under
    `engine.checkpoint_every` > 0, else None. The mid-stage checkpoint lives beside the stage's directory
    (`.<key>.partial`); on TRL's trainers it holds the Trainer's own checkpoints (reference.trl_backend).
    Refused in one line (not wired yet): `checkpoint_every` on TRL's trainers under an engine, and with the
    plateau protocol under an engine (which then runs without one, as before)."""
    cfg = setup.cfg
    every, engine = cfg.engine.checkpoint_every, setup.models.ctx.engine
    if every > 0 and cfg.engine.trainer == "trl" and engine is not None:
        raise InputError("engine.checkpoint_every > 0 with engine.trainer = 'trl' runs in one process (the Trainer's "
                         "checkpoints under an engine are not wired yet); set it to 0")
    if every > 0 and engine is not None and cfg.plateau.enabled:
        raise InputError("engine.checkpoint_every > 0 with plateau.enabled under an engine is not wired yet (one "
                         "process, or the protocol off); set it to 0")
    directory = Path(slot.directory)
    from reference.midstage import MidStage
    partial = MidStage(directory.with_name(f".{directory.name}.partial"), every, engine)
    if not cfg.plateau.enabled:
        return partial if every > 0 else None
    from reference.plateau import Watch
    if cfg.engine.trainer == "trl":
        raise InputError("plateau.enabled runs on engine.trainer = 'reference' (TRL's trainers stop on their "
                         "own callbacks; not wired yet)")
    if len(setup.world.val) < cfg.plateau.problems:
        raise InputError(f"plateau.problems={cfg.plateau.problems} exceeds world.val={len(setup.world.val)}")
    return Watch(cfg.plateau, stage_cap(stage, setup), validation_score(setup), slot.seed_key,
                 partial if engine is None else None, to_cap=Stage(stage).value in cfg.plateau.to_cap)


def _bar(desc: str | None):
    if desc is None:
        return None
    from tqdm.auto import tqdm
    return tqdm(desc=desc, leave=False, dynamic_ncols=True)


def _progress(bar, hooks: Hooks):
    """The stages' per-step callback: the tracker's hook, the caller's, then the progress bar."""
    def progress(step, total, entry):
        if hooks.on_entry is not None:  # the experiment tracker: every per-step log entry of the stage
            hooks.on_entry(step, entry)
        if hooks.on_step is not None:
            hooks.on_step(step, total)
        if bar is not None:
            bar.total = total
            bar.n = step
            keep = ("reward", "compliance", "forward_kl", "kl_to_teacher")
            bar.set_postfix({k: round(v, 3) for k, v in entry.items() if k in keep}, refresh=False)
            bar.refresh()
    return progress


def _train(stage: Stage, setup: TrainingSetup, seed: int, progress, watch=None) -> stages.StageResult:
    """`train_stage`; teacher RL under `engine.lora_rank` > 0 trains LoRA adapters only, merged back
    after the stage (the checkpoint holds plain weights)."""
    cfg, models = setup.cfg, setup.models
    lora = STAGES[stage].trains == TEACHER and cfg.engine.lora_rank > 0
    if lora and models.ctx.engine is not None and models.ctx.engine.sharding != "none":
        raise InputError("engine.lora_rank > 0 under an FSDP2 launch is not supported (the adapters are merged "
                         "after the stage): launch LoRA runs with configs/accelerate/ddp.yaml")
    if lora:
        models.teacher = engines.apply_lora(models.teacher, rank=cfg.engine.lora_rank)
    result = train_stage(stage, setup, seed, progress, watch)
    if lora:
        models.teacher = models.teacher.merge_and_unload()
    return result


def update_rules(trainer: str) -> dict[str, Callable[..., stages.StageResult]]:
    """The function behind each update rule of the stage table (`StageSpec.update`) under
    `engine.trainer`: reference.stages' loop, or TRL's trainers (reference.trl_backend) under "trl"."""
    if trainer == "trl":
        from reference.trl_backend import UPDATE_RULES
        return UPDATE_RULES
    return {"grpo": stages.grpo, "fkl": stages.fkl_warmup, "opd": stages.opd}


def train_stage(stage: Stage, setup: TrainingSetup, seed: int,
                progress: Callable[[int, int, dict], None] | None = None, watch=None) -> stages.StageResult:
    """Train, in place, the model `stage` updates by its update rule (theory.arms.STAGES), with its
    config section: GRPO on the labels of that model's share, the forward-KL warmup or OPD on the
    world's unlabeled prompts with the scorer frozen. The replay control draws as many student
    rollouts as stage-3 GRPO would have drawn on the held-back labels (`replay_steps`)."""
    spec, cfg, m = STAGES[stage], setup.cfg, setup.models
    update, section = update_rules(cfg.engine.trainer)[spec.update], getattr(cfg, spec.update)
    model = m.for_role(spec.trains)
    # dtypes (fp32 master under mixed precision), checkpointing, the scorer's dtype: the plan the dry run reads
    apply_plan(stage_plan(cfg, stage), model, m.for_role(spec.scorer) if spec.scorer else None)
    # the reference's rules take either watch; TRL's the mid-stage checkpointer only (stage_watch refuses the
    # plateau protocol there)
    extra = {"watch": watch} if watch is not None else {}
    if spec.update == "grpo":
        return update(model, setup.labeled(spec.labels), section, m.ctx, role=spec.trains, seed=seed,
                      progress=progress, name=stage.value, **extra)
    if spec.replays:
        steps, per_step = replay_steps(cfg, stage_labels(stage, setup.account))
        extra.update(steps=steps, prompts_per_step=per_step)
    return update(model, m.for_role(spec.scorer), setup.world.unlabeled, section, m.ctx, seed=seed,
                  progress=progress, name=stage.value, **extra)
