"""Stage dynamics: what each stage does to a policy's (ability theta, compliance c), in closed form.

Letters: D = parameter draws, S = label splits, B = benchmarks, K = quadrature nodes (inside irt).
A policy is (theta_..B, c_..B); rates are arrays of shape R (e.g. (D,) or (D, 1) for a split sweep)
and every function broadcasts, so one call evaluates all draws x splits at once.

GRPO with n labels from (theta0, c0)                                             -> `grpo`
    iota  = E_d[1 - p^G - (1-p)^G] on the training benchmark, p = c0 sigmoid(theta0 - d)
    g(n)  = 1 - exp(-kappa * iota * n / N_REF)                (N_REF = 1000 labels, a fixed unit)
    theta_ceil: E_d[sigmoid(theta_ceil - d)] = ability-only pass@k_explore of (theta0)
                (RLVR raises pass@1 toward the start policy's pass@k; Yue et al. 2504.13837)
    theta -> theta0 + (theta_ceil - theta0) g(n);   c -> c0 + (1 - c0) g(n)
Teacher GRPO and student GRPO are this one function applied to two states.

Bridge toward a teacher (theta_T, c_T): a fraction tau of the gap is closed        -> `bridge_tau`
    warmup (FKL, off-policy)   closes phi_w of the gap (exposure bias keeps phi_w < 1)
    OPD (on-policy)            closes phi_o exp(-KL/KL_c) of what is left, KL = KL_0 (1 - tau so far)
    replay OPD (r x the OPD compute) leaves (1 - phi_o exp(-KL/KL_c))^r of what is left
    full: tau = 1 - (1-phi_w)(1 - phi_o e^{-KL_0 (1-phi_w)/KL_c});  no_fkl: phi_o e^{-KL_0/KL_c};
    no_opd: tau = phi_w.
Student after the bridge                                                         -> `transfer`
    theta -> theta_S + rho tau (theta_T - theta_S) - gamma m KL_style - sum_stages cost_stage
    (KL_style: KL_0 measured on protocol-following rollouts when given, else KL_0: a protocol habit the
    teacher lacks is transferred through compliance c, not paid as a style gap)
    c     -> c_S + tau (c_T - c_S)                   (a raw teacher's protocol habits are copied: C1)
    rho: absorption ceiling of the student.  Style displacement (optional rate gamma, default 0 = the
    original theory): every bridge stage moves the student's *distribution* toward the teacher's
    whether or not it gains the teacher's ability -- FKL by phi_w, OPD by phi_o (on-policy updates move
    the student even outside the trust region; only the ability gain is damped by exp(-KL/KL_c)),
    replay by 1 - (1 - phi_o)^r -- so the student crosses a fraction m of the style gap, and a student
    that gives up its own way of solving for a teacher's way it cannot execute loses gamma logits of
    ability per nat of KL_0 crossed. Added after the first toy world (docs/log.md, 2026-11-26: the
    bridged students copied the teacher's step format but not its arithmetic and fell from 26.6% to
    1-2%), which the original theory could not express: with gamma = 0 a bridge never lowers ability.
    Stage cost (optional rates cost_fkl, cost_opd, default 0): what a stage costs by itself whatever the
    teacher (optimiser drift), measured by a self-distillation pilot (`stage_cost`); added after the
    cross-check, where distilling from an identical teacher still cost 6 points (docs/log.md).
Stage 3 is `grpo` from the bridged state with the student's labels.

Each arm of `theory.arms.ARMS` is evaluated by walking the stage table (`predict_states`: all arms at
once, each stage acting on the arms that run it); there is no second arm list here. Every accuracy,
the start's included, is `Setting.accuracy` of a state: 100 u c E_d[sigmoid(theta - d)].
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from theory import irt
from theory.arms import STAGES, STUDENT, TEACHER, Arm, ComputeModel, LabelAccount, Stage, Teacher, stage_labels

N_REF = 1000.0  # labels: the unit in which kappa is a rate


@dataclass(frozen=True)
class Policy:
    theta_B: np.ndarray  # ability logit per benchmark, shape R + (B,)
    c_B: np.ndarray  # protocol compliance per benchmark, shape R + (B,)
    # share of the benchmark within the model's reach (accuracy ceiling / 100): the rest is mislabeled
    # or beyond the model whatever it is trained on; 1.0 = no ceiling (the original theory)
    u_B: np.ndarray | float = 1.0


@dataclass(frozen=True)
class Rates:
    """Free rates and assumed inputs of the dynamics; each an array of shape R (or a float)."""

    kappa: np.ndarray  # GRPO progress per N_REF labels at full signal
    rho: np.ndarray  # absorption ceiling: fraction of the ability gap the student can absorb
    phi_w: np.ndarray  # fraction of the gap the FKL warmup closes
    phi_o: np.ndarray  # fraction of the remaining gap OPD closes at zero KL
    kl_c: np.ndarray  # KL scale (nats/token) of OPD's trust region (C2)
    kl0: np.ndarray  # teacher-student per-token KL before the bridge (nats)
    k_explore: np.ndarray  # k in the exploration ceiling pass@k
    group_size: np.ndarray  # G
    gamma: np.ndarray | float = 0.0  # style displacement, ability logits per nat of KL_0 crossed (0 = off)
    cost_fkl: np.ndarray | float = 0.0  # ability logits an FKL warmup costs whatever the teacher (0 = off)
    cost_opd: np.ndarray | float = 0.0  # ability logits one OPD pass costs whatever the teacher (0 = off)
    kl0_style: np.ndarray | float | None = None  # KL_0 on protocol-following rollouts (displacement); None = kl0
    # teacher GRPO efficiency / student GRPO efficiency (1 = one kappa for both, the original theory)
    kappa_ratio: np.ndarray | float = 1.0
    # training length (docs/theory.md, "Training length"); they act only when a stage runs at a length
    # other than its reference length, so every prediction at the reference lengths is the original one
    reuse: np.ndarray | float = np.inf  # e_r: label passes over which a label's reuse saturates (inf = never)
    bridge_reach: np.ndarray | float = 1.0  # r_b: share of what one bridge unit leaves that more units can close


@dataclass(frozen=True)
class Setting:
    """What the dynamics act on: the benchmarks and their difficulty spread, the student's and the
    teacher's start policies, the rates and the compute model (each array of shape R + ...). Built from
    a scenario's input values by `theory.fitting.build_setting`. (Not a world of problems: that is
    `reference.world.World`.)"""

    benchmarks: tuple[str, ...]
    train: int  # index of the benchmark that stands for the training distribution
    s_d_B: np.ndarray  # difficulty spread, shape R + (B,)
    student: Policy
    teacher: Policy
    rates: Rates
    compute: ComputeModel

    def expand(self) -> "Setting":
        """Insert a split axis: rates R -> R + (1,), policies R + (B,) -> R + (1, B)."""
        r = self.rates
        rates = Rates(**{k: None if getattr(r, k) is None else np.asarray(getattr(r, k), dtype=float)[..., None]
                         for k in r.__dataclass_fields__})
        pol = lambda p: Policy(np.asarray(p.theta_B)[..., None, :], np.asarray(p.c_B)[..., None, :],  # noqa: E731
                               np.asarray(p.u_B, dtype=float)[..., None, :] if np.ndim(p.u_B) else p.u_B)
        return replace(self, rates=rates, student=pol(self.student), teacher=pol(self.teacher),
                       s_d_B=np.asarray(self.s_d_B)[..., None, :])

    def accuracy(self, policy: Policy) -> np.ndarray:
        """Percent, shape broadcast(R + (B,)): 100 u c E_d[sigmoid(theta - d)] (items out of reach score 0).

        The one accuracy of a state (docs/theory.md, "One start accuracy"): every arm, the start (the
        student of an arm given no labels), the teachers and the C-checks are read through it. The
        student's start is the scenario's stated start: `theory.fitting.build_setting` solves theta
        from a0 / u, so 100 u c E_d[sigmoid] = 100 c a0."""
        return policy.u_B * irt.accuracy(policy.theta_B, policy.c_B, self.s_d_B)


def grpo(setting: Setting, policy: Policy, n, kappa=None) -> Policy:
    """GRPO with n labels (the same function for teacher and student; `kappa` = this model's GRPO
    efficiency, default the student's `rates.kappa`; see `teacher_kappa`).

    The module docstring's iota, g(n) and theta_ceil in one pass: the sigmoid at the nodes is shared by
    the signal fraction and pass@k, and the big arrays are updated in place (the planner's hot loop;
    tests/test_theory_dynamics.py checks it against the three written out one by one). Items out of
    reach (1 - u) give no signal: iota is u times the reachable items' signal fraction.
    """
    r = setting.rates
    kappa = r.kappa if kappa is None else kappa
    sig_BK = irt.sigmoid_K(policy.theta_B, setting.s_d_B)
    t = setting.train
    p_K = policy.c_B[..., t, None] * sig_BK[..., t, :]
    G = np.asarray(r.group_size, dtype=float)[..., None]
    q_K = np.subtract(1.0, p_K)
    np.power(q_K, G, out=q_K)
    np.power(p_K, G, out=p_K)
    np.subtract(1.0, p_K, out=p_K)
    p_K -= q_K  # 1 - p^G - (1 - p)^G
    iota = irt.expect_K(p_K)
    del p_K, q_K
    if np.ndim(policy.u_B) or policy.u_B != 1.0:
        iota = iota * np.asarray(policy.u_B, dtype=float)[..., t]
    g = -np.expm1(-kappa * iota * np.asarray(n, dtype=float) / N_REF)[..., None]
    k = np.asarray(r.k_explore, dtype=float)[..., None, None]
    np.subtract(1.0, sig_BK, out=sig_BK)
    np.power(sig_BK, k, out=sig_BK)
    np.subtract(1.0, sig_BK, out=sig_BK)  # 1 - (1 - sigmoid)^k
    pk_B = irt.expect_K(sig_BK)
    del sig_BK  # before solve_theta allocates its own
    ceil_B = irt.solve_theta(pk_B, setting.s_d_B)
    return Policy(policy.theta_B + (ceil_B - policy.theta_B) * g, policy.c_B + (1.0 - policy.c_B) * g, policy.u_B)


def accuracy_parts(setting: Setting, before: Policy, after: Policy) -> tuple[np.ndarray, np.ndarray]:
    """The accuracy change before -> after (points), split exactly into a compliance part (c moved at
    the old ability) and an ability part (theta moved at the new compliance); they sum to the change."""
    mid = Policy(before.theta_B, after.c_B, after.u_B)
    a0, a_mid, a1 = (setting.accuracy(p) for p in (before, mid, after))
    return a_mid - a0, a1 - a_mid


def without_displacement(setting: Setting) -> Setting:
    """The same setting with style displacement and stage costs off (gamma = cost_fkl = cost_opd = 0):
    a bridge then moves the student only toward the teacher."""
    return replace(setting, rates=replace(setting.rates, gamma=0.0, cost_fkl=0.0, cost_opd=0.0))


def teacher_kappa(rates: Rates):
    """The teacher's GRPO efficiency: kappa x kappa_ratio (a larger model may learn more per label)."""
    return rates.kappa * rates.kappa_ratio


def opd_closes(rates: Rates, tau) -> np.ndarray:
    """Fraction of the remaining gap one OPD pass closes when a fraction tau is already closed."""
    kl = rates.kl0 * (1.0 - tau)
    return rates.phi_o * np.exp(-kl / rates.kl_c)


def reuse_factor(e, e0, e_r):
    """Effective labels per label when GRPO makes e label passes instead of its reference e0:
    h(e) / h(e0) with h(e) = e_r (1 - exp(-e / e_r)) (each pass over a label yields the signal of a new
    label, discounted as the label is reused; e_r = inf: every pass counts fully, h(e) = e). 1 at e = e0."""
    e, e0, e_r = (np.asarray(x, dtype=float) for x in (e, e0, e_r))
    finite = np.isfinite(e_r)
    safe = np.where(finite, e_r, 1.0)
    ratio = np.expm1(-e / safe) / np.expm1(-e0 / safe)
    return np.where(finite, ratio, e / e0)


def extend(fraction, units, reach):
    """Fraction of a gap a bridge stage closes over `units` reference units when one unit closes
    `fraction`: each unit closes the same share of what is still reachable, and the reachable part is
    R = fraction + reach (1 - fraction) (reach = 1: geometric, the gap closes fully; reach = 0: more
    units close nothing more). F(1) = fraction; None = the reference length (one unit)."""
    if units is None:
        return fraction
    f, b, r = (np.asarray(x, dtype=float) for x in (fraction, units, reach))
    R = f + r * (1.0 - f)
    q = np.divide(f, R, out=np.zeros(np.broadcast_shapes(f.shape, R.shape)), where=R > 0)
    return R * -np.expm1(b * np.log1p(-np.minimum(q, 1.0 - 1e-15)))


def _runs(stages) -> dict:
    """{stage: who runs it} for every stage of the table: from one arm's stage list (True/False), or as
    given (a mask over the arm axis per stage, from `predict_states`)."""
    return stages if isinstance(stages, dict) else {s: s in tuple(stages) for s in STAGES}


def _compose(rates: Rates, stages, replay_ratio, opd_fraction, units=None) -> np.ndarray:
    """Fraction of a gap closed by the bridge stages, walked in table order: FKL closes phi_w of what is
    left, an OPD pass closes opd_fraction(closed so far), the replay control's r passes close it r times.
    `units` ({stage: bridge units}, absent = one unit) stretches FKL and OPD by `extend`."""
    runs = _runs(stages)
    units = units or {}
    f = np.zeros_like(np.asarray(rates.phi_w, dtype=float))
    for stage, spec in STAGES.items():
        if spec.update == "fkl":
            closed = 1.0 - (1.0 - f) * (1.0 - extend(rates.phi_w, units.get(stage), rates.bridge_reach))
        elif spec.update == "opd" and spec.replays:  # sized by the held-back labels: r passes
            closed = 1.0 - (1.0 - f) * np.power(1.0 - opd_fraction(f), replay_ratio)
        elif spec.update == "opd":
            closed = 1.0 - (1.0 - f) * (1.0 - extend(opd_fraction(f), units.get(stage), rates.bridge_reach))
        else:
            continue
        f = np.where(runs[stage], closed, f)
    return f


def bridge_tau(rates: Rates, stages, replay_ratio=0.0, units=None) -> np.ndarray:
    """Fraction tau of the teacher-student ability gap closed by the bridge stages, in order."""
    return _compose(rates, stages, replay_ratio, lambda tau: opd_closes(rates, tau), units)


def bridge_movement(rates: Rates, stages, replay_ratio=0.0, units=None) -> np.ndarray:
    """Fraction m of the style gap the student's distribution crosses (ability gained or not): OPD
    moves the student by phi_o whatever the KL."""
    return _compose(rates, stages, replay_ratio, lambda _m: rates.phi_o, units)


def stage_cost(rates: Rates, stages, replay_ratio=0.0, units=None) -> np.ndarray:
    """Ability logits the bridge stages cost by themselves, whatever the teacher (optimiser drift;
    measured by a self-distillation pilot: the stages run with teacher = the student's own copy).
    The pilot runs OPD *after* the warmup, so cost_opd (often negative: OPD repairs part of the
    warmup's drift) is counted only after a warmup; OPD without one has no measured cost (0).
    A replay of r OPD passes after a warmup counts r times cost_opd. With `units` ({stage: bridge units})
    a stage's cost grows linearly to its measured value over its first unit and stays there (a stage
    of length 0 costs nothing; longer ones are assumed to drift no further)."""
    runs = _runs(stages)
    units = units or {}
    c = np.zeros_like(np.asarray(rates.phi_w, dtype=float))
    warmed = False

    def share(stage):
        b = units.get(stage)
        return 1.0 if b is None else np.minimum(np.asarray(b, dtype=float), 1.0)

    for stage, spec in STAGES.items():
        if spec.update == "fkl":
            c = np.where(runs[stage], c + rates.cost_fkl * share(stage), c)
            warmed = warmed | np.asarray(runs[stage])
        elif spec.update == "opd" and spec.replays:  # r passes
            c = np.where(runs[stage] & warmed, c + rates.cost_opd * np.asarray(replay_ratio, dtype=float), c)
        elif spec.update == "opd":
            c = np.where(runs[stage] & warmed, c + rates.cost_opd * share(stage), c)
    return c


def transfer(student: Policy, teacher: Policy, tau, rho, displacement=0.0) -> Policy:
    """Move the student a fraction tau toward the teacher; ability capped by rho and lowered by
    `displacement` logits (gamma m KL_0, see the module docstring)."""
    tau_ = np.asarray(tau, dtype=float)[..., None]
    rho_ = np.asarray(rho, dtype=float)[..., None]
    d_ = np.asarray(displacement, dtype=float)[..., None]
    return Policy(student.theta_B + rho_ * tau_ * (teacher.theta_B - student.theta_B) - d_,
                  student.c_B + tau_ * (teacher.c_B - student.c_B), student.u_B)


def _stages(pred) -> list[Stage]:
    """The stages of the table whose StageSpec satisfies `pred`, in table order."""
    return [s for s, spec in STAGES.items() if pred(spec)]


def _labels_A(arms, n: int, teacher_labels, ndim_r: int) -> dict:
    """{stage: the labels that size it} per arm (and split), shape (A,) + (1,) * pad [+ (S,)]: the arm
    axis first, then lined up with the rates R (and the split axis, when `teacher_labels` is an array)."""
    splits = np.ndim(teacher_labels) == 1
    ts = [None if t is None else int(t) for t in (teacher_labels if splits else [teacher_labels])]
    shape = (len(arms),) + (1,) * (ndim_r - splits) + ((len(ts),) if splits else ())
    accts = [arm.labels(n, t if arm.splits_labels else None) for arm in arms for t in ts]
    # one account whose fields are arrays over the arms (and splits): the table says which field sizes a stage
    acct = LabelAccount(*(np.array([getattr(a, f) for a in accts], dtype=float).reshape(shape)
                          for f in ("teacher", "student", "unused")))
    return {stage: np.broadcast_to(np.asarray(stage_labels(stage, acct), dtype=float), shape) for stage in STAGES}


def predict_arms(setting: Setting, arms, n: int, teacher_labels=None, lengths=None) -> np.ndarray:
    """Accuracy (percent) of each of `arms` with a budget of n labels, shape (A,) + R [+ (S,)] + (B,):
    `Setting.accuracy` of the states `predict_states` walks to.

    `teacher_labels` (an int, or a 1-D array of splits: call on `setting.expand()` then, so the split
    axis lines up) applies to the arms that split the labels. Row a equals `predict_arm(setting,
    arms[a], ...)` to the last bit: with the arm axis first, every array keeps the layout a one-arm
    call gives it.
    """
    return setting.accuracy(predict_states(setting, arms, n, teacher_labels, lengths))


def predict_states(setting: Setting, arms, n: int, teacher_labels=None, lengths=None) -> Policy:
    """The student's (theta, c) after each of `arms` with a budget of n labels, each of shape
    (A,) + R [+ (S,)] + (B,) (u stays the student's: training moves ability and compliance, not reach).

    `lengths` ({stage: length in the stage's unit}, `ComputeModel.reference_length`; a stage not named
    runs at its reference length): GRPO stages in label passes (`reuse_factor` scales their labels),
    FKL and OPD in bridge units (`extend`), the replay control in the label passes of the GRPO it
    replaces. A length may be an array lined up with R (e.g. a grid on the split axis of `expand()`).

    One walk over the stage table for all the arms at once: the arm axis A leads and broadcasts against
    the draws and splits, and each stage acts on the arms that run it.
    """
    arms = tuple(arms)
    ndim_r = np.ndim(setting.student.theta_B) - 1
    labels = _labels_A(arms, n, teacher_labels, ndim_r)
    lengths = {Stage(k): v for k, v in (lengths or {}).items()}
    e0 = float(setting.compute.label_passes)
    for stage, spec in STAGES.items():  # GRPO at other than e0 label passes: effective labels
        if spec.update == "grpo" and lengths.get(stage) is not None:
            labels[stage] = labels[stage] * reuse_factor(lengths[stage], e0, setting.rates.reuse)
    units = {s: v for s, v in lengths.items() if STAGES[s].update != "grpo" and not STAGES[s].replays}
    # who runs each stage: masks over the arm axis, against the rates (runs) and the policies (runs_B)
    runs = {s: np.array([s in arm.stages for arm in arms]).reshape((-1,) + (1,) * ndim_r) for s in STAGES}
    runs_B = {s: mask[..., None] for s, mask in runs.items()}
    any_of = np.logical_or.reduce  # over the masks of several stages
    r = setting.rates
    # (A,) + R [+ (S,)] + (B,) before stage 3: stage 3's own labels and lengths widen only its output
    last = set(_stages(lambda spec: spec.trains == STUDENT and spec.update == "grpo"))
    shape = np.broadcast_shapes((len(arms),) + np.shape(setting.student.theta_B),
                                *(np.shape(v) + (1,) for k, v in (*labels.items(), *lengths.items()) if k not in last))

    teacher = setting.teacher
    teacher_grpo = _stages(lambda spec: spec.trains == TEACHER and spec.update == "grpo")
    if any_of([runs[s] for s in teacher_grpo]).any():  # stage 1: GRPO on the teacher
        rl = any_of([runs_B[s] for s in teacher_grpo])
        trained = grpo(setting, teacher, sum(labels[s] for s in teacher_grpo), teacher_kappa(r))
        teacher = Policy(np.where(rl, trained.theta_B, teacher.theta_B), np.where(rl, trained.c_B, teacher.c_B),
                         teacher.u_B)

    theta, c = (np.broadcast_to(x, shape) for x in (setting.student.theta_B, setting.student.c_B))
    bridge = _stages(lambda spec: spec.scorer == TEACHER)  # the stages the teacher scores
    has_teacher = np.array([arm.teacher is not Teacher.NONE for arm in arms]).reshape(runs_B[bridge[0]].shape)
    bridged = any_of([runs_B[s] for s in bridge]) & has_teacher
    if bridged.any():
        # replay OPD is matched to the compute stage-3 GRPO would have spent on the held-back labels
        held = sum(labels[s] for s in _stages(lambda spec: spec.replays))
        replay_passes = next((lengths.get(s) for s in _stages(lambda spec: spec.replays)), None)
        replay_ratio = held * setting.compute.grpo_tokens(1, replay_passes) / setting.compute.opd_tokens()
        tau = bridge_tau(r, runs, replay_ratio, units)
        disp = 0.0
        if np.any(np.asarray(r.gamma) != 0.0):
            disp = r.gamma * bridge_movement(r, runs, replay_ratio, units) * (r.kl0 if r.kl0_style is None
                                                                               else r.kl0_style)
        if np.any(np.asarray(r.cost_fkl) != 0.0) or np.any(np.asarray(r.cost_opd) != 0.0):
            disp = disp + stage_cost(r, runs, replay_ratio, units)
        moved = transfer(setting.student, teacher, tau, r.rho, disp)
        theta, c = np.where(bridged, moved.theta_B, theta), np.where(bridged, moved.c_B, c)

    student_grpo = _stages(lambda spec: spec.trains == STUDENT and spec.update == "grpo")
    a3 = np.flatnonzero(any_of([runs[s] for s in student_grpo]).reshape(-1))
    if a3.size:  # stage 3: GRPO on the student, computed for the arms that run it only
        s_lab = sum(labels[s] for s in student_grpo)[a3]
        trained = grpo(setting, Policy(theta[a3], c[a3], setting.student.u_B), s_lab)
        full = np.broadcast_shapes(theta.shape, (len(arms),) + trained.theta_B.shape[1:])
        theta, c = np.broadcast_to(theta, full).copy(), np.broadcast_to(c, full).copy()
        theta[a3], c[a3] = trained.theta_B, trained.c_B
    return Policy(theta, c, setting.student.u_B)


def predict_arm(setting: Setting, arm: Arm, n: int, teacher_labels=None, lengths=None) -> np.ndarray:
    """Accuracy (percent) of `arm` with a budget of n labels, shape R [+ (S,)] + (B,).

    `teacher_labels` may be an int or a 1-D array of splits; with an array, call on `setting.expand()`
    so the split axis lines up (rates R + (1,)).
    """
    if teacher_labels is not None and not arm.splits_labels:
        arm.labels(n, teacher_labels)  # an arm that does not split accepts only its own account (InputError)
    return predict_arms(setting, (arm,), n, teacher_labels, lengths)[0]


def predict_teacher(setting: Setting, n) -> Policy:
    """The RL teacher after stage-1 GRPO with n labels."""
    return grpo(setting, setting.teacher, n, teacher_kappa(setting.rates))
