"""Stage dynamics: closed forms of the bridge, GRPO's saturation and ceiling, arms read from the registry."""

from dataclasses import replace

import numpy as np
import pytest

from theory.arms import ARMS, STAGES, ComputeModel, Stage
from theory.dynamics import (
    N_REF,
    Policy,
    Rates,
    Setting,
    accuracy_parts,
    bridge_tau,
    grpo,
    predict_arm,
    predict_arms,
    predict_states,
    transfer,
    without_displacement,
)
from theory import irt
from theory.informativeness import signal_fraction_avg


# GRPO's three closed forms written out one by one (theory/dynamics.py docstring); `grpo` fuses them
def grpo_rate(setting: Setting, policy: Policy) -> np.ndarray:
    """iota: mean signal fraction on the training benchmark at the start state (items out of reach,
    a share 1 - u, give none)."""
    t = setting.train
    u = np.asarray(policy.u_B, dtype=float)[..., t] if np.ndim(policy.u_B) else policy.u_B
    return signal_fraction_avg(policy.theta_B[..., t], policy.c_B[..., t], setting.s_d_B[..., t],
                               setting.rates.group_size, u)


def pass_at_k(theta, c, s_d, k) -> np.ndarray:
    """E_d[1 - (1 - c sigmoid(theta - d))^k] in [0, 1]; k may be real (> 0)."""
    return irt.expect_K(1.0 - np.power(1.0 - irt.p_correct_K(theta, c, s_d), np.asarray(k, dtype=float)[..., None]))


def exploration_ceiling(setting: Setting, policy: Policy) -> np.ndarray:
    """theta_ceil_B: the ability whose pass@1 (given compliance) equals the ability-only pass@k."""
    k_B = np.asarray(setting.rates.k_explore, dtype=float)[..., None]
    return irt.solve_theta(pass_at_k(policy.theta_B, 1.0, setting.s_d_B, k_B), setting.s_d_B)


def test_pass_at_k_monotone_and_bounded():
    k = np.array([1, 2, 4, 8, 64])
    pk = pass_at_k(0.5, 0.9, 1.5, k.astype(float))
    assert pk[0] == pytest.approx(irt.accuracy(0.5, 0.9, 1.5) / 100)
    assert np.all(np.diff(pk) > 0) and pk[-1] < 1


def grpo_progress(setting: Setting, policy: Policy, n) -> np.ndarray:
    """g(n) = 1 - exp(-kappa iota n / N_REF), shape broadcast(R, n)."""
    return -np.expm1(-setting.rates.kappa * grpo_rate(setting, policy) * np.asarray(n, dtype=float) / N_REF)


def make_world(theta_s=0.5, theta_t=1.5, c_s=0.9, c_t=0.85, **rates):
    r = dict(kappa=0.2, rho=0.6, phi_w=0.5, phi_o=0.9, kl_c=0.5, kl0=0.2, k_explore=8.0, group_size=8.0)
    r.update(rates)
    R = {k: np.array([v], dtype=float) for k, v in r.items()}
    pol = lambda th, c: Policy(np.array([[th]]), np.array([[c]]))  # noqa: E731
    return Setting(benchmarks=("b",), train=0, s_d_B=np.array([[1.5]]), student=pol(theta_s, c_s),
                 teacher=pol(theta_t, c_t), rates=Rates(**R), compute=ComputeModel())


def test_bridge_tau_closed_forms():
    w = make_world()
    r = w.rates
    pw, po, k0, kc = 0.5, 0.9, 0.2, 0.5
    full = 1 - (1 - pw) * (1 - po * np.exp(-k0 * (1 - pw) / kc))
    assert bridge_tau(r, ARMS["rl_teacher_bridge"].stages)[0] == pytest.approx(full)
    assert bridge_tau(r, ARMS["no_fkl"].stages)[0] == pytest.approx(po * np.exp(-k0 / kc))
    assert bridge_tau(r, ARMS["no_opd"].stages)[0] == pytest.approx(pw)
    assert bridge_tau(r, ARMS["direct_grpo"].stages)[0] == 0.0
    # replay: r more OPD passes close (1 - po e^{-KL/KL_c})^r more of what is left
    ratio = 3.0
    kl = k0 * (1 - full)
    expected = 1 - (1 - full) * (1 - po * np.exp(-kl / kc)) ** ratio
    assert bridge_tau(r, ARMS["replay_control"].stages, ratio)[0] == pytest.approx(expected)


def test_opd_efficiency_falls_with_kl():
    taus = [bridge_tau(make_world(kl0=k).rates, (Stage.OPD,))[0] for k in (0.05, 0.5, 2.0)]
    assert taus[0] > taus[1] > taus[2]


def test_transfer_moves_toward_teacher_and_down_from_a_weak_one():
    w = make_world(theta_s=1.0, theta_t=0.0, c_s=0.95, c_t=0.8)
    moved = transfer(w.student, w.teacher, np.array([0.5]), np.array([0.6]))
    assert moved.theta_B[0, 0] == pytest.approx(1.0 + 0.6 * 0.5 * (0.0 - 1.0))
    assert moved.c_B[0, 0] == pytest.approx(0.95 + 0.5 * (0.8 - 0.95))


def test_grpo_saturates_toward_the_pass_at_k_ceiling():
    w = make_world()
    assert grpo_progress(w, w.student, 0.0)[0] == 0.0
    g = grpo_progress(w, w.student, np.array([100.0, 1e3, 1e4, 1e6]))
    assert np.all(np.diff(g) > 0) and g[-1] == pytest.approx(1.0)
    ceil = exploration_ceiling(w, w.student)
    # the ceiling's pass@1 (given compliance) equals the start's ability-only pass@8
    assert irt.ability_accuracy(ceil, 1.5)[0, 0] == pytest.approx(
        pass_at_k(w.student.theta_B, 1.0, 1.5, 8.0)[0, 0], abs=1e-4)
    far = grpo(w, w.student, 1e7)
    assert far.theta_B[0, 0] == pytest.approx(ceil[0, 0]) and far.c_B[0, 0] == pytest.approx(1.0)
    same = grpo(w, w.student, 0.0)
    assert same.theta_B[0, 0] == pytest.approx(w.student.theta_B[0, 0])


def test_grpo_is_its_three_closed_forms_in_one_pass():
    w = make_world(group_size=6.5, k_explore=3.3)
    for pol in (w.student, w.teacher):
        n = np.array([0.0, 300.0, 5000.0])
        g = grpo_progress(w, pol, n)[..., None]
        ceil = exploration_ceiling(w, pol)
        out = grpo(w, pol, n)
        assert out.theta_B == pytest.approx(pol.theta_B + (ceil - pol.theta_B) * g, abs=1e-12)
        assert out.c_B == pytest.approx(pol.c_B + (1.0 - pol.c_B) * g, abs=1e-12)


def test_all_arms_at_once_equal_each_arm_alone_to_the_last_bit():
    """predict_arms puts the arm axis first, so every arm's arrays keep a one-arm call's layout."""
    rng = np.random.default_rng(0)
    D = 9  # draws, each its own rates and start states (every optional rate switched on)
    R = {k: v * rng.uniform(0.9, 1.1, D) for k, v in dict(
        kappa=0.3, rho=0.6, phi_w=0.5, phi_o=0.8, kl_c=0.5, kl0=0.2, k_explore=4.0, group_size=8.0,
        gamma=0.1, cost_fkl=0.2, cost_opd=-0.1).items()}

    def pol(theta, c):
        return Policy(theta + rng.normal(0, 0.3, (D, 1)), np.clip(c + rng.normal(0, 0.03, (D, 1)), 0, 1))

    w = Setting(benchmarks=("b",), train=0, s_d_B=np.full((D, 1), 1.5), student=pol(0.3, 0.8), teacher=pol(1.2, 0.9),
                rates=Rates(**R), compute=ComputeModel(train_passes=2))
    arms = list(ARMS.values())
    at_once = predict_arms(w, arms, 3000, 1200)
    sweep = predict_arms(w.expand(), [a for a in arms if a.splits_labels], 3000, np.array([0, 700, 3000]))
    for i, arm in enumerate(arms):
        assert np.array_equal(at_once[i], predict_arm(w, arm, 3000, 1200 if arm.splits_labels else None))
    for i, arm in enumerate(a for a in arms if a.splits_labels):
        assert np.array_equal(sweep[i], predict_arm(w.expand(), arm, 3000, np.array([0, 700, 3000])))


def test_every_arm_runs_its_stages_in_table_order():
    """predict_arms walks the stage table once: an arm's stages must come in the table's order."""
    order = list(STAGES)
    for arm in ARMS.values():
        assert [order.index(s) for s in arm.stages] == sorted(order.index(s) for s in arm.stages), arm.name


def test_teacher_and_student_grpo_are_one_function():
    """Swapping the states swaps the results: nothing in grpo() knows who is the teacher."""
    w = make_world()
    a = grpo(w, w.teacher, 3000.0)
    swapped = Setting(benchmarks=w.benchmarks, train=0, s_d_B=w.s_d_B, student=w.teacher, teacher=w.student,
                    rates=w.rates, compute=w.compute)
    b = predict_arm(swapped, ARMS["direct_grpo"], 3000)
    assert b[0, 0] == pytest.approx(irt.accuracy(a.theta_B, a.c_B, 1.5)[0, 0])


def test_every_registry_arm_predicts_and_split_sweep_matches_pointwise():
    w = make_world()
    for name, arm in ARMS.items():
        acc = predict_arm(w, arm, 2000, 1000 if arm.splits_labels else None)
        assert acc.shape == (1, 1) and 0 < acc[0, 0] < 100, name
    tl = np.array([0, 500, 1000, 2000])
    sweep = predict_arm(w.expand(), ARMS["rl_teacher_bridge_stage3"], 2000, tl)
    assert sweep.shape == (1, 4, 1)
    for i, t in enumerate(tl):
        assert sweep[0, i, 0] == pytest.approx(predict_arm(w, ARMS["rl_teacher_bridge_stage3"], 2000, int(t))[0, 0])


def test_raw_teacher_with_worse_protocol_drags_the_student_down():
    w = make_world(theta_s=1.0, theta_t=1.05, c_s=0.95, c_t=0.7)
    start = irt.accuracy(w.student.theta_B, w.student.c_B, 1.5)[0, 0]
    assert predict_arm(w, ARMS["raw_teacher_bridge"], 1000)[0, 0] < start


def test_style_displacement_closed_form_and_default_off():
    from theory.dynamics import bridge_movement
    pw, po = 0.5, 0.9
    r = make_world().rates
    # every OPD pass moves the student's distribution by phi_o whatever the KL (only the gain is damped)
    assert bridge_movement(r, ARMS["no_fkl"].stages)[0] == pytest.approx(po)
    assert bridge_movement(r, ARMS["no_opd"].stages)[0] == pytest.approx(pw)
    assert bridge_movement(r, ARMS["rl_teacher_bridge"].stages)[0] == pytest.approx(1 - (1 - pw) * (1 - po))
    # gamma = 0 (the default, and every preset without the rate) is the original theory exactly
    base = predict_arm(make_world(), ARMS["rl_teacher_bridge"], 1000)
    assert predict_arm(make_world(gamma=0.0), ARMS["rl_teacher_bridge"], 1000) == pytest.approx(base)
    # far teacher (KL_0 = 7 nats) + displacement: the bridge now LOWERS the student below its start,
    # by gamma m KL_0 logits minus the (trust-region damped) gain; no_fkl moves almost as far as the
    # full bridge but gains nothing, so it ends lowest
    far = dict(kl0=7.0, gamma=0.5)
    start = make_world(**far).accuracy(make_world(**far).student)
    acc = {a: float(predict_arm(make_world(**far), ARMS[a], 1000)[0, 0]) for a in ("rl_teacher_bridge", "no_fkl")}
    assert acc["rl_teacher_bridge"] < float(start[0, 0]) - 20
    assert acc["no_fkl"] < acc["rl_teacher_bridge"]
    theta = make_world(**far).student.theta_B[0, 0]
    w = make_world(**far)
    m = bridge_movement(w.rates, ARMS["no_fkl"].stages)[0]
    tau = bridge_tau(w.rates, ARMS["no_fkl"].stages)[0]
    expect = transfer(w.student, w.teacher, tau, 0.6, 0.5 * m * 7.0).theta_B[0, 0]
    assert expect == pytest.approx(theta + 0.6 * tau * (1.5 - 0.5) - 0.5 * m * 7.0)


def test_stage_cost_adds_per_stage_and_scales_with_replay():
    from theory.dynamics import stage_cost
    r = make_world(cost_fkl=0.7, cost_opd=0.2).rates
    assert stage_cost(r, ARMS["rl_teacher_bridge"].stages)[0] == pytest.approx(0.9)
    assert stage_cost(r, ARMS["no_fkl"].stages)[0] == 0.0  # OPD's cost is measured after a warmup only
    assert stage_cost(r, ARMS["no_opd"].stages)[0] == pytest.approx(0.7)
    assert stage_cost(r, ARMS["replay_control"].stages, 3.0)[0] == pytest.approx(0.7 + 0.2 + 0.6)
    assert stage_cost(r, ARMS["direct_grpo"].stages)[0] == 0.0
    # an identical teacher (no gap, KL_0 = 0): the bridge leaves the student exactly cost logits lower
    same = dict(theta_t=0.5, c_t=0.9, kl0=1e-9, cost_fkl=0.7, cost_opd=0.2)
    w = make_world(**same)
    acc = predict_arm(w, ARMS["raw_teacher_bridge"], 1000)[0, 0]
    lowered = w.accuracy(transfer(w.student, w.student, 0.0, 0.6, 0.9))[0, 0]
    assert acc == pytest.approx(lowered)
    assert predict_arm(make_world(theta_t=0.5, c_t=0.9, kl0=1e-9), ARMS["raw_teacher_bridge"], 1000)[0, 0] == \
        pytest.approx(w.accuracy(w.student)[0, 0])


def test_style_displacement_uses_the_style_part_of_kl0_when_given():
    base = dict(kl0=2.0, gamma=0.5)
    w_all = make_world(**base)  # no kl0_style: the whole KL_0 displaces
    w_style = make_world(**base, kl0_style=0.2)
    w_same = make_world(**base, kl0_style=2.0)
    arm = ARMS["rl_teacher_bridge"]
    assert predict_arm(w_same, arm, 1000) == pytest.approx(predict_arm(w_all, arm, 1000))
    assert predict_arm(w_style, arm, 1000)[0, 0] > predict_arm(w_all, arm, 1000)[0, 0]
    # the trust region (tau) still sees the whole KL_0: no_fkl's gain is unchanged when gamma = 0
    g0 = dict(kl0=2.0, gamma=0.0)
    assert predict_arm(make_world(**g0, kl0_style=0.2), ARMS["no_fkl"], 1000) == pytest.approx(
        predict_arm(make_world(**g0), ARMS["no_fkl"], 1000))
    # a split sweep (expand) keeps an absent kl0_style absent
    assert w_all.expand().rates.kl0_style is None


def test_accuracy_ceiling_bounds_every_arm_and_scales_the_signal():
    """u = share of the benchmark within reach: accuracy = 100 u c E[sigmoid], u = 1 is the original
    theory, no arm can pass 100 u, and items out of reach give GRPO no signal."""
    w = make_world()
    capped = replace(w, student=replace(w.student, u_B=np.array([[0.9]])))
    assert capped.accuracy(capped.student)[0, 0] == pytest.approx(0.9 * w.accuracy(w.student)[0, 0])
    assert grpo_rate(capped, capped.student)[0] == pytest.approx(0.9 * grpo_rate(w, w.student)[0])
    for arm in ARMS.values():
        same = predict_arm(replace(w, student=replace(w.student, u_B=np.array([[1.0]]))), arm, 1000, 500 if arm.splits_labels else None)
        assert same[0, 0] == pytest.approx(predict_arm(w, arm, 1000, 500 if arm.splits_labels else None)[0, 0])
        huge = predict_arm(capped, arm, 10_000_000, 5_000_000 if arm.splits_labels else None)[0, 0]
        assert huge < 90.0


def test_kappa_ratio_moves_only_teacher_grpo():
    base, fast_teacher = make_world(), make_world(kappa_ratio=2.0)
    assert predict_arm(fast_teacher, ARMS["direct_grpo"], 3000)[0, 0] == pytest.approx(
        predict_arm(base, ARMS["direct_grpo"], 3000)[0, 0])
    assert predict_arm(fast_teacher, ARMS["rl_teacher_bridge"], 3000)[0, 0] > \
        predict_arm(base, ARMS["rl_teacher_bridge"], 3000)[0, 0]
    # kappa_ratio = 2 at n labels is kappa at 2n labels for the teacher
    from theory.dynamics import predict_teacher
    assert predict_teacher(fast_teacher, 1000).theta_B[0, 0] == pytest.approx(
        grpo(base, base.teacher, 2000).theta_B[0, 0])


def test_states_are_what_the_arms_are_predicted_from_and_parts_sum_to_the_change():
    """predict_arms is Setting.accuracy of predict_states, to the last bit; accuracy_parts splits a
    change exactly into compliance (at the old ability) and ability (at the new compliance)."""
    w = make_world(gamma=0.3)
    w = replace(w, student=replace(w.student, u_B=np.array([[0.9]])))
    arms = list(ARMS.values())
    states = predict_states(w, arms, 1000, 500)
    assert np.array_equal(w.accuracy(states), predict_arms(w, arms, 1000, 500))
    assert np.all(states.u_B == w.student.u_B)  # training moves ability and compliance, not reach
    i = arms.index(ARMS["raw_teacher_bridge"])
    after = Policy(states.theta_B[i], states.c_B[i], states.u_B)
    comp, ability = accuracy_parts(w, w.student, after)
    assert comp + ability == pytest.approx(w.accuracy(after) - w.accuracy(w.student), abs=1e-12)
    assert comp[0, 0] < 0  # the raw teacher's compliance (0.85) is below the student's (0.9)
    # with displacement off the bridge only moves toward the teacher: more ability, same compliance
    plain = predict_states(without_displacement(w), arms, 1000, 500)
    assert plain.theta_B[i, 0, 0] > states.theta_B[i, 0, 0] and plain.c_B[i, 0, 0] == states.c_B[i, 0, 0]
    d = arms.index(ARMS["direct_grpo"])
    assert np.array_equal(plain.theta_B[d], states.theta_B[d])


def test_an_arm_given_no_labels_is_the_start():
    """The start accuracy is the student's Setting.accuracy: direct GRPO with N = 0 changes nothing."""
    w = make_world()
    w = replace(w, student=replace(w.student, u_B=np.array([[0.8]])))
    start = w.accuracy(w.student)
    assert predict_arm(w, ARMS["direct_grpo"], 0) == pytest.approx(start, abs=1e-12)
    assert start[0, 0] == pytest.approx(0.8 * irt.accuracy(0.5, 0.9, 1.5), abs=1e-12)
