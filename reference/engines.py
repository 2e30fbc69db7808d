"""Scale-out on existing engines: accelerate (DDP / FSDP2 / DeepSpeed ZeRO-3), peft LoRA, checkpointing.

Nothing here is a distributed system of our own: `accelerate launch --config_file
configs/accelerate/{ddp,fsdp2,zero3}.yaml` starts the processes and picks the backend; this module
only (1) wraps the trained model with `Accelerator.prepare`, (2) gives each rank its shard of the
prompts, (3) offers the token-mean that stays exact when ranks hold different token counts, and
(4) applies LoRA for teacher RL on small GPUs.

The stages (reference/stages.py) call these through `StageContext.engine`; the pipeline builds the
engine when `engine.launcher = "accelerate"`. `python -m reference.engines ddp-check ...` runs one real
OPD step and one GRPO step (reference.stages.opd / .grpo, the pipeline's own code path) on tiny
models, single-process or under `accelerate launch --num_processes N`, and saves the losses, the
gradients and the updated parameters so a test can check that N-process DDP matches one process
(tests/test_scale_engines.py).
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
    """A deterministic `Rollout`: each prompt's completions are fixed pseudo-random token strings seeded
    by the prompt text, so every rank sees the same data per prompt. Full length, no EOS (what
    scripts/gpu_check.py times); `varied_lengths=True` (ddp-check) cuts each sample at a pseudo-random
    EOS, so ranks hold different token counts (what the global token mean is for), and makes its text
    the sum of its counted tokens, so `parity_reward` gives varied rewards."""

    def __init__(self, tokenizer, vocab: int, eos_id: int, *, varied_lengths: bool = False):
        self.tok, self.vocab, self.eos_id, self.varied = tokenizer, vocab, eos_id, varied_lengths

    def generate(self, model, prompts, *, n, temperature, top_p=1.0, top_k=0, max_new_tokens, greedy=False):
        from reference.rollout import RolloutBatch

        enc = self.tok(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False)
        ids = enc["input_ids"].repeat_interleave(n, 0)
        att = enc["attention_mask"].repeat_interleave(n, 0)
        comps, masks = [], []
        for p in prompts:
            g = torch.Generator().manual_seed(int(hashlib.sha1(p.encode()).hexdigest()[:8], 16))
            c = torch.randint(0, self.vocab, (n, max_new_tokens), generator=g)
            c = torch.where(c == self.eos_id, (c + 1) % self.vocab, c)
            length = (torch.randint(1, max_new_tokens + 1, (n, 1), generator=g) if self.varied
                      else torch.full((n, 1), max_new_tokens))
            pos = torch.arange(max_new_tokens).unsqueeze(0)
            if self.varied:
                c = torch.where(pos == length - 1, torch.full_like(c, self.eos_id), c)  # EOS ends the sample
                c = torch.where(pos >= length, torch.full_like(c, self.tok.pad_token_id), c)
            comps.append(c)
            masks.append((pos < length).float())
        comp, mask = torch.cat(comps), torch.cat(masks)
        texts = (tuple(str(int((c * m).sum())) for c, m in zip(comp, mask)) if self.varied
                 else tuple("" for _ in comp))
        device = next(model.parameters()).device
        return RolloutBatch(torch.cat([ids, comp], 1).to(device), torch.cat([att, mask.long()], 1).to(device),
                            ids.shape[1], comp.to(device), mask.to(device), texts, n)


def parity_reward(texts: list[str], golds: list[str]) -> list[float]:
    return [float(int(t) % 2) for t in texts]


def ddp_check(student_dir: str, teacher_dir: str, out: str, *, n_prompts: int = 4, max_new_tokens: int = 6,
              lr: float = 1e-2, seed: int = 0, micro_batch: int = 0) -> dict:
    """One `reference.stages.opd` step then one `reference.stages.grpo` step (student, group 2) over
    `n_prompts` prompts, through the stages' own engine path: with `accelerate launch` each process
    takes its shard, the stage prepares the model with the Accelerator and the losses are global
    token means. Saves each step's (all-reduced) gradients, the logged values and the final weights."""
    from reference import models as hf
    from reference import stages as st
    from reference.config import GRPOConfig, OPDConfig
    from reference.rewards import is_compliant
    from reference.world import Problem

    engine = make_engine(cpu=True)
    torch.manual_seed(seed)
    tok = hf.load_tokenizer(student_dir)
    student = hf.load_causal_lm(student_dir, device="cpu")
    teacher = hf.load_frozen_teacher(teacher_dir, device="cpu")
    hf.check_same_tokenizer(hf.load_tokenizer(teacher_dir), tok)
    vocab = hf.logit_vocab_size(tok, student.config)
    prompts = tuple(Problem(pid=str(i), prompt=f"{i}+{i * 3}=", gold=str(4 * i), terms=2) for i in range(n_prompts))
    ctx = st.StageContext(rollout=FixedRollout(tok, vocab, tok.eos_token_id, varied_lengths=True), vocab_size=vocab,
                          eos_id=tok.eos_token_id, score_batch=parity_reward, is_compliant=is_compliant,
                          engine=engine, micro_batch=micro_batch)
    grads: list[dict] = []
    before: list[dict] = []  # the weights each step starts from

    def keep_grads(opt, args, kwargs):  # the stage frees gradients after its step: copy them just before
        net = engine.accelerator.unwrap_model(student)
        grads.append({k: p.grad.detach().clone() for k, p in net.named_parameters() if p.grad is not None})
        before.append({k: p.detach().clone() for k, p in net.named_parameters()})

    from torch.optim.optimizer import register_optimizer_step_pre_hook

    handle = register_optimizer_step_pre_hook(keep_grads)
    try:
        opd = st.opd(student, teacher, prompts, OPDConfig(lr=lr, steps=1, prompts_per_step=n_prompts,
                                                          max_new_tokens=max_new_tokens, grad_clip=1e9), ctx, seed=seed)
        grpo = st.grpo(student, prompts, GRPOConfig(lr=lr, group_size=2, prompts_per_step=n_prompts, epochs=1.0,
                                                    max_new_tokens=max_new_tokens, grad_clip=1e9),
                       ctx, role="student", seed=seed)
    finally:
        handle.remove()
    result = {"world_size": engine.world_size, "kl_to_teacher": opd.log[0]["kl_to_teacher"],
              "grpo_loss": grpo.log[0].get("loss"), "grpo_steps": len(grads) - 1}
    if engine.is_main:
        net = engine.accelerator.unwrap_model(student)
        params = {k: v.detach().clone() for k, v in net.state_dict().items()}
        torch.save({"result": result, "params": params, "grads": grads, "before": before}, out)
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
    d.add_argument("--micro-batch", type=int, default=0)
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        r = ddp_check(args.student, args.teacher, args.out, n_prompts=args.prompts, micro_batch=args.micro_batch)
    except InputError as e:
        import sys

        print(f"error: {e}", file=sys.stderr)
        return 2
    print(r)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
