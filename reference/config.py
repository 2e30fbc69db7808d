"""One frozen config type for both scales: the toy world on a CPU and Qwen3 on GPUs.

A TOML file has the sections [world], [student], [teacher], [grpo], [fkl], [opd], [eval], [engine] and
[plateau] (the plateau protocol, off unless enabled).
A model section is either a tiny Qwen3 spec (hidden, layers, heads, kv_heads, head_dim, intermediate)
or `path = "<hub id or local dir>"`. Unknown sections or fields raise `InputError` naming them.

Derived values (step counts, label splits) are computed where they are used, never written back.
`Config.hash()` fingerprints the whole config; `Config.section_hash(names)` fingerprints the
sections one stage depends on, so a checkpoint is reused only by a run that would recompute it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
import hashlib
import json
import math
from pathlib import Path
import tomllib
import typing
from typing import Any

from theory.errors import InputError

REPO_ROOT = Path(__file__).resolve().parent.parent
# configs/ in a checkout; in an installed wheel the copy shipped as package data (reference/configs is
# a link to ../configs in the repository, so the two are one set of files)
CONFIG_DIR = REPO_ROOT / "configs" if (REPO_ROOT / "configs").is_dir() else Path(__file__).resolve().parent / "configs"


def _check_pos(section: str, obj: Any, names: tuple[str, ...], *, allow_zero: bool = False) -> None:
    for name in names:
        v = getattr(obj, name)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise InputError(f"{section}.{name} must be a number, got {v!r}")
        if v < 0 or (v == 0 and not allow_zero):
            raise InputError(f"{section}.{name} must be {'>= 0' if allow_zero else '> 0'}, got {v!r}")


SCHEDULES = ("constant", "cosine", "linear")


def _check_schedule(section: str, obj: Any) -> None:
    _check_pos(section, obj, ("warmup_steps",), allow_zero=True)
    if obj.schedule not in SCHEDULES:
        raise InputError(f"{section}.schedule must be one of {', '.join(SCHEDULES)}, got {obj.schedule!r}")
    w = obj.warmup
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0.0 <= w < 1.0:
        raise InputError(f"{section}.warmup must be a fraction of the stage's steps in [0, 1), got {w!r}")


@dataclass(frozen=True)
class WorldConfig:
    """The task and its disjoint splits.

    kind = "toy": integer arithmetic generated from `seed` (graded difficulty by number of terms and
    operand size). kind = "dataset": problems from files / hub ids read by reference.data (SCALE).
    `labels` is the budget N (labeled train); `val` is reported beside it and not counted in N.
    """

    name: str = "toy-arith"
    kind: str = "toy"
    seed: int = 0  # the world's own seed: the problem splits do not change with the run seed
    labels: int = 256
    val: int = 200
    unlabeled: int = 2048
    test: int = 500
    min_terms: int = 2
    max_terms: int = 4
    max_operand: int = 20
    ops: str = "+-"
    # problem families (world family of issue 11): comma-separated operator sets, e.g. "+,-,+-"; each
    # problem draws a family uniformly, then its operators from that set ("" -> one family, `ops`)
    families: str = ""
    # dataset kind (Qwen3 scale): read by reference.data
    train_path: str = ""
    test_path: str = ""
    unlabeled_path: str = ""
    val_fraction: float = 0.0
    max_prompt_tokens: int = 256

    def __post_init__(self) -> None:
        if self.kind not in ("toy", "dataset"):
            raise InputError(f"world.kind must be 'toy' or 'dataset', got {self.kind!r}")
        _check_pos("world", self, ("labels", "val", "unlabeled", "test", "max_prompt_tokens"), allow_zero=True)
        _check_pos("world", self, ("val_fraction",), allow_zero=True)
        if self.kind == "toy":
            _check_pos("world", self, ("min_terms", "max_terms", "max_operand"))
            if self.min_terms < 2 or self.max_terms < self.min_terms:
                raise InputError(f"world.min_terms/max_terms must satisfy 2 <= min <= max, "
                                 f"got {self.min_terms}/{self.max_terms}")
            if not self.ops or set(self.ops) - set("+-*"):
                raise InputError(f"world.ops must be a non-empty subset of '+-*', got {self.ops!r}")
            for fam in self.family_ops:
                if not fam or set(fam) - set("+-*"):
                    raise InputError(f"world.families must be comma-separated non-empty subsets of '+-*', "
                                     f"got {self.families!r}")
        elif not self.train_path:
            raise InputError("world.train_path is required when world.kind = 'dataset'")

    @property
    def family_ops(self) -> tuple[str, ...]:
        """The operator set of each problem family; () when the world has one family (`ops`)."""
        return tuple(f.strip() for f in self.families.split(",")) if self.families.strip() else ()


@dataclass(frozen=True)
class ModelConfig:
    """A model: a tiny Qwen3 spec (toy world, tests) or `path` (hub id or local directory).

    For a spec, `asset` names a committed base checkpoint under reference/assets/ (pre-trained by
    scripts/pretrain_base.py with the `pretrain_*` fields); empty -> random init (tests).
    `style` is how the base model's pre-training text writes a solution: "direct" (answer only),
    "steps" (running partial sums first) or "mix" (steps with probability `steps_share`: one share, or
    one per world family, comma-separated); `protocol_break` is the fraction of pre-training answers in
    a non-verifiable format ("ANS 16" instead of "\\boxed{16}").
    """

    path: str = ""
    asset: str = ""
    hidden: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    head_dim: int = 16
    intermediate: int = 256
    max_position: int = 128
    tie_embeddings: bool = True
    dtype: str = "float32"
    style: str = "direct"
    protocol_break: float = 0.0
    steps_share: str = ""  # style = "mix" only
    step_drills: float = 0.0  # share of pre-training documents that are bare running-sum chains (no prompt)
    pretrain_steps: int = 2000
    pretrain_lr: float = 3e-3
    pretrain_batch: int = 64
    init_seed: int = 0

    def __post_init__(self) -> None:
        _check_pos("model", self, ("hidden", "layers", "heads", "kv_heads", "head_dim", "intermediate",
                                   "max_position", "pretrain_steps", "pretrain_lr", "pretrain_batch"))
        if self.heads % self.kv_heads:
            raise InputError(f"model.heads={self.heads} must be a multiple of kv_heads={self.kv_heads}")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise InputError(f"model.dtype must be float32, bfloat16 or float16, got {self.dtype!r}")
        if self.style not in ("direct", "steps", "mix"):
            raise InputError(f"model.style must be 'direct', 'steps' or 'mix', got {self.style!r}")
        if (self.style == "mix") != bool(self.steps_share.strip()):
            raise InputError("model.steps_share is required with style = 'mix' and only then")
        if self.style == "mix":
            try:
                shares = self.shares
            except ValueError:
                raise InputError(f"model.steps_share must be comma-separated numbers, got {self.steps_share!r}") from None
            if not all(0.0 <= x <= 1.0 for x in shares):
                raise InputError(f"model.steps_share values must lie in [0, 1], got {self.steps_share!r}")
        if not 0.0 <= self.protocol_break <= 1.0:
            raise InputError(f"model.protocol_break must lie in [0, 1], got {self.protocol_break!r}")
        if not 0.0 <= self.step_drills < 1.0:
            raise InputError(f"model.step_drills must lie in [0, 1), got {self.step_drills!r}")
        if self.path and self.asset:
            raise InputError("model: give either path or asset, not both")

    @property
    def shares(self) -> tuple[float, ...]:
        """Per-family probability of a step-by-step pre-training solution (style = "mix")."""
        return tuple(float(x) for x in self.steps_share.split(","))

    @property
    def is_tiny(self) -> bool:
        return not self.path


@dataclass(frozen=True)
class GRPOConfig:
    """GRPO, teacher and student alike (one function; `teacher_lr` is the only teacher-specific value)."""

    lr: float = 1e-3
    teacher_lr: float = 0.0  # 0 -> same as lr
    group_size: int = 8
    prompts_per_step: int = 16
    epochs: float = 4.0  # passes over the labeled problems; steps = ceil(epochs * labels / prompts_per_step)
    max_steps: int = 0  # > 0: the step cap is min(that, the epochs' steps) (the plateau protocol's cap)
    # optimizer updates per rollout batch (verl's train_batch_size / ppo_mini_batch_size; TRL's
    # steps_per_generation): prompt p of a batch goes to mini-batch p mod mini_batches with its whole group,
    # the old log-probs are the policy's at rollout time, so from the second update on the ratio moves and
    # the clip acts. One pass over the batch either way (label passes and train passes are unchanged)
    mini_batches: int = 1
    clip_low: float = 0.2
    clip_high: float = 0.28
    loss: str = "token_mean"  # DAPO token-mean; "seq_mean" = GRPO's per-sequence mean
    kl_coef: float = 0.0
    temperature: float = 1.0
    max_new_tokens: int = 48
    grad_clip: float = 1.0
    warmup: float = 0.0  # linear learning-rate warmup over this fraction of the stage's steps
    # > 0: warm up over this many steps instead (a cap-free schedule: under the plateau protocol with a
    # constant schedule, a run's first t steps do not depend on its cap)
    warmup_steps: int = 0
    schedule: str = "constant"  # after warmup: "constant", "cosine" (to 0 at the last step) or "linear"

    def __post_init__(self) -> None:
        _check_schedule("grpo", self)
        _check_pos("grpo", self, ("lr", "group_size", "prompts_per_step", "epochs", "temperature",
                                  "max_new_tokens", "grad_clip"))
        _check_pos("grpo", self, ("teacher_lr", "clip_low", "clip_high", "kl_coef", "max_steps"), allow_zero=True)
        _check_pos("grpo", self, ("mini_batches",))
        if self.prompts_per_step % self.mini_batches:
            raise InputError(f"grpo.mini_batches = {self.mini_batches} must divide grpo.prompts_per_step = "
                             f"{self.prompts_per_step} (each update takes whole prompt groups)")
        if self.group_size < 2:
            raise InputError(f"grpo.group_size must be >= 2 (advantages are group-relative), got {self.group_size}")
        if self.loss not in ("token_mean", "seq_mean"):
            raise InputError(f"grpo.loss must be 'token_mean' or 'seq_mean', got {self.loss!r}")

    def lr_for(self, role: str) -> float:
        return self.teacher_lr if (role == "teacher" and self.teacher_lr > 0) else self.lr


@dataclass(frozen=True)
class FKLConfig:
    """Forward-KL warmup: the student fits the teacher's full next-token distributions on teacher rollouts."""

    lr: float = 1e-3
    steps: int = 60
    prompts_per_step: int = 32
    temperature: float = 1.0
    max_new_tokens: int = 48
    grad_clip: float = 1.0
    warmup: float = 0.0  # linear learning-rate warmup over this fraction of the stage's steps
    # > 0: warm up over this many steps instead (a cap-free schedule: under the plateau protocol with a
    # constant schedule, a run's first t steps do not depend on its cap)
    warmup_steps: int = 0
    schedule: str = "constant"  # after warmup: "constant", "cosine" (to 0 at the last step) or "linear"

    def __post_init__(self) -> None:
        _check_schedule("fkl", self)
        _check_pos("fkl", self, ("lr", "steps", "prompts_per_step", "temperature", "max_new_tokens", "grad_clip"))


@dataclass(frozen=True)
class OPDConfig:
    """On-policy distillation: student samples, frozen teacher scores every token, reverse KL."""

    lr: float = 1e-3
    steps: int = 60
    prompts_per_step: int = 32
    temperature: float = 1.0
    max_new_tokens: int = 48
    estimator: str = "full"  # full-vocabulary reverse KL, or "sampled" (per-token log-ratio as reward)
    grad_clip: float = 1.0
    warmup: float = 0.0  # linear learning-rate warmup over this fraction of the stage's steps
    # > 0: warm up over this many steps instead (a cap-free schedule: under the plateau protocol with a
    # constant schedule, a run's first t steps do not depend on its cap)
    warmup_steps: int = 0
    schedule: str = "constant"  # after warmup: "constant", "cosine" (to 0 at the last step) or "linear"

    def __post_init__(self) -> None:
        _check_schedule("opd", self)
        _check_pos("opd", self, ("lr", "steps", "prompts_per_step", "temperature", "max_new_tokens", "grad_clip"))
        if self.estimator not in ("full", "sampled"):
            raise InputError(f"opd.estimator must be 'full' or 'sampled', got {self.estimator!r}")


@dataclass(frozen=True)
class EvalConfig:
    """Sampled avg@k at a fixed temperature (the headline), pass@k, compliance; greedy only beside it."""

    k: int = 4
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 48
    greedy: bool = True
    curve_every: int = 0  # steps between validation points inside a stage; 0 -> stage ends only
    curve_problems: int = 100
    batch: int = 256
    also_t1: bool = False  # also report avg@k at T = 1 (no top-p/top-k) as `accuracy_t1`, beside the headline

    def __post_init__(self) -> None:
        _check_pos("eval", self, ("k", "temperature", "top_p", "max_new_tokens", "curve_problems", "batch"))
        _check_pos("eval", self, ("top_k", "curve_every"), allow_zero=True)
        if self.top_p > 1:
            raise InputError(f"eval.top_p must lie in (0, 1], got {self.top_p}")


@dataclass(frozen=True)
class PlateauConfig:
    """The plateau protocol (issue 22; reference.plateau): every training stage validates the model it
    trains at step 0 and every `every` of its step cap (avg@`k` on the first `problems` validation problems,
    [eval]'s sampling), keeps its best checkpoint, and stops once it has reached its plateau: the curve's
    level over the last `window` of the steps it ran rose by no more than `tolerance` paired standard errors
    above its level over the `window` before, and at least `min_fraction` of the cap ran (`stop = false`:
    it never stops early and runs to the cap). The validation problems are labels: reports give N + V."""

    enabled: bool = False
    problems: int = 64  # V, shared by every arm; counted in the label account
    k: int = 4
    every: float = 0.05
    window: float = 0.3
    tolerance: float = 1.0
    min_fraction: float = 0.2
    # false: validate and keep the best checkpoint, but never stop early (a pilot records the whole capped
    # curve: reference.pilot_curves); like every [plateau] setting, left out of the seed key
    stop: bool = True
    # comma-separated stage names (theory.arms.Stage values, e.g. "opd") that never stop early: they validate
    # and keep their best checkpoint like every stage, but run to their cap. For a stage whose validation
    # curve rises too slowly for the window test on V problems to see (OPD in the paper-like world: the
    # protocol's amendment of 2026-12-08, docs/log.md). It enters the key of the stages it names and of
    # those after them only (stage_runner.stage_key): every other stage's checkpoint stays valid.
    run_to_cap: str = ""

    def __post_init__(self) -> None:
        _check_pos("plateau", self, ("problems", "k", "every", "window", "tolerance"))
        _check_pos("plateau", self, ("min_fraction",), allow_zero=True)
        for name in ("every", "window", "min_fraction"):
            if getattr(self, name) > 1:
                raise InputError(f"plateau.{name} must be a fraction in [0, 1], got {getattr(self, name)!r}")
        from theory.arms import Stage
        known = {s.value for s in Stage}
        bad = sorted(self.to_cap - known)
        if bad:
            raise InputError(f"plateau.run_to_cap: unknown stage(s) {', '.join(map(repr, bad))}; choose from "
                             f"{', '.join(sorted(known))} (comma-separated)")
        if self.to_cap and not self.enabled:  # it would change stage keys and seeds for no effect
            raise InputError("plateau.run_to_cap needs plateau.enabled = true (it names stages of the protocol)")

    @property
    def to_cap(self) -> frozenset[str]:
        """The stages that run to their cap (`run_to_cap`, parsed)."""
        return frozenset(s.strip() for s in self.run_to_cap.split(",") if s.strip())


# 'plateau.<field>' -> its default: the protocol off, as `Config.override` takes it (the gate's key and the
# stage seed key neutralise the section with it)
PLATEAU_DEFAULTS: dict[str, Any] = {f"plateau.{f.name}": f.default for f in fields(PlateauConfig)}


PRECISIONS = ("mixed", "pure")


@dataclass(frozen=True)
class EngineConfig:
    """Where and how the stages run. The toy world: CPU, one thread, HF generate."""

    device: str = "cpu"
    threads: int = 1
    # write a stage's mid-stage checkpoint every K optimizer steps (reference.midstage; 0: off, the plateau
    # protocol still writes one at its validation points). It changes no number: left out of every hash
    checkpoint_every: int = 0
    # "hf" (transformers generate), "lean" (reference.rollout's KV-cached decode over a plain Qwen3's weights,
    # HF generate for any other model: same distribution, ~2.5x the toy stages' tokens/s, not the same
    # draws as "hf") or "vllm" (reference.rollout_vllm, when installed)
    rollout: str = "hf"
    static_cache: bool = False
    launcher: str = "single"  # "single" process or "accelerate" (accelerate launch; multi-GPU)
    accelerate_config: str = ""
    gradient_checkpointing: bool = False
    lora_rank: int = 0  # >0: LoRA (peft) for teacher GRPO on small GPUs
    micro_batch: int = 0  # sequences per forward/backward chunk; 0 -> whole batch
    # rollouts (reference.rollout.HFRollout): sequences per sampler call, so one call's KV cache bounds rollout
    # memory; 0 -> as many as `kv_cache_gib` holds, or the whole batch in one call when that is 0 too (the toy
    # configs: their committed samples). Chunked sampling draws from the same distribution, not the same draws
    rollout_micro_batch: int = 0
    kv_cache_gib: float = 0.0  # KV-cache budget of one sampler call, GiB per GPU (reference.rollout.kv_cache_bytes)
    tracker: str = ""  # "" off; "tensorboard" (or another accelerate tracker): per-step stage logs (reference.tracking)
    tracker_dir: str = ""  # where a file-based tracker writes; "" -> <workdir>/tracking
    trainer: str = "reference"  # the stages' trainer: this project's loop, or "trl" (reference.trl_backend)
    # "mixed": a model whose dtype is bfloat16/float16 trains on fp32 master weights with fp32 gradients and
    # AdamW moments, and computes its forward/backward in its dtype (reference.stage_plan); "pure": weights,
    # gradients and moments in the model dtype (8 B/param in bf16, but updates below bf16's resolution are
    # lost: at lr 1e-6 about 2% of weights of size 0.02 ever move). float32 models: the same either way
    precision: str = "mixed"

    def __post_init__(self) -> None:
        _check_pos("engine", self, ("threads",))
        _check_pos("engine", self, ("checkpoint_every",), allow_zero=True)
        if self.precision not in PRECISIONS:
            raise InputError(f"engine.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        from reference.tracking import TRACKERS
        if self.tracker and self.tracker not in TRACKERS:
            raise InputError(f"engine.tracker must be one of {', '.join(TRACKERS)} or \"\" (off), got {self.tracker!r}")
        _check_pos("engine", self, ("lora_rank", "micro_batch", "rollout_micro_batch", "kv_cache_gib"), allow_zero=True)
        if self.rollout not in ("hf", "lean", "vllm"):
            raise InputError(f"engine.rollout must be 'hf', 'lean' or 'vllm', got {self.rollout!r}")
        if self.trainer not in ("reference", "trl"):
            raise InputError(f"engine.trainer must be 'reference' or 'trl', got {self.trainer!r}")
        if self.trainer == "trl" and self.rollout == "vllm":
            raise InputError("engine.rollout = 'vllm' with engine.trainer = 'trl': TRL's trainers generate with "
                             "their own sampler, not this project's vLLM weight sync; use engine.trainer = "
                             "'reference' for vLLM rollouts, or engine.rollout = 'hf'")
        if self.launcher not in ("single", "accelerate"):
            raise InputError(f"engine.launcher must be 'single' or 'accelerate', got {self.launcher!r}")


SECTIONS: dict[str, type] = {
    "world": WorldConfig,
    "student": ModelConfig,
    "teacher": ModelConfig,
    "grpo": GRPOConfig,
    "fkl": FKLConfig,
    "opd": OPDConfig,
    "eval": EvalConfig,
    "engine": EngineConfig,
    "plateau": PlateauConfig,
}


@dataclass(frozen=True)
class Config:
    world: WorldConfig = field(default_factory=WorldConfig)
    student: ModelConfig = field(default_factory=ModelConfig)
    teacher: ModelConfig = field(default_factory=ModelConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    fkl: FKLConfig = field(default_factory=FKLConfig)
    opd: OPDConfig = field(default_factory=OPDConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    plateau: PlateauConfig = field(default_factory=PlateauConfig)
    source: str = field(default="", compare=False)  # file it came from (not hashed)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}

    def hash(self) -> str:
        return _digest(_hashed(self.to_dict()))

    def section_hash(self, names: tuple[str, ...], extra: dict | None = None) -> str:
        d = _hashed(self.to_dict())
        return _digest({"sections": {n: d[n] for n in names if n in d}, "extra": extra or {}})

    def override(self, values: dict[str, Any]) -> "Config":
        """A copy with 'section.field' values replaced (validated like a file)."""
        d = self.to_dict()
        for key, value in values.items():
            section, _, name = key.partition(".")
            if section not in SECTIONS or not name:
                raise InputError(f"override {key!r}: use 'section.field' with a section in {', '.join(SECTIONS)}")
            d[section][name] = value
        return from_dict(d, source=self.source)


# Fields added after results were committed, with the value that reproduces the older protocol. At that
# value a field is left out of the hashes, so stage keys, the torch seeds derived from them, and hence
# the committed legacy tables (configs/legacy/) keep their numbers.
_HASH_NEUTRAL: dict[tuple[str, str], Any] = {
    **{(sec, "warmup"): 0.0 for sec in ("grpo", "fkl", "opd")},
    **{(sec, "schedule"): "constant" for sec in ("grpo", "fkl", "opd")},
    ("eval", "also_t1"): False,
    ("world", "families"): "",
    ("student", "steps_share"): "",
    ("teacher", "steps_share"): "",
    ("student", "step_drills"): 0.0,
    ("teacher", "step_drills"): 0.0,
    ("engine", "trainer"): "reference",
    ("engine", "precision"): "mixed",  # float32 models (every toy config) compute the same either way
    ("grpo", "mini_batches"): 1,
    ("engine", "rollout_micro_batch"): 0,
    ("engine", "kv_cache_gib"): 0.0,
    ("grpo", "max_steps"): 0,
    **{(sec, "warmup_steps"): 0 for sec in ("grpo", "fkl", "opd")},
    # the plateau protocol's section: off, it is left out of the hashes entirely
    **{tuple(k.split(".")): v for k, v in PLATEAU_DEFAULTS.items()},
}
# Fields that only say where a run reports or how often it saves, never what it computes: left out of every
# hash and of the resume check whatever their value (turning tracking or mid-stage checkpoints on keeps the
# stage keys, seeds and numbers; tests/test_midstage.py checks the numbers).
_LOGGING_ONLY: frozenset[tuple[str, str]] = frozenset({("engine", "tracker"), ("engine", "tracker_dir"),
                                                      ("engine", "checkpoint_every")})


def _hashed(d: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {sec: {k: v for k, v in fields_.items()
                 if (sec, k) not in _LOGGING_ONLY and _HASH_NEUTRAL.get((sec, k), object()) != v}
           for sec, fields_ in d.items()}
    if not out.get("plateau", True):  # the protocol off: hashed as before the section existed
        del out["plateau"]
    return out


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _coerce(section: str, name: str, value: Any, kind: Any) -> Any:
    where = f"{section}.{name}"
    if kind is bool:
        if not isinstance(value, bool):
            raise InputError(f"{where} must be true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and value != int(value)):
            raise InputError(f"{where} must be an integer, got {value!r}")
        return int(value)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"{where} must be a number, got {value!r}")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise InputError(f"{where} must be a string, got {value!r}")
        return value
    return value


def _build(section: str, cls: type, raw: Any) -> Any:
    if not isinstance(raw, dict):
        raise InputError(f"[{section}] must be a table of fields, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    for key in raw:
        if key not in known:
            raise InputError(f"unknown config field {section}.{key} (known: {', '.join(sorted(known))})")
    kwargs = {k: _coerce(section, k, v, hints[k]) for k, v in raw.items()}
    try:
        return cls(**kwargs)
    except InputError as e:
        msg = str(e)
        # model sections share one class: name the real section in the message
        if msg.startswith("model.") or msg.startswith("model:"):
            msg = section + msg[len("model"):]
        raise InputError(msg) from None


def from_dict(d: dict[str, Any], *, source: str = "") -> Config:
    if not isinstance(d, dict):
        raise InputError("config must be a table of sections")
    for key in d:
        if key not in SECTIONS:
            raise InputError(f"unknown config section [{key}] (known: {', '.join(SECTIONS)})")
    parts = {name: _build(name, cls, d.get(name, {})) for name, cls in SECTIONS.items()}
    return Config(**parts, source=source)


def resolve_config_path(path: str | Path) -> Path:
    """A path as given, or a bare name looked up in configs/ ('toy_short' -> configs/toy_short.toml)."""
    p = Path(path)
    if p.is_file():
        return p
    for cand in (CONFIG_DIR / p, CONFIG_DIR / f"{p}.toml"):
        if cand.is_file():
            return cand
    raise InputError(f"config file not found: {str(path)!r}")


def load_config(path: str | Path) -> Config:
    p = resolve_config_path(path)
    try:
        raw = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"config {str(p)!r}: malformed TOML ({e})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"config {str(p)!r}: cannot read ({e})") from None
    return from_dict(raw, source=str(p))


def diff_fields(old: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]]) -> list[str]:
    """'section.field' names whose values differ between two Config.to_dict() outputs. A field one
    side lacks (written before the field existed) counts as its hash-neutral value; fields that only
    say where a run reports (_LOGGING_ONLY) are not compared."""
    out = []
    for section in sorted(set(old) | set(new)):
        a, b = old.get(section, {}), new.get(section, {})
        for name in sorted(set(a) | set(b)):
            if (section, name) in _LOGGING_ONLY:
                continue
            missing = _HASH_NEUTRAL.get((section, name))
            if a.get(name, missing) != b.get(name, missing):
                out.append(f"{section}.{name}")
    return out
