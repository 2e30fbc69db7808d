"""What a stage holds and in which dtype: one plan, applied by the stage runner and read by the dry run.

`stage_plan(cfg, stage)` says, for the model the stage trains, the dtype of its parameters (the master
copy AdamW updates), of its gradients and AdamW moments, the dtype its forward/backward computes in,
and whether its activations are checkpointed; for the frozen scorer of a bridge stage, its dtype and
whether it is sharded; the training micro-batch and the updates per rollout batch. `apply` makes the
models what the plan says before a stage's update rule runs (`stage_runner.train_stage`, on either
backend); `reference.dryrun` sizes the stage's memory from the same plan, and a test checks the
objects a stage trains against it (tests/test_stage_plan.py).

Mixed precision (`engine.precision = "mixed"`, the default), as verl and torch's FSDP2 recipes do it:
a model whose dtype is bfloat16 (or float16) trains on an fp32 master copy, so AdamW's fp32 moments
and updates of lr ~1e-6 on weights of size ~0.02 land (below bf16's resolution there, ~1.2e-4, a
pure-bf16 weight keeps most of them at zero), while every matmul runs in the model dtype:
- one process or DDP: torch.autocast around the model's forward (the compute copy is the autocast
  cast of each fp32 weight, i.e. `master.to(bf16)`); the logits leave the forward in fp32, as
  accelerate's autocast wrapper returns them (every loss takes its log-softmax in fp32 anyway);
- FSDP2: `fully_shard` with `MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32,
  output_dtype=fp32)` over the fp32 shards (torch's own mixed precision: the all-gathered unit is the
  bf16 compute copy, gradients reduce-scatter in fp32 onto the fp32 shards).
Only trainable parameters get the master copy (LoRA: peft keeps its adapters in fp32 already, the base
stays in the model dtype). The master persists with the model across its stages (the student's FKL,
OPD and GRPO continue one fp32 copy; its stage checkpoints hold it, and a resumed run loads them into
an fp32 model); a model that is the frozen scorer of a stage scores in the model dtype: a replicated
fp32 copy is cast back (the teacher after its GRPO), a copy sharded by its own earlier stage stays
sharded and computes in bf16 through its policy. float32 models (the toy world): nothing changes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
import functools
import types

import torch

from theory.arms import STAGES, Stage

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class StagePlan:
    """One stage's dtypes, checkpointing, scorer placement and batch split (dtypes by name)."""

    stage: str
    trains: str  # role of the trained model
    param_dtype: str  # the trained parameters, i.e. the master copy AdamW updates
    grad_dtype: str
    optimizer_state_dtype: str  # AdamW's exp_avg / exp_avg_sq
    compute_dtype: str  # forward/backward matmuls (and rollouts)
    mixed: bool  # compute_dtype differs from param_dtype
    checkpointing: bool  # activation checkpointing of the trained model (HF gradient checkpointing)
    scorer: str | None  # role of the frozen scorer
    scorer_dtype: str | None
    scorer_sharded: bool  # reference.engines shards only the trained model: the scorer is replicated
    micro_batch: int  # sequences per forward/backward chunk (0: the rank's whole batch)
    mini_batches: int  # optimizer updates per rollout batch

    def to_dict(self) -> dict:
        return asdict(self)


def stage_plan(cfg, stage: Stage | str) -> StagePlan:
    """The plan of `stage` under `cfg` (a reference.config.Config)."""
    stage = Stage(stage)
    spec = STAGES[stage]
    model_dtype = getattr(cfg, spec.trains).dtype
    mixed = cfg.engine.precision == "mixed" and model_dtype != "float32"
    master = "float32" if mixed else model_dtype
    scorer_dtype = getattr(cfg, spec.scorer).dtype if spec.scorer else None
    return StagePlan(stage=stage.value, trains=spec.trains, param_dtype=master, grad_dtype=master,
                     optimizer_state_dtype=master, compute_dtype=model_dtype, mixed=mixed,
                     checkpointing=cfg.engine.gradient_checkpointing, scorer=spec.scorer,
                     scorer_dtype=scorer_dtype, scorer_sharded=False, micro_batch=cfg.engine.micro_batch,
                     mini_batches=cfg.grpo.mini_batches if spec.update == "grpo" else 1)


def apply(plan: StagePlan, model, scorer=None) -> None:
    """Make `model` (the one the stage trains) and `scorer` what `plan` says, in place. Idempotent: a
    model set up by an earlier stage stays as it is. Under FSDP2 the stage shards the model when it
    builds its optimizer (`stages._prepare`, `trl_backend._sharded`), with `mixed_precision_policy`."""
    if plan.checkpointing and hasattr(model, "gradient_checkpointing_enable") and not model.is_gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False  # as reference.models.load_causal_lm: no KV cache in training forwards
    if plan.mixed:
        to_master(model, DTYPES[plan.compute_dtype])
    if scorer is not None and plan.scorer_dtype is not None:
        to_scorer(scorer, DTYPES[plan.scorer_dtype], plan.mixed and plan.scorer_dtype != "float32")


def to_master(model, compute: torch.dtype) -> None:
    """The trainable parameters in fp32 (in place: the Parameter objects stay, so do tied weights), the
    forward under autocast to `compute` with fp32 logits. A sharded model already holds fp32 shards."""
    from reference.engines import is_sharded
    if is_sharded(model):
        return
    seen: set[int] = set()
    for p in model.parameters():
        if p.requires_grad and id(p) not in seen and p.dtype != torch.float32:
            p.data = p.data.float()
        seen.add(id(p))
    _wrap_forward(model, compute)


def _wrap_forward(model, compute: torch.dtype | None) -> None:
    """`model.forward`: the class's forward under torch.autocast to `compute` (None: no autocast), its
    logits returned in fp32, as accelerate's autocast wrapper returns them (TRL's trainers then take
    their log-softmax in fp32, as the reference's losses do). functools.wraps keeps the signature that
    `generate` inspects; a bound method of the model, so `copy.deepcopy` binds the copy's."""
    model._autocast_dtype = compute
    if "forward" in vars(model):
        return
    cls_forward = type(model).forward

    @functools.wraps(cls_forward)
    def forward(self, *args, **kwargs):
        dtype = self._autocast_dtype
        if dtype is None:
            out = cls_forward(self, *args, **kwargs)
        else:
            with torch.autocast(next(self.parameters()).device.type, dtype=dtype):
                out = cls_forward(self, *args, **kwargs)
        logits = getattr(out, "logits", None)
        if logits is not None and logits.dtype != torch.float32:
            out.logits = logits.float()
        return out
    model.forward = types.MethodType(forward, model)


def drop_autocast(model) -> None:
    """Back to the class's forward (a model about to be sharded with a mixed-precision policy)."""
    if "forward" in vars(model):
        del model.forward
    vars(model).pop("_autocast_dtype", None)


def mixed_precision_policy(model):
    """FSDP2's MixedPrecisionPolicy for a model `to_master` set up (None otherwise): bf16 all-gathers and
    compute over the fp32 shards, fp32 gradient reduction, fp32 logits; the autocast wrapper goes."""
    compute = getattr(model, "_autocast_dtype", None)
    if compute is None:
        return None
    from torch.distributed.fsdp import MixedPrecisionPolicy
    drop_autocast(model)
    return MixedPrecisionPolicy(param_dtype=compute, reduce_dtype=torch.float32, output_dtype=torch.float32)


def to_scorer(model, dtype: torch.dtype, mixed: bool) -> None:
    """A frozen scorer in its model dtype: a replicated fp32 master (the teacher after its GRPO) is cast
    back, as a resumed run loads it; under mixed precision its forward returns fp32 logits without
    autocast, whether it trained in this process or not. A sharded scorer keeps its shards and computes
    through its policy (fp32 logits too)."""
    from reference.engines import is_sharded
    if is_sharded(model):
        return
    seen: set[int] = set()
    for p in model.parameters():
        if id(p) not in seen and p.is_floating_point() and p.dtype != dtype:
            p.data = p.data.to(dtype)
        seen.add(id(p))
    if mixed:
        _wrap_forward(model, None)
    elif getattr(model, "_autocast_dtype", None) is not None:
        drop_autocast(model)
