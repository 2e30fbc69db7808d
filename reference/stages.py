"""The four stages, one implementation each. Teacher GRPO and student GRPO are the same `grpo` call.

Each stage takes models, prompts and its frozen config section, trains in place, and returns a
`StageResult` with its per-step log and the tokens it processed. Randomness: the caller seeds torch
once per stage (generation samples through torch's RNG) and passes `seed` for data order.

Stage map (arXiv 2605.12483, abstract): (1) `grpo` on the teacher with labels, (2a) `fkl_warmup`,
(2b) `opd`, (3) `grpo` on the student with held-out labels. `opd` with a step count matched to stage
3's rollouts is the replay control.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import math
import time
from typing import Callable

import numpy as np
import torch

from reference import losses
from reference.config import FKLConfig, GRPOConfig, OPDConfig
from reference.rollout import Rollout, completion_logits
from reference.world import Problem

Progress = Callable[[int, int, dict], None]  # (step, total, last log) -> None


@dataclass
class StageContext:
    """What every stage needs besides its config: how to sample, score and size the vocabulary."""

    rollout: Rollout
    vocab_size: int
    eos_id: int
    score_batch: Callable[[list[str], list[str]], list[float]]
    is_compliant: Callable[[str], bool]


@dataclass(frozen=True)
class StageResult:
    name: str
    steps: int
    tokens: int  # rollout + training + teacher-scoring tokens
    seconds: float
    log: tuple[dict, ...] = field(default=())

    def to_dict(self) -> dict:
        return {"name": self.name, "steps": self.steps, "tokens": self.tokens, "seconds": self.seconds,
                "log": list(self.log)}

    def to_frame(self):
        import pandas as pd
        return pd.DataFrame(list(self.log))


def _batches(n_items: int, per_step: int, steps: int, rng: np.random.Generator):
    """Indices for `steps` batches, walking through fresh permutations (epochs) of n_items."""
    order: list[int] = []
    for _ in range(steps):
        while len(order) < per_step:
            order.extend(rng.permutation(n_items).tolist())
        yield order[:per_step]
        order = order[per_step:]


def grpo_steps(n_labels: int, cfg: GRPOConfig) -> int:
    if n_labels == 0:
        return 0
    return max(1, math.ceil(cfg.epochs * n_labels / cfg.prompts_per_step))


def _optimizer(model, lr: float):
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, betas=(0.9, 0.99),
                             weight_decay=0.0)


def _step(model, opt, loss, grad_clip: float) -> float:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    return float(gnorm)


def grpo(policy, problems: tuple[Problem, ...], cfg: GRPOConfig, ctx: StageContext, *, role: str, seed: int,
         ref=None, progress: Progress | None = None, name: str = "grpo") -> StageResult:
    """GRPO with group-normalised advantages and a clipped ratio (DAPO token-mean by default).

    One policy update per rollout batch, so old_logp is the detached current log-prob: the ratio is 1
    in value but carries the policy gradient; clipping matters once several updates reuse a batch.
    `ref` (optional frozen model) adds the k3 KL penalty with weight cfg.kl_coef.
    """
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    steps = grpo_steps(len(problems), cfg)
    opt = _optimizer(policy, cfg.lr_for(role))
    log: list[dict] = []
    tokens = 0
    P, G = min(cfg.prompts_per_step, max(1, len(problems))), cfg.group_size
    for step, idx in enumerate(_batches(len(problems), P, steps, rng)):
        batch = [problems[i] for i in idx]
        ro = ctx.rollout.generate(policy, [p.prompt for p in batch], n=G, temperature=cfg.temperature,
                                  max_new_tokens=cfg.max_new_tokens)
        golds = [p.gold for p in batch for _ in range(G)]
        rewards_PG = torch.tensor(ctx.score_batch(list(ro.texts), golds), dtype=torch.float32).view(len(batch), G)
        adv_B = losses.group_advantages(rewards_PG).flatten()
        entry = {"step": step, "reward": float(rewards_PG.mean()),
                 "pass_rate": float((rewards_PG.max(dim=1).values > 0).float().mean()),
                 "zero_signal_fraction": losses.zero_signal_fraction(rewards_PG),
                 "length": float(ro.lengths_B.float().mean()),
                 "compliance": float(np.mean([ctx.is_compliant(t) for t in ro.texts]))}
        tokens += ro.tokens
        if bool((adv_B != 0).any()):
            logits = completion_logits(policy, ro, ctx.vocab_size)
            logp_BT = losses.token_logp_BT(logits, ro.completion_BT)
            ref_logp = None
            if ref is not None and cfg.kl_coef > 0:
                with torch.no_grad():
                    ref_logp = losses.token_logp_BT(completion_logits(ref, ro, ctx.vocab_size), ro.completion_BT)
                tokens += ro.tokens
            loss = losses.grpo_loss(logp_BT, logp_BT.detach(), adv_B, ro.mask_BT, clip_low=cfg.clip_low,
                                    clip_high=cfg.clip_high, loss=cfg.loss, ref_logp_BT=ref_logp,
                                    kl_coef=cfg.kl_coef)
            entry["grad_norm"] = _step(policy, opt, loss, cfg.grad_clip)
            entry["loss"] = loss.item()
            tokens += ro.tokens
        log.append(entry)
        if progress:
            progress(step + 1, steps, entry)
    return StageResult(name, steps, tokens, time.perf_counter() - t0, tuple(log))


def fkl_warmup(student, teacher, prompts: tuple[Problem, ...], cfg: FKLConfig, ctx: StageContext, *, seed: int,
               progress: Progress | None = None, name: str = "fkl_warmup") -> StageResult:
    """Stage 2a: on teacher rollouts, minimise KL(p_T || p_S) over the full vocabulary at every token."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    opt = _optimizer(student, cfg.lr)
    log, tokens = [], 0
    for step, idx in enumerate(_batches(len(prompts), cfg.prompts_per_step, cfg.steps, rng)):
        ro = ctx.rollout.generate(teacher, [prompts[i].prompt for i in idx], n=1, temperature=cfg.temperature,
                                  max_new_tokens=cfg.max_new_tokens)
        with torch.no_grad():
            t_logits = completion_logits(teacher, ro, ctx.vocab_size)
        s_logits = completion_logits(student, ro, ctx.vocab_size)
        loss = losses.masked_mean(losses.forward_kl_BT(s_logits, t_logits), ro.mask_BT)
        gnorm = _step(student, opt, loss, cfg.grad_clip)
        tokens += 3 * ro.tokens  # teacher rollout, teacher scoring, student training
        entry = {"step": step, "forward_kl": loss.item(), "grad_norm": gnorm,
                 "length": float(ro.lengths_B.float().mean())}
        log.append(entry)
        if progress:
            progress(step + 1, cfg.steps, entry)
    return StageResult(name, cfg.steps, tokens, time.perf_counter() - t0, tuple(log))


def opd(student, teacher, prompts: tuple[Problem, ...], cfg: OPDConfig, ctx: StageContext, *, seed: int,
        steps: int | None = None, prompts_per_step: int | None = None, progress: Progress | None = None,
        name: str = "opd") -> StageResult:
    """Stage 2b: the student samples, the frozen teacher scores every token, reverse KL(p_S || p_T).

    estimator="full": exact full-vocabulary reverse KL per position (differentiated directly);
    "sampled": REINFORCE on the per-token log-ratio of the sampled token. The full per-token KL is
    logged either way. `steps`/`prompts_per_step` override the config (the replay control).
    """
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    steps = cfg.steps if steps is None else steps
    per_step = cfg.prompts_per_step if prompts_per_step is None else prompts_per_step
    opt = _optimizer(student, cfg.lr)
    log, tokens = [], 0
    for step, idx in enumerate(_batches(len(prompts), per_step, steps, rng)):
        ro = ctx.rollout.generate(student, [prompts[i].prompt for i in idx], n=1, temperature=cfg.temperature,
                                  max_new_tokens=cfg.max_new_tokens)
        with torch.no_grad():
            t_logits = completion_logits(teacher, ro, ctx.vocab_size)
        s_logits = completion_logits(student, ro, ctx.vocab_size)
        rkl_BT = losses.reverse_kl_BT(s_logits, t_logits)
        if cfg.estimator == "full":
            loss = losses.masked_mean(rkl_BT, ro.mask_BT)
        else:
            s_lp = losses.token_logp_BT(s_logits, ro.completion_BT)
            t_lp = losses.token_logp_BT(t_logits, ro.completion_BT)
            loss = losses.masked_mean(losses.sampled_reverse_kl_loss_BT(s_lp, t_lp), ro.mask_BT)
        gnorm = _step(student, opt, loss, cfg.grad_clip)
        tokens += 3 * ro.tokens  # student rollout, teacher scoring, student training
        entry = {"step": step, "kl_to_teacher": float(losses.masked_mean(rkl_BT.detach(), ro.mask_BT)),
                 "grad_norm": gnorm, "length": float(ro.lengths_B.float().mean())}
        log.append(entry)
        if progress:
            progress(step + 1, steps, entry)
    return StageResult(name, steps, tokens, time.perf_counter() - t0, tuple(log))
