"""Losses and advantages as pure tensor functions (equations in docs/reference.md).

Letters: B = sequences, T = completion positions, V = vocabulary, P = prompts, G = group size.
`mask_BT` is 1 on completion tokens that count (up to and including EOS), 0 on padding.
Logits here are already restricted to the real vocabulary (padded Qwen3 logits are sliced off by the
caller), so no padded column ever enters a KL.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_mean(x_BT: torch.Tensor, mask_BT: torch.Tensor) -> torch.Tensor:
    """Token-mean over all unmasked tokens of the batch (DAPO's normaliser)."""
    return (x_BT * mask_BT).sum() / mask_BT.sum().clamp(min=1.0)


def group_advantages(rewards_PG: torch.Tensor, *, scale: bool = True, eps: float = 1e-4) -> torch.Tensor:
    """A_pg = (r_pg - mean_g r_p) / (std_g r_p + eps), std with Bessel's correction (as TRL's `nanstd`).

    A group whose rewards are all equal carries no signal: its advantages are exactly zero.
    """
    mean_P1 = rewards_PG.mean(dim=1, keepdim=True)
    adv_PG = rewards_PG - mean_P1
    if scale:
        adv_PG = adv_PG / (rewards_PG.std(dim=1, keepdim=True, unbiased=True) + eps)
    return adv_PG


def zero_signal_fraction(rewards_PG: torch.Tensor) -> float:
    """Fraction of groups whose rewards are all equal (TRL logs this as frac_reward_zero_std)."""
    same = (rewards_PG == rewards_PG[:, :1]).all(dim=1)
    return float(same.float().mean())


def clipped_policy_loss_BT(logp_BT: torch.Tensor, old_logp_BT: torch.Tensor, adv_B: torch.Tensor, *,
                           clip_low: float = 0.2, clip_high: float = 0.28) -> torch.Tensor:
    """Per-token PPO/GRPO surrogate -min(r A, clip(r, 1-eps_lo, 1+eps_hi) A), r = exp(logp - old_logp)."""
    ratio_BT = torch.exp(logp_BT - old_logp_BT)
    adv_B1 = adv_B.unsqueeze(-1)
    unclipped = ratio_BT * adv_B1
    clipped = torch.clamp(ratio_BT, 1.0 - clip_low, 1.0 + clip_high) * adv_B1
    return -torch.minimum(unclipped, clipped)


def clipped_BT(ratio_BT: torch.Tensor, adv_B: torch.Tensor, *, clip_low: float = 0.2,
               clip_high: float = 0.28) -> torch.Tensor:
    """1 where the clip is active in `clipped_policy_loss_BT` (the min takes the clipped term, so the token
    gets no gradient): r > 1 + eps_hi with A > 0, or r < 1 - eps_lo with A < 0."""
    adv_B1 = adv_B.unsqueeze(-1)
    return (((ratio_BT > 1.0 + clip_high) & (adv_B1 > 0)) | ((ratio_BT < 1.0 - clip_low) & (adv_B1 < 0))).float()


def k3_kl_BT(logp_BT: torch.Tensor, ref_logp_BT: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimator of KL(pi || ref) on tokens sampled from pi (>= 0, unbiased)."""
    d = ref_logp_BT - logp_BT
    return torch.exp(d) - d - 1.0


def _norm_or_count(mask_BT: torch.Tensor, norm) -> torch.Tensor:
    return mask_BT.sum().clamp(min=1.0) if norm is None else norm


def grpo_token_mean_loss(logp_BT, old_logp_BT, adv_B, mask_BT, *, clip_low=0.2, clip_high=0.28,
                         ref_logp_BT=None, kl_coef=0.0, norm=None) -> torch.Tensor:
    """DAPO's GRPO loss: the clipped surrogate (+ beta k3 KL) summed over tokens / `norm`.

    `norm` is the batch's token count (default: this chunk's `mask_BT.sum()`, i.e. the token mean);
    the trainer passes the whole batch's (global) count when it splits a batch into micro-batches or
    ranks, so the chunks' losses sum to the batch loss.
    """
    per_tok = clipped_policy_loss_BT(logp_BT, old_logp_BT, adv_B, clip_low=clip_low, clip_high=clip_high)
    if kl_coef > 0 and ref_logp_BT is not None:
        per_tok = per_tok + kl_coef * k3_kl_BT(logp_BT, ref_logp_BT)
    return (per_tok * mask_BT).sum() / _norm_or_count(mask_BT, norm)


def grpo_seq_mean_loss(logp_BT, old_logp_BT, adv_B, mask_BT, *, clip_low=0.2, clip_high=0.28,
                       ref_logp_BT=None, kl_coef=0.0, norm=None) -> torch.Tensor:
    """Original GRPO's normaliser: each sequence's token mean, summed over sequences / `norm`
    (default: this chunk's sequence count, i.e. the mean over sequences)."""
    per_tok = clipped_policy_loss_BT(logp_BT, old_logp_BT, adv_B, clip_low=clip_low, clip_high=clip_high)
    if kl_coef > 0 and ref_logp_BT is not None:
        per_tok = per_tok + kl_coef * k3_kl_BT(logp_BT, ref_logp_BT)
    per_seq = (per_tok * mask_BT).sum(-1) / mask_BT.sum(-1).clamp(min=1.0)
    n = torch.tensor(float(mask_BT.shape[0]), device=mask_BT.device) if norm is None else norm
    return per_seq.sum() / n


GRPO_LOSSES = {"token_mean": grpo_token_mean_loss, "seq_mean": grpo_seq_mean_loss}


def fkl_loss(student_logits_BTV, teacher_logits_BTV, mask_BT, *, norm=None) -> torch.Tensor:
    """Stage 2a: token-summed KL(p_T || p_S) / `norm` (default: the token mean of this chunk)."""
    return (forward_kl_BT(student_logits_BTV, teacher_logits_BTV) * mask_BT).sum() / _norm_or_count(mask_BT, norm)


def opd_full_loss(student_logits_BTV, teacher_logits_BTV, completion_BT, mask_BT, *, norm=None) -> torch.Tensor:
    """Stage 2b, exact: token-summed full-vocabulary KL(p_S || p_T) / `norm`, differentiated directly."""
    return (reverse_kl_BT(student_logits_BTV, teacher_logits_BTV) * mask_BT).sum() / _norm_or_count(mask_BT, norm)


def opd_sampled_loss(student_logits_BTV, teacher_logits_BTV, completion_BT, mask_BT, *, norm=None) -> torch.Tensor:
    """Stage 2b, sampled-token estimator (REINFORCE on the per-token log-ratio of the sampled token)."""
    s_lp = token_logp_BT(student_logits_BTV, completion_BT)
    t_lp = token_logp_BT(teacher_logits_BTV, completion_BT)
    return (sampled_reverse_kl_loss_BT(s_lp, t_lp) * mask_BT).sum() / _norm_or_count(mask_BT, norm)


OPD_LOSSES = {"full": opd_full_loss, "sampled": opd_sampled_loss}


def forward_kl_BT(student_logits_BTV: torch.Tensor, teacher_logits_BTV: torch.Tensor) -> torch.Tensor:
    """KL(p_T || p_S) per position, full vocabulary (stage 2a: the student covers the teacher)."""
    lt = F.log_softmax(teacher_logits_BTV.float(), dim=-1)
    ls = F.log_softmax(student_logits_BTV.float(), dim=-1)
    return (lt.exp() * (lt - ls)).sum(-1)


def reverse_kl_BT(student_logits_BTV: torch.Tensor, teacher_logits_BTV: torch.Tensor) -> torch.Tensor:
    """KL(p_S || p_T) per position, full vocabulary (stage 2b, OPD: mode-seeking toward the teacher)."""
    lt = F.log_softmax(teacher_logits_BTV.float(), dim=-1)
    ls = F.log_softmax(student_logits_BTV.float(), dim=-1)
    return (ls.exp() * (ls - lt)).sum(-1)


def sampled_reverse_kl_loss_BT(student_logp_BT: torch.Tensor, teacher_logp_BT: torch.Tensor) -> torch.Tensor:
    """Sampled-token OPD estimator: reward log p_T(y) - log p_S(y) per sampled token, REINFORCE-style.

    Its gradient in expectation over y ~ p_S equals the gradient of KL(p_S || p_T) (the score-function
    identity); its value is minus the per-token reward so that a lower loss is a closer student.
    """
    reward_BT = (teacher_logp_BT - student_logp_BT).detach()
    return -reward_BT * student_logp_BT


def token_logp_BT(logits_BTV: torch.Tensor, tokens_BT: torch.Tensor) -> torch.Tensor:
    return torch.gather(F.log_softmax(logits_BTV.float(), dim=-1), -1, tokens_BT.unsqueeze(-1)).squeeze(-1)
