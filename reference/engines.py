"""Scale-out on existing engines: accelerate (DDP / FSDP2 / DeepSpeed ZeRO-3), peft LoRA, checkpointing.

Nothing here is a distributed system of our own: `accelerate launch --config_file
configs/accelerate/{ddp,fsdp2,zero3}.yaml` starts the processes and picks the backend; this module
only (1) builds the `Accelerator` the stages wrap the trained model with, (2) gives each rank its
shard of the prompts, (3) applies LoRA for teacher RL on small GPUs, and (4) under an FSDP2 launch
shards the trained model with torch's `fully_shard` (one unit per decoder layer, as
configs/accelerate/fsdp2.yaml says) and gathers / loads the full state dict a stage checkpoint holds,
so a sharded stage writes the same checkpoint as one process. The token mean that stays exact when
ranks hold different token counts is the stages' own (`stages.normaliser`).

The stages (reference/stages.py) call these through `StageContext.engine`; `assemble.engine_for`
builds the engine when `engine.launcher = "accelerate"`. scripts/ddp_parity.py checks that N-process DDP through
this path matches one process (tests/test_scale_engines.py).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
import os
from pathlib import Path
from typing import Any, Sequence

import torch

from theory.errors import InputError


@dataclass
class Engine:
    accelerator: Any  # accelerate.Accelerator
    rank: int
    world_size: int
    # "fsdp2": the trained model is sharded with torch `fully_shard` (parameters, gradients, AdamW
    # moments); "none": replicated under DDP. Read from the launch (`accelerate launch` with
    # configs/accelerate/fsdp2.yaml exports ACCELERATE_USE_FSDP / FSDP_VERSION=2).
    sharding: str = "none"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        return self.accelerator.device


def make_engine(*, cpu: bool | None = None, **kwargs: Any) -> Engine:
    """An `Accelerator` configured by `accelerate launch` (or a single process when not launched)."""
    from accelerate import Accelerator

    if cpu is None:
        cpu = not torch.cuda.is_available()
    acc = Accelerator(cpu=cpu, **kwargs)
    if acc.num_processes > 1:
        _destroy_at_exit()
    return Engine(acc, acc.process_index, acc.num_processes, launch_sharding(acc.num_processes))


_EXIT_HOOK: list = []


def _destroy_at_exit() -> None:
    """Destroy the process group when the interpreter exits (once per process). Exiting with it alive
    leaves gloo's worker threads joinable while the runtime tears down, which can abort a rank with
    "terminate called without an active exception" (exit -6) after its work is done."""
    import atexit
    import torch.distributed as dist

    def destroy():
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    if not _EXIT_HOOK:
        _EXIT_HOOK.append(atexit.register(destroy))


def exit_rank(code: int = 0) -> None:
    """End a launched rank whose work is done, without interpreter teardown: (on success) a barrier, the
    process group destroyed, stdout/stderr flushed, then `os._exit(code)`.

    Teardown with gloo's process group (and FSDP2's device mesh) still referenced aborted a finished rank
    with "terminate called without an active exception" (exit -6): in one CI run of 2026-12-07 and in 1 of
    15 launches of the sharded-evaluation script on this machine, after both ranks had written their
    results, with the atexit destroy (`_destroy_at_exit`) already in place. The root cause inside torch was
    not found (pytorch PR #179291 describes the same abort); skipping teardown after a clean finish keeps
    a finished run's exit status 0. Not launched (one process): a no-op."""
    import sys
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    if code == 0:  # a failed rank may have left its peers inside a collective: no barrier then
        dist.barrier()
        dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


# What reference.engines reads of an accelerate launch config's FSDP section; every other key is refused
# (accelerate would export it and nothing here would act on it). Values: the accepted ones (None: any).
FSDP_KEYS: dict[str, tuple | None] = {
    "fsdp_version": (2,),
    "fsdp_auto_wrap_policy": ("TRANSFORMER_BASED_WRAP",),  # fsdp2_shard wraps each decoder layer
    "fsdp_transformer_layer_cls_to_wrap": None,  # read: the unit classes
    "fsdp_reshard_after_forward": (True, False),  # read
    "fsdp_cpu_ram_efficient_loading": (False,),  # every rank loads the weights (launch_sharding sets it)
}
# keys at these values only: the engine does what the value says without reading it
FSDP_FIXED = {"fsdp_offload_params": (False,), "fsdp_activation_checkpointing": (False,)}
WHY = {"mixed_precision": "precision is [engine] precision (reference.stage_plan: fp32 master weights, bf16 compute)",
       "fsdp_offload_params": "CPU offload is not wired",
       "fsdp_activation_checkpointing": "checkpointing is [engine] gradient_checkpointing (HF's, per stage)"}


def check_accelerate_config(cfg: dict, where: str = "accelerate config") -> str:
    """Refuse what the engine would not act on; returns the sharding the config launches ("fsdp2" or
    "none"). `cfg`: `load_accelerate_config`'s dict."""
    mp = str(cfg.get("mixed_precision", "no")).split(".")[-1].lower()
    if mp not in ("no", "none"):
        raise InputError(f"{where}: mixed_precision: {mp} is not read ({WHY['mixed_precision']}); set it to \"no\"")
    kind = str(cfg.get("distributed_type", "")).split(".")[-1].upper()
    if kind == "DEEPSPEED":
        raise InputError(f"{where}: DeepSpeed ZeRO-3 stage checkpoints are not supported yet: use fsdp2.yaml")
    if kind != "FSDP":
        return "none"
    fsdp = cfg.get("fsdp_config") or {}
    for key, value in fsdp.items():
        allowed = FSDP_KEYS.get(key, FSDP_FIXED.get(key, "refused"))
        if allowed == "refused":
            raise InputError(f"{where}: fsdp_config.{key} is not read by reference.engines (it reads "
                             f"{', '.join(FSDP_KEYS)}); remove it")
        if allowed is not None and value not in allowed:
            why = WHY.get(key, "the engine does not read it")
            raise InputError(f"{where}: fsdp_config.{key}: {value!r} is not supported ({why}); use {allowed[0]!r}")
    if fsdp.get("fsdp_version") != 2:
        raise InputError(f"{where}: only FSDP version 2 (fully_shard) is supported: set fsdp_config.fsdp_version: 2")
    return "fsdp2"


# the same refusals on what `accelerate launch` exported (it exports every FSDP field, defaults included):
# variable -> (config key, accepted values)
_LAUNCH_ENV = {"FSDP_OFFLOAD_PARAMS": ("fsdp_offload_params", ("false",)),
               "FSDP_ACTIVATION_CHECKPOINTING": ("fsdp_activation_checkpointing", ("false",)),
               "FSDP_ACTIVATION_CHECKPOINTING_OFFLOAD": ("fsdp_activation_checkpointing_offload", ("false",)),
               "FSDP_AUTO_WRAP_POLICY": ("fsdp_auto_wrap_policy", ("TRANSFORMER_BASED_WRAP",)),
               "FSDP_SHARDING_STRATEGY": ("fsdp_sharding_strategy", ("FULL_SHARD", "1")),
               "FSDP_IGNORED_MODULES": ("fsdp_ignored_modules", ("",))}


def _check_launch_env() -> None:
    mp = os.environ.get("ACCELERATE_MIXED_PRECISION", "no").lower()
    if mp not in ("no", "none"):
        raise InputError(f"accelerate launch: mixed_precision {mp} is not read ({WHY['mixed_precision']}); "
                         "launch with mixed_precision: \"no\"")
    for var, (key, ok) in _LAUNCH_ENV.items():
        value = os.environ.get(var)
        if value is not None and value.upper() not in {v.upper() for v in ok}:
            raise InputError(f"accelerate launch: {key} = {value} is not read by reference.engines "
                             f"({WHY.get(key, 'not wired')}); leave it at {ok[0] or 'unset'}")


def launch_sharding(world_size: int) -> str:
    """"fsdp2" when `accelerate launch` was given an FSDP version-2 config, else "none".

    We shard with `fully_shard` ourselves rather than through `Accelerator.prepare`: accelerate only
    applies FSDP on GPUs (on a CPU it falls back to DDP over gloo), and one code path on both is what
    the 2-process CPU test can check. `Accelerator.prepare` leaves an already-sharded model as it is.
    ZeRO-3 (DeepSpeed) would need DeepSpeed's own gather (`zero3_save_16bit_model`); DeepSpeed is not
    installed here, so a ZeRO-3 launch is refused rather than silently saving one rank's shard.
    """
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true" and world_size > 1:
        raise InputError("ZeRO-3 stage checkpoints are not supported yet (DeepSpeed is not installed here): "
                         "launch with configs/accelerate/fsdp2.yaml instead")
    use_fsdp = os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true"
    if world_size > 1 or use_fsdp:
        _check_launch_env()
    if use_fsdp:
        # transformers reads this flag in from_pretrained: with it, ranks > 0 skip loading the weights
        # and wait for accelerate's prepare to broadcast rank 0's. We shard ourselves and keep the
        # frozen scorer whole on every rank, so every rank loads the checkpoint itself (defensive: on
        # this CPU both ranks loaded equal weights with the flag on too; GPUs not checked).
        os.environ["FSDP_CPU_RAM_EFFICIENT_LOADING"] = "false"
    if use_fsdp and world_size > 1:
        if os.environ.get("FSDP_VERSION", "1") != "2":
            raise InputError("only FSDP version 2 (fully_shard) is supported: set fsdp_version: 2 in the accelerate config")
        return "fsdp2"
    return "none"


def is_sharded(model) -> bool:
    """True when `model` was sharded by `fully_shard` (its parameters are DTensors)."""
    from torch.distributed.fsdp import FSDPModule
    return isinstance(model, FSDPModule)


def sharded_across_ranks(model) -> bool:
    """A model sharded over several ranks: its forward passes, and the gather that starts each `generate`
    call (`gathered`), are collectives, so ranks must make the same number of them."""
    import torch.distributed as dist
    return is_sharded(model) and dist.is_initialized() and dist.get_world_size() > 1


@contextmanager
def gathered(model):
    """Inside: an FSDP2-sharded `model` holds its whole weights on every rank, all-gathered once on entry
    (one all-gather per FSDP unit: each decoder layer and the root) and resharded on exit, so a rollout
    phase decodes every token with local forwards instead of all-gathering each unit per decode step.
    Anything else: nothing happens.

    torch's own `FSDPModule.unshard` / `reshard`; while inside, no unit reshards after a forward
    (`set_reshard_after_forward(False)`), and on exit every unit gets back the setting `fsdp2_shard`
    gave it (an explicit bool, which torch applies to the root too). Every rank must enter (the gather
    is a collective); inside, the forwards are local, so ranks need not decode in lockstep. Memory: the
    whole model on every rank for the phase (2 B/param in bf16: 15.3 GiB for the 8B teacher)."""
    from torch.distributed.fsdp import FSDPModule
    if not isinstance(model, FSDPModule):
        yield model
        return
    units = [m for m in model.modules() if isinstance(m, FSDPModule)]
    for m in units:
        m.unshard()
    model.set_reshard_after_forward(False)
    try:
        yield model
    finally:
        model.set_reshard_after_forward(getattr(model, "_fsdp2_reshard_after_forward", True))
        for m in units:
            m.reshard()


def fsdp2_shard(model, engine: Engine, mp_policy=None):
    """Shard `model` in place with FSDP2: each decoder layer (FSDP_TRANSFORMER_CLS_TO_WRAP, else the
    model's `_no_split_modules`) is one unit, the root holds the rest (embeddings, norm, head).
    `mp_policy`: torch's MixedPrecisionPolicy for fp32 master shards with bf16 compute
    (reference.stage_plan.mixed_precision_policy). Idempotent: a model sharded by an earlier stage is
    returned as it is."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    if is_sharded(model):
        return model
    names = os.environ.get("FSDP_TRANSFORMER_CLS_TO_WRAP", "")
    layer_names = {n.strip() for n in names.split(",") if n.strip()} or set(getattr(model, "_no_split_modules", ()) or ())
    reshard = os.environ.get("FSDP_RESHARD_AFTER_FORWARD", "true").lower() == "true"
    mesh = init_device_mesh(engine.device.type, (engine.world_size,))
    units = [m for m in model.modules() if type(m).__name__ in layer_names]
    if not units:
        raise InputError(f"FSDP2: no module of class {sorted(layer_names)} in {type(model).__name__}; "
                         "set fsdp_transformer_layer_cls_to_wrap in the accelerate config")
    mp = {} if mp_policy is None else {"mp_policy": mp_policy}
    for m in units:
        fully_shard(m, mesh=mesh, reshard_after_forward=reshard, **mp)
    fully_shard(model, mesh=mesh, reshard_after_forward=reshard, **mp)
    model._fsdp2_reshard_after_forward = reshard  # what `gathered` restores on the layer units after a rollout phase
    return model


def full_state_dict(model) -> dict:
    """The model's full (unsharded) state dict. Sharded: every rank must call this (it all-gathers);
    rank 0 receives the tensors on the CPU, the other ranks an empty dict. Plain: `state_dict()`."""
    if not is_sharded(model):
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_state_dict(model, state: dict) -> None:
    """Load a full state dict (every rank holds it) into `model`, sharded or not, strictly."""
    if not is_sharded(model):
        model.load_state_dict(state, strict=True)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, strict=True))


def shard(items: Sequence, engine: Engine) -> list:
    """This rank's contiguous shard; ranks get equal counts (the global batch must divide evenly)."""
    n, w = len(items), engine.world_size
    if n % w:
        raise InputError(f"batch of {n} does not divide over {w} processes: make prompts_per_step a multiple of it")
    k = n // w
    return list(items[engine.rank * k:(engine.rank + 1) * k])


def apply_lora(model, *, rank: int, alpha: int | None = None, dropout: float = 0.0,
               target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                  "down_proj")):
    """peft LoRA adapters on every projection; only adapter weights train (teacher RL on small GPUs)."""
    if rank <= 0:
        raise InputError(f"engine.lora_rank must be > 0 to use LoRA, got {rank}")
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=rank, lora_alpha=alpha or 2 * rank, lora_dropout=dropout,
                     target_modules=list(target_modules), task_type="CAUSAL_LM")
    return get_peft_model(model, cfg)


def load_accelerate_config(path: str | Path) -> dict:
    """Parse one of configs/accelerate/*.yaml with accelerate's own loader (validates the keys)."""
    from accelerate.commands.config.config_args import load_config_from_file

    p = Path(path)
    if not p.is_file():
        raise InputError(f"engine.accelerate_config {str(path)!r} does not exist")
    try:
        return load_config_from_file(str(p)).to_dict()
    except Exception as e:  # noqa: BLE001 — accelerate raises several types on bad keys
        raise InputError(f"engine.accelerate_config {str(path)!r}: {e}") from None
