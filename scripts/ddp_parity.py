#!/usr/bin/env python
"""DDP parity: one real OPD step and one GRPO step (reference.stages.opd / .grpo, the pipeline's own
engine path) on tiny models, the same under one process or `accelerate launch --num_processes N`.

    python scripts/ddp_parity.py --student S --teacher T --out one.pt
    accelerate launch --multi_gpu --num_processes 2 scripts/ddp_parity.py --student S --teacher T \
        --micro-batch 1 --out two.pt

Saves the losses, each step's gradients and the updated parameters, so tests/test_scale_engines.py can
check that N-process DDP (rank shards, `Accelerator.prepare`, global token means) matches one process.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
import sys

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch.optim.optimizer import register_optimizer_step_pre_hook  # noqa: E402

from reference import models as hf  # noqa: E402
from reference import stages  # noqa: E402
from reference.config import GRPOConfig, OPDConfig  # noqa: E402
from reference.engines import make_engine  # noqa: E402
from reference.rewards import is_compliant  # noqa: E402
from reference.rollout import FixedRollout  # noqa: E402
from reference.world import Problem  # noqa: E402
from theory.errors import InputError  # noqa: E402


def parity_reward(texts: list[str], golds: list[str]) -> list[float]:
    """1 for an odd token sum (FixedRollout's text), else 0: varied rewards without a solvable task."""
    return [float(int(t) % 2) for t in texts]


def ddp_check(student_dir: str, teacher_dir: str, out: str, *, n_prompts: int = 4, max_new_tokens: int = 6,
              lr: float = 1e-2, seed: int = 0, micro_batch: int = 0) -> dict:
    """One `reference.stages.opd` step then one `reference.stages.grpo` step (student, group 2) over
    `n_prompts` prompts, through the stages' own engine path: with `accelerate launch` each process
    takes its shard, the stage prepares the model with the Accelerator and the losses are global
    token means. Saves each step's (all-reduced) gradients, the logged values and the final weights."""
    engine = make_engine(cpu=True)
    torch.manual_seed(seed)
    tok = hf.load_tokenizer(student_dir)
    student = hf.load_causal_lm(student_dir, device="cpu")
    teacher = hf.load_frozen_teacher(teacher_dir, device="cpu")
    hf.check_same_tokenizer(hf.load_tokenizer(teacher_dir), tok)
    vocab = hf.logit_vocab_size(tok, student.config)
    prompts = tuple(Problem(pid=str(i), prompt=f"{i}+{i * 3}=", gold=str(4 * i), terms=2) for i in range(n_prompts))
    ctx = stages.StageContext(rollout=FixedRollout(tok, vocab, tok.eos_token_id, varied_lengths=True), vocab_size=vocab,
                              eos_id=tok.eos_token_id, score_batch=parity_reward, is_compliant=is_compliant,
                              engine=engine, micro_batch=micro_batch)
    grads: list[dict] = []
    before: list[dict] = []  # the weights each step starts from

    def keep_grads(opt, args, kwargs):  # the stage frees gradients after its step: copy them just before
        net = engine.accelerator.unwrap_model(student)
        grads.append({k: p.grad.detach().clone() for k, p in net.named_parameters() if p.grad is not None})
        before.append({k: p.detach().clone() for k, p in net.named_parameters()})

    handle = register_optimizer_step_pre_hook(keep_grads)
    try:
        opd = stages.opd(student, teacher, prompts, OPDConfig(lr=lr, steps=1, prompts_per_step=n_prompts,
                                                              max_new_tokens=max_new_tokens, grad_clip=1e9),
                         ctx, seed=seed)
        grpo = stages.grpo(student, prompts, GRPOConfig(lr=lr, group_size=2, prompts_per_step=n_prompts, epochs=1.0,
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
    ap = argparse.ArgumentParser(prog="scripts/ddp_parity.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--student", required=True)
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--micro-batch", type=int, default=0)
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        r = ddp_check(args.student, args.teacher, args.out, n_prompts=args.prompts, micro_batch=args.micro_batch)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(r)
    return 0


if __name__ == "__main__":
    from reference.engines import exit_rank
    code = main()
    exit_rank(code)  # under accelerate launch: end the rank without interpreter teardown
    raise SystemExit(code)
