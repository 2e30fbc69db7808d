"""The matching rules of a study, written into the storage and checked before any comparison.

One `Protocol` is built from the command line, stored as the user attr `s2d_protocol` on the study's
header study and on every arm study, and compared on resume: anything that would make arms unequal
(arm set, trials per arm, label budget, compute cap, search space, sampler, pruner, seeds, time limit,
arm source) refuses with the fields that differ.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
import json
import math

import optuna

from theory.arms import get_arm
from theory.errors import InputError
from tuning.interface import ArmSource, Budget, parse_space, shared_params

PROTOCOL_ATTR = "s2d_protocol"
PROTOCOL_VERSION = 1
EVAL_SEED_OFFSET = 1_000_000  # evaluation seeds live far from tuning seeds: disjoint by construction


def default_startup(trials: int) -> int:
    """Random start-up trials of TPE. Optuna's default (10) would make an 8-trial study pure random
    search; half the budget (at least 2, at most 10) leaves the other half model-guided."""
    return max(2, min(10, math.ceil(trials / 2)))


@dataclass(frozen=True)
class Protocol:
    arms: tuple[str, ...]
    trials_per_arm: int
    labels: int
    teacher_labels: int | None
    compute_cap_tokens: int | None
    time_limit_s: float
    search_space: Mapping[str, Mapping[str, dict]]
    shared_params: tuple[str, ...]
    label_accounts: Mapping[str, dict]
    sampler: Mapping[str, object]
    pruner: Mapping[str, object]
    tuning_seeds: tuple[int, ...]
    eval_seeds: tuple[int, ...]
    enqueue_defaults: bool
    arm_source: str
    arm_options: Mapping[str, object] = field(default_factory=dict)
    objective: Mapping[str, str] = field(default_factory=lambda: {
        "metric": "accuracy", "unit": "percent", "split": "val", "direction": "maximize"})
    optuna_version: str = optuna.__version__
    version: int = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        if len(self.tuning_seeds) != self.trials_per_arm:
            raise InputError("protocol: one tuning seed per trial slot is required")
        overlap = set(self.tuning_seeds) & set(self.eval_seeds)
        if overlap:
            raise InputError(f"protocol: tuning and evaluation seeds overlap ({sorted(overlap)[:3]})")

    @property
    def budget(self) -> Budget:
        return Budget(labels=self.labels, teacher_labels=self.teacher_labels,
                      compute_cap_tokens=self.compute_cap_tokens, time_limit_s=self.time_limit_s)

    def to_dict(self) -> dict:
        # a JSON round trip normalises tuples to lists so stored and rebuilt protocols compare equal
        return json.loads(json.dumps(asdict(self), sort_keys=True))

    @classmethod
    def from_dict(cls, d: Mapping) -> "Protocol":
        d = dict(d)
        if d.get("version") != PROTOCOL_VERSION:
            raise InputError(f"study protocol version {d.get('version')!r} is not {PROTOCOL_VERSION}; "
                             "this study was written by another version of sparse2dense")
        for key in ("arms", "shared_params", "tuning_seeds", "eval_seeds"):
            d[key] = tuple(d[key])
        return cls(**d)


def build_protocol(source: ArmSource, arms: list[str], *, trials: int, labels: int,
                   teacher_labels: int | None = None, compute_cap_tokens: int | None = None,
                   time_limit_s: float = 3600.0, seed: int = 0, eval_seeds: int = 10,
                   n_startup_trials: int | None = None, pruner: str = "none",
                   enqueue_defaults: bool = True, arm_options: Mapping | None = None) -> Protocol:
    if not arms:
        raise InputError("--arms: give at least one arm")
    if len(set(arms)) != len(arms):
        raise InputError(f"--arms: an arm is listed twice ({','.join(arms)})")
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise InputError(f"--trials must be a positive integer, got {trials!r}")
    if isinstance(eval_seeds, bool) or not isinstance(eval_seeds, int) or eval_seeds < 1:
        raise InputError(f"--eval-seeds must be a positive integer, got {eval_seeds!r}")
    if not (isinstance(time_limit_s, (int, float)) and math.isfinite(time_limit_s) and time_limit_s > 0):
        raise InputError(f"--time-limit must be a positive number of seconds, got {time_limit_s!r}")
    if compute_cap_tokens is not None and (isinstance(compute_cap_tokens, bool) or compute_cap_tokens < 1):
        raise InputError(f"--compute-cap must be a positive number of tokens, got {compute_cap_tokens!r}")
    if not 0 <= seed < EVAL_SEED_OFFSET:
        raise InputError(f"--seed must lie in [0, {EVAL_SEED_OFFSET}), got {seed}")
    accounts = {a: vars(get_arm(a).labels(labels, teacher_labels)) for a in arms}
    space = parse_space(source.space, arms)
    shared = shared_params(space)
    startup = default_startup(trials) if n_startup_trials is None else int(n_startup_trials)
    if startup < 0:
        raise InputError(f"--startup-trials must be >= 0, got {startup}")
    if pruner == "median":
        pruner_cfg = {"name": "MedianPruner", "n_startup_trials": startup, "n_warmup_steps": 1}
    elif pruner == "none":
        pruner_cfg = {"name": "NopPruner"}
    else:
        raise InputError(f"--pruner must be 'median' or 'none', got {pruner!r}")
    return Protocol(
        arms=tuple(arms), trials_per_arm=trials, labels=int(labels), teacher_labels=teacher_labels,
        compute_cap_tokens=compute_cap_tokens, time_limit_s=float(time_limit_s),
        search_space={a: {n: s.to_dict() for n, s in ps.items()} for a, ps in space.items()},
        shared_params=tuple(shared), label_accounts=accounts,
        sampler={"name": "TPESampler", "seed": seed, "n_startup_trials": startup, "multivariate": True,
                 "constant_liar": True, "per_trial_seed": "seed * 1000 + slot"},
        pruner=pruner_cfg,
        tuning_seeds=tuple(seed + k for k in range(trials)),
        eval_seeds=tuple(EVAL_SEED_OFFSET + seed + j for j in range(eval_seeds)),
        enqueue_defaults=bool(enqueue_defaults), arm_source=source.name, arm_options=dict(arm_options or {}),
    )


def describe_differences(stored: Mapping, given: Mapping) -> list[str]:
    """Human-readable list of what differs between two protocol dicts (empty when equal)."""
    out = []
    for key in sorted(set(stored) | set(given)):
        a, b = stored.get(key), given.get(key)
        if a == b:
            continue
        if key == "search_space" and isinstance(a, Mapping) and isinstance(b, Mapping):
            for arm in sorted(set(a) | set(b)):
                pa, pb = a.get(arm, {}), b.get(arm, {})
                for p in sorted(set(pa) | set(pb)):
                    if pa.get(p) != pb.get(p):
                        out.append(f"search space {arm}.{p}: stored {pa.get(p)}, given {pb.get(p)}")
            continue
        if key == "arms":
            out.append(f"arm set: stored {','.join(a or [])}, given {','.join(b or [])}")
            continue
        out.append(f"{key}: stored {a!r}, given {b!r}")
    return out
