"""The arm interface: all the tuner knows about an arm.

An arm function is called as

    fn(arm, params=..., budget=..., seed=..., split=..., report=...) -> ArmResult

`arm` is a name from the registry (theory.arms), `params` the hyperparameters of one trial, `budget`
the matched budget (labels as the registry accounts them, the per-trial compute cap in tokens, the time
limit), `seed` the training seed, `split` "val" while tuning and "test" only in the final evaluation,
and `report(step, value)` takes intermediate validation accuracy (percent) so a pruner can act; it may
raise (pruned, timed out) and the arm must let that exception propagate.

A search space is declared per arm: {arm: {param: ParamSpec}}. A parameter that appears in more than
one arm is "shared" and must have the identical range everywhere (checked on construction of the
protocol). Where arms come from: tuning.sources (`load_arm_source`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
import math
from typing import Any, Protocol

from theory.errors import InputError

SPLITS_TUNE = "val"
SPLITS_EVAL = "test"
Report = Callable[[int, float], None]


@dataclass(frozen=True)
class ParamSpec:
    """One hyperparameter's range: float/int (low, high, log) or categorical (choices)."""

    kind: str  # "float" | "int" | "categorical"
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple = ()
    default: Any = None  # the arm's default value; enqueued as slot 0 when the protocol asks for it

    def __post_init__(self) -> None:
        if self.kind not in ("float", "int", "categorical"):
            raise InputError(f"param kind must be float, int or categorical, got {self.kind!r}")
        if self.kind == "categorical":
            if not self.choices:
                raise InputError("categorical param needs at least one choice")
            if self.default is not None and self.default not in self.choices:
                raise InputError(f"default {self.default!r} is not one of the choices {list(self.choices)}")
            return
        for name in ("low", "high"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise InputError(f"param {name} must be a finite number, got {v!r}")
        if not self.low < self.high:
            raise InputError(f"param range needs low < high, got [{self.low}, {self.high}]")
        if self.log and self.low <= 0:
            raise InputError(f"a log-scale param needs low > 0, got {self.low}")
        if self.kind == "int" and (self.low != int(self.low) or self.high != int(self.high)):
            raise InputError(f"an int param needs whole-number bounds, got [{self.low}, {self.high}]")
        if self.default is not None and not self.low <= self.default <= self.high:
            raise InputError(f"default {self.default!r} lies outside [{self.low}, {self.high}]")

    def to_dict(self) -> dict:
        if self.kind == "categorical":
            return {"kind": self.kind, "choices": list(self.choices), "default": self.default}
        return {"kind": self.kind, "low": self.low, "high": self.high, "log": self.log, "default": self.default}

    @classmethod
    def parse(cls, spec: Any, where: str) -> "ParamSpec":
        """Accept a ParamSpec, a dict {kind, low, high, log, choices, default}, a tuple
        (low, high[, "log"]) or a list of categorical choices. `kind` is the one spelling (`to_dict`
        writes it, every space in this repository uses it); `type`, the reference space's spelling before
        issue 15, is still read so an arm module written against it keeps working."""
        try:
            if isinstance(spec, ParamSpec):
                return spec
            if isinstance(spec, Mapping):
                d = dict(spec)
                kind = d.pop("kind", d.pop("type", None))
                if kind is None:
                    kind = "categorical" if "choices" in d else (
                        "int" if all(isinstance(d.get(k), int) and not isinstance(d.get(k), bool)
                                     for k in ("low", "high")) else "float")
                choices = tuple(d.pop("choices", ()))
                out = cls(kind=str(kind), low=d.pop("low", None), high=d.pop("high", None),
                          log=bool(d.pop("log", False)), choices=choices, default=d.pop("default", None))
                d.pop("step", None)
                if d:
                    raise InputError(f"unknown field {sorted(d)[0]!r}")
                return out
            if isinstance(spec, tuple) and len(spec) in (2, 3):
                low, high = spec[0], spec[1]
                log = len(spec) == 3 and spec[2] == "log"
                if len(spec) == 3 and spec[2] not in ("log", "linear"):
                    raise InputError(f"third element must be 'log' or 'linear', got {spec[2]!r}")
                kind = "int" if isinstance(low, int) and isinstance(high, int) and not log else "float"
                return cls(kind=kind, low=low, high=high, log=log)
            if isinstance(spec, list):
                return cls(kind="categorical", choices=tuple(spec))
        except InputError as e:
            raise InputError(f"search space {where}: {e}") from None
        raise InputError(f"search space {where}: cannot read {spec!r} as a range")

    def suggest(self, trial, name: str):
        if self.kind == "float":
            return trial.suggest_float(name, float(self.low), float(self.high), log=self.log)
        if self.kind == "int":
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_categorical(name, list(self.choices))


SearchSpace = Mapping[str, Mapping[str, ParamSpec]]


def parse_space(raw: Mapping[str, Mapping[str, Any]], arms: list[str]) -> dict[str, dict[str, ParamSpec]]:
    """{arm: {param: spec}} for the given arms, each spec parsed; missing arm -> InputError."""
    out: dict[str, dict[str, ParamSpec]] = {}
    for arm in arms:
        if arm not in raw:
            raise InputError(f"search space: arm {arm!r} declares no parameters (known: {', '.join(sorted(raw))})")
        out[arm] = {name: ParamSpec.parse(spec, f"{arm}.{name}") for name, spec in sorted(raw[arm].items())}
    return out


def shared_params(space: Mapping[str, Mapping[str, ParamSpec]]) -> list[str]:
    """Names that appear in more than one arm; raises if any has different ranges across arms."""
    seen: dict[str, tuple[str, ParamSpec]] = {}
    shared: set[str] = set()
    for arm, params in space.items():
        for name, spec in params.items():
            if name in seen:
                other_arm, other = seen[name]
                if other.to_dict() != spec.to_dict():
                    raise InputError(
                        f"shared param {name!r} has different ranges: {other_arm} {other.to_dict()} vs "
                        f"{arm} {spec.to_dict()}; shared hyperparameters must have identical ranges")
                shared.add(name)
            else:
                seen[name] = (arm, spec)
    return sorted(shared)


@dataclass(frozen=True)
class Budget:
    """What every trial of every arm gets: the same label budget and the same caps."""

    labels: int
    teacher_labels: int | None = None
    compute_cap_tokens: int | None = None  # None = uncapped (stated as such in the report)
    time_limit_s: float = 3600.0


@dataclass(frozen=True)
class ArmResult:
    """An arm's answer: accuracy in percent on `split`, tokens processed, anything else in metrics."""

    accuracy: float
    compute_tokens: int
    split: str
    metrics: Mapping[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"accuracy": self.accuracy, "compute_tokens": self.compute_tokens, "split": self.split,
                "metrics": dict(self.metrics)}


class ArmFn(Protocol):
    def __call__(self, arm: str, *, params: dict, budget: Budget, seed: int, split: str,
                 report: Report | None) -> ArmResult: ...


@dataclass(frozen=True)
class ArmSource:
    """A loaded source of arms: the callable and its declared search space."""

    name: str
    fn: ArmFn
    space: Mapping[str, Mapping[str, Any]]
