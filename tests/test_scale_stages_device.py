"""The stages keep every tensor of a loss on the policy's device. On CUDA, `stages.grpo` once built the
advantages on the host and multiplied them into CUDA log-probs ("Expected all tensors to be on the
same device"). A CPU machine cannot run CUDA, so the policy here lives on the `meta` device: the
rewards are still scored on the host, and the loss must receive advantages on `meta` too."""

from types import SimpleNamespace

import pytest
import torch

from reference import losses
from reference import stages
from reference.config import GRPOConfig
from reference.rollout import RolloutBatch
from reference.world import Problem

V, T, L_PROMPT = 11, 3, 2


class _MetaPolicy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1, device="meta"))

    def forward(self, input_ids, attention_mask, position_ids):
        return SimpleNamespace(logits=torch.zeros(*input_ids.shape, V, device="meta") * self.w)


class _MetaBatch(RolloutBatch):
    # counting needs host values; the meta tensors have none
    @property
    def tokens(self) -> int:
        return int(self.completion_BT.shape[0] * (L_PROMPT + T))

    @property
    def lengths_B(self) -> torch.Tensor:
        return torch.full((self.completion_BT.shape[0],), float(T))


class _MetaRollout:
    def generate(self, model, prompts, *, n, temperature, top_p=1.0, top_k=0, max_new_tokens, greedy=False):
        B = len(prompts) * n
        ids = torch.zeros(B, L_PROMPT + T, dtype=torch.long, device="meta")
        texts = tuple("1" if i % 2 else "0" for i in range(B))  # half right: every group has signal
        return _MetaBatch(ids, torch.ones_like(ids), L_PROMPT, ids[:, L_PROMPT:], torch.ones(B, T, device="meta"),
                          texts, n)


class _Reached(Exception):
    pass


def test_grpo_advantages_follow_the_policy_device(monkeypatch):
    seen = {}

    def spy(logp_BT, old_logp_BT, adv_B, **kw):
        seen.update(logp=logp_BT.device, adv=adv_B.device)
        raise _Reached  # meta tensors hold no values: stop before anything reads one

    monkeypatch.setattr(losses, "clipped_policy_loss_BT", spy)
    ctx = stages.StageContext(rollout=_MetaRollout(), vocab_size=V, eos_id=0,
                              score_batch=lambda texts, golds: [float(t == g) for t, g in zip(texts, golds)],
                              is_compliant=lambda t: True)
    problems = tuple(Problem(pid=str(i), prompt=f"{i}", gold="1", terms=2) for i in range(2))
    cfg = GRPOConfig(group_size=2, prompts_per_step=2, epochs=1.0, max_new_tokens=T)
    with pytest.raises(_Reached):
        stages.grpo(_MetaPolicy(), problems, cfg, ctx, role="student", seed=0)
    assert seen == {"logp": torch.device("meta"), "adv": torch.device("meta")}


def test_optimizer_is_fused_only_on_cuda():
    cpu = torch.nn.Linear(2, 2)
    assert not stages.optimizer(cpu, 1e-3).defaults.get("fused")  # CPU: the default implementation, as before
    if torch.cuda.is_available():
        assert stages.optimizer(torch.nn.Linear(2, 2).cuda(), 1e-3).defaults["fused"] is True
