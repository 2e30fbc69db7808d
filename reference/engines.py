"""Scale-out on existing engines: accelerate (DDP / FSDP2 / DeepSpeed ZeRO-3), peft LoRA, checkpointing.

Nothing here is a distributed system of our own: `accelerate launch --config_file
configs/accelerate/{ddp,fsdp2,zero3}.yaml` starts the processes and picks the backend; this module
only (1) wraps the trained model with `Accelerator.prepare`, (2) gives each rank its shard of the
prompts, (3) offers the token-mean that stays exact when ranks hold different token counts, and
(4) applies LoRA for teacher RL on small GPUs.

The stages (reference/stages.py) call these through `StageContext.engine`; the pipeline builds the
engine when `engine.launcher = "accelerate"`. scripts/ddp_parity.py checks that N-process DDP through
this path matches one process (tests/test_scale_engines.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from theory.errors import InputError


@dataclass
class Engine:
    accelerator: Any  # accelerate.Accelerator
    rank: int
    world_size: int

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
    return Engine(acc, acc.process_index, acc.num_processes)


def shard(items: Sequence, engine: Engine) -> list:
    """This rank's contiguous shard; ranks get equal counts (the global batch must divide evenly)."""
    n, w = len(items), engine.world_size
    if n % w:
        raise InputError(f"batch of {n} does not divide over {w} processes: make prompts_per_step a multiple of it")
    k = n // w
    return list(items[engine.rank * k:(engine.rank + 1) * k])


def global_token_mean(x_BT: torch.Tensor, mask_BT: torch.Tensor, engine: Engine | None) -> torch.Tensor:
    """Token mean over the *global* batch, scaled so DDP's gradient averaging reproduces it exactly.

    DDP averages gradients over ranks; a per-rank token mean weighs ranks equally even when they hold
    different numbers of tokens (different completion lengths). Dividing the local sum by the global
    token count and multiplying by world size makes the averaged gradient the global token mean.
    """
    local_sum = (x_BT * mask_BT).sum()
    n_local = mask_BT.sum().detach()
    if engine is None or engine.world_size == 1:
        return local_sum / n_local.clamp(min=1)
    n_global = engine.accelerator.reduce(n_local.clone(), reduction="sum")
    return local_sum * engine.world_size / n_global.clamp(min=1)


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


def trainable_params(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


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
