"""A cheap, seeded stand-in for real arms, so the harness is tested without torch training.

Every registry arm gets the shared parameters (lr, group_size, temperature) plus one learning rate per
stage it runs (teacher_lr, fkl_lr, opd_lr), as the reference pipeline declares them. Its validation
accuracy is a smooth bowl in the normalised parameters around an arm-specific optimum, plus seed noise;
it "learns" over `steps` reports that rise toward that value. Deterministic given (arm, params, seed,
split). Compute is accounted with the registry's ComputeModel for the trial's group size.

Test hooks (all optional): `calls_log` appends one JSON line per call (arm, split, seed, problem ids
touched) so a test can assert no tuning trial read a test problem; `faults` maps a seed to "raise",
"nan" or "slow" (a run that keeps reporting until the time limit stops it); `delay_s` sleeps per step.
"""

from __future__ import annotations

from collections.abc import Mapping
import hashlib
import json
import math
import os
import time

import numpy as np

from theory.arms import ARMS, ComputeModel, Stage, get_arm
from theory.errors import InputError
from tuning.interface import ArmResult, Budget, Report

SHARED_SPACE = {
    "lr": {"kind": "float", "low": 1e-4, "high": 1e-2, "log": True, "default": 1e-3},
    "group_size": {"kind": "int", "low": 2, "high": 16, "default": 8},
    "temperature": {"kind": "float", "low": 0.5, "high": 1.5, "default": 1.0},
}
# the stand-in's own search ranges, keyed by the stages of theory.arms.STAGES that have one
STAGE_PARAMS = {
    Stage.TEACHER_GRPO: ("teacher_lr", {"kind": "float", "low": 1e-5, "high": 1e-3, "log": True, "default": 3e-4}),
    Stage.FKL_WARMUP: ("fkl_lr", {"kind": "float", "low": 1e-4, "high": 1e-2, "log": True, "default": 1e-3}),
    Stage.OPD: ("opd_lr", {"kind": "float", "low": 1e-4, "high": 1e-2, "log": True, "default": 1e-3}),
}
# Peak validation accuracy (percent) of each arm at its optimum; a stand-in, not a claim about arms.
PEAK = {"direct_grpo": 62.0, "raw_teacher_bridge": 48.0, "rl_teacher_bridge": 66.0, "no_fkl": 63.0,
        "no_opd": 58.0, "rl_teacher_bridge_stage3": 67.0, "replay_control": 65.0}
N_PROBLEMS = {"val": 200, "test": 500}
STRETCH = "_compute_stretch"  # the compute-matched view's stage-length multiplier (not a searched param)


def _unit(spec: dict, value: float) -> float:
    lo, hi = spec["low"], spec["high"]
    if spec.get("log"):
        return (math.log(value) - math.log(lo)) / (math.log(hi) - math.log(lo))
    return (value - lo) / (hi - lo)


def _seed_of(*parts) -> int:
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).digest()
    return int.from_bytes(digest[:8], "little")


class SyntheticArms:
    def __init__(self, steps: int = 5, delay_s: float = 0.0, calls_log: str | None = None,
                 faults: Mapping[str, str] | None = None, noise: float = 2.0):
        if steps < 1:
            raise InputError(f"synthetic steps must be >= 1, got {steps}")
        self.steps = int(steps)
        self.delay_s = float(delay_s)
        self.calls_log = calls_log
        self.faults = {str(k): str(v) for k, v in (faults or {}).items()}
        self.noise = float(noise)

    def scale_compute(self, arm: str, params: dict, factor: float) -> dict:
        """The compute-matched view's stretch: the stand-in's tokens grow by `factor` (accuracy unchanged)."""
        return dict(params, **{STRETCH: float(params.get(STRETCH, 1.0)) * factor})

    def default_labels(self) -> int:
        return 256

    def param_space(self) -> dict[str, dict[str, dict]]:
        out = {}
        for name, arm in ARMS.items():
            space = dict(SHARED_SPACE)
            for stage in arm.stages:
                if stage in STAGE_PARAMS:
                    pname, spec = STAGE_PARAMS[stage]
                    space[pname] = spec
            out[name] = space
        return out

    def _log(self, record: dict) -> None:
        if self.calls_log:
            # O_APPEND lines from several processes do not interleave for records this small
            with open(self.calls_log, "a") as f:
                f.write(json.dumps(record) + "\n")

    def __call__(self, arm: str, *, params: dict, budget: Budget, seed: int, split: str,
                 report: Report | None = None) -> ArmResult:
        reg = get_arm(arm)
        if split not in N_PROBLEMS:
            raise InputError(f"split must be 'val' or 'test', got {split!r}")
        space = self.param_space()[arm]
        params = dict(params)
        stretch = float(params.pop(STRETCH, 1.0))  # set only by scale_compute (the compute-matched view)
        unknown = sorted(set(params) - set(space))
        if unknown:
            raise InputError(f"arm {arm}: unknown param {unknown[0]!r}")
        problems = [f"{split}-{i}" for i in range(N_PROBLEMS[split])]
        self._log({"arm": arm, "split": split, "seed": seed, "pid": os.getpid(),
                   "first_problem": problems[0], "n_problems": len(problems)})
        fault = self.faults.get(str(seed))
        if fault == "raise":
            raise RuntimeError(f"synthetic fault for seed {seed}")

        # a bowl around an arm-specific optimum in the unit cube of the arm's parameters
        opt_rng = np.random.default_rng(_seed_of("optimum", arm))
        loss = 0.0
        for name in sorted(space):
            spec = space[name]
            value = params.get(name, spec["default"])
            loss += (_unit(spec, value) - opt_rng.uniform(0.2, 0.8)) ** 2
        rng = np.random.default_rng(_seed_of(arm, seed, split))
        final = PEAK.get(arm, 55.0) - 40.0 * loss + self.noise * rng.standard_normal()
        final = float(np.clip(final, 0.0, 100.0))
        tau = 1.0 + 2.0 * _unit(SHARED_SPACE["lr"], params.get("lr", 1e-3))  # low lr learns slower
        step = 0
        while True:
            value = final * (1.0 - math.exp(-(step + 1) / (tau * self.steps / 3)))
            if report is not None:
                report(step, value)
            if self.delay_s:
                time.sleep(self.delay_s)
            step += 1
            if step >= self.steps and fault != "slow":
                break
            if fault == "slow":
                time.sleep(0.05)
        if fault == "nan":
            final = float("nan")
        cost = ComputeModel(group_size=int(params.get("group_size", 8)), prompt_tokens=16,
                            response_tokens=24, bridge_prompts=512)
        tokens = stretch * reg.total_compute_tokens(budget.labels, cost, budget.teacher_labels)
        return ArmResult(accuracy=final, compute_tokens=int(tokens), split=split,
                         metrics={"steps": float(step)})
