"""Toy-loop speed, old tree vs this one (prints numbers; asserts nothing). Issue 22, item 5.

    git worktree add /tmp/wt_fe1bf61 fe1bf61          # once: the baseline checkout
    flock /tmp/s2d_heavy.lock python benchmarks/bench_toy_loop.py --baseline-tree /tmp/wt_fe1bf61

Per stage of the paper-like world (configs/legacy/fixed_length/paper_world.toml: student GRPO, teacher GRPO, FKL warmup,
OPD, at the config's batch shapes): training tokens/s = the stage's own compute account
(`StageResult.tokens`, rollout + training + scoring tokens) / its wall seconds, over `--steps` steps
after a discarded `--warmup`-step run of the same stage, from the base weights, torch seeded 0.
OLD runs the baseline tree with its HF `generate` sampler; NEW runs this tree with the lean sampler
(`HFRollout(tok, lean=True)`: lean decode + length-bucketed scoring). Each tree lives in its own
interpreter (PYTHONPATH=tree) for the whole run; they take turns stage by stage, so a change of machine
load hits both alike. Then one validation pass each (64 val problems x k = 4 at the config's eval
sampling: T 0.7, top-p 0.8, top-k 20, 80 new tokens).

The two trees draw different samples (lean decode consumes torch's RNG differently), so the token
counts differ a little; tokens/s is what is compared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# one long-lived worker per tree: reads one JSON command a line, answers one JSON line
WORKER = r"""
import copy, json, sys, time
import torch
from reference.models import quiet
quiet()
from reference import stages
from reference.config import load_config
from reference.evaluate import evaluate
try:
    from reference.assemble import build_models, build_world
except ImportError:  # trees before the pipeline split (fe1bf61)
    from reference.pipeline import build_models, build_world

cfg = load_config(sys.argv[1])
m = build_models(cfg, need_teacher=True)
if sys.argv[2] == "lean":
    from reference.rollout import HFRollout
    m.ctx.rollout = HFRollout(m.tokenizer, static_cache=cfg.engine.static_cache, micro_batch=cfg.engine.micro_batch,
                              lean=True)
world = build_world(cfg, m.tokenizer)
base_student, base_teacher = m.student, m.teacher


def run(stage, limit):
    student, teacher = copy.deepcopy(base_student), copy.deepcopy(base_teacher)
    torch.manual_seed(0)
    if stage == "student GRPO":
        return stages.grpo(student, world.labeled, cfg.grpo, m.ctx, role="student", seed=0, limit=limit)
    if stage == "teacher GRPO":
        return stages.grpo(teacher, world.labeled, cfg.grpo, m.ctx, role="teacher", seed=0, limit=limit)
    if stage == "FKL warmup":
        return stages.fkl_warmup(student, teacher, world.unlabeled, cfg.fkl, m.ctx, seed=0, limit=limit)
    if stage == "OPD":
        return stages.opd(student, teacher, world.unlabeled, cfg.opd, m.ctx, seed=0, limit=limit)
    raise ValueError(stage)


def validation(k, problems):
    torch.manual_seed(0)
    t0 = time.perf_counter()
    res = evaluate(base_student, world.val[:problems], m.ctx, cfg.eval, k=k, extras=False)
    return time.perf_counter() - t0, res.metrics


print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    cmd = json.loads(line)
    torch.set_num_threads(cmd["threads"])
    if cmd["stage"] == "validation":
        validation(cmd["k"], cmd["problems"])  # warm-up pass
        seconds, metrics = validation(cmd["k"], cmd["problems"])
        out = {"seconds": seconds, "metrics": metrics}
    else:
        run(cmd["stage"], cmd["warmup"])
        r = run(cmd["stage"], cmd["steps"])
        out = {"seconds": r.seconds, "tokens": r.tokens, "steps": r.steps,
               "length": sum(e.get("length", 0.0) for e in r.log) / max(1, len(r.log))}
    print(json.dumps(out), flush=True)
"""

STAGES = ("student GRPO", "teacher GRPO", "FKL warmup", "OPD")


class Worker:
    def __init__(self, tree: str, config: str, sampler: str):
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER, config, sampler], cwd=tree, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env={**os.environ, "PYTHONPATH": tree})
        assert json.loads(self.proc.stdout.readline())["ready"], f"worker on {tree} did not start"

    def ask(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "worker died (its stderr is above)"
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def config_in(tree: str, config: str) -> str:
    """The tree's own copy of the config file when it has one (an older parser may refuse newer fields)."""
    rel = os.path.relpath(os.path.abspath(config), ROOT)
    moved = os.path.join("configs", "legacy", "fixed_length", "")
    # a fixed-length config lay at the top of configs/ before it moved to configs/legacy/fixed_length/
    for cand in (rel, "configs" + os.sep + rel[len(moved):] if rel.startswith(moved) else None):
        if cand and os.path.exists(os.path.join(tree, cand)):
            return os.path.join(tree, cand)
    return os.path.abspath(config)


def agreement(config: str) -> float:
    """Max |log-prob gap| on one student GRPO batch of this tree: HF's training forward against the lean
    decode's cached steps on the same sequences (float32: HF generate against HF's own forward is ~1e-5)."""
    import torch

    from reference.assemble import build_models, build_world
    from reference.config import load_config
    from reference.losses import token_logp_BT
    from reference.models import quiet
    from reference.rollout import completion_logits, lean_completion_logits
    quiet()
    torch.set_num_threads(1)
    cfg = load_config(config)
    m = build_models(cfg, need_teacher=False)
    prompts = [p.prompt for p in build_world(cfg, m.tokenizer).labeled[:cfg.grpo.prompts_per_step]]
    torch.manual_seed(0)
    ro = m.ctx.rollout.generate(m.student, prompts, n=cfg.grpo.group_size, temperature=cfg.grpo.temperature,
                                max_new_tokens=cfg.grpo.max_new_tokens)
    with torch.no_grad():
        hf = token_logp_BT(completion_logits(m.student, ro, m.ctx.vocab_size), ro.completion_BT)
    lean = token_logp_BT(lean_completion_logits(m.student, ro, m.ctx.vocab_size), ro.completion_BT)
    return float((hf - lean)[ro.mask_BT.bool()].abs().max())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline-tree", required=True, help="a checkout of the baseline commit (fe1bf61)")
    ap.add_argument("--config", default=os.path.join(ROOT, "configs", "legacy", "fixed_length", "paper_world.toml"))
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--val-problems", type=int, default=64)
    ap.add_argument("--val-k", type=int, default=4)
    args = ap.parse_args()
    tree = os.path.abspath(args.baseline_tree)
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tree, capture_output=True, text=True).stdout
    print(f"old: {tree} @ {rev.strip()} (HF generate)   new: {ROOT} working tree (HFRollout lean=True)")
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; "
          f"{args.steps} steps after a {args.warmup}-step warm-up run, per stage", flush=True)
    old = Worker(tree, config_in(tree, args.config), "hf")
    new = Worker(ROOT, args.config, "lean")
    print(f"new: lean decode vs HF forward on one student GRPO batch, max |log-prob gap| {agreement(args.config):.1e}",
          flush=True)
    rows = []
    print(f"{'stage':14s} {'threads':>7s} {'old tok/s':>10s} {'new tok/s':>10s} {'ratio':>6s}   "
          f"{'old s':>6s} {'new s':>6s}  mean length old/new", flush=True)
    for threads in [int(t) for t in args.threads.split(",")]:
        for stage in STAGES:
            cmd = dict(stage=stage, threads=threads, steps=args.steps, warmup=args.warmup)
            a, b = old.ask(**cmd), new.ask(**cmd)
            ta, tb = a["tokens"] / a["seconds"], b["tokens"] / b["seconds"]
            rows.append((stage, threads, ta, tb))
            print(f"{stage:14s} {threads:7d} {ta:10.0f} {tb:10.0f} {tb / ta:5.2f}x   {a['seconds']:6.2f} {b['seconds']:6.2f}"
                  f"  {a['length']:.1f}/{b['length']:.1f}", flush=True)
        cmd = dict(stage="validation", threads=threads, k=args.val_k, problems=args.val_problems)
        a, b = old.ask(**cmd), new.ask(**cmd)
        print(f"{'validation':14s} {threads:7d}  one pass ({args.val_problems} x k={args.val_k}): old "
              f"{a['seconds']:.2f} s, new {b['seconds']:.2f} s ({a['seconds'] / b['seconds']:.2f}x); avg@k "
              f"{a['metrics'].get('accuracy', float('nan')):.1f} / {b['metrics'].get('accuracy', float('nan')):.1f}", flush=True)
    old.close()
    new.close()
    print(f"load at the end {os.getloadavg()[0]:.2f}; slowest stage ratio {min(tb / ta for _, _, ta, tb in rows):.2f}x")


if __name__ == "__main__":
    main()
