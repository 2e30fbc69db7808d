"""The tuner's view of the reference pipeline: `run_arm` and `PARAM_SPACE`.

`params` override hyperparameters by short names. Shared names mean the same thing in every arm:
  lr           learning rate of every student stage (student GRPO, FKL warmup, OPD, replay)
  group_size   GRPO samples per prompt
  temperature  sampling temperature of every training rollout (evaluation keeps [eval].temperature)
Stage-specific names: teacher_lr (teacher GRPO), fkl_lr, opd_lr (override lr for that stage),
grpo_epochs (passes over the labels, both GRPO stages), fkl_steps, opd_steps.
`PARAM_SPACE[arm]` lists the names that act on that arm with their ranges; a shared name has the
same range in every arm where it applies (tests check it). `split="val"` never touches test problems.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
import shutil
import tempfile
from typing import Any, Callable

from reference.config import Config, load_config
from theory.arms import ARMS, LabelAccount, Stage, get_arm
from theory.errors import InputError

DEFAULT_CONFIG = "toy_short"  # the tuning schedule (one arm ~20-40 s on one core)

SHARED: dict[str, dict[str, Any]] = {
    "lr": {"type": "float", "low": 1e-4, "high": 3e-3, "log": True},
    "group_size": {"type": "categorical", "choices": [4, 8, 16]},
    "temperature": {"type": "float", "low": 0.7, "high": 1.2, "log": False},
}
STAGE_PARAMS: dict[Stage, dict[str, dict[str, Any]]] = {
    Stage.TEACHER_GRPO: {"teacher_lr": {"type": "float", "low": 3e-5, "high": 1e-3, "log": True},
                         "grpo_epochs": {"type": "float", "low": 1.0, "high": 6.0, "log": False}},
    Stage.STUDENT_GRPO: {"grpo_epochs": {"type": "float", "low": 1.0, "high": 6.0, "log": False}},
    Stage.FKL_WARMUP: {"fkl_lr": {"type": "float", "low": 1e-4, "high": 3e-3, "log": True},
                       "fkl_steps": {"type": "int", "low": 10, "high": 120, "log": False}},
    Stage.OPD: {"opd_lr": {"type": "float", "low": 1e-4, "high": 3e-3, "log": True},
                "opd_steps": {"type": "int", "low": 10, "high": 120, "log": False}},
    Stage.REPLAY_OPD: {"opd_lr": {"type": "float", "low": 1e-4, "high": 3e-3, "log": True}},
}


def _space(arm) -> dict[str, dict[str, Any]]:
    out = {"lr": SHARED["lr"], "temperature": SHARED["temperature"]}
    if Stage.TEACHER_GRPO in arm.stages or Stage.STUDENT_GRPO in arm.stages:
        out["group_size"] = SHARED["group_size"]
    for stage in arm.stages:
        out.update(STAGE_PARAMS[stage])
    return out


PARAM_SPACE: dict[str, dict[str, dict[str, Any]]] = {name: _space(arm) for name, arm in ARMS.items()}


@dataclass(frozen=True)
class ArmResult:
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
            over.update({"grpo.lr": value, "fkl.lr": value, "opd.lr": value})
        elif name == "temperature":
            over.update({"grpo.temperature": value, "fkl.temperature": value, "opd.temperature": value})
        elif name == "group_size":
            over["grpo.group_size"] = int(value)
        elif name == "teacher_lr":
            over["grpo.teacher_lr"] = value
        elif name == "grpo_epochs":
            over["grpo.epochs"] = value
        elif name in ("fkl_lr", "opd_lr"):
            pass  # applied after lr so the stage-specific value wins
        elif name in ("fkl_steps", "opd_steps"):
            over[name.replace("_", ".", 1)] = int(value)
    for name in ("fkl_lr", "opd_lr"):
        if name in (params or {}):
            over[f"{name.split('_')[0]}.lr"] = params[name]
    return cfg.override(over)


def run_arm(arm: str, *, params: dict, labels: int, seed: int, teacher_labels: int | None = None,
            config: str | Path = DEFAULT_CONFIG, split: str = "val",
            report: Callable[[int, float], None] | None = None, workdir: Path | None = None) -> ArmResult:
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
    return ArmResult(float(res.metrics["accuracy"]), {k: float(v) for k, v in res.metrics.items()},
                     int(res.compute_tokens), res.label_account, res.stages)
