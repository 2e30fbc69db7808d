#!/usr/bin/env python
"""One-GPU rehearsal of the real-scale path (issue 24 item 8): what the first 8-GPU launch relies on, run
at the paper's model shapes on one GPU in under 10 minutes (`scripts/gpu_costs.py --rehearsal` runs it).

    python scripts/gpu_costs.py --rehearsal                        # GPU: Qwen3-1.7B shapes, random init, bf16
    python scripts/gpu_costs.py --rehearsal --tiny --device cpu    # the same code path on a CPU (a test runs it)

Each part prints PASS / MISS (or SKIP with the reason) and records its figures in the JSON
($OUT/gpu_rehearsal.json when $OUT is set, else /tmp/gpu_rehearsal_<date>.json):
1. mixed precision: the student-GRPO stage plan (reference.stage_plan: fp32 master weights and AdamW
   states, bf16 autocast) on the 1.7B model; GRPO updates at lr 1e-6 on fixed rollouts change >= 90% of
   the master entries (pure bf16 keeps most at zero), and the peak memory beside the dry run's estimate
   of the same chunk (reference.dryrun.memory_estimate; measured / estimated is printed, no pass mark:
   the estimate has never been checked on a GPU under mixed precision).
2. rollout memory: HFRollout with a KV-cache budget holding a quarter of a batch decodes it in micro-batches
   (reference.rollout.rollout_micro_batch); its peak above the resident weights is below the one-call
   peak of the whole batch.
3. mid-stage resume (the student with 2 decoder layers: the mechanism, with checkpoints a GPU's disk holds):
   GRPO updates with a mid-stage checkpoint every 2 steps (reference.midstage), cut after
   the step-2 checkpoint and resumed, against an uninterrupted run from the same start: the largest weight
   difference (0 on the CPU; on a GPU, nondeterministic kernels may leave rounding noise, which is printed).
4. CUDA seeding on TRL: a GRPOTrainer built inside a stage's seeded RNG leaves the CUDA generator where the
   stage put it (transformers' set_seed(0) would reset it), and its sampling stream starts there.
5. vLLM: whether it is importable here (the lent GPUs have no wheel: SKIP, with the reason).
The models are random (no weights can be downloaded); figures are of memory, dtypes and numbers, not
accuracy.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
from pathlib import Path
import sys
import tempfile
import time

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "scripts"), str(ROOT)]

import gpu_check as gc  # noqa: E402
import torch  # noqa: E402

GiB = 1024 ** 3


class Rehearsal:
    def __init__(self, args):
        ns = argparse.Namespace(tiny=args.tiny, device=args.device, out="", skip=args.skip, budget_s=args.budget_s)
        self.c = gc.setup(ns)
        self.out = Path(args.out)
        self.lines: list[str] = []

    def mark(self, ok: bool | None, text: str) -> None:
        tag = "SKIP" if ok is None else "PASS" if ok else "MISS"
        line = f"{tag}: {text}" + (" [tiny: not a GPU figure]" if self.c.args.tiny and ok is not None else "")
        self.lines.append(line)
        self.c.r.setdefault("marks", []).append(line)
        print(line, flush=True)

    def part(self, name: str, fn) -> None:
        gc.section(self.c, name, lambda c: fn())
        err = self.c.r.get(f"{name}_error")
        if err:
            self.mark(False, f"{name}: {err}")


def _student(c, layers: int | None = None):
    """The student's shapes (random init), or the same with `layers` decoder layers."""
    from dataclasses import replace
    from reference.models import logit_vocab_size
    mcfg = c.s_cfg if layers is None else replace(c.s_cfg, layers=layers)
    model = gc.build_model(mcfg, c.vocab, c.device, c.dtype, seed=1)
    return model, logit_vocab_size(c.tok, model.config)


def _grpo_cfg(c, lr: float):
    from reference.config import GRPOConfig
    return GRPOConfig(lr=lr, group_size=c.train["B"], prompts_per_step=1, epochs=1.0, max_new_tokens=c.train["new"],
                      temperature=1.0)


def mixed_precision(k: Rehearsal) -> None:
    from reference import stages
    from reference.dryrun import Shape, memory_estimate
    from reference.models import count_params
    from reference.rollout import FixedRollout
    from reference.stage_plan import apply as apply_plan, stage_plan

    c, r = k.c, k.c.r
    model, usable = _student(c)
    plan = stage_plan(c.paper, "student_grpo")
    apply_plan(plan, model)
    before = {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}
    ctx = gc.make_ctx(c.tok, usable, FixedRollout(c.tok, c.n_tok, c.tok.eos_token_id))
    probs = gc.problems(c.rng, 3, c.n_tok, c.train["P"])
    gc.reset_peak(c.device)
    stages.grpo(model, probs, _grpo_cfg(c, 1e-6), ctx, role="student", seed=0)
    peak = gc.peak_gib(c.device)
    changed = total = 0
    for n, p in model.named_parameters():
        if n in before:
            changed += int((p.detach().cpu() != before[n]).sum())
            total += p.numel()
    share = changed / total
    dtypes = sorted({str(p.dtype) for p in model.parameters() if p.requires_grad})
    m = model.config
    shape = Shape(m.hidden_size, m.num_hidden_layers, m.num_attention_heads, m.num_key_value_heads, m.head_dim,
                  m.intermediate_size, m.vocab_size, m.tie_word_embeddings, "rehearsal")
    tokens = c.train["B"] * (gc.ctx_prompt_len(probs, ctx) + c.train["new"])
    est = memory_estimate(trained=(shape, count_params(model)), frozen=None, tokens=tokens,
                          checkpointing=plan.checkpointing, n_gpus=1, shard=False, dtype_bytes=2, master_bytes=4)
    r["mixed"] = {"master_dtypes": dtypes, "changed_share": share, "peak_gib": peak, "estimate_gib": est["total"],
                  "tokens": tokens, "updates": len(probs)}
    k.mark(dtypes == ["torch.float32"] and share >= 0.9,
           f"mixed precision: {len(probs)} GRPO updates at lr 1e-6 changed {100 * share:.1f}% of the fp32 master "
           f"entries (>= 90%); master dtypes {dtypes}")
    ratio = peak / est["total"] if est["total"] > 0 and peak == peak else float("nan")
    c.log(f"mixed precision peak {peak:.1f} GiB, dry-run estimate {est['total']:.1f} GiB for {tokens} tokens "
          f"(measured / estimated {ratio:.2f})")
    del model
    gc.free(c.device)


def rollout_memory(k: Rehearsal) -> None:
    from reference.rollout import HFRollout, model_kv_cache_bytes

    c, r, gen = k.c, k.c.r, k.c.gen
    model, _ = _student(c)
    prompts = [gc.prompt_text(c.rng, c.n_tok, gen["P"]) for _ in range(gen["B"])]
    seq = model_kv_cache_bytes(model.config, gen["P"] + gen["N"], 2 if c.cuda else 4)
    budget = (gen["B"] // 4) * seq / GiB
    peaks = {}
    for name, ro in (("whole", HFRollout(c.tok)), ("micro", HFRollout(c.tok, kv_cache_gib=budget))):
        gc.free(c.device)
        gc.reset_peak(c.device)
        base = torch.cuda.memory_allocated() / GiB if c.cuda else 0.0
        torch.manual_seed(0)
        ro.generate(model, prompts, n=1, temperature=1.0, max_new_tokens=gen["N"])
        peaks[name] = gc.peak_gib(c.device) - base
    r["rollout_memory"] = {"kv_budget_gib": budget, "sequences_per_call": gen["B"] // 4, "batch": gen["B"],
                           "extra_peak_whole_gib": peaks["whole"], "extra_peak_micro_gib": peaks["micro"]}
    if c.cuda:
        k.mark(peaks["micro"] < peaks["whole"],
               f"rollout memory: {gen['B']} sequences in calls of {gen['B'] // 4} (KV budget {budget:.2f} GiB): "
               f"{peaks['micro']:.2f} GiB above the weights, one call {peaks['whole']:.2f} GiB")
    else:
        k.mark(None, "rollout memory: no allocator peak on a CPU (the decoding ran in micro-batches)")
    del model
    gc.free(c.device)


def midstage_resume(k: Rehearsal) -> None:
    from reference import stages
    from reference.midstage import MidStage
    from reference.rollout import FixedRollout
    from reference.seeds import seeded
    from reference.stage_plan import apply as apply_plan, stage_plan

    c, r = k.c, k.c.r
    model, usable = _student(c, layers=2)  # the mechanism, not the size: a checkpoint of 2 layers (fp32 + AdamW)
    apply_plan(stage_plan(c.paper, "student_grpo"), model)
    start = {n: v.detach().to("cpu", copy=True) for n, v in model.state_dict().items()}
    ctx = gc.make_ctx(c.tok, usable, FixedRollout(c.tok, c.n_tok, c.tok.eos_token_id))
    probs = gc.problems(c.rng, 4, c.n_tok, c.train["P"])
    cfg = _grpo_cfg(c, 1e-5)

    class Cut(Exception):
        pass

    class CutAfterTwo(MidStage):
        def save(self, step, *a, **kw):
            super().save(step, *a, **kw)
            if step == 2:
                raise Cut

    def run(watch):
        model.load_state_dict(start)
        with seeded(c.device, 7):
            stages.grpo(model, probs, cfg, ctx, role="student", seed=0, watch=watch)
        return {n: v.detach().to("cpu", copy=True) for n, v in model.state_dict().items()}

    with tempfile.TemporaryDirectory() as d:
        whole = run(MidStage(Path(d) / "whole", every=2))
        MidStage(Path(d) / "whole").discard()  # disk: one checkpoint at a time
        try:
            run(CutAfterTwo(Path(d) / "cut", every=2))
        except Cut:
            pass
        resumed = run(MidStage(Path(d) / "cut", every=2))
    diff = max(float((whole[n].float() - resumed[n].float()).abs().max()) for n in whole)
    r["midstage"] = {"updates": len(probs), "every": 2, "max_abs_diff": diff}
    k.mark(diff == 0.0 or c.cuda, f"mid-stage resume: {len(probs)} updates cut after step 2 and resumed; largest "
                                  f"weight difference from the uninterrupted run {diff:.3g}")
    del model
    gc.free(c.device)


def cuda_seeding(k: Rehearsal) -> None:
    from reference.rollout import FixedRollout
    from reference.seeds import rng_state, seeded
    try:
        from reference import trl_backend as tb
    except Exception as e:  # noqa: BLE001 — the GPU image may lack TRL's wheels
        k.mark(None, f"CUDA seeding on TRL: cannot import the TRL backend ({type(e).__name__}: {e})")
        return
    c, r = k.c, k.c.r
    model, usable = _student(c)
    ctx = gc.make_ctx(c.tok, usable, FixedRollout(c.tok, c.n_tok, c.tok.eos_token_id))
    probs = gc.problems(c.rng, 2, c.n_tok, c.train["P"])
    states = []
    with tempfile.TemporaryDirectory() as d:
        for seed in (11, 12):
            with seeded(c.device, seed):
                before = rng_state()
                trainer, _, _ = tb.build_grpo(model, probs, _grpo_cfg(c, 1e-6), ctx, c.tok, role="student", seed=0,
                                              out_dir=d)
                after = rng_state()
            states.append((before, after, trainer._rng_state))
    if not c.cuda:
        k.mark(None, "CUDA seeding on TRL: no CUDA generator on a CPU (tests/test_trl_backend.py records the calls)")
        return
    kept = all(torch.equal(b[1], a[1]) and torch.equal(b[1], s[1]) for b, a, s in states)
    distinct = not torch.equal(states[0][0][1], states[1][0][1])
    r["cuda_seeding"] = {"kept": kept, "distinct_per_stage_seed": distinct}
    k.mark(kept and distinct, "CUDA seeding on TRL: the trainer leaves each stage's CUDA generator as seeded "
                              f"(kept {kept}), and two stage seeds give two streams ({distinct})")
    del model
    gc.free(c.device)


def vllm(k: Rehearsal) -> None:
    from reference.rollout_vllm import vllm_available
    if not vllm_available():
        k.mark(None, "vLLM: not importable here (no wheel on the lent GPU); the sync is tested on a fake engine "
                     "(tests/test_rollout_vllm.py)")
        return
    k.mark(None, "vLLM: importable; its colocated engine needs a model path (random init has none): run "
                 "`reference-pipeline run --config configs/paper-qwen3-math.toml` with the weights")


PARTS = {"mixed_precision": mixed_precision, "rollout_memory": rollout_memory, "midstage_resume": midstage_resume,
         "cuda_seeding": cuda_seeding, "vllm": vllm}


def main(args) -> int:
    """Called by scripts/gpu_costs.py --rehearsal with its parsed arguments."""
    if not args.out or args.out.endswith(".csv"):
        base = Path(os.environ["OUT"]) if os.environ.get("OUT") else Path("/tmp")
        args.out = str(base / ("gpu_rehearsal.json" if os.environ.get("OUT")
                               else f"gpu_rehearsal_{_dt.date.today()}.json"))
    k = Rehearsal(args)
    t0 = time.perf_counter()
    for name, fn in PARTS.items():
        k.part(name, lambda fn=fn: fn(k))
    k.c.r["wall_s"] = time.perf_counter() - t0
    k.out.parent.mkdir(parents=True, exist_ok=True)
    k.out.write_text(json.dumps(k.c.r, indent=1, default=float) + "\n")
    print(f"\nrehearsal on {k.c.r['device']}{' [tiny]' if args.tiny else ''}: {k.c.r['wall_s']:.0f} s, wrote {k.out}")
    for line in k.lines:
        print(f"  {line}")
    return 1 if any(line.startswith("MISS") for line in k.lines) else 0
