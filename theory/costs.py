"""GPU-hours per arm: each stage's token count (`Arm.compute_tokens`) over the GPU throughput of its work.

The unit is the one `theory.arms.ComputeModel` counts: one token through one model pass (a rollout
pass, a teacher-scoring pass or a training pass each count the sequence's prompt + response tokens
once). A stage's work has two phases, timed separately because their speeds differ (the 1.7B samples
at a third of the rate it trains):

    rollout  sampling the sequences (the policy's for GRPO and OPD, the teacher's for the FKL warmup)
    step     everything after: the training pass, plus the frozen teacher's scoring pass (FKL, OPD)

Per counted token of a stage, `phase_passes` gives the passes of each phase (read off the
`ComputeModel` formulas; a test holds the two together). With per-phase rates r_p (compute tokens/s
on one GPU, from `docs/results/gpu_costs.csv` or the built-in defaults) the stage's rate is

    tokens_per_s(stage) = 1 / (sum_p passes_p / r_p)

and on G GPUs the aggregate rate is G * eff(G) * tokens_per_s(stage), eff the parallel efficiency
(`PARALLEL_EFFICIENCY`, assumed). GPU-hours = sum over stages of tokens / (eff(G) * tokens_per_s) / 3600,
wall hours = GPU-hours / G. Pure and torch-free; docs/scale.md "Scale-out plan" documents the table.

Table columns (`COLUMNS`): stage, phase, model (the one sampled or trained; 'A + B' for a step that also
runs frozen B), backend (whose loop: 'reference' = the project's own), engine (the sampler for a rollout
row, e.g. hf_static_cache or vllm; the launcher/sharding for a step row, e.g. single, ddp, fsdp2), gpus
(the row's tokens_per_s is for that many GPUs together), tokens_per_s (compute tokens, the unit above),
peak_gib (empty when not recorded), tag (measured | assumed) and source (the run, or why assumed).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, replace
from pathlib import Path

from theory.arms import STAGES, Arm, ComputeModel, Stage
from theory.errors import InputError

COLUMNS = ("stage", "phase", "model", "backend", "engine", "gpus", "tokens_per_s", "peak_gib", "tag", "source")
PHASES = ("rollout", "step")
TAGS = ("measured", "assumed")
DEFAULT_TABLE = Path(__file__).resolve().parents[1] / "docs" / "results" / "gpu_costs.csv"
DEFAULT_GPUS = 8  # one node, as the launch commands in docs/scale.md

# Data-parallel efficiency: aggregate throughput on G GPUs / (G x one GPU's). Assumed, not measured (no
# multi-GPU machine has run the stages): within one NVLink node the gradient all-reduce of a 1.7B/8B
# model overlaps most of a 8x1024-token backward; across nodes it crosses the slower interconnect.
PARALLEL_EFFICIENCY = ((1, 1.0), (8, 0.9), (math.inf, 0.8))  # (up to this many GPUs, efficiency)
PARALLEL_EFFICIENCY_NOTE = ("assumed: 1.0 on 1 GPU, 0.9 on 2-8 GPUs (one node), 0.8 beyond (across nodes); "
                            "no multi-GPU run has measured it")


def parallel_efficiency(gpus: int) -> float:
    gpus = check_gpus(gpus)
    return next(eff for upto, eff in PARALLEL_EFFICIENCY if gpus <= upto)


def check_gpus(gpus, what: str = "gpus") -> int:
    ok = (not isinstance(gpus, bool) and isinstance(gpus, (int, float)) and math.isfinite(gpus)
          and gpus == int(gpus) and gpus >= 1)
    if not ok:
        raise InputError(f"{what} must be a positive whole number, got {gpus!r}")
    return int(gpus)


def phase_passes(stage: Stage, cost: ComputeModel) -> dict[str, float]:
    """Model passes of each phase per token that `Arm.compute_tokens` counts for `stage`: the passes of
    the work it runs (`ComputeModel.passes` of its update rule) over the passes its pricing counts.

    GRPO: G*L*(1 + e) tokens per label = one rollout pass + e training passes.
    FKL:  S*L*(1 + 2e) per bridge prompt = one teacher rollout pass + e x (scoring + training).
    OPD:  S*L*3e = e x (student rollout + scoring + training).
    Replay OPD is counted as the GRPO it replaces (G*L*(1 + e_grpo) per held-back label) but runs OPD on
    as many student rollouts: 1 rollout + 2 step passes per sequence token, so its passes sum to
    3 / (1 + e_grpo) per counted token, not 1.
    """
    spec = STAGES[Stage(stage)]
    rollout, step = cost.passes(spec.update)
    counted = sum(cost.passes(spec.tokens))
    return {"rollout": rollout / counted, "step": step / counted}


@dataclass(frozen=True)
class CostRow:
    """One phase of one stage: compute tokens/s on `gpus` GPUs together (the unit of `ComputeModel`)."""

    stage: Stage
    phase: str
    model: str
    backend: str
    engine: str
    gpus: int
    tokens_per_s: float
    peak_gib: float | None
    tag: str
    source: str

    def to_dict(self) -> dict:
        return {"stage": self.stage.value, "phase": self.phase, "model": self.model, "backend": self.backend,
                "engine": self.engine, "gpus": self.gpus, "tokens_per_s": self.tokens_per_s,
                "peak_gib": self.peak_gib, "tag": self.tag, "source": self.source}


def _parse_row(raw: dict, where: str) -> CostRow:
    missing = [c for c in COLUMNS if raw.get(c) is None]
    if missing:
        raise InputError(f"{where}: missing column {missing[0]!r} (columns: {', '.join(COLUMNS)})")
    v = {c: raw[c].strip() for c in COLUMNS}
    try:
        stage = Stage(v["stage"])
    except ValueError:
        known = ", ".join(s.value for s in Stage)
        raise InputError(f"{where}: unknown stage {v['stage']!r}; stages: {known}") from None
    if v["phase"] not in PHASES:
        raise InputError(f"{where}: phase must be one of {', '.join(PHASES)}, got {v['phase']!r}")
    if v["tag"] not in TAGS:
        raise InputError(f"{where}: tag must be one of {', '.join(TAGS)}, got {v['tag']!r}")
    def number(col: str, unparsable: str, bad: str | None = None) -> float:
        """Column `col` as a float; `unparsable` / `bad` (not finite and positive) name what it must be."""
        try:
            x = float(v[col])
        except ValueError:
            raise InputError(f"{where}: {col} must be {unparsable}, got {v[col]!r}") from None
        if bad is not None and not (math.isfinite(x) and x > 0):
            raise InputError(f"{where}: {col} must be {bad}, got {v[col]!r}")
        return x

    gpus = check_gpus(number("gpus", "a positive whole number"), f"{where}: gpus")
    rate = number("tokens_per_s", "a number", "a positive finite number")
    peak = number("peak_gib", "a number or empty", "positive") if v["peak_gib"] else None
    if not v["source"]:
        raise InputError(f"{where}: source must say where the figure comes from (or why it is assumed)")
    return CostRow(stage, v["phase"], v["model"], v["backend"], v["engine"], gpus, rate, peak, v["tag"], v["source"])


@dataclass(frozen=True)
class CostTable:
    """Per-phase throughputs, one row per (stage, phase, gpus) after the backend/engine choice."""

    rows: tuple[CostRow, ...]
    origin: str  # the file read, or "built-in defaults"

    def __post_init__(self) -> None:
        seen = set()
        for r in self.rows:
            key = (r.stage, r.phase, r.gpus)
            if key in seen:
                raise InputError(f"{self.origin}: two rows for stage {r.stage.value}, phase {r.phase} on {r.gpus} "
                                 "GPU(s); keep one (CostTable.from_csv(path, backend=..., engine=...) filters)")
            seen.add(key)

    @classmethod
    def from_csv(cls, path: str | Path, *, backend: str | None = None, engine: str | None = None) -> CostTable:
        p = Path(path)
        if not p.is_file():
            raise InputError(f"cost table {str(p)!r} not found")
        with p.open(newline="", encoding="utf-8") as f:
            lines = [ln for ln in f if ln.strip() and not ln.lstrip().startswith("#")]
        reader = csv.DictReader(lines)
        if reader.fieldnames is None:
            raise InputError(f"{p}: empty cost table (columns: {', '.join(COLUMNS)})")
        unknown = [c for c in reader.fieldnames if c not in COLUMNS]
        if unknown:
            raise InputError(f"{p}: unknown column {unknown[0]!r} (columns: {', '.join(COLUMNS)})")
        rows = []
        for i, raw in enumerate(reader, start=2):
            if None in raw:
                raise InputError(f"{p} row {i}: more fields than the {len(reader.fieldnames)} columns")
            row = _parse_row(raw, f"{p} row {i}")
            if (backend is None or row.backend == backend) and (engine is None or row.engine == engine):
                rows.append(row)
        if not rows:
            which = f" for backend={backend!r}, engine={engine!r}" if backend or engine else ""
            raise InputError(f"{p}: no rows{which}")
        return cls(tuple(rows), str(p))

    @classmethod
    def default(cls) -> CostTable:
        """The committed table's rows for the project's own loop (backend "reference") when the table is
        there (a source checkout), else the built-in defaults."""
        if not DEFAULT_TABLE.is_file():
            return builtin_defaults()
        return replace(cls.from_csv(DEFAULT_TABLE, backend="reference"), origin="docs/results/gpu_costs.csv")

    def models(self) -> tuple[str, ...]:
        """Every model the rates were taken on ('Qwen3-1.7B + Qwen3-8B' names two)."""
        return tuple(sorted({m.strip() for r in self.rows for m in r.model.split("+")}))

    def row(self, stage: Stage, phase: str, gpus: int) -> CostRow:
        """The row for `gpus` GPUs or, failing that, the largest GPU count below it (scaled by `rate`)."""
        stage = Stage(stage)
        cands = [r for r in self.rows if r.stage is stage and r.phase == phase and r.gpus <= gpus]
        if not cands:
            raise InputError(f"{self.origin}: no {phase} row for stage {stage.value} on {gpus} or fewer GPUs")
        return max(cands, key=lambda r: r.gpus)

    def rate(self, stage: Stage, phase: str, gpus: int) -> float:
        """Aggregate compute tokens/s of one phase on `gpus` GPUs, scaled from the nearest row at or below."""
        gpus = check_gpus(gpus)
        r = self.row(stage, phase, gpus)
        return r.tokens_per_s * (gpus / r.gpus) * parallel_efficiency(gpus) / parallel_efficiency(r.gpus)

    def tokens_per_s(self, stage: Stage, cost: ComputeModel, gpus: int = 1) -> float:
        """A stage's aggregate rate in compute tokens/s on `gpus` GPUs: 1 / (sum_p passes_p / r_p)."""
        return 1.0 / sum(k / self.rate(stage, ph, gpus) for ph, k in phase_passes(stage, cost).items())

    def tags(self, stage: Stage, gpus: int) -> dict[str, str]:
        """measured | assumed per phase, and for the scaling to `gpus` (measured only when a row has them)."""
        out = {ph: self.row(stage, ph, gpus).tag for ph in PHASES}
        out["scaling"] = "measured" if all(self.row(stage, ph, gpus).gpus == gpus for ph in PHASES) else "assumed"
        return out


@dataclass(frozen=True)
class ArmCost:
    arm: str
    gpus: int
    stage_tokens: dict  # stage -> compute tokens (Arm.compute_tokens)
    stage_gpu_hours: dict  # stage -> GPU-hours on `gpus` GPUs
    tags: dict  # stage -> {"rollout": tag, "step": tag, "scaling": tag}

    @property
    def gpu_hours(self) -> float:
        return float(sum(self.stage_gpu_hours.values()))

    @property
    def wall_hours(self) -> float:
        return self.gpu_hours / self.gpus

    @property
    def measured(self) -> bool:
        return all(t == "measured" for tags in self.tags.values() for t in tags.values())

    def to_dict(self) -> dict:
        return {"arm": self.arm, "gpus": self.gpus, "gpu_hours": self.gpu_hours, "wall_hours": self.wall_hours,
                "stage_tokens": dict(self.stage_tokens), "stage_gpu_hours": dict(self.stage_gpu_hours),
                "tags": {k: dict(v) for k, v in self.tags.items()}}


def arm_cost(arm: Arm, n: int, cost: ComputeModel, table: CostTable | None = None, *, gpus: int = DEFAULT_GPUS,
             teacher_labels: int | None = None) -> ArmCost:
    """GPU-hours of `arm` with a budget of n labels on `gpus` GPUs: per stage, tokens / rate."""
    table = CostTable.default() if table is None else table
    gpus = check_gpus(gpus)
    tokens = arm.compute_tokens(n, cost, teacher_labels)
    hours = {s: gpus * t / table.tokens_per_s(Stage(s), cost, gpus) / 3600.0 for s, t in tokens.items()}
    tags = {s: table.tags(Stage(s), gpus) for s in tokens}
    return ArmCost(arm.name, gpus, tokens, hours, tags)


# Built-in defaults: the committed table's figures (docs/results/gpu_costs.csv; a test keeps them equal),
# all tagged assumed here since nothing was read: used where the table is absent (an installed wheel).
_DEFAULT_RATES = {  # (stage, phase) -> (model, tokens/s on one GPU)
    ("teacher_grpo", "rollout"): ("Qwen3-8B", 7430.0),
    ("teacher_grpo", "step"): ("Qwen3-8B", 6989.0),
    ("fkl_warmup", "rollout"): ("Qwen3-8B", 7430.0),
    ("fkl_warmup", "step"): ("Qwen3-1.7B + Qwen3-8B", 25202.0),
    ("opd", "rollout"): ("Qwen3-1.7B", 9553.0),
    ("opd", "step"): ("Qwen3-1.7B + Qwen3-8B", 24932.0),
    ("student_grpo", "rollout"): ("Qwen3-1.7B", 9553.0),
    ("student_grpo", "step"): ("Qwen3-1.7B", 28543.0),
    ("replay_opd", "rollout"): ("Qwen3-1.7B", 9553.0),
    ("replay_opd", "step"): ("Qwen3-1.7B + Qwen3-8B", 24932.0),
}


def builtin_defaults() -> CostTable:
    return CostTable(tuple(
        CostRow(Stage(s), ph, model, "reference", "hf_static_cache" if ph == "rollout" else "single", 1, rate, None,
                "assumed", "built-in default (one H200, docs/scale.md); docs/results/gpu_costs.csv not found")
        for (s, ph), (model, rate) in _DEFAULT_RATES.items()), "built-in defaults")
