"""The tuner's view of the reference pipeline: `run_arm`, `PARAM_SPACE` and `param_space(config)`.

`params` override hyperparameters by short names. Every name sets exactly the config fields of the
stages that read it, so no declared dimension is dead on any arm (tests/test_tuning_space.py checks
this against the pipeline's own stage dispatch):
  lr           student GRPO learning rate (grpo.lr; declared only on arms with a student GRPO stage)
  teacher_lr   teacher GRPO learning rate (grpo.teacher_lr)
  fkl_lr       FKL warmup learning rate (fkl.lr)
  opd_lr       OPD (and replay OPD) learning rate (opd.lr)
  group_size   GRPO samples per prompt (both GRPO stages; sizes the replay control too)
  grpo_epochs  passes over the labels (both GRPO stages; sizes the replay control too)
  temperature  sampling temperature of every training rollout (evaluation keeps [eval].temperature)
  fkl_steps, opd_steps
A shared name has the same range in every arm where it applies (tests check it). `param_space(config)`
adds each name's value in that config as its `default`, so a study can run the arm's default
configuration as its first trial. `split="val"` never touches test problems.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
import shutil
import tempfile
from typing import Any, Callable

from reference.config import Config, load_config
from theory.arms import ARMS, STAGES, LabelAccount, Stage, get_arm
from theory.errors import InputError

DEFAULT_CONFIG = "toy_short"  # the tuning schedule (one arm ~20-40 s on one core)

# One range for every learning rate (issue 10): down to 1e-6, so the stable region (1e-5 - 1e-4 on the
# toy models; the paper's GRPO used 1e-6 at 1.7B) lies well inside, and up to 1e-3, where the old
# protocol's overshoot lives. A shared name has this one range in every arm (tests check it).
LR_RANGE = {"kind": "float", "low": 1e-6, "high": 1e-3, "log": True}
SHARED: dict[str, dict[str, Any]] = {
    "lr": LR_RANGE,
    "group_size": {"kind": "categorical", "choices": [4, 8, 16]},
    "temperature": {"kind": "float", "low": 0.7, "high": 1.2, "log": False},
}
# One learning rate per stage that trains, each with the same range, so each arm searches exactly the
# rates its stages read and its default configuration is a point of its space (docs/tuning.md).
STAGE_PARAMS: dict[Stage, dict[str, dict[str, Any]]] = {
    Stage.TEACHER_GRPO: {"teacher_lr": LR_RANGE,
                         "grpo_epochs": {"kind": "float", "low": 1.0, "high": 6.0, "log": False}},
    Stage.STUDENT_GRPO: {"lr": SHARED["lr"],
                         "grpo_epochs": {"kind": "float", "low": 1.0, "high": 6.0, "log": False}},
    Stage.FKL_WARMUP: {"fkl_lr": LR_RANGE,
                       "fkl_steps": {"kind": "int", "low": 40, "high": 400, "log": False}},
    Stage.OPD: {"opd_lr": LR_RANGE,
                "opd_steps": {"kind": "int", "low": 40, "high": 400, "log": False}},
    Stage.REPLAY_OPD: {"opd_lr": LR_RANGE},
}
LENGTH_PARAMS = ("grpo_epochs", "fkl_steps", "opd_steps")  # what `scale_compute` stretches


def _space(arm) -> dict[str, dict[str, Any]]:
    out = {"temperature": SHARED["temperature"]}
    if any(STAGES[s].update == "grpo" for s in arm.stages):
        out["group_size"] = SHARED["group_size"]
    for stage in arm.stages:
        out.update(STAGE_PARAMS[stage])
    return dict(sorted(out.items()))


PARAM_SPACE: dict[str, dict[str, dict[str, Any]]] = {name: _space(arm) for name, arm in ARMS.items()}

def param_defaults(arm: str, config: str | Path | Config = DEFAULT_CONFIG) -> dict[str, Any]:
    """Each declared name's value in `config` (what the arm runs with no params). A name without a
    single value (the arm's stages sample at different temperatures) maps to None."""
    a = get_arm(arm)
    cfg = config if isinstance(config, Config) else load_config(config)
    temps = {getattr(cfg, STAGES[s].update).temperature for s in a.stages}  # the section of each stage
    values = {"lr": cfg.grpo.lr, "teacher_lr": cfg.grpo.lr_for("teacher"), "group_size": cfg.grpo.group_size,
              "grpo_epochs": cfg.grpo.epochs, "temperature": temps.pop() if len(temps) == 1 else None,
              "fkl_lr": cfg.fkl.lr, "fkl_steps": cfg.fkl.steps, "opd_lr": cfg.opd.lr, "opd_steps": cfg.opd.steps}
    return {name: values[name] for name in PARAM_SPACE[a.name]}


def param_space(config: str | Path | Config | None = None) -> dict[str, dict[str, dict[str, Any]]]:
    """PARAM_SPACE with each name's `default` read from `config` (the tuner enqueues it as slot 0).
    Under the plateau protocol (`plateau.enabled`) the lengths (LENGTH_PARAMS) are not searched: each
    stage's length is chosen by its validation plateau, up to the config's caps, for every trial alike."""
    cfg = load_config(config if config is not None else DEFAULT_CONFIG) if not isinstance(config, Config) else config
    skip = set(LENGTH_PARAMS) if cfg.plateau.enabled else set()
    return {arm: {name: dict(spec, default=param_defaults(arm, cfg)[name]) for name, spec in space.items()
                  if name not in skip}
            for arm, space in PARAM_SPACE.items()}


def scale_compute(arm: str, params: dict[str, Any], factor: float,
                  config: str | Path | Config = DEFAULT_CONFIG) -> dict[str, Any]:
    """`params` with every stage length the arm searches (GRPO epochs, FKL/OPD steps) multiplied by
    `factor`: the compute-matched view gives a cheaper arm's best configuration the training tokens
    of a dearer one. The result may leave the search range (it is an evaluation, not a trial)."""
    if not (isinstance(factor, (int, float)) and factor > 0 and factor == factor):
        raise InputError(f"compute factor must be > 0, got {factor!r}")
    defaults = param_defaults(arm, config)
    out = dict(params)
    for name in LENGTH_PARAMS:
        if name in PARAM_SPACE[get_arm(arm).name]:
            base = out.get(name, defaults[name])
            out[name] = max(1, round(base * factor)) if name.endswith("_steps") else float(base) * factor
    return out


@dataclass(frozen=True)
class ArmRun:
    """What `run_arm` returns: one run of an arm, with its label account and stage logs (the tuner's
    `tuning.interface.ArmResult` is built from it by `tuning.reference_arms`)."""

    accuracy: float  # percent on `split` (sampled avg@k)
    metrics: dict[str, float]
    compute_tokens: int
    label_account: LabelAccount
    stages: tuple[dict, ...] = field(default=())

    def to_dict(self) -> dict:
        return {"accuracy": self.accuracy, "metrics": dict(self.metrics), "compute_tokens": self.compute_tokens,
                "label_account": vars(self.label_account)}


def apply_params(cfg: Config, arm: str, params: dict[str, Any]) -> Config:
    """Map short parameter names onto config fields; a name that does not act on `arm` is an error."""
    space = PARAM_SPACE[get_arm(arm).name]
    over: dict[str, Any] = {}
    for name, value in (params or {}).items():
        if name not in space:
            raise InputError(f"param {name!r} does not apply to arm {arm} (known: {', '.join(sorted(space))})")
        if name == "lr":
            over["grpo.lr"] = value
            if "teacher_lr" not in params and "teacher_lr" in space:
                # grpo.teacher_lr = 0 means "same as lr": pin the teacher's rate so lr stays the student's
                over["grpo.teacher_lr"] = cfg.grpo.lr_for("teacher")
        elif name == "temperature":
            over.update({"grpo.temperature": value, "fkl.temperature": value, "opd.temperature": value})
        elif name == "group_size":
            over["grpo.group_size"] = int(value)
        elif name == "teacher_lr":
            over["grpo.teacher_lr"] = value
        elif name == "grpo_epochs":
            over["grpo.epochs"] = value
        elif name in ("fkl_lr", "opd_lr"):
            over[name.replace("_", ".", 1)] = value
        elif name in ("fkl_steps", "opd_steps"):
            over[name.replace("_", ".", 1)] = int(value)
    return cfg.override(over)


def run_arm(arm: str, *, params: dict, labels: int, seed: int, teacher_labels: int | None = None,
            config: str | Path = DEFAULT_CONFIG, split: str = "val",
            report: Callable[[int, float], None] | None = None, workdir: Path | None = None) -> ArmRun:
    from reference.pipeline import run_pipeline
    base = config if isinstance(config, Config) else load_config(config)
    cfg = apply_params(base.override({"world.labels": labels}), arm, params)
    tmp = None
    if workdir is None:
        tmp = Path(tempfile.mkdtemp(prefix="s2d-arm-"))
    try:
        res = run_pipeline(cfg, arm, seed, workdir=workdir or tmp, teacher_labels=teacher_labels, split=split,
                           report=report, progress=False)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return ArmRun(float(res.metrics["accuracy"]), {k: float(v) for k, v in res.metrics.items()},
                     int(res.compute_tokens), res.label_account, res.stages)
