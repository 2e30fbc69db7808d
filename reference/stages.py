"""The four stages on one training loop. Teacher GRPO and student GRPO are the same `grpo` call.

Every stage is `train_loop`: sampler -> a pure loss from `reference.losses` -> clipped optimizer
step under a learning-rate schedule (linear warmup, then constant / cosine / linear decay). A stage
only says what one step samples and which loss it scores (`StepWork`). Training forward passes
divide the logits by the stage's sampling temperature, so the log-probabilities that are trained
are those of the distribution the rollouts came from (at T != 1 GRPO is otherwise biased and OPD
off-policy). Each stage returns a `StageResult` with its per-step log and the tokens it processed.
Randomness: the caller seeds torch once per stage (generation samples through torch's RNG) and
passes `seed` for data order.

Stage map (arXiv 2605.12483, abstract): (1) `grpo` on the teacher with labels, (2a) `fkl_warmup`,
(2b) `opd`, (3) `grpo` on the student with held-out labels. `opd` with a step count matched to stage
3's rollouts is the replay control.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
import math
import time
from typing import Any, Callable

import numpy as np
import torch

from reference import losses
from reference.config import FKLConfig, GRPOConfig, OPDConfig
from reference.rollout import Rollout, RolloutBatch, completion_logits
from reference.world import Problem
from theory.errors import InputError

Progress = Callable[[int, int, dict], None]  # (step, total, last log) -> None


@dataclass
class StageContext:
    """What every stage needs besides its config: how to sample, score and size the vocabulary."""

    rollout: Rollout
    vocab_size: int
    eos_id: int
    score_batch: Callable[[list[str], list[str]], list[float]]
    is_compliant: Callable[[str], bool]
    # reference.engines.Engine under `accelerate launch`: each rank takes its shard of every batch,
    # the trained model and its optimizer go through `Accelerator.prepare` (DDP / FSDP2 / ZeRO-3 per
    # the launch config) and losses are global token means. None: one plain process (the toy world).
    engine: Any = None
    micro_batch: int = 0  # sequences per forward/backward (gradient accumulation); 0 -> whole batch


@dataclass(frozen=True)
class StageResult:
    """What one stage's training returned: its step count, compute tokens, wall time and per-step log."""

    name: str
    steps: int
    tokens: int  # rollout + training + teacher-scoring tokens
    seconds: float
    log: tuple[dict, ...] = field(default=())
    plateau: dict | None = None  # the plateau protocol's record (reference.plateau.Watch.record)

    def to_dict(self) -> dict:
        return {"name": self.name, "steps": self.steps, "tokens": self.tokens, "seconds": self.seconds,
                "log": list(self.log), **({"plateau": self.plateau} if self.plateau is not None else {})}

    def to_frame(self):
        import pandas as pd
        return pd.DataFrame(list(self.log))


def batch_indices(n_items: int, per_step: int, steps: int, rng: np.random.Generator):
    """Indices for `steps` batches, walking through fresh permutations (passes) of n_items."""
    order: list[int] = []
    for _ in range(steps):
        while len(order) < per_step:
            order.extend(rng.permutation(n_items).tolist())
        yield order[:per_step]
        order = order[per_step:]


def grpo_steps(n_labels: int, cfg: GRPOConfig) -> int:
    """A GRPO stage's steps (its cap under the plateau protocol): `epochs` passes over `n_labels` at
    `prompts_per_step`, at most `max_steps` when that is set."""
    if n_labels == 0:
        return 0
    steps = max(1, math.ceil(cfg.epochs * n_labels / cfg.prompts_per_step))
    return min(steps, cfg.max_steps) if cfg.max_steps > 0 else steps


def lr_factor(step: int, total: int, warmup: float, schedule: str, warmup_steps: int = 0) -> float:
    """Multiplier of the base learning rate at `step` (0-based) of a `total`-step stage: linear warmup
    over the first w = ceil(warmup * total) steps (`warmup_steps` instead when > 0) (from 1/w to 1), then
    constant, cosine or linear decay toward 0 (never reaching it: the last step still moves)."""
    w = min(warmup_steps, total) if warmup_steps > 0 else (math.ceil(warmup * total) if warmup > 0 else 0)
    if step < w:
        return (step + 1) / w
    if schedule == "constant":
        return 1.0
    frac = (step - w + 1) / max(1, total - w + 1)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * frac))
    return 1.0 - frac  # linear


def optimizer(model, lr: float):
    """The stage's fresh AdamW over the trainable parameters (weight decay 0; no state crosses stages)."""
    params = [p for p in model.parameters() if p.requires_grad]
    # fused AdamW (one kernel per step, as the bare-PyTorch anchor) on CUDA only; the CPU keeps the
    # default implementation so the committed toy numbers stay bit-identical
    extra = {"fused": True} if params and params[0].device.type == "cuda" else {}
    return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.99), weight_decay=0.0, **extra)


def distributed(ctx: StageContext) -> bool:
    """True under an engine with more than one rank."""
    return ctx.engine is not None and ctx.engine.world_size > 1


def sharded(ctx: StageContext) -> bool:
    """True under an FSDP2 launch: the trained model is sharded in place (reference.engines.fsdp2_shard),
    reduces its own gradients (averaged over ranks, as DDP) and is not wrapped by `Accelerator.prepare`."""
    return distributed(ctx) and getattr(ctx.engine, "sharding", "none") == "fsdp2"


def _prepare(model, lr: float, ctx: StageContext):
    """(module to train through, optimizer): the model and its AdamW through `Accelerator.prepare`
    under an engine (FSDP2 needs both together), the plain pair otherwise. Sampling keeps using the
    unwrapped model (DDP's wrapper has no `generate`)."""
    if sharded(ctx):  # FSDP2: shard in place first, so AdamW's moments live on this rank's shards only
        from reference.engines import fsdp2_shard
        from reference.stage_plan import mixed_precision_policy
        model = fsdp2_shard(model, ctx.engine, mp_policy=mixed_precision_policy(model))
        return model, optimizer(model, lr)
    opt = optimizer(model, lr)
    if ctx.engine is None:
        return model, opt
    return ctx.engine.accelerator.prepare(model, opt)


def train_logits(model, batch: RolloutBatch, ctx: StageContext, temperature: float) -> torch.Tensor:
    """Completion logits of a training (or scoring) forward pass at the rollouts' sampling temperature."""
    logits = completion_logits(model, batch, ctx.vocab_size)
    return logits if temperature == 1.0 else logits / temperature


def all_tokens(tokens: int, ctx: StageContext) -> int:
    """This rank's token count summed over every rank (the compute account is global)."""
    if not distributed(ctx):
        return tokens
    # float64: a float32 sum rounds counts above 2^24, which one stage reaches at Qwen3 scale
    return int(global_sum(torch.tensor(float(tokens), dtype=torch.float64, device=ctx.engine.device), ctx))


def _release(ctx: StageContext) -> None:
    """Drop the Accelerator's references to this stage's wrapped model and optimizer: otherwise every
    stage's AdamW moments (and DDP's gradient buckets) would stay allocated through the next stages."""
    if ctx.engine is not None:
        ctx.engine.accelerator.free_memory()


def _my_shard(idx: list[int], ctx: StageContext) -> list[int]:
    """This rank's contiguous part of a global batch (every rank draws the same global batches)."""
    if ctx.engine is None:
        return idx
    from reference.engines import shard
    return shard(idx, ctx.engine)


def global_sum(x: torch.Tensor, ctx: StageContext) -> torch.Tensor:
    """`x` summed over the ranks (itself in one process)."""
    if not distributed(ctx):
        return x
    return ctx.engine.accelerator.reduce(x.detach().clone(), reduction="sum")


def normaliser(count: torch.Tensor, ctx: StageContext) -> torch.Tensor:
    """The normaliser of a global mean, per rank: global count / world size, because DDP (and FSDP)
    average the ranks' gradients. One process: the local count, as `losses.masked_mean` divides by."""
    if not distributed(ctx):
        return count.clamp(min=1.0)
    return (global_sum(count, ctx) / ctx.engine.world_size).clamp(min=1.0 / ctx.engine.world_size)


def _rows(ro: RolloutBatch, sl: slice) -> RolloutBatch:
    return RolloutBatch(ro.input_ids_BL[sl], ro.attention_BL[sl], ro.prompt_len, ro.completion_BT[sl],
                        ro.mask_BT[sl], ro.texts[sl], ro.n)


def _take(ro: RolloutBatch, order: torch.Tensor) -> RolloutBatch:
    """`ro` with its rows in `order`."""
    import dataclasses
    return dataclasses.replace(ro, input_ids_BL=ro.input_ids_BL[order], attention_BL=ro.attention_BL[order],
                               completion_BT=ro.completion_BT[order], mask_BT=ro.mask_BT[order],
                               texts=tuple(ro.texts[i] for i in order.tolist()))


def _chunks(rows: slice, micro_batch: int) -> list[slice]:
    """The forward/backward chunks of the rows `rows` (a range of a batch): micro_batch = 0 or >= rows:
    one chunk."""
    n = rows.stop - rows.start
    mb = micro_batch if 0 < micro_batch < n else n
    return [slice(start, min(start + mb, rows.stop)) for start in range(rows.start, rows.stop, mb)]


def chunk_rows(rows: int, micro_batch: int) -> int:
    """Rows of the largest forward/backward chunk of an update over `rows` rows (the dry run sizes it)."""
    return _chunks(slice(0, rows), micro_batch)[0].stop if rows else 0


def _backward(net, ro: RolloutBatch, ctx: StageContext, chunk_loss: Callable[[RolloutBatch, slice], torch.Tensor],
              rows: slice | None = None):
    """Backward over micro-batches of `ro`'s rows `rows` (default: all; gradients accumulate; `chunk_loss`
    returns each chunk's share of the update's loss), without a gradient all-reduce until the last chunk.
    Returns the update's loss (detached)."""
    B = ro.completion_BT.shape[0]
    rows = slice(0, B) if rows is None else rows
    chunks = _chunks(rows, ctx.micro_batch)
    total = None
    for sl in chunks:
        last = sl.stop >= rows.stop
        if sharded(ctx):  # FSDP2 has no no_sync(): it skips the reduce-scatter until the last chunk
            net.set_requires_gradient_sync(last)
            sync = nullcontext()
        else:
            sync = nullcontext() if (last or ctx.engine is None) else ctx.engine.accelerator.no_sync(net)
        with sync:
            loss = chunk_loss(ro if len(chunks) == 1 and rows == slice(0, B) else _rows(ro, sl), sl)
            loss.backward()
        total = loss.detach() if total is None else total + loss.detach()
    return total


def _step(net, opt, grad_clip: float, ctx: StageContext) -> float:
    """Clip, step, then free the gradients (zeroing *after* the step: no gradient copy lives through
    the next forward, which is what kept the 8B teacher's GRPO 14 GiB above the anchor)."""
    if ctx.engine is None:
        gnorm = torch.nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
    elif sharded(ctx):  # DTensor gradients: torch computes the global norm across the shards
        gnorm = torch.nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
        gnorm = gnorm.full_tensor() if hasattr(gnorm, "full_tensor") else gnorm
    else:
        gnorm = ctx.engine.accelerator.clip_grad_norm_(net.parameters(), grad_clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(gnorm)


@dataclass
class StepWork:
    """What one step of a stage sampled and how to score it.

    `loss(sub, sl)` is the pure loss of rows `sl` of `rollout` (None: no signal, skip the update);
    `after()` adds entries to the step's log once the update is done; `train_tokens` is what the
    update costs in the compute account (added only when an update happens). `updates`: the row ranges
    of `rollout` that each get one optimizer step, in order (None: one step on every row; GRPO's
    mini-batches give several).
    """

    rollout: RolloutBatch
    entry: dict
    tokens: int  # sampling and scoring that happen whether or not the step updates
    loss: Callable[[RolloutBatch, slice], torch.Tensor] | None = None
    loss_name: str = "loss"
    train_tokens: int = 0
    after: Callable[[], dict] | None = None
    updates: list[slice] | None = None


def train_loop(model, *, lr: float, schedule_cfg, steps: int, batches, make_step: Callable, ctx: StageContext,
               name: str, progress: Progress | None = None, limit: int | None = None, watch=None) -> StageResult:
    """The one training loop of every stage.

    For each batch of item indices: `make_step(step, idx, net)` samples and returns a `StepWork`;
    its loss is backpropagated over micro-batches, the gradient clipped to `grad_clip`, and AdamW
    steps at lr * lr_factor(step). `steps` sizes the schedule; `limit` stops after that many steps
    of it (the stability gate runs the first steps of the configured schedule).

    `watch` (a `reference.plateau.Watch`): the plateau protocol. `steps` is then the cap; the watch
    validates the starting point and then on its schedule, may stop the stage early, resumes it from its
    mid-stage checkpoint, and leaves the model holding its best weights (the result's `plateau` record says which step that was).
    """
    t0 = time.perf_counter()
    net, opt = _prepare(model, lr, ctx)
    taken = steps if limit is None else min(steps, limit)
    log: list[dict] = []
    tokens, start = 0, 0
    if watch is not None:
        resumed = watch.resume(model, opt)
        if resumed is not None:  # batches before `start` are drawn again (data order only) and skipped
            start, tokens, log = resumed
            if watch.stop_step is not None:
                taken = start
        else:  # the stage's starting point is a candidate too: a stage that only hurts returns its input
            watch.observe(0, 0, model, opt, log)
    for step, idx in enumerate(batches):
        if step >= taken:
            break
        if step < start:
            continue
        factor = lr_factor(step, steps, schedule_cfg.warmup, schedule_cfg.schedule, schedule_cfg.warmup_steps)
        for group in opt.param_groups:
            group["lr"] = lr * factor
        work = make_step(step, idx, net)
        entry = dict(work.entry)
        tokens += work.tokens
        if work.loss is not None:
            step_losses, grad_norms = [], []
            for rows in (work.updates or [None]):
                loss = global_sum(_backward(net, work.rollout, ctx, work.loss, rows), ctx)
                if distributed(ctx):
                    loss = loss / ctx.engine.world_size  # the ranks' shares sum to world x the global loss
                grad_norms.append(_step(net, opt, schedule_cfg.grad_clip, ctx))
                step_losses.append(loss.item())
            # the mean over the updates (one update: its own value; each mini-batch's loss is its share of the
            # batch loss x updates)
            entry["grad_norm"] = float(np.mean(grad_norms))
            entry[work.loss_name] = float(np.mean(step_losses))
            entry["lr"] = lr * factor
            tokens += work.train_tokens
        if work.after is not None:
            entry.update(work.after())
        log.append(entry)
        if progress:
            progress(step + 1, taken, entry)
        if watch is not None and watch.due(step + 1) and watch.observe(step + 1, all_tokens(tokens, ctx), model,
                                                                       opt, log):
            taken = step + 1
            break
    _release(ctx)
    total = all_tokens(tokens, ctx)  # a collective under an engine: once
    plateau = None
    if watch is not None:
        watch.finish(model)
        plateau = watch.record(total)
    return StageResult(name, taken, total, time.perf_counter() - t0, tuple(log), plateau)


def mini_batch_order(prompts: int, group: int, mini_batches: int) -> torch.Tensor:
    """Row order that makes GRPO's mini-batches contiguous: prompt p of a rank's batch (rows p*G .. p*G+G-1)
    goes to mini-batch p mod M. Whole groups per update, and the same mini-batches on any number of ranks
    (each rank's contiguous shard starts at a multiple of M when prompts per rank divide by M)."""
    return torch.tensor([p * group + g for k in range(mini_batches) for p in range(k, prompts, mini_batches)
                         for g in range(group)])


def grpo(policy, problems: tuple[Problem, ...], cfg: GRPOConfig, ctx: StageContext, *, role: str, seed: int,
         ref=None, progress: Progress | None = None, name: str = "grpo", limit: int | None = None,
         watch=None) -> StageResult:
    """GRPO with group-normalised advantages and a clipped ratio (`losses.GRPO_LOSSES[cfg.loss]`).

    `cfg.mini_batches` = M optimizer updates per rollout batch (PPO's mini-batches; verl's
    ppo_mini_batch_size, TRL's steps_per_generation). M = 1: one update, old_logp is the detached
    current log-prob (the ratio is 1 in value but carries the policy gradient), no extra forward.
    M > 1: old_logp is the policy's log-prob at rollout time (a no-grad forward over the batch, chunked
    exactly as the updates' forwards, so the first update's ratio is exactly 1); update k trains on
    mini-batch k (`mini_batch_order`) with the batch's normaliser / M (TRL's normaliser: the M updates'
    losses sum to the batch loss), and from the second update on the ratio moves and the clip acts
    (logged: `clipped_tokens`, tokens whose gradient the clip removed, over the step's updates). An
    update whose mini-batch carries no signal (all advantages zero on every rank) is skipped, as a batch
    without signal is.
    `ref` (optional frozen model) adds the k3 KL penalty with weight cfg.kl_coef.
    """
    rng = np.random.default_rng(seed)
    steps = grpo_steps(len(problems), cfg)
    P, G, T = min(cfg.prompts_per_step, max(1, len(problems))), cfg.group_size, cfg.temperature
    M = cfg.mini_batches
    loss_fn = losses.GRPO_LOSSES[cfg.loss]

    def make_step(step: int, idx: list[int], net) -> StepWork:
        batch = [problems[i] for i in _my_shard(idx, ctx)]
        if len(batch) % M:
            raise InputError(f"grpo.mini_batches = {M} must divide the {len(batch)} prompts of a rank's batch "
                             "(prompts_per_step / processes, or the labeled problem count when it is smaller)")
        ro = ctx.rollout.generate(policy, [p.prompt for p in batch], n=G, temperature=T,
                                  max_new_tokens=cfg.max_new_tokens)
        golds = [p.gold for p in batch for _ in range(G)]
        rewards_PG = torch.tensor(ctx.score_batch(list(ro.texts), golds), dtype=torch.float32).view(len(batch), G)
        adv_B = losses.group_advantages(rewards_PG).flatten()
        entry = {"step": step, "reward": float(rewards_PG.mean()),
                 "pass_rate": float((rewards_PG.max(dim=1).values > 0).float().mean()),
                 "zero_signal_fraction": losses.zero_signal_fraction(rewards_PG),
                 "length": float(ro.lengths_B.float().mean()),
                 "compliance": float(np.mean([ctx.is_compliant(t) for t in ro.texts]))}
        if M > 1:  # mini-batch k's rows contiguous
            order = mini_batch_order(len(batch), G, M)
            ro, adv_B = _take(ro, order.to(ro.mask_BT.device)), adv_B[order]
        work = StepWork(ro, entry, tokens=ro.tokens, train_tokens=ro.tokens)
        B = ro.mask_BT.shape[0]
        parts = [slice(k * B // M, (k + 1) * B // M) for k in range(M)]
        signal_k = torch.stack([(adv_B[rows] != 0).any() for rows in parts]).float()
        if distributed(ctx):  # every rank must take part in the backward when any rank has signal
            signal_k = global_sum(signal_k.to(ctx.engine.device), ctx)
        if not bool((signal_k > 0).any()):
            return work
        # rewards are scored on the host; the advantages go where the log-probs are (CUDA on a GPU)
        adv_dev_B = adv_B.to(ro.mask_BT.device)
        count = ro.mask_BT.sum() if cfg.loss == "token_mean" else torch.tensor(float(ro.mask_BT.shape[0]),
                                                                              device=ro.mask_BT.device)
        norm = normaliser(count, ctx)
        old_logp_BT, clipped = None, []
        if M > 1:
            norm = norm / M
            work.updates = [rows for rows, s in zip(parts, signal_k.tolist()) if s > 0]
            work.train_tokens = sum(_rows(ro, rows).tokens for rows in work.updates)
            work.tokens += ro.tokens  # the old log-probs' forward
            old_logp_BT = torch.zeros(ro.mask_BT.shape, device=ro.mask_BT.device)
            with torch.no_grad():  # the policy at rollout time, chunked as the updates' forwards
                for rows in parts:
                    for sl in _chunks(rows, ctx.micro_batch):
                        sub = _rows(ro, sl)
                        old_logp_BT[sl] = losses.token_logp_BT(train_logits(net, sub, ctx, T), sub.completion_BT)

        def chunk_loss(sub: RolloutBatch, sl: slice) -> torch.Tensor:
            logp_BT = losses.token_logp_BT(train_logits(net, sub, ctx, T), sub.completion_BT)
            ref_logp = None
            if ref is not None and cfg.kl_coef > 0:
                with torch.no_grad():
                    ref_logp = losses.token_logp_BT(train_logits(ref, sub, ctx, T), sub.completion_BT)
                work.train_tokens += sub.tokens
            old = logp_BT.detach() if old_logp_BT is None else old_logp_BT[sl]
            if old_logp_BT is not None:
                with torch.no_grad():
                    ratio_BT = torch.exp(logp_BT - old)
                    clipped.append((losses.clipped_BT(ratio_BT, adv_dev_B[sl], clip_low=cfg.clip_low,
                                                      clip_high=cfg.clip_high) * sub.mask_BT).sum())
            return loss_fn(logp_BT, old, adv_dev_B[sl], sub.mask_BT, clip_low=cfg.clip_low,
                           clip_high=cfg.clip_high, ref_logp_BT=ref_logp, kl_coef=cfg.kl_coef, norm=norm)

        work.loss = chunk_loss
        if M > 1:
            work.after = lambda: {"updates": len(work.updates),
                                  "clipped_tokens": int(global_sum(sum(clipped[1:], clipped[0]), ctx))}
        return work

    return train_loop(policy, lr=cfg.lr_for(role), schedule_cfg=cfg, steps=steps,
                      batches=batch_indices(len(problems), P, steps, rng), make_step=make_step, ctx=ctx, name=name,
                      progress=progress, limit=limit, watch=watch)


def fkl_warmup(student, teacher, prompts: tuple[Problem, ...], cfg: FKLConfig, ctx: StageContext, *, seed: int,
               progress: Progress | None = None, name: str = "fkl_warmup", limit: int | None = None,
               watch=None) -> StageResult:
    """Stage 2a: on teacher rollouts, minimise KL(p_T || p_S) over the full vocabulary at every token
    (`losses.fkl_loss`). Logged `forward_kl` is the batch's per-token KL before the step."""
    rng = np.random.default_rng(seed)
    T = cfg.temperature

    def make_step(step: int, idx: list[int], net) -> StepWork:
        ro = ctx.rollout.generate(teacher, [prompts[i].prompt for i in _my_shard(idx, ctx)], n=1,
                                  temperature=T, max_new_tokens=cfg.max_new_tokens)
        norm = normaliser(ro.mask_BT.sum(), ctx)

        def chunk_loss(sub: RolloutBatch, sl: slice) -> torch.Tensor:
            with torch.no_grad():
                t_logits = train_logits(teacher, sub, ctx, T)
            return losses.fkl_loss(train_logits(net, sub, ctx, T), t_logits, sub.mask_BT, norm=norm)

        # teacher rollout, teacher scoring, student training
        return StepWork(ro, {"step": step, "length": float(ro.lengths_B.float().mean())}, tokens=0,
                        loss=chunk_loss, loss_name="forward_kl", train_tokens=3 * ro.tokens)

    return train_loop(student, lr=cfg.lr, schedule_cfg=cfg, steps=cfg.steps,
                      batches=batch_indices(len(prompts), cfg.prompts_per_step, cfg.steps, rng), make_step=make_step,
                      ctx=ctx, name=name, progress=progress, limit=limit, watch=watch)


def opd(student, teacher, prompts: tuple[Problem, ...], cfg: OPDConfig, ctx: StageContext, *, seed: int,
        steps: int | None = None, prompts_per_step: int | None = None, progress: Progress | None = None,
        name: str = "opd", limit: int | None = None, watch=None) -> StageResult:
    """Stage 2b: the student samples, the frozen teacher scores every token, reverse KL(p_S || p_T).

    The loss is `losses.OPD_LOSSES[cfg.estimator]`: "full" = exact full-vocabulary reverse KL per
    position (differentiated directly); "sampled" = REINFORCE on the per-token log-ratio of the
    sampled token. The full per-token KL is logged either way (`kl_to_teacher`, before the step).
    `steps`/`prompts_per_step` override the config (the replay control).
    """
    rng = np.random.default_rng(seed)
    steps = cfg.steps if steps is None else steps
    per_step = cfg.prompts_per_step if prompts_per_step is None else prompts_per_step
    T = cfg.temperature
    loss_fn = losses.OPD_LOSSES[cfg.estimator]

    def make_step(step: int, idx: list[int], net) -> StepWork:
        ro = ctx.rollout.generate(student, [prompts[i].prompt for i in _my_shard(idx, ctx)], n=1,
                                  temperature=T, max_new_tokens=cfg.max_new_tokens)
        norm = normaliser(ro.mask_BT.sum(), ctx)
        kl_sum: list[torch.Tensor] = []

        def chunk_loss(sub: RolloutBatch, sl: slice) -> torch.Tensor:
            with torch.no_grad():
                t_logits = train_logits(teacher, sub, ctx, T)
            s_logits = train_logits(net, sub, ctx, T)
            loss = loss_fn(s_logits, t_logits, sub.completion_BT, sub.mask_BT, norm=norm)
            if cfg.estimator == "full":  # the loss is the token-summed KL / norm: no second pass
                kl_sum.append(loss.detach() * norm)
            else:
                with torch.no_grad():
                    kl_sum.append((losses.reverse_kl_BT(s_logits.detach(), t_logits) * sub.mask_BT).sum())
            return loss

        def after() -> dict:
            kl = global_sum(sum(kl_sum[1:], kl_sum[0]), ctx) / norm  # the batch's normaliser, reduced once
            if distributed(ctx):
                kl = kl / ctx.engine.world_size
            return {"kl_to_teacher": float(kl)}

        # compliance of the student's own samples (a pure function of the texts: no RNG, no numbers move)
        entry = {"step": step, "length": float(ro.lengths_B.float().mean()),
                 "compliance": float(np.mean([ctx.is_compliant(t) for t in ro.texts]))}
        # student rollout, teacher scoring, student training
        return StepWork(ro, entry, tokens=0, loss=chunk_loss, train_tokens=3 * ro.tokens, after=after)

    return train_loop(student, lr=cfg.lr, schedule_cfg=cfg, steps=steps,
                      batches=batch_indices(len(prompts), per_step, steps, rng), make_step=make_step, ctx=ctx,
                      name=name, progress=progress, limit=limit, watch=watch)
