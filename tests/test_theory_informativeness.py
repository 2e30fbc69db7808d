"""Sparse/dense informativeness: closed forms vs a seeded Monte-Carlo of GRPO groups, shapes, bounds."""

from dataclasses import dataclass

import numpy as np
import pytest
from scipy import special

from theory import informativeness as inf


@dataclass(frozen=True)
class GroupSimulation:
    """Monte-Carlo estimates from simulated GRPO groups (to check the closed forms)."""

    signal_fraction: float
    signal_size: float
    bits_per_label: float
    n_groups: int


def simulate_groups(theta: float, c: float, s_d: float, G: int, *, n_groups: int,
                    rng: np.random.Generator) -> GroupSimulation:
    """Draw problems d ~ N(0, s_d^2), then G Bernoulli(c sigmoid(theta - d)) rewards per problem.

    Bits: E_d[H(Bin(G, p(d)))] = E_{d, j}[-log2 P(j | d)], estimated by the mean of -log2 P(j | d)
    over the simulated problems' realised counts j.
    """
    d_N = rng.normal(0.0, s_d, size=n_groups)
    p_N = c * special.expit(theta - d_N)
    rewards_NG = rng.random((n_groups, G)) < p_N[:, None]
    j_N = rewards_NG.sum(1)
    signal = (j_N > 0) & (j_N < G)
    std_N = rewards_NG.std(1)  # population std, as in `signal_size`
    log_c = special.gammaln(G + 1) - special.gammaln(j_N + 1) - special.gammaln(G - j_N + 1)
    logp_N = log_c + special.xlogy(j_N, p_N) + special.xlog1py(G - j_N, -p_N)
    return GroupSimulation(signal_fraction=float(signal.mean()), signal_size=float(std_N.mean()),
                           bits_per_label=float(-logp_N.mean() / np.log(2.0)), n_groups=n_groups)


def test_signal_fraction_peaks_at_half_and_vanishes_at_ends():
    p = np.linspace(0, 1, 1001)
    for G in (2, 4, 8, 16):
        f = inf.signal_fraction(p, G)
        assert f[0] == 0.0 and f[-1] == 0.0
        assert p[np.argmax(f)] == pytest.approx(0.5)
        assert np.all(np.diff(f[: 501]) > 0) and np.all(np.diff(f[500:]) < 0)  # unimodal
        assert f.max() == pytest.approx(1 - 2 * 0.5**G)


def test_signal_size_and_bits_limits():
    G = 8
    assert inf.signal_size(0.0, G) == 0.0 and inf.signal_size(1.0, G) == 0.0
    assert inf.bits_per_label(0.0, G) == pytest.approx(0.0, abs=1e-12)
    p = np.linspace(0, 1, 201)
    assert np.all(inf.bits_per_label(p, G) <= np.log2(G + 1) + 1e-12)
    # G = 2: std is 1/2 exactly when the two rewards differ, which happens with prob 2p(1-p)
    assert inf.signal_size(0.3, 2) == pytest.approx(2 * 0.3 * 0.7 * 0.5)
    # the entropy of Bin(1, p) is the binary entropy
    q = 0.2
    assert inf.bits_per_label(q, 1 + 1) == pytest.approx(
        -(0.64 * np.log2(0.64) + 0.32 * np.log2(0.32) + 0.04 * np.log2(0.04)))


@pytest.mark.parametrize("theta,c,s_d,G", [(1.0, 0.9, 1.5, 8), (-1.0, 1.0, 2.0, 4), (2.5, 0.7, 1.0, 16)])
def test_difficulty_averaged_closed_forms_match_monte_carlo(theta, c, s_d, G):
    sim = simulate_groups(theta, c, s_d, G, n_groups=200_000, rng=np.random.default_rng(0))
    # MC standard errors at n = 2e5 are ~1e-3 for these means; 5e-3 is > 4 se
    assert inf.signal_fraction_avg(theta, c, s_d, G) == pytest.approx(sim.signal_fraction, abs=5e-3)
    assert inf.signal_size_avg(theta, c, s_d, G) == pytest.approx(sim.signal_size, abs=5e-3)
    assert inf.bits_per_label_avg(theta, c, s_d, G) == pytest.approx(sim.bits_per_label, abs=1e-2)


def test_vectorised_over_draws():
    theta = np.array([-1.0, 0.0, 2.0])
    out = inf.signal_fraction_avg(theta, 0.9, 1.5, np.array([8.0, 8.0, 8.0]))
    assert out.shape == (3,)
    assert out[0] == pytest.approx(inf.signal_fraction_avg(-1.0, 0.9, 1.5, 8))


def test_dense_and_conditions():
    assert inf.dense_nats_per_prompt(0.2, 1000) == pytest.approx(200.0)
    ok = inf.check_conditions(teacher="T", teacher_accuracy=80, student_accuracy=70, teacher_compliance=0.97,
                              student_compliance=0.95, kl0=0.2, kl_c=0.5, phi_w=0.5)
    assert ok.c1 and ok.c2 and ok.kl_after_warmup == pytest.approx(0.1)
    bad = inf.check_conditions(teacher="T", teacher_accuracy=80, student_accuracy=70, teacher_compliance=0.90,
                               student_compliance=0.95, kl0=0.8, kl_c=0.5, phi_w=0.5)
    assert not bad.c1 and not bad.c2 and bad.c2_after_warmup
    assert "FAILS" in bad.explain() and "0.900" in bad.explain()


def test_averages_cover_the_whole_benchmark_with_items_out_of_reach_silent():
    """An item out of reach is never solved (p = 0): its group has no signal, no size, no bits, so an
    average over the benchmark is u times the reachable items' (GRPO's rate iota uses the same u)."""
    G = 8
    assert inf.signal_fraction(0.0, G) == inf.signal_size(0.0, G) == inf.bits_per_label(0.0, G) == 0.0
    for f in (inf.signal_fraction_avg, inf.signal_size_avg, inf.bits_per_label_avg):
        assert f(0.7, 0.9, 1.5, G, 0.85) == pytest.approx(0.85 * f(0.7, 0.9, 1.5, G), abs=1e-15)
    u = np.array([1.0, 0.9, 0.5])
    expected = u * inf.signal_fraction_avg(0.0, 0.9, 1.5, 8)
    assert inf.signal_fraction_avg(np.zeros(3), 0.9, 1.5, 8.0, u) == pytest.approx(expected)


def _step(before, comp, transfer, disp=0.0):
    return inf.StepEffect(before=before, after=before + comp + transfer + disp, from_compliance=comp,
                          from_transfer=transfer, from_displacement=disp)


def _check(**kw):
    args = dict(teacher="T", teacher_accuracy=87.0, student_accuracy=68.0, teacher_compliance=0.94,
                student_compliance=0.95, kl0=0.2, kl_c=0.5, phi_w=0.5)
    args.update(kw)
    return inf.check_conditions(**args)


def test_each_condition_line_states_the_prediction_and_why_it_differs():
    """C1 fails on compliance while the bridge is predicted to gain (the paper preset's RL teacher):
    the C1 line says so and names the parts; a C2 that fails while OPD gains says the trust region
    damps, not stops; a verdict that matches the prediction says 'agrees'."""
    c = _check(bridge=_step(68.0, -0.6, 11.2), opd=_step(68.0, -0.3, 9.5), opd_after_warmup=_step(75.9, -0.1, 3.0))
    c1_line, c2_line = c.explain().splitlines()[1:]
    assert not c.c1 and c.c1_agrees is False and c.c2_agrees is True
    assert c1_line.lstrip().startswith("C1") and "FAILS" in c1_line
    assert "68.0 -> 78.6" in c1_line and "differs: a gain although C1 fails" in c1_line
    assert "ability transfer +11.2 outweighs compliance -0.6" in c1_line
    assert c2_line.lstrip().startswith("C2") and c2_line.endswith("-> agrees")

    far = _check(kl0=0.8, teacher_compliance=0.97, bridge=_step(68.0, 0.5, 8.0), opd=_step(68.0, 0.2, 1.5),
                 opd_after_warmup=_step(72.0, 0.1, 2.0))
    c1_line, c2_line = far.explain().splitlines()[1:]
    assert far.c1 and c1_line.endswith("-> agrees (a gain)")
    assert not far.c2 and far.c2_after_warmup and far.c2_agrees is False
    assert "OPD alone gains although C2 fails" in c2_line and "damps the step" in c2_line
    assert "after the warmup gains" not in c2_line  # that verdict agrees

    # C1 holds, yet style displacement sinks the bridge; a change under 0.05 points is none; no "-0.0"
    sunk = _check(teacher_compliance=0.99, bridge=_step(22.8, 5.1, 30.8, -58.3), opd=_step(22.8, 0.0, -0.01),
                  opd_after_warmup=_step(20.0, 0.0, 0.0))
    text = sunk.explain()
    assert "no gain although C1 holds, style displacement and stage cost -58.3 outweighs" in text
    assert "OPD alone gains nothing although C2 holds" in text and "-0.0" not in text
    assert sunk.to_dict()["c1_agrees"] is False and sunk.to_dict()["bridge"]["from_displacement"] == -58.3


def test_conditions_without_predictions_keep_the_verdicts_alone():
    c = _check()
    assert c.c1_agrees is None and c.c2_agrees is None
    assert "predicted" not in c.explain() and "FAILS" in c.explain()
