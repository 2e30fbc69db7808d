#!/usr/bin/env python
"""One GPU check of the real-scale path, under 10 minutes on one GPU (start-up included).

    python scripts/gpu_check.py                 # H100/H200: Qwen3-1.7B student + Qwen3-8B teacher shapes
    python scripts/gpu_check.py --tiny          # CPU smoke of the same code path (a test runs this)

Needs only torch + transformers (+ numpy); the repo does not have to be installed. No weights exist
offline, so both models are random-init `Qwen3ForCausalLM` with the official shapes read from
configs/paper-qwen3-math.toml, and a synthetic tokenizer with Qwen3's 151669 tokens (the config
vocabulary is padded to 151936, so padded logits are sliced off exactly as in a real run).

1. Anchors, bare PyTorch, on this card in this run (../shared/science.md measured them on an H100):
   1.7B full fine-tune step 8x1024 (fused AdamW), 1.7B and 8B forward + log-softmax scoring 16x1024,
   8B full fine-tune 2x1024, plain HF `generate` at batch 64 (128-token prompt + 256 new).
2. The reference code (reference.stages / rollout / losses), a few steps of each stage:
   teacher GRPO (8B, 2x1024), forward-KL warmup and OPD (1.7B student, frozen 8B teacher, 8x1024,
   full-vocabulary KL), student GRPO (1.7B, 8x1024), rollouts with HFRollout (static KV cache) at the
   anchor batch and lengths. Training batches use fixed-length deterministic completions so every
   step has exactly the anchor's token count; GRPO rewards in this check are a fixed alternating
   pattern (random-init models never solve a problem; the update path is what is timed).
3. Asserts OPD lowers the per-token KL to the teacher on held-out prompts, then prints one table
   with ratios to the anchors and the issue's goals, and writes it as JSON (--out).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
import gc
import json
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

try:  # Python 3.10 images: reference.config reads TOML with tomllib; pip vendors the same parser
    import tomllib  # noqa: F401
except ModuleNotFoundError:  # pragma: no cover
    from pip._vendor import tomli as _tomli

    sys.modules["tomllib"] = _tomli

import torch  # noqa: E402

GiB = 1024**3
QWEN3_TOKENIZER_LEN = 151669  # tokens in the Qwen3 tokenizer (config vocab is padded to 151936)

# science.md, one H100, torch 2.11 / transformers 5.17 (printed beside this run's own anchors)
SCIENCE_H100 = {
    "anchor_ft_1p7b_tok_s": 26.6e3, "anchor_score_1p7b_tok_s": 84.8e3, "anchor_score_8b_tok_s": 28.3e3,
    "anchor_ft_8b_tok_s": 7.1e3, "anchor_gen_plain_b64_tok_s": 2.4e3, "anchor_gen_static_b64_tok_s": 6.3e3,
}


# --------------------------------------------------------------------------------------------------
# set-up
# --------------------------------------------------------------------------------------------------


def synthetic_tokenizer(n_tokens: int):
    """A WordLevel tokenizer with `n_tokens` entries `<tK>` (+ specials) — Qwen3's size, no download."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_end|>"]
    vocab = {s: i for i, s in enumerate(specials)}
    for k in range(n_tokens - len(specials)):
        vocab[f"<t{k}>"] = len(vocab)
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|endoftext|>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"<\|[a-z_]+\|>|<t\d+>"), behavior="isolated")
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.padding_side = "left"
    return tok


def prompt_text(rng: torch.Generator, n_tok: int, length: int) -> str:
    ids = torch.randint(2, n_tok, (length,), generator=rng)
    return "".join(f"<t{int(i) - 2}>" for i in ids)


def build_model(mcfg, vocab: int, device: str, dtype: torch.dtype, seed: int):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    cfg = Qwen3Config(vocab_size=vocab, hidden_size=mcfg.hidden, num_hidden_layers=mcfg.layers,
                      num_attention_heads=mcfg.heads, num_key_value_heads=mcfg.kv_heads, head_dim=mcfg.head_dim,
                      intermediate_size=mcfg.intermediate, tie_word_embeddings=mcfg.tie_embeddings,
                      max_position_embeddings=max(mcfg.max_position, 4096), pad_token_id=0, eos_token_id=1)
    torch.manual_seed(seed)
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # initialise directly in bf16 on the GPU: no fp32 copy of 8B params
    try:
        with torch.device(device):
            model = Qwen3ForCausalLM(cfg)
    finally:
        torch.set_default_dtype(prev)
    return model


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device: str) -> float:
    return torch.cuda.max_memory_allocated() / GiB if device.startswith("cuda") else float("nan")


def free(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def guarded(r: dict, name: str, device: str, fn):
    """Run one section; an out-of-memory error is recorded in the table instead of ending the check."""
    try:
        return fn()
    except torch.OutOfMemoryError as e:
        r[f"{name}_error"] = "OOM: " + str(e).splitlines()[0][:120]
        print(f"{name}: out of memory, recorded and skipped", flush=True)
    free(device)
    return None


def timed(fn, *, warmup: int, iters: int, device: str) -> float:
    for _ in range(warmup):
        fn()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / iters


# --------------------------------------------------------------------------------------------------
# anchors: bare PyTorch / plain HF, nothing from reference/
# --------------------------------------------------------------------------------------------------


def anchor_ft(model, B: int, T: int, vocab: int, device: str, iters: int) -> tuple[float, float]:
    ids = torch.randint(2, vocab, (B, T), device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6, fused=device.startswith("cuda"))
    model.train()

    def step():
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    reset_peak(device)
    dt = timed(step, warmup=2, iters=iters, device=device)
    peak = peak_gib(device)
    del opt
    for p in model.parameters():
        p.grad = None
    free(device)
    return B * T / dt, peak


@torch.no_grad()
def anchor_score(model, B: int, T: int, vocab: int, device: str, iters: int) -> tuple[float, float]:
    ids = torch.randint(2, vocab, (B, T), device=device)
    model.eval()

    def fwd():
        logits = model(input_ids=ids).logits
        torch.log_softmax(logits.float(), dim=-1).gather(-1, ids.unsqueeze(-1))

    reset_peak(device)
    dt = timed(fwd, warmup=1, iters=iters, device=device)
    return B * T / dt, peak_gib(device)


@torch.no_grad()
def anchor_generate(model, B: int, P: int, N: int, vocab: int, device: str) -> float:
    ids = torch.randint(2, vocab, (B, P), device=device)
    att = torch.ones_like(ids)
    model.eval()

    def gen(n):
        model.generate(input_ids=ids, attention_mask=att, max_new_tokens=n, min_new_tokens=n, do_sample=True,
                       temperature=1.0, top_k=0, pad_token_id=0, eos_token_id=1)

    gen(8)  # warm-up (kernels, allocator); plain HF generate has no compilation step
    dt = timed(lambda: gen(N), warmup=0, iters=1, device=device)
    return B * N / dt


# --------------------------------------------------------------------------------------------------
# the reference code path
# --------------------------------------------------------------------------------------------------


def rewards_check() -> str:
    """The shared reward on this machine: math-verify arrives as a wheel (scripts/fetch_gpu_wheels.sh)."""
    try:
        import math_verify  # noqa: F401
    except ImportError:
        return "math-verify not installed (bring the wheels: scripts/fetch_gpu_wheels.sh)"
    from reference.rewards import score_batch

    got = score_batch(["\\boxed{\\frac{2}{4}}", "\\boxed{12+34}", "\\boxed{46}"], ["\\frac12", "46", "46"], timeout_s=5.0)
    if got != [1.0, 0.0, 1.0]:
        raise AssertionError(f"reward check failed: {got}")
    return "ok (math-verify worker pool)"


def make_ctx(tok, vocab_usable: int, rollout):
    from reference import stages
    from reference.rewards import is_compliant

    def alternating_rewards(completions, golds):  # see module docstring: timing, not learning
        return [float(i % 2) for i in range(len(completions))]

    return stages.StageContext(rollout=rollout, vocab_size=vocab_usable, eos_id=tok.eos_token_id,
                               score_batch=alternating_rewards, is_compliant=is_compliant)


def problems(rng, n: int, n_tok: int, prompt_len: int):
    from reference.world import Problem

    return tuple(Problem(pid=str(i), prompt=prompt_text(rng, n_tok, prompt_len), gold="0", terms=0) for i in range(n))


def stage_grpo(policy, ctx, probs, *, group: int, new: int, steps: int, lr: float, device: str, role: str):
    """Tokens/s of `steps` GRPO updates after one warm-up update (each update: group x (prompt+new))."""
    from reference import stages
    from reference.config import GRPOConfig

    cfg = GRPOConfig(lr=lr, group_size=group, prompts_per_step=1, epochs=1.0, max_new_tokens=new, temperature=1.0)
    stages.grpo(policy, probs[:1], cfg, ctx, role=role, seed=0)  # warm-up (kernels, allocator)
    reset_peak(device)
    sync(device)
    t0 = time.perf_counter()
    res = stages.grpo(policy, probs[:steps], cfg, ctx, role=role, seed=1)
    sync(device)
    dt = time.perf_counter() - t0
    tokens = sum(1 for e in res.log if "loss" in e) * group * (ctx_prompt_len(probs, ctx) + new)
    for p in policy.parameters():
        p.grad = None
    return tokens / dt, peak_gib(device), res


def ctx_prompt_len(probs, ctx) -> int:
    return len(ctx.rollout.tok(probs[0].prompt, add_special_tokens=False).input_ids)


@torch.no_grad()
def held_out_kl(student, teacher, batch, vocab_usable: int) -> float:
    from reference import losses
    from reference.rollout import completion_logits

    s = completion_logits(student, batch, vocab_usable)
    t = completion_logits(teacher, batch, vocab_usable)
    return float(losses.masked_mean(losses.reverse_kl_BT(s, t), batch.mask_BT))


# --------------------------------------------------------------------------------------------------
# one run: the shared set-up, then one function per measurement (each fills its keys of `c.r`)
# --------------------------------------------------------------------------------------------------


@dataclass
class Check:
    """What the measurements share: shapes, the synthetic tokenizer, one prompt generator (drawn from in
    the order the measurements run), the live models `m` and the results `r` (the JSON written by --out)."""

    args: argparse.Namespace
    device: str
    dtype: torch.dtype
    paper: object  # reference.config.Config of configs/paper-qwen3-math.toml
    s_cfg: object  # student / teacher ModelConfig (the paper's shapes, or tiny ones)
    t_cfg: object
    n_tok: int  # tokenizer entries (Qwen3's 151669)
    vocab: int  # the config's padded vocabulary (151936)
    ft: dict  # batch x length of: the student fine-tune anchor,
    ft8: dict  # the teacher fine-tune anchor (and teacher GRPO),
    score: dict  # the scoring anchors,
    gen: dict  # generation (batch, prompt and new tokens),
    train: dict  # the stage steps,
    opd_kl: dict  # the OPD-lowers-KL check
    iters: int  # timed iterations per anchor
    tok: object
    rng: torch.Generator
    t_start: float
    r: dict = field(default_factory=dict)
    m: dict = field(default_factory=dict)

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    def log(self, msg: str) -> None:
        print(f"[{time.perf_counter() - self.t_start:6.1f}s] {msg}", flush=True)


def setup(args) -> Check:
    """Shapes (the paper's or --tiny), the tokenizer and the run's header in `r`."""
    from reference.config import load_config

    t_start = time.perf_counter()
    cuda = args.device.startswith("cuda")
    paper = load_config(ROOT / "configs" / "paper-qwen3-math.toml")
    if args.tiny:
        from dataclasses import replace

        s_cfg = replace(paper.student, hidden=64, layers=2, heads=4, kv_heads=2, head_dim=16, intermediate=128)
        t_cfg = replace(paper.teacher, hidden=96, layers=2, heads=4, kv_heads=2, head_dim=24, intermediate=192)
        n_tok, vocab = 500, 512
        ft, ft8, score = dict(B=2, T=64), dict(B=2, T=64), dict(B=2, T=64)
        gen = dict(B=4, P=16, N=16)
        train = dict(B=2, P=16, new=32)
        opd_kl = dict(prompts=4, new=12, steps=6, lr=3e-3)
        iters = 1
    else:
        s_cfg, t_cfg = paper.student, paper.teacher
        n_tok, vocab = QWEN3_TOKENIZER_LEN, 151936
        ft, ft8, score = dict(B=8, T=1024), dict(B=2, T=1024), dict(B=16, T=1024)
        gen = dict(B=64, P=128, N=256)
        train = dict(B=8, P=128, new=896)
        opd_kl = dict(prompts=8, new=64, steps=6, lr=1e-4)
        iters = 5
    tok = synthetic_tokenizer(n_tok)
    rng = torch.Generator().manual_seed(0)
    import transformers

    r: dict = {"device": torch.cuda.get_device_name(0) if cuda else "cpu", "torch": torch.__version__,
               "transformers": transformers.__version__, "python": sys.version.split()[0], "tiny": args.tiny,
               "sizes": {"ft": f"{ft['B']}x{ft['T']}", "ft8": f"{ft8['B']}x{ft8['T']}",
                         "score": f"{score['B']}x{score['T']}", "gen": f"batch {gen['B']}, {gen['P']}+{gen['N']}",
                         "train": f"{train['B']}x{train['P'] + train['new']}"}}
    return Check(args=args, device=args.device, dtype=torch.bfloat16 if cuda else torch.float32, paper=paper,
                 s_cfg=s_cfg, t_cfg=t_cfg, n_tok=n_tok, vocab=vocab, ft=ft, ft8=ft8, score=score, gen=gen, train=train,
                 opd_kl=opd_kl, iters=iters, tok=tok, rng=rng, t_start=t_start, r=r)


def save(c: Check) -> None:
    c.r["wall_s"] = time.perf_counter() - c.t_start
    if c.args.out:
        Path(c.args.out).write_text(json.dumps(c.r, indent=2, default=float))


def section(c: Check, name: str, fn) -> None:
    """Run one part; an error (OOM, compile failure) is recorded, the rest still runs; skip past the budget."""
    if c.args.skip and name in c.args.skip:
        return
    if time.perf_counter() - c.t_start > c.args.budget_s:
        c.r[f"{name}_error"] = f"skipped: past the {c.args.budget_s:.0f} s budget"
        c.log(f"{name}: skipped (time budget)")
        return
    try:
        fn(c)
    except Exception as e:  # noqa: BLE001 — one GPU run: record and go on
        c.r[f"{name}_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
        c.log(f"{name}: FAILED {c.r[f'{name}_error']}")
    for mod in c.m.values():
        for p in mod.parameters():
            p.grad = None
    free(c.device)
    save(c)


def measure_rewards(c: Check) -> None:
    c.r["rewards"] = rewards_check()
    c.log(f"rewards: {c.r['rewards']}")


def measure_student_anchors(c: Check) -> None:
    """Builds the student; its fine-tune and scoring anchors."""
    from reference.models import logit_vocab_size

    r, ft, score = c.r, c.ft, c.score
    c.m["student"] = build_model(c.s_cfg, c.vocab, c.device, c.dtype, seed=1)
    r["usable_vocab"] = logit_vocab_size(c.tok, c.m["student"].config)
    assert r["usable_vocab"] == c.n_tok < c.vocab, "padded vocabulary must be sliced"
    r["anchor_ft_1p7b_tok_s"], r["anchor_ft_1p7b_peak_gib"] = anchor_ft(c.m["student"], ft["B"], ft["T"], c.n_tok,
                                                                        c.device, c.iters)
    c.log(f"anchor FT student {ft['B']}x{ft['T']}: {r['anchor_ft_1p7b_tok_s']:.0f} tok/s, "
          f"peak {r['anchor_ft_1p7b_peak_gib']:.1f} GiB")
    r["anchor_score_1p7b_tok_s"], _ = anchor_score(c.m["student"], score["B"], score["T"], c.n_tok, c.device, c.iters)
    c.log(f"anchor scoring student {r['anchor_score_1p7b_tok_s']:.0f} tok/s")


def measure_anchor_generate(c: Check) -> None:
    gen = c.gen
    c.r["anchor_gen_plain_b64_tok_s"] = anchor_generate(c.m["student"], gen["B"], gen["P"], gen["N"], c.n_tok, c.device)
    c.log(f"anchor plain generate {c.r['anchor_gen_plain_b64_tok_s']:.0f} tok/s")


def measure_rollouts(c: Check) -> None:
    """The reference interface, static KV cache on GPUs (compiled on first call)."""
    from reference.rollout import HFRollout

    r, gen = c.r, c.gen
    ro = HFRollout(c.tok, static_cache=c.cuda)
    prompts = [prompt_text(c.rng, c.n_tok, gen["P"]) for _ in range(gen["B"])]
    torch.manual_seed(0)
    t0 = time.perf_counter()
    ro.generate(c.m["student"], prompts, n=1, temperature=1.0, max_new_tokens=gen["N"])
    sync(c.device)
    r["rollout_first_call_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    b = ro.generate(c.m["student"], prompts, n=1, temperature=1.0, max_new_tokens=gen["N"])
    sync(c.device)
    r["rollout_tok_s"] = float(b.mask_BT.sum()) / (time.perf_counter() - t0)
    r["rollout_backend"] = "hf-static-cache" if c.cuda else "hf"
    c.log(f"rollout ({r['rollout_backend']}) {r['rollout_tok_s']:.0f} tok/s "
          f"(first call {r['rollout_first_call_s']:.0f} s)")


def measure_teacher_anchors(c: Check) -> None:
    """Builds the teacher; its scoring anchor."""
    r, score = c.r, c.score
    c.m["teacher"] = build_model(c.t_cfg, c.vocab, c.device, c.dtype, seed=2)
    r["anchor_score_8b_tok_s"], r["anchor_score_8b_peak_gib"] = anchor_score(c.m["teacher"], score["B"], score["T"],
                                                                             c.n_tok, c.device, c.iters)
    c.log(f"anchor scoring teacher {r['anchor_score_8b_tok_s']:.0f} tok/s")


def measure_teacher_ft(c: Check) -> None:
    r, ft8 = c.r, c.ft8
    r["anchor_ft_8b_tok_s"], r["anchor_ft_8b_peak_gib"] = anchor_ft(c.m["teacher"], ft8["B"], ft8["T"], c.n_tok,
                                                                    c.device, c.iters)
    c.log(f"anchor FT teacher {ft8['B']}x{ft8['T']}: {r['anchor_ft_8b_tok_s']:.0f} tok/s, "
          f"peak {r['anchor_ft_8b_peak_gib']:.1f} GiB")


def measure_teacher_grpo(c: Check) -> None:
    """The same grpo() as the student's."""
    from reference.rollout import FixedRollout

    r = c.r
    ctx = make_ctx(c.tok, r["usable_vocab"], FixedRollout(c.tok, c.n_tok, c.tok.eos_token_id))
    r["teacher_grpo_tok_s"], r["teacher_grpo_peak_gib"], _ = stage_grpo(
        c.m["teacher"], ctx, problems(c.rng, 3, c.n_tok, c.train["P"]), group=c.ft8["B"],
        new=c.ft8["T"] - c.train["P"], steps=2, lr=1e-6, device=c.device, role="teacher")
    c.log(f"stage teacher GRPO {r['teacher_grpo_tok_s']:.0f} tok/s, peak {r['teacher_grpo_peak_gib']:.1f} GiB")


def measure_ref_scoring(c: Check) -> None:
    """completion_logits + token log-probs, as every stage scores."""
    from reference import losses
    from reference.models import freeze
    from reference.rollout import FixedRollout, completion_logits

    r, score, teacher = c.r, c.score, c.m["teacher"]
    freeze(teacher)
    fixed = FixedRollout(c.tok, c.n_tok, c.tok.eos_token_id)
    sp = problems(c.rng, score["B"], c.n_tok, c.train["P"])
    sb = fixed.generate(teacher, [p.prompt for p in sp], n=1, temperature=1.0,
                        max_new_tokens=score["T"] - c.train["P"])

    @torch.no_grad()
    def once():
        losses.token_logp_BT(completion_logits(teacher, sb, r["usable_vocab"]), sb.completion_BT)

    r["teacher_scoring_tok_s"] = float(sb.attention_BL.sum()) / timed(once, warmup=1, iters=c.iters, device=c.device)
    c.log(f"reference teacher scoring {r['teacher_scoring_tok_s']:.0f} tok/s")


def measure_opd_lowers_kl(c: Check) -> None:
    """On-policy samples for training, held-out prompts for the check."""
    from reference import stages
    from reference.config import OPDConfig
    from reference.rollout import FixedRollout, HFRollout

    r, opd_kl, n_tok = c.r, c.opd_kl, c.n_tok
    student, teacher = c.m["student"], c.m["teacher"]
    student.train()
    ctx_hf = make_ctx(c.tok, r["usable_vocab"], HFRollout(c.tok, static_cache=False))
    fixed = FixedRollout(c.tok, n_tok, c.tok.eos_token_id)
    held = problems(c.rng, opd_kl["prompts"], n_tok, c.train["P"] // 4)
    hb = fixed.generate(student, [p.prompt for p in held], n=1, temperature=1.0, max_new_tokens=opd_kl["new"])
    r["opd_kl_before"] = held_out_kl(student, teacher, hb, r["usable_vocab"])
    res = stages.opd(student, teacher, problems(c.rng, opd_kl["prompts"] * 4, n_tok, c.train["P"] // 4),
                     OPDConfig(lr=opd_kl["lr"], steps=opd_kl["steps"], prompts_per_step=opd_kl["prompts"],
                               max_new_tokens=opd_kl["new"], temperature=1.0), ctx_hf, seed=0)
    r["opd_kl_after"] = held_out_kl(student, teacher, hb, r["usable_vocab"])
    r["opd_train_kl_log"] = [round(e["kl_to_teacher"], 4) for e in res.log]
    c.log(f"OPD held-out KL {r['opd_kl_before']:.4f} -> {r['opd_kl_after']:.4f} over {opd_kl['steps']} steps")


def measure_bridge(name: str, fn, cfg_cls):
    """One FKL / OPD step at 8 x 1024, full-vocabulary KL (`fn`: reference.stages.fkl_warmup or .opd)."""
    def go(c: Check) -> None:
        from reference.rollout import FixedRollout

        r, train = c.r, c.train
        ctx = make_ctx(c.tok, r["usable_vocab"], FixedRollout(c.tok, c.n_tok, c.tok.eos_token_id))
        big = problems(c.rng, train["B"], c.n_tok, train["P"])
        mk = lambda steps: cfg_cls(lr=1e-6, steps=steps, prompts_per_step=train["B"],  # noqa: E731
                                   max_new_tokens=train["new"])
        fn(c.m["student"], c.m["teacher"], big, mk(1), ctx, seed=0)  # warm-up
        reset_peak(c.device)
        sync(c.device)
        t0 = time.perf_counter()
        fn(c.m["student"], c.m["teacher"], big, mk(2), ctx, seed=1)
        sync(c.device)
        r[f"{name}_tok_s"] = 2 * train["B"] * (train["P"] + train["new"]) / (time.perf_counter() - t0)
        r[f"{name}_peak_gib"] = peak_gib(c.device)
        c.log(f"stage {name} {r[f'{name}_tok_s']:.0f} tok/s, peak {r[f'{name}_peak_gib']:.1f} GiB")
    return go


def measure_student_grpo(c: Check) -> None:
    """Drops the teacher first (the student's GRPO runs alone)."""
    from reference.rollout import FixedRollout

    r, train = c.r, c.train
    c.m.pop("teacher", None)
    free(c.device)
    ctx = make_ctx(c.tok, r["usable_vocab"], FixedRollout(c.tok, c.n_tok, c.tok.eos_token_id))
    r["student_grpo_tok_s"], r["student_grpo_peak_gib"], _ = stage_grpo(
        c.m["student"], ctx, problems(c.rng, 4, c.n_tok, train["P"]), group=train["B"], new=train["new"], steps=3,
        lr=1e-6, device=c.device, role="student")
    c.log(f"stage student GRPO {r['student_grpo_tok_s']:.0f} tok/s, peak {r['student_grpo_peak_gib']:.1f} GiB")


def run(args) -> dict:
    """Every measurement in order (the teacher's only when it could be built; rollouts last)."""
    from reference import stages
    from reference.config import FKLConfig, OPDConfig

    c = setup(args)
    # since 2026-11-26 (ENGINE) the stages run as committed: advantages on the policy's device,
    # fused AdamW on CUDA, gradients freed after the optimizer step; no workaround is patched in here
    c.r["stages_as_committed"] = True
    section(c, "rewards", measure_rewards)
    section(c, "anchors_student", measure_student_anchors)
    if "student" not in c.m:
        raise SystemExit("error: could not build the student model: " + c.r.get("anchors_student_error", ""))
    section(c, "anchor_gen", measure_anchor_generate)
    section(c, "teacher", measure_teacher_anchors)
    if "teacher" in c.m:
        if not args.skip_teacher_train:
            section(c, "anchor_ft_8b", measure_teacher_ft)
            section(c, "teacher_grpo", measure_teacher_grpo)
        section(c, "ref_scoring", measure_ref_scoring)
        section(c, "opd_kl", measure_opd_lowers_kl)
        ckpt = c.paper.engine.gradient_checkpointing
        c.r["bridge_gradient_checkpointing"] = ckpt
        if ckpt:  # as the paper config runs the bridge stages (teacher + student share the GPU)
            c.m["student"].gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        section(c, "fkl", measure_bridge("fkl", stages.fkl_warmup, FKLConfig))
        section(c, "opd", measure_bridge("opd", stages.opd, OPDConfig))
        if ckpt:
            c.m["student"].gradient_checkpointing_disable()
    section(c, "student_grpo", measure_student_grpo)
    section(c, "rollouts", measure_rollouts)  # last: the static-cache compile is the slowest, least essential part
    save(c)
    return c.r


def table(r: dict) -> str:
    def ratio(a, b):
        return r.get(a, float("nan")) / r[b] if r.get(b) else float("nan")

    z = r["sizes"]
    rows = [
        (f"train tok/s (student GRPO, {z['train']})", "student_grpo_tok_s", "anchor_ft_1p7b_tok_s", ">= 1.0x"),
        (f"train tok/s (teacher GRPO, {z['ft8']})", "teacher_grpo_tok_s", "anchor_ft_8b_tok_s", ""),
        (f"train tok/s (FKL, {z['train']} + teacher)", "fkl_tok_s", "anchor_ft_1p7b_tok_s", ""),
        (f"train tok/s (OPD, {z['train']} + teacher)", "opd_tok_s", "anchor_ft_1p7b_tok_s", ""),
        (f"teacher-scoring tok/s ({z['score']})", "teacher_scoring_tok_s", "anchor_score_8b_tok_s", ">= 0.9x"),
        (f"rollout tok/s ({z['gen']})", "rollout_tok_s", "anchor_gen_plain_b64_tok_s", ">= 2.5x (aim 4x)"),
    ]
    out = [f"GPU check on {r['device']} (torch {r['torch']}, transformers {r['transformers']}){' [tiny]' if r['tiny'] else ''}",
           f"{'measure':44s} {'ours':>10s} {'anchor':>10s} {'ratio':>7s}  {'goal':16s} {'science.md H100':>15s}"]
    for label, ours, anc, goal in rows:
        if ours not in r:
            continue
        sci = SCIENCE_H100.get(anc, float("nan"))
        out.append(f"{label:44s} {r[ours]:>10.0f} {r.get(anc, float('nan')):>10.0f} {ratio(ours, anc):>6.2f}x  {goal:16s} {sci:>15.0f}")
    out.append("")
    out.append(f"{'peak memory (GiB)':44s} " + ", ".join(
        f"{k.replace('_peak_gib', '')} {v:.1f}" for k, v in r.items() if k.endswith("_peak_gib")))
    out.append(f"OPD step {z['train']} full-vocabulary KL, student + teacher: peak {r.get('opd_peak_gib', float('nan')):.1f} GiB"
               f" (goal <= 80; gradient checkpointing {r.get('bridge_gradient_checkpointing')})")
    for k, v in r.items():
        if k.endswith("_error"):
            out.append(f"{k[:-6]}: {v}")
    if "experiment" in r:
        out.append(f"EXPERIMENT: {r['experiment']}")
    if "grpo_device_workaround" in r:
        out.append(f"NOTE: {r['grpo_device_workaround']}")
    out.append(f"rollout backend: {r.get('rollout_backend', '-')}; anchors are bare PyTorch / plain HF generate in this run")
    if "opd_kl_after" in r:
        out.append(f"OPD held-out KL to teacher: {r['opd_kl_before']:.4f} -> {r['opd_kl_after']:.4f}")
    out.append(f"wall time {r['wall_s']:.0f} s")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true", help="tiny shapes (CPU smoke of the same code path)")
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    ap.add_argument("--skip-teacher-train", action="store_true", help="skip the 8B fine-tune anchor and teacher GRPO")
    ap.add_argument("--out", default="", help="write the measurements as JSON here (rewritten after each part)")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip (e.g. rollouts,opd_kl,fkl,opd)")
    ap.add_argument("--budget-s", type=float, default=480.0, help="skip remaining parts after this many seconds")
    args = ap.parse_args(argv)
    args.skip = {x.strip() for x in args.skip.split(",") if x.strip()}
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cpu" and not args.tiny:
        print("error: the full-size check needs a GPU; use --tiny on a CPU", file=sys.stderr)
        return 2
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    r = run(args)
    print()
    print(table(r))
    before, after = r.get("opd_kl_before"), r.get("opd_kl_after")
    if "opd_kl" in args.skip:
        return 0
    if before is None or after is None or not after < before:
        print(f"FAILED: OPD did not lower the KL to the teacher ({before} -> {after})", file=sys.stderr)
        return 1
    print(f"OPD lowered KL to the teacher: {before:.4f} -> {after:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
