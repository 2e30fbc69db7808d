"""GRPO's PPO mini-batches (`grpo.mini_batches`, issue 24 item 4) on the reference loop: several updates per
rollout batch with the old log-probs of rollout time. Tier 2: a tiny random-init Qwen3 built from the
default config, one rollout batch, rewards fixed so every group carries signal."""

import copy
import dataclasses

import pytest
import torch

from reference import losses, stages
from reference.assemble import build_models, build_world
from reference.config import Config
from reference.seeds import seeded


def test_mini_batch_order_keeps_groups_whole_and_strides_prompts():
    # 4 prompts x 2 samples, 2 mini-batches: prompts 0, 2 then 1, 3
    assert stages.mini_batch_order(4, 2, 2).tolist() == [0, 1, 4, 5, 2, 3, 6, 7]
    assert stages.mini_batch_order(3, 4, 1).tolist() == list(range(12))
    # on 2 ranks of 4 prompts each, rank r's mini-batch k is the one-process mini-batch k's part on it
    one = stages.mini_batch_order(8, 1, 2).tolist()
    ranks = [[4 * r + i for i in stages.mini_batch_order(4, 1, 2).tolist()] for r in (0, 1)]
    assert sorted(one[:4]) == sorted(ranks[0][:2] + ranks[1][:2])


def test_clipped_tokens_are_where_the_clip_removes_the_gradient():
    ratio = torch.tensor([[0.7, 1.0, 1.3], [0.7, 1.0, 1.3]])
    adv = torch.tensor([1.0, -1.0])
    assert losses.clipped_BT(ratio, adv, clip_low=0.2, clip_high=0.28).tolist() == [[0, 0, 1], [1, 0, 0]]


@pytest.fixture(scope="module")
def tiny():
    cfg = Config().override({"student.init_seed": 1, "grpo.group_size": 4, "grpo.prompts_per_step": 4,
                             "grpo.max_new_tokens": 8, "grpo.lr": 3e-2})
    m = build_models(cfg, need_teacher=False)
    world = build_world(cfg, m.tokenizer)
    # every group of 4 carries signal (rewards 1 where i % 3 == 0)
    ctx = dataclasses.replace(m.ctx, score_batch=lambda texts, golds: [float(i % 3 == 0) for i in range(len(texts))])
    return cfg, m, world, ctx


def _spy_losses(monkeypatch, cfg):
    """Record (log-probs, old log-probs, rows) of every call of the GRPO loss."""
    calls = []
    loss_fn = losses.GRPO_LOSSES[cfg.grpo.loss]

    def spy(logp_BT, old_logp_BT, adv_B, mask_BT, **kw):
        calls.append((logp_BT.detach().clone(), old_logp_BT.detach().clone(), mask_BT.shape[0]))
        return loss_fn(logp_BT, old_logp_BT, adv_B, mask_BT, **kw)
    monkeypatch.setitem(losses.GRPO_LOSSES, cfg.grpo.loss, spy)
    return calls


def test_updates_reuse_the_rollouts_with_old_log_probs_of_rollout_time(tiny, monkeypatch):
    cfg, m, world, ctx = tiny
    g = dataclasses.replace(cfg.grpo, mini_batches=4)
    calls = _spy_losses(monkeypatch, cfg)
    rows, logits = [], stages.train_logits

    def spy_logits(model, batch, c, temperature):  # the rows each forward saw, for the rollout-time copy
        rows.append(batch)
        return logits(model, batch, c, temperature)
    monkeypatch.setattr(stages, "train_logits", spy_logits)
    policy = copy.deepcopy(m.student)
    start = copy.deepcopy(policy)
    with seeded("cpu", 3):
        result = stages.grpo(policy, world.labeled[:4], g, ctx, role="student", seed=0, limit=1)
    entry = result.log[0]
    assert entry["updates"] == 4 and len(calls) == 4 and all(n == 4 for _, _, n in calls)  # one group each
    # the first update's ratio is exactly 1: same weights, same rows, same forward as at rollout time
    logp0, old0, _ = calls[0]
    assert torch.equal(logp0, old0)
    # the old log-probs are the policy's at rollout time, not the updated policy's
    updates = rows[-4:]  # the 4 training forwards follow the 4 no-grad forwards of rollout time
    for (logp, old, _), batch in zip(calls[1:], updates[1:]):
        with torch.no_grad():
            at_rollout = losses.token_logp_BT(logits(start, batch, ctx, g.temperature), batch.completion_BT)
        assert torch.equal(old, at_rollout)
        assert not torch.equal(logp, old)  # the policy moved
    # later updates clip tokens (the first cannot: its ratio is 1)
    assert entry["clipped_tokens"] > 0
    # the compute account: rollout + old log-probs' forward + one training pass, all on the same batch
    assert result.tokens == 3 * sum(b.tokens for b in updates)


def test_one_mini_batch_is_the_single_update_of_before(tiny, monkeypatch):
    """mini_batches = 1: no rollout-time forward, old = current log-probs detached, no new log keys."""
    cfg, m, world, ctx = tiny
    calls = _spy_losses(monkeypatch, cfg)
    with seeded("cpu", 3):
        result = stages.grpo(copy.deepcopy(m.student), world.labeled[:4], cfg.grpo, ctx, role="student", seed=0,
                             limit=1)
    assert len(calls) == 1 and torch.equal(calls[0][0], calls[0][1])
    assert "updates" not in result.log[0] and "clipped_tokens" not in result.log[0]


def test_a_batch_that_does_not_split_is_refused(tiny):
    from theory.errors import InputError
    cfg, m, world, ctx = tiny
    g = dataclasses.replace(cfg.grpo, mini_batches=4)
    with pytest.raises(InputError, match="grpo.mini_batches = 4 must divide the 3 prompts"):
        stages.grpo(copy.deepcopy(m.student), world.labeled[:3], g, ctx, role="student", seed=0, limit=1)
