"""Evaluation: sampled avg@k at a fixed temperature (headline), pass@k, protocol compliance, accuracy
given compliance; greedy accuracy only beside it (greedy can hide a protocol habit held by a minority
of samples). All accuracy-like numbers are percent (theory.tables convention).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from reference.config import EvalConfig
from reference.stages import StageContext
from reference.world import Problem


@dataclass(frozen=True)
class EvalResult:
    metrics: dict[str, float]
    problems: pd.DataFrame  # per-problem counts in theory.tables' problem schema (model filled by caller)

    def to_dict(self) -> dict:
        return dict(self.metrics)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"metric": list(self.metrics), "value": list(self.metrics.values())})


def _sampling(cfg: EvalConfig, k: int, greedy: bool, temperature, top_p, top_k) -> dict:
    return dict(n=k, temperature=cfg.temperature if temperature is None else temperature,
                top_p=cfg.top_p if top_p is None else top_p, top_k=cfg.top_k if top_k is None else top_k,
                max_new_tokens=cfg.max_new_tokens, greedy=greedy)


def _score(ro, chunk, ctx: StageContext, k: int) -> tuple:
    """Per completion of one generate call: correct, compliant, wrote running sums ("a+b=c;"); lengths."""
    shape = (len(chunk), k)
    golds = [p.gold for p in chunk for _ in range(k)]
    correct = np.asarray(ctx.score_batch(list(ro.texts), golds), dtype=float).reshape(shape) > 0
    compliant = np.asarray([ctx.is_compliant(t) for t in ro.texts]).reshape(shape)
    steps = np.asarray(["=" in t for t in ro.texts]).reshape(shape)
    return correct, compliant, steps, ro.lengths_B.tolist()


def _assemble(scored: dict[int, tuple], starts: list[int], n: int, k: int):
    """Chunk results (keyed by chunk index) -> per-problem arrays in problem order, and the mean length."""
    correct, compliant, steps = (np.zeros((n, k), dtype=bool) for _ in range(3))
    lengths = []
    for c, start in enumerate(starts):
        ok, comp, st, lens = scored[c]
        correct[start:start + len(ok)] = ok
        compliant[start:start + len(ok)] = comp
        steps[start:start + len(ok)] = st
        lengths.extend(lens)
    return correct, compliant, float(np.mean(lengths)) if lengths else 0.0, steps


def _sample(model, problems, ctx: StageContext, cfg: EvalConfig, k: int, greedy: bool, *,
            temperature: float | None = None, top_p: float | None = None, top_k: int | None = None,
            keyed: bool = False):
    if keyed:
        return _sample_keyed(model, problems, ctx, cfg, k, greedy, temperature=temperature, top_p=top_p, top_k=top_k)
    sampling = _sampling(cfg, k, greedy, temperature, top_p, top_k)
    step = max(1, cfg.batch // k)
    starts = list(range(0, len(problems), step))
    scored = {}
    for c, start in enumerate(starts):  # one RNG stream over the chunks in order
        chunk = problems[start:start + step]
        scored[c] = _score(ctx.rollout.generate(model, [p.prompt for p in chunk], **sampling), chunk, ctx, k)
    return _assemble(scored, starts, len(problems), k)


def _sample_keyed(model, problems, ctx: StageContext, cfg: EvalConfig, k: int, greedy: bool, *,
                  temperature: float | None, top_p: float | None, top_k: int | None):
    """`_sample` with the problems split across ranks and the results gathered, identical for any
    number of ranks: the problems are cut into the same fixed chunks of `batch // k` (what one
    `generate` call sees), chunk c is sampled under its own seed `seed_from(base, c)` and goes to rank
    c mod world size. `base` is drawn from torch's RNG, which every caller seeds identically on every
    rank. Ranks then exchange their chunks (`all_gather_object`). A model sharded by FSDP2 gathers its
    weights at the start of every `generate` call (a collective), so a rank short of a chunk samples its
    first one again and drops the result.

    One process through here (`keyed=True`, world size 1) gives the same numbers as N ranks; it is
    not the one-process stream of `_sample` (one RNG stream over the chunks in order), which keeps
    its numbers: the default path (no engine, or one process) never comes here."""
    from reference.engines import sharded_across_ranks
    from reference.seeds import seed_from

    engine = ctx.engine
    rank, world = (0, 1) if engine is None else (engine.rank, engine.world_size)
    base = int(torch.randint(0, 2**31 - 1, (1,)).item())
    sampling = _sampling(cfg, k, greedy, temperature, top_p, top_k)
    step = max(1, cfg.batch // k)
    starts = list(range(0, len(problems), step))
    mine = [c for c in range(len(starts)) if c % world == rank]
    rounds = -(-len(starts) // world) if sharded_across_ranks(model) else len(mine)
    on_gpu = next(model.parameters()).device.type == "cuda"
    devices = [torch.cuda.current_device()] if on_gpu else []
    scored = {}
    for j in range(rounds):
        c = mine[j] if j < len(mine) else (mine[0] if mine else 0)
        chunk = problems[starts[c]:starts[c] + step]
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed_from(base, c))
            ro = ctx.rollout.generate(model, [p.prompt for p in chunk], **sampling)
        if j >= len(mine):
            continue  # a lockstep round with no chunk of its own
        scored[c] = _score(ro, chunk, ctx, k)
    if world > 1:
        import torch.distributed as dist
        parts: list = [None] * world
        dist.all_gather_object(parts, scored)
        scored = {c: v for part in parts for c, v in part.items()}
    return _assemble(scored, starts, len(problems), k)


@torch.no_grad()
def evaluate(model, problems: tuple[Problem, ...], ctx: StageContext, cfg: EvalConfig, *,
             k: int | None = None, extras: bool = True, keyed: bool | None = None) -> EvalResult:
    """Headline avg@k at cfg.temperature/top_p/top_k; with `extras`, the configured side columns
    (greedy accuracy when `greedy`, avg@k at T = 1 when `also_t1`). Curves, the pilot and the gate
    pass extras=False.

    `keyed` (default: when `ctx.engine` has several ranks) splits the problems across ranks with a
    seed per chunk of problems, so the numbers do not depend on the number of ranks (`_sample_keyed`);
    otherwise one RNG stream in problem order, as always."""
    k = cfg.k if k is None else k
    if keyed is None:
        keyed = ctx.engine is not None and ctx.engine.world_size > 1
    kw = {"keyed": True} if keyed else {}
    correct, compliant, mean_len, steps = _sample(model, problems, ctx, cfg, k, greedy=False, **kw)
    n_compliant = compliant.sum()
    metrics = {
        "accuracy": 100.0 * correct.mean(),  # avg@k
        "pass_at_k": 100.0 * correct.any(axis=1).mean(),
        "compliance": 100.0 * compliant.mean(),
        "accuracy_given_compliance": 100.0 * (correct.sum() / n_compliant) if n_compliant else 0.0,
        "length": mean_len,
        "k": float(k),
    }
    if extras and cfg.greedy:
        g_correct, *_ = _sample(model, problems, ctx, cfg, 1, greedy=True, **kw)
        metrics["accuracy_greedy"] = 100.0 * g_correct.mean()
    if extras and cfg.also_t1:  # T = 1 avg@k of a tiny model mostly measures its entropy: a side column
        t1_correct, *_ = _sample(model, problems, ctx, cfg, k, greedy=False, temperature=1.0, top_p=1.0, top_k=0, **kw)
        metrics["accuracy_t1"] = 100.0 * t1_correct.mean()
    table = pd.DataFrame({"model": "", "problem_id": [p.pid for p in problems], "k": k,
                          "correct": correct.sum(1), "compliant": compliant.sum(1)})
    # accuracy by difficulty (number of terms): the graded part of the world
    terms = np.asarray([p.terms for p in problems])
    for t in sorted(set(terms.tolist())):
        metrics[f"accuracy_terms{t}"] = 100.0 * correct[terms == t].mean()
    fams = np.asarray([getattr(p, "family", -1) for p in problems])
    if (fams >= 0).any():  # a world with problem families: the mode the model chose, and how it fared
        metrics["steps_share"] = 100.0 * steps.mean()
        metrics["accuracy_given_steps"] = 100.0 * correct[steps].mean() if steps.any() else 0.0
        metrics["accuracy_given_direct"] = 100.0 * correct[~steps].mean() if (~steps).any() else 0.0
        for f in sorted(set(fams.tolist())):
            metrics[f"accuracy_family{f}"] = 100.0 * correct[fams == f].mean()
            metrics[f"steps_share_family{f}"] = 100.0 * steps[fams == f].mean()
    return EvalResult(metrics, table)
