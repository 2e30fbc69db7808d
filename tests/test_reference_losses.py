"""Tier 1: losses and advantages against analytic values and TRL's own functions."""

import math

import pytest
import torch

from reference import losses

torch.manual_seed(0)


def _logits(B=3, T=5, V=7, scale=2.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, V, generator=g) * scale


def test_kl_of_a_distribution_with_itself_is_zero():
    x = _logits()
    assert torch.allclose(losses.forward_kl_BT(x, x), torch.zeros(3, 5), atol=1e-6)
    assert torch.allclose(losses.reverse_kl_BT(x, x), torch.zeros(3, 5), atol=1e-6)


def test_kl_is_positive_and_asymmetric():
    s, t = _logits(seed=1), _logits(seed=2)
    f, r = losses.forward_kl_BT(s, t), losses.reverse_kl_BT(s, t)
    assert (f > 0).all() and (r > 0).all()
    assert not torch.allclose(f, r)
    # forward KL(p_T||p_S) with roles swapped is the reverse KL
    assert torch.allclose(losses.forward_kl_BT(t, s), r, atol=1e-6)


def test_two_point_kl_matches_hand_computation():
    p, q = 0.8, 0.3  # teacher p, student q over two tokens
    t = torch.log(torch.tensor([[[p, 1 - p]]]))
    s = torch.log(torch.tensor([[[q, 1 - q]]]))
    fwd = p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))
    rev = q * math.log(q / p) + (1 - q) * math.log((1 - q) / (1 - p))
    assert losses.forward_kl_BT(s, t).item() == pytest.approx(fwd, rel=1e-5)
    assert losses.reverse_kl_BT(s, t).item() == pytest.approx(rev, rel=1e-5)


@pytest.mark.slow  # two 1500-step Adam fits
def test_forward_kl_covers_modes_reverse_kl_seeks_one():
    """The limits that make 2a a coverage step and 2b a mode-seeking step: fit a one-bump student
    (a discretised Gaussian: location mu, width sigma) to a two-bump teacher on a grid of 41 tokens.
    Forward KL centres a wide bump between the modes; reverse KL sits narrowly on one mode."""
    x = torch.linspace(-10, 10, 41)
    teacher = torch.log_softmax(torch.logsumexp(torch.stack([-(x + 5) ** 2 / 2, -(x - 5) ** 2 / 2]), 0), -1)

    def fit(kl_fn):
        mu = torch.tensor(2.0, requires_grad=True)
        log_sigma = torch.tensor(0.0, requires_grad=True)
        opt = torch.optim.Adam([mu, log_sigma], lr=0.05)
        for _ in range(1500):
            student = -(x - mu) ** 2 / (2 * torch.exp(2 * log_sigma))
            opt.zero_grad()
            kl_fn(student.view(1, 1, -1), teacher.view(1, 1, -1)).sum().backward()
            opt.step()
        return mu.item(), log_sigma.exp().item()

    mu_f, sigma_f = fit(losses.forward_kl_BT)
    mu_r, sigma_r = fit(losses.reverse_kl_BT)
    assert abs(mu_f) < 0.5 and sigma_f > 4.0  # covers both modes (moment matching: sd ~ 5.1)
    assert abs(mu_r - 5.0) < 0.3 and sigma_r < 1.3  # seeks the nearest mode (sd ~ 1)


def test_constant_group_has_zero_advantage_and_counts_as_zero_signal():
    r = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    adv = losses.group_advantages(r)
    assert torch.equal(adv[:2], torch.zeros(2, 4))
    assert adv[2, 0] > 0 and (adv[2, 1:] < 0).all()
    assert adv[2].sum().abs() < 1e-6
    assert losses.zero_signal_fraction(r) == pytest.approx(2 / 3)


@pytest.mark.slow
def test_group_advantages_match_trl_normalisation():
    from trl.trainer.utils import nanstd
    r = torch.tensor([[1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]])
    expected = (r - r.mean(1, keepdim=True)) / (nanstd(r, dim=1, keepdim=True) + 1e-4)
    assert torch.allclose(losses.group_advantages(r), expected, atol=1e-6)


def test_clip_removes_gradient_outside_the_trust_region():
    old = torch.zeros(1, 3)
    adv = torch.tensor([1.0])
    # ratios 0.5, 1.0, 2.0; positive advantage: the 2.0 token is clipped at 1.28 (no gradient)
    logp = torch.log(torch.tensor([[0.5, 1.0, 2.0]])).requires_grad_()
    loss = losses.clipped_policy_loss_BT(logp, old, adv, clip_low=0.2, clip_high=0.28)
    assert torch.allclose(loss.detach(), -torch.tensor([[0.5, 1.0, 1.28]]))
    loss.sum().backward()
    assert logp.grad[0, 2] == 0 and logp.grad[0, 0] != 0 and logp.grad[0, 1] != 0
    # negative advantage: the 0.5 token is clipped at 0.8 (no gradient), the 2.0 token is not
    logp2 = torch.log(torch.tensor([[0.5, 1.0, 2.0]])).requires_grad_()
    loss2 = losses.clipped_policy_loss_BT(logp2, old, -adv, clip_low=0.2, clip_high=0.28)
    assert torch.allclose(loss2.detach(), torch.tensor([[0.8, 1.0, 2.0]]))
    loss2.sum().backward()
    assert logp2.grad[0, 0] == 0 and logp2.grad[0, 2] != 0


def test_token_mean_on_ragged_lengths():
    x = torch.tensor([[1.0, 1.0, 1.0, 1.0], [3.0, 0.0, 0.0, 0.0]])
    m = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]])
    assert losses.masked_mean(x, m).item() == pytest.approx(7 / 5)  # the sequence mean would be (1 + 3) / 2


def test_k3_kl_is_zero_at_reference_and_positive_elsewhere():
    lp = torch.log(torch.tensor([[0.2, 0.5]]))
    assert torch.allclose(losses.k3_kl_BT(lp, lp), torch.zeros(1, 2))
    assert (losses.k3_kl_BT(lp, lp + 0.3) > 0).all()


@pytest.mark.parametrize("beta,ours", [(0.0, losses.forward_kl_BT), (1.0, losses.reverse_kl_BT)])
def test_kl_agrees_with_trl_generalized_jsd(beta, ours):
    from trl.experimental.gkd import GKDTrainer
    s, t = _logits(seed=3), _logits(seed=4)
    labels = torch.ones(3, 5, dtype=torch.long)
    labels[0, 3:] = -100
    mask = (labels != -100).float()
    trl_loss = GKDTrainer.generalized_jsd_loss(s, t, labels=labels, beta=beta, reduction="batchmean")
    ours_loss = losses.masked_mean(ours(s, t), mask)
    assert ours_loss.item() == pytest.approx(trl_loss.item(), rel=1e-5)


def test_sampled_estimator_gradient_matches_full_reverse_kl_in_expectation():
    """E_{y~p_S}[grad of the sampled loss] = grad KL(p_S||p_T): enumerate y exactly (V=4)."""
    z = torch.tensor([0.3, -0.2, 1.0, 0.1], requires_grad=True)
    t = torch.log_softmax(torch.tensor([1.0, 0.5, -1.0, 0.0]), -1)
    full = losses.reverse_kl_BT(z.view(1, 1, 4), t.view(1, 1, 4)).sum()
    g_full, = torch.autograd.grad(full, z)
    ls = torch.log_softmax(z, -1)
    p = ls.exp().detach()
    expected = sum(p[y] * losses.sampled_reverse_kl_loss_BT(ls[y].view(1, 1), t[y].view(1, 1)).sum()
                   for y in range(4))
    g_samp, = torch.autograd.grad(expected, z)
    assert torch.allclose(g_full, g_samp, atol=1e-6)
