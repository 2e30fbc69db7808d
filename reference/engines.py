"""Scale-out on existing engines: accelerate (DDP / FSDP2 / DeepSpeed ZeRO-3), peft LoRA, checkpointing.

Nothing here is a distributed system of our own: `accelerate launch --config_file
configs/accelerate/{ddp,fsdp2,zero3}.yaml` starts the processes and picks the backend; this module
only (1) wraps the trained model with `Accelerator.prepare`, (2) gives each rank its shard of the
prompts, (3) offers the token-mean that stays exact when ranks hold different token counts, and
(4) applies LoRA for teacher RL on small GPUs.

`python -m reference.engines ddp-check ...` runs one real OPD stage step (reference.stages.opd) on
tiny models, single-process or under `accelerate launch --num_processes N`, and saves the loss, the
gradients and the updated parameters so a test can check that N-process DDP matches one process (tests/test_scale_engines.py).
"""

from __future__ import annotations

import argparse
import hashlib
import os
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


# --------------------------------------------------------------------------------------------------
# ddp-check: one real OPD stage step, the same under 1 or N processes
# --------------------------------------------------------------------------------------------------


class FixedRollout:
    """A deterministic `Rollout`: each prompt's completion is a fixed pseudo-random token string
    seeded by the prompt text (full length, no EOS), so every rank sees the same data per prompt."""

    def __init__(self, tokenizer, vocab: int, eos_id: int):
        self.tok, self.vocab, self.eos_id = tokenizer, vocab, eos_id

    def generate(self, model, prompts, *, n, temperature, top_p=1.0, top_k=0, max_new_tokens, greedy=False):
        from reference.rollout import RolloutBatch

        enc = self.tok(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False)
        ids = enc["input_ids"].repeat_interleave(n, 0)
        att = enc["attention_mask"].repeat_interleave(n, 0)
        comps = []
        for p in prompts:
            g = torch.Generator().manual_seed(int(hashlib.sha1(p.encode()).hexdigest()[:8], 16))
            c = torch.randint(0, self.vocab, (n, max_new_tokens), generator=g)
            comps.append(torch.where(c == self.eos_id, (c + 1) % self.vocab, c))
        comp = torch.cat(comps)
        mask = torch.ones_like(comp, dtype=torch.float32)
        device = next(model.parameters()).device
        return RolloutBatch(torch.cat([ids, comp], 1).to(device), torch.cat([att, mask.long()], 1).to(device),
                            ids.shape[1], comp.to(device), mask.to(device), tuple("" for _ in comp), n)


def ddp_check(student_dir: str, teacher_dir: str, out: str, *, n_prompts: int = 4, max_new_tokens: int = 6,
              lr: float = 1e-2, seed: int = 0) -> dict:
    """One `reference.stages.opd` step over `n_prompts` prompts split across the launched processes."""
    from reference import models as hf
    from reference import stages as st
    from reference.config import OPDConfig
    from reference.rewards import is_compliant, score_batch
    from reference.world import Problem

    engine = make_engine(cpu=True)
    torch.manual_seed(seed)
    tok = hf.load_tokenizer(student_dir)
    student = hf.load_causal_lm(student_dir, device="cpu")
    teacher = hf.load_frozen_teacher(teacher_dir, device="cpu")
    hf.check_same_tokenizer(hf.load_tokenizer(teacher_dir), tok)
    vocab = hf.logit_vocab_size(tok, student.config)
    prompts = [Problem(pid=str(i), prompt=f"{i}+{i * 3}=", gold=str(4 * i), terms=2) for i in range(n_prompts)]
    mine = tuple(shard(prompts, engine))
    model = engine.accelerator.prepare(student)
    ctx = st.StageContext(rollout=FixedRollout(tok, vocab, tok.eos_token_id), vocab_size=vocab,
                          eos_id=tok.eos_token_id, score_batch=score_batch, is_compliant=is_compliant)
    cfg = OPDConfig(lr=lr, steps=1, prompts_per_step=len(mine), max_new_tokens=max_new_tokens, grad_clip=1e9)
    res = st.opd(model, teacher, mine, cfg, ctx, seed=seed)
    kl = torch.tensor([res.log[0]["kl_to_teacher"]])
    kl_all = engine.accelerator.gather(kl)
    result = {"world_size": engine.world_size, "kl_to_teacher": float(kl_all.mean())}
    if engine.is_main:
        net = engine.accelerator.unwrap_model(model)
        params = {k: v.detach().clone() for k, v in net.state_dict().items()}
        # the stage leaves the last step's (all-reduced) gradients in .grad
        grads = {k: p.grad.detach().clone() for k, p in net.named_parameters() if p.grad is not None}
        torch.save({"result": result, "params": params, "grads": grads}, out)
    engine.accelerator.wait_for_everyone()
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m reference.engines")
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("ddp-check", help="one OPD stage step on tiny models; saves loss + updated params")
    d.add_argument("--student", required=True)
    d.add_argument("--teacher", required=True)
    d.add_argument("--out", required=True)
    d.add_argument("--prompts", type=int, default=4)
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        r = ddp_check(args.student, args.teacher, args.out, n_prompts=args.prompts)
    except InputError as e:
        import sys

        print(f"error: {e}", file=sys.stderr)
        return 2
    print(r)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
