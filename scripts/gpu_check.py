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
    from reference import stages as st
    from reference.rewards import is_compliant

    def alternating_rewards(completions, golds):  # see module docstring: timing, not learning
        return [float(i % 2) for i in range(len(completions))]

    return st.StageContext(rollout=rollout, vocab_size=vocab_usable, eos_id=tok.eos_token_id,
                           score_batch=alternating_rewards, is_compliant=is_compliant)


def problems(rng, n: int, n_tok: int, prompt_len: int):
    from reference.world import Problem

    return tuple(Problem(pid=str(i), prompt=prompt_text(rng, n_tok, prompt_len), gold="0", terms=0) for i in range(n))


def stage_grpo(policy, ctx, probs, *, group: int, new: int, steps: int, lr: float, device: str, role: str):
    """Tokens/s of `steps` GRPO updates after one warm-up update (each update: group x (prompt+new))."""
    from reference import stages as st
    from reference.config import GRPOConfig

    cfg = GRPOConfig(lr=lr, group_size=group, prompts_per_step=1, epochs=1.0, max_new_tokens=new, temperature=1.0)
    st.grpo(policy, probs[:1], cfg, ctx, role=role, seed=0)  # warm-up (kernels, allocator)
    reset_peak(device)
    sync(device)
    t0 = time.perf_counter()
    res = st.grpo(policy, probs[:steps], cfg, ctx, role=role, seed=1)
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


def run(args) -> dict:
    from reference.config import OPDConfig, FKLConfig, load_config
    from reference.rollout import FixedRollout
    from reference.models import freeze, logit_vocab_size
    from reference.rollout import HFRollout
    from reference import losses, stages as st
    from reference.rollout import completion_logits

    device = args.device
    t_start = time.perf_counter()
    cuda = device.startswith("cuda")
    dtype = torch.bfloat16 if cuda else torch.float32
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
    log = lambda msg: print(f"[{time.perf_counter() - t_start:6.1f}s] {msg}", flush=True)  # noqa: E731
    m: dict = {}  # live models

    def save():
        r["wall_s"] = time.perf_counter() - t_start
        if args.out:
            Path(args.out).write_text(json.dumps(r, indent=2, default=float))

    def section(name: str, fn) -> None:
        """Run one part; an error (OOM, compile failure) is recorded, the rest still runs; skip past the budget."""
        if args.skip and name in args.skip:
            return
        if time.perf_counter() - t_start > args.budget_s:
            r[f"{name}_error"] = f"skipped: past the {args.budget_s:.0f} s budget"
            log(f"{name}: skipped (time budget)")
            return
        try:
            fn()
        except Exception as e:  # noqa: BLE001 — one GPU run: record and go on
            r[f"{name}_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            log(f"{name}: FAILED {r[f'{name}_error']}")
        for mod in m.values():
            for p in mod.parameters():
                p.grad = None
        free(device)
        save()

    def rewards():
        r["rewards"] = rewards_check()
        log(f"rewards: {r['rewards']}")

    def anchors_student():
        m["student"] = build_model(s_cfg, vocab, device, dtype, seed=1)
        r["usable_vocab"] = logit_vocab_size(tok, m["student"].config)
        assert r["usable_vocab"] == n_tok < vocab, "padded vocabulary must be sliced"
        r["anchor_ft_1p7b_tok_s"], r["anchor_ft_1p7b_peak_gib"] = anchor_ft(m["student"], ft["B"], ft["T"], n_tok, device, iters)
        log(f"anchor FT student {ft['B']}x{ft['T']}: {r['anchor_ft_1p7b_tok_s']:.0f} tok/s, peak {r['anchor_ft_1p7b_peak_gib']:.1f} GiB")
        r["anchor_score_1p7b_tok_s"], _ = anchor_score(m["student"], score["B"], score["T"], n_tok, device, iters)
        log(f"anchor scoring student {r['anchor_score_1p7b_tok_s']:.0f} tok/s")

    def anchor_gen():
        r["anchor_gen_plain_b64_tok_s"] = anchor_generate(m["student"], gen["B"], gen["P"], gen["N"], n_tok, device)
        log(f"anchor plain generate {r['anchor_gen_plain_b64_tok_s']:.0f} tok/s")

    def rollouts():  # the reference interface, static KV cache on GPUs (compiled on first call)
        ro = HFRollout(tok, static_cache=cuda)
        prompts = [prompt_text(rng, n_tok, gen["P"]) for _ in range(gen["B"])]
        torch.manual_seed(0)
        t0 = time.perf_counter()
        ro.generate(m["student"], prompts, n=1, temperature=1.0, max_new_tokens=gen["N"])
        sync(device)
        r["rollout_first_call_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        b = ro.generate(m["student"], prompts, n=1, temperature=1.0, max_new_tokens=gen["N"])
        sync(device)
        r["rollout_tok_s"] = float(b.mask_BT.sum()) / (time.perf_counter() - t0)
        r["rollout_backend"] = "hf-static-cache" if cuda else "hf"
        log(f"rollout ({r['rollout_backend']}) {r['rollout_tok_s']:.0f} tok/s (first call {r['rollout_first_call_s']:.0f} s)")

    def anchors_teacher():
        m["teacher"] = build_model(t_cfg, vocab, device, dtype, seed=2)
        r["anchor_score_8b_tok_s"], r["anchor_score_8b_peak_gib"] = anchor_score(m["teacher"], score["B"], score["T"], n_tok, device, iters)
        log(f"anchor scoring teacher {r['anchor_score_8b_tok_s']:.0f} tok/s")

    def teacher_ft():
        r["anchor_ft_8b_tok_s"], r["anchor_ft_8b_peak_gib"] = anchor_ft(m["teacher"], ft8["B"], ft8["T"], n_tok, device, iters)
        log(f"anchor FT teacher {ft8['B']}x{ft8['T']}: {r['anchor_ft_8b_tok_s']:.0f} tok/s, peak {r['anchor_ft_8b_peak_gib']:.1f} GiB")

    def teacher_grpo():  # the same grpo() as the student's
        ctx = make_ctx(tok, r["usable_vocab"], FixedRollout(tok, n_tok, tok.eos_token_id))
        r["teacher_grpo_tok_s"], r["teacher_grpo_peak_gib"], _ = stage_grpo(
            m["teacher"], ctx, problems(rng, 3, n_tok, train["P"]), group=ft8["B"], new=ft8["T"] - train["P"],
            steps=2, lr=1e-6, device=device, role="teacher")
        log(f"stage teacher GRPO {r['teacher_grpo_tok_s']:.0f} tok/s, peak {r['teacher_grpo_peak_gib']:.1f} GiB")

    def ref_scoring():  # completion_logits + token log-probs, as every stage scores
        freeze(m["teacher"])
        fixed = FixedRollout(tok, n_tok, tok.eos_token_id)
        sp = problems(rng, score["B"], n_tok, train["P"])
        sb = fixed.generate(m["teacher"], [p.prompt for p in sp], n=1, temperature=1.0,
                            max_new_tokens=score["T"] - train["P"])

        @torch.no_grad()
        def once():
            losses.token_logp_BT(completion_logits(m["teacher"], sb, r["usable_vocab"]), sb.completion_BT)

        r["teacher_scoring_tok_s"] = float(sb.attention_BL.sum()) / timed(once, warmup=1, iters=iters, device=device)
        log(f"reference teacher scoring {r['teacher_scoring_tok_s']:.0f} tok/s")

    def opd_lowers_kl():  # on-policy samples for training, held-out prompts for the check
        student, teacher = m["student"], m["teacher"]
        student.train()
        ctx_hf = make_ctx(tok, r["usable_vocab"], HFRollout(tok, static_cache=False))
        fixed = FixedRollout(tok, n_tok, tok.eos_token_id)
        held = problems(rng, opd_kl["prompts"], n_tok, train["P"] // 4)
        hb = fixed.generate(student, [p.prompt for p in held], n=1, temperature=1.0, max_new_tokens=opd_kl["new"])
        r["opd_kl_before"] = held_out_kl(student, teacher, hb, r["usable_vocab"])
        res = st.opd(student, teacher, problems(rng, opd_kl["prompts"] * 4, n_tok, train["P"] // 4),
                     OPDConfig(lr=opd_kl["lr"], steps=opd_kl["steps"], prompts_per_step=opd_kl["prompts"],
                               max_new_tokens=opd_kl["new"], temperature=1.0), ctx_hf, seed=0)
        r["opd_kl_after"] = held_out_kl(student, teacher, hb, r["usable_vocab"])
        r["opd_train_kl_log"] = [round(e["kl_to_teacher"], 4) for e in res.log]
        log(f"OPD held-out KL {r['opd_kl_before']:.4f} -> {r['opd_kl_after']:.4f} over {opd_kl['steps']} steps")

    def bridge(name, fn, cfg_cls):  # one FKL / OPD step at 8 x 1024, full-vocabulary KL
        def go():
            ctx = make_ctx(tok, r["usable_vocab"], FixedRollout(tok, n_tok, tok.eos_token_id))
            big = problems(rng, train["B"], n_tok, train["P"])
            mk = lambda steps: cfg_cls(lr=1e-6, steps=steps, prompts_per_step=train["B"],  # noqa: E731
                                       max_new_tokens=train["new"])
            fn(m["student"], m["teacher"], big, mk(1), ctx, seed=0)  # warm-up
            reset_peak(device)
            sync(device)
            t0 = time.perf_counter()
            fn(m["student"], m["teacher"], big, mk(2), ctx, seed=1)
            sync(device)
            r[f"{name}_tok_s"] = 2 * train["B"] * (train["P"] + train["new"]) / (time.perf_counter() - t0)
            r[f"{name}_peak_gib"] = peak_gib(device)
            log(f"stage {name} {r[f'{name}_tok_s']:.0f} tok/s, peak {r[f'{name}_peak_gib']:.1f} GiB")
        return go

    def student_grpo():
        m.pop("teacher", None)
        free(device)
        ctx = make_ctx(tok, r["usable_vocab"], FixedRollout(tok, n_tok, tok.eos_token_id))
        r["student_grpo_tok_s"], r["student_grpo_peak_gib"], _ = stage_grpo(
            m["student"], ctx, problems(rng, 4, n_tok, train["P"]), group=train["B"], new=train["new"], steps=3,
            lr=1e-6, device=device, role="student")
        log(f"stage student GRPO {r['student_grpo_tok_s']:.0f} tok/s, peak {r['student_grpo_peak_gib']:.1f} GiB")

    # since 2026-11-26 (ENGINE) the stages run as committed: advantages on the policy's device,
    # fused AdamW on CUDA, gradients freed after the optimizer step; no workaround is patched in here
    r["stages_as_committed"] = True
    section("rewards", rewards)
    section("anchors_student", anchors_student)
    if "student" not in m:
        raise SystemExit("error: could not build the student model: " + r.get("anchors_student_error", ""))
    section("anchor_gen", anchor_gen)
    section("teacher", anchors_teacher)
    if "teacher" in m:
        if not args.skip_teacher_train:
            section("anchor_ft_8b", teacher_ft)
            section("teacher_grpo", teacher_grpo)
        section("ref_scoring", ref_scoring)
        section("opd_kl", opd_lowers_kl)
        ckpt = paper.engine.gradient_checkpointing
        r["bridge_gradient_checkpointing"] = ckpt
        if ckpt:  # as the paper config runs the bridge stages (teacher + student share the GPU)
            m["student"].gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        section("fkl", bridge("fkl", st.fkl_warmup, FKLConfig))
        section("opd", bridge("opd", st.opd, OPDConfig))
        if ckpt:
            m["student"].gradient_checkpointing_disable()
    section("student_grpo", student_grpo)
    section("rollouts", rollouts)  # last: the static-cache compile is the slowest, least essential part
    save()
    return r


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
