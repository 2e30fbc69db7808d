"""Pre-train the toy world's base models and write them under reference/assets/ (run once; committed).

    flock /tmp/s2d_heavy.lock python scripts/pretrain_base.py --config configs/toy.toml --role all

Each model is a tiny Qwen3 trained with the plain next-token loss on generated documents
"<prompt><solution><eos>" in its own style (direct answers for the student, running partial sums for
the teacher) with a fraction `protocol_break` of answers written "ANS<n>" instead of "\\boxed{<n>}".
No document uses an expression from any split of the world. The checkpoint's meta records the
spec it was built from; loading checks it and the weights' sha256. Prints base pass rates (sampled,
T = eval.temperature) on the validation split so the world can be sized before any arm is run.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np
import torch

from reference import checkpoint as ckpt
from reference.config import load_config
from reference.evaluate import evaluate
from reference.assemble import asset_spec, build_models, build_world
from reference.tokenizer import toy_tokenizer
from theory.errors import InputError


def pretrain(cfg, role: str, *, log_every: int = 250) -> None:
    mcfg = getattr(cfg, role)
    if not mcfg.asset:
        raise InputError(f"{role}.asset is empty: nothing to pre-train")
    tok = toy_tokenizer()
    world = build_world(cfg)
    model = ckpt.tiny_qwen3(mcfg, len(tok), pad_id=tok.pad_token_id, eos_id=tok.eos_token_id)
    rng = np.random.default_rng([mcfg.init_seed, 777])
    from reference.world import pretraining_text
    opt = torch.optim.AdamW(model.parameters(), lr=mcfg.pretrain_lr, betas=(0.9, 0.98), weight_decay=0.01)
    warm = max(1, mcfg.pretrain_steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / mcfg.pretrain_steps))))
    t0 = time.perf_counter()
    tok.padding_side = "right"
    try:
        for step in range(mcfg.pretrain_steps):
            docs = pretraining_text(world, style=mcfg.style, protocol_break=mcfg.protocol_break,
                                    n=mcfg.pretrain_batch, rng=rng,
                                    shares=mcfg.shares if mcfg.style == "mix" else (), drills=mcfg.step_drills)
            enc = tok([d + tok.eos_token for d in docs], return_tensors="pt", padding=True, add_special_tokens=False)
            labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
            out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], labels=labels)
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            if step % log_every == 0 or step == mcfg.pretrain_steps - 1:
                print(f"[{role}] step {step} loss {out.loss.item():.4f} ({time.perf_counter() - t0:.0f}s)", flush=True)
    finally:
        tok.padding_side = "left"
    ckpt.save_weights(model, ckpt.asset_dir(mcfg.asset),
                      {"spec": asset_spec(mcfg), "role": role, "world": cfg.world.name,
                       "seconds": round(time.perf_counter() - t0, 1)})
    print(f"[{role}] saved {ckpt.asset_dir(mcfg.asset)} in {time.perf_counter() - t0:.0f}s", flush=True)


def report_base(cfg) -> None:
    """Sampled base pass rates on the validation split (a pre-training sanity check, not an arm result)."""
    m = build_models(cfg, need_teacher=True)
    world = build_world(cfg)
    for role, model in (("student", m.student), ("teacher", m.teacher)):
        torch.manual_seed(0)
        r = evaluate(model, world.val, m.ctx, cfg.eval).metrics
        print(f"base {role}: " + ", ".join(f"{k}={v:.1f}" for k, v in r.items()), flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/toy.toml")
    ap.add_argument("--role", choices=["student", "teacher", "all", "none"], default="all")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from transformers.utils import logging
    logging.set_verbosity_error()
    try:
        cfg = load_config(args.config)
        for role in (("student", "teacher") if args.role == "all" else () if args.role == "none" else (args.role,)):
            pretrain(cfg, role)
        report_base(cfg)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
