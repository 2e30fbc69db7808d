"""How much one label (sparse) or one unlabeled prompt (dense) can teach a policy.

Sparse: a GRPO group of G samples on one labeled problem with pass rate p.
    signal fraction     P(not all G rewards equal) = 1 - p^G - (1 - p)^G          -> `signal_fraction`
    signal size         E[std of the G binary rewards], exact sum over j ~ Bin(G, p):
                        sum_j Bin(j; G, p) * sqrt(j (G - j)) / G                  -> `signal_size`
                        (population std; with binary rewards GRPO's update size is this std)
    bits per label      H(Bin(G, p)) in bits, <= log2(G + 1)                      -> `bits_per_label`
Each is averaged over the benchmark's difficulty distribution with p = c sigmoid(theta - d)
(`*_avg`, Gauss-Hermite quadrature from `theory.irt`), over the whole benchmark: a share 1 - u of it is
out of the model's reach (p = 0: no signal, no bits), so each average is u times the reachable items'
(the same u as `theory.dynamics.Setting.accuracy` and GRPO's rate iota).

Dense: an unlabeled prompt scored by a teacher carries per-token KL(student || teacher) nats at each
of the response tokens: `dense_nats_per_prompt` = KL_0 * tokens. The paper's conditions (arXiv
2605.12483): C1, the teacher is reward-shaped (protocol compliance and accuracy at least the
student's); C2, the teacher is within a small KL of the student (KL_0 <= KL_c) -> `check_conditions`.
Both are the paper's sufficient conditions; the planner puts beside each what the dynamics predict for
the stages it governs (`StepEffect`: the bridge for C1, OPD for C2) and says why when the two differ.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import special

from theory import irt


def signal_fraction(p, G) -> np.ndarray:
    """1 - p^G - (1-p)^G: probability a group's rewards are not all equal (real G > 0 allowed)."""
    p = np.asarray(p, dtype=float)
    return 1.0 - np.power(p, G) - np.power(1.0 - p, G)


def _binom_pmf_J(p, G: int) -> np.ndarray:
    """Bin(j; G, p) for j = 0..G, shape (..., G+1); exact at p = 0 and 1."""
    p = np.asarray(p, dtype=float)[..., None]
    j = np.arange(G + 1, dtype=float)
    log_c = special.gammaln(G + 1) - special.gammaln(j + 1) - special.gammaln(G - j + 1)
    return np.exp(log_c + special.xlogy(j, p) + special.xlog1py(G - j, -p))


def _check_G(G) -> int:
    if isinstance(G, bool) or int(G) != G or G < 2:
        raise ValueError(f"group size G must be an integer >= 2, got {G!r}")
    return int(G)


def signal_size(p, G: int) -> np.ndarray:
    """E[population std of G Bernoulli(p) rewards] = sum_j Bin(j;G,p) sqrt(j (G-j)) / G."""
    G = _check_G(G)
    j = np.arange(G + 1, dtype=float)
    return _binom_pmf_J(p, G) @ (np.sqrt(j * (G - j)) / G)


def bits_per_label(p, G: int) -> np.ndarray:
    """Entropy (bits) of the group's correct count j ~ Bin(G, p); at most log2(G+1)."""
    G = _check_G(G)
    pmf_J = _binom_pmf_J(p, G)
    return -special.xlogy(pmf_J, pmf_J).sum(-1) / np.log(2.0)


def signal_fraction_avg(theta, c, s_d, G, u=1.0) -> np.ndarray:
    """u E_d[signal_fraction(c sigmoid(theta - d), G)] (the GRPO rate factor iota); `u` the share of the
    benchmark within reach (items out of it are never solved: their groups carry no signal)."""
    G_ = np.asarray(G, dtype=float)[..., None]  # G may vary per draw: align it with the K axis
    return np.asarray(u, dtype=float) * irt.expect_K(signal_fraction(irt.p_correct_K(theta, c, s_d), G_))


def signal_size_avg(theta, c, s_d, G: int, u=1.0) -> np.ndarray:
    return np.asarray(u, dtype=float) * irt.expect_K(signal_size(irt.p_correct_K(theta, c, s_d), G))


def bits_per_label_avg(theta, c, s_d, G: int, u=1.0) -> np.ndarray:
    return np.asarray(u, dtype=float) * irt.expect_K(bits_per_label(irt.p_correct_K(theta, c, s_d), G))


def dense_nats_per_prompt(kl_per_token, response_tokens) -> np.ndarray:
    """Dense signal of one unlabeled prompt: per-token teacher-student KL (nats) times tokens."""
    return np.asarray(kl_per_token, dtype=float) * np.asarray(response_tokens, dtype=float)


# an accuracy change (or a part of one) smaller than this many points is none: no benchmark resolves it
_NAMED = 0.05
# C2 fails where KL > KL_c, i.e. where OPD's trust region lets through less than e^-1 of its step
_C2_PASS = float(np.exp(-1.0))


def _pts(x: float) -> str:
    """Signed points to 0.1, never "-0.0"."""
    return f"{x + 0.0:+.1f}".replace("-0.0", "+0.0")


@dataclass(frozen=True)
class StepEffect:
    """A predicted change of the student's accuracy (points) over some bridge stages, split exactly:
    compliance moved toward the teacher's, ability transferred toward the teacher's (rho tau of the
    gap), and style displacement plus stage cost (0 without those rates)."""

    before: float
    after: float
    from_compliance: float
    from_transfer: float
    from_displacement: float

    @property
    def gain(self) -> float:
        return self.after - self.before

    @property
    def improves(self) -> bool:
        """The student gains at least 0.05 points (less is no change a benchmark could see)."""
        return self.gain >= _NAMED

    def parts(self) -> list[tuple[str, float]]:
        return [("compliance", self.from_compliance), ("ability transfer", self.from_transfer),
                ("style displacement and stage cost", self.from_displacement)]

    def describe(self) -> str:
        named = ", ".join(f"{k} {_pts(v)}" for k, v in self.parts() if abs(v) >= _NAMED)
        return f"{self.before:.1f} -> {self.after:.1f}" + (f" ({named})" if named else "")

    def why(self) -> str:
        """The parts that carry the change against those that oppose it (or that cancel)."""
        if abs(self.gain) < _NAMED:
            named = [f"{k} {_pts(v)}" for k, v in self.parts() if abs(v) >= _NAMED]
            return f"{' and '.join(named)} cancel" if len(named) > 1 else "the teacher has nothing the student lacks"
        sign = 1.0 if self.gain > 0 else -1.0
        carry = [f"{k} {_pts(v)}" for k, v in self.parts() if sign * v >= _NAMED]
        against = [f"{k} {_pts(v)}" for k, v in self.parts() if -sign * v >= _NAMED]
        if not against:
            return ", ".join(carry) or "no part moves it"
        return f"{', '.join(carry) or 'nothing'} outweigh{'s' if len(carry) == 1 else ''} {', '.join(against)}"


@dataclass(frozen=True)
class ConditionCheck:
    """C1/C2 of arXiv 2605.12483 for one teacher, with the numbers that decide them."""

    teacher: str
    teacher_accuracy: float
    student_accuracy: float
    teacher_compliance: float
    student_compliance: float
    kl0: float
    kl_after_warmup: float
    kl_c: float
    c1: bool
    c2: bool
    c2_after_warmup: bool
    # what the dynamics predict for the stages each condition governs (the planner's MAP; None if not
    # given): the bridge from the start (C1), OPD from the start (C2), OPD after the warmup (C2 after it)
    bridge: StepEffect | None = None
    opd: StepEffect | None = None
    opd_after_warmup: StepEffect | None = None

    @property
    def c1_agrees(self) -> bool | None:
        """C1 holds exactly when the predicted bridge raises the student by 0.05 points or more (None: no
        prediction given)."""
        return None if self.bridge is None else self.c1 == self.bridge.improves

    @property
    def c2_agrees(self) -> bool | None:
        """Each C2 verdict holds exactly when the OPD it governs raises the student."""
        if self.opd is None or self.opd_after_warmup is None:
            return None
        return self.c2 == self.opd.improves and self.c2_after_warmup == self.opd_after_warmup.improves

    def to_dict(self) -> dict:
        return {**asdict(self), "c1_agrees": self.c1_agrees, "c2_agrees": self.c2_agrees}

    def explain(self) -> str:
        """One line per condition: the paper's verdict with its numbers, then (when given) what the
        dynamics predict and, where the two differ, why."""
        c1 = (f"C1 (teacher reward-shaped): compliance {self.teacher_compliance:.3f} "
              f"{'>=' if self.teacher_compliance >= self.student_compliance else '<'} student "
              f"{self.student_compliance:.3f}, accuracy {self.teacher_accuracy:.1f} "
              f"{'>' if self.teacher_accuracy > self.student_accuracy else '<='} student "
              f"{self.student_accuracy:.1f} -> {'holds' if self.c1 else 'FAILS'}")
        if self.bridge is not None:
            b = self.bridge
            c1 += f"; predicted: warmup + OPD take the student {b.describe()}"
            if self.c1_agrees:
                c1 += f" -> agrees ({'a gain' if b.improves else 'no gain'})"
            else:
                c1 += (" -> differs: a gain although C1 fails, " + b.why() + " (C1 asks compliance and accuracy "
                       "both to be the student's or better; the dynamics weigh what each moves)" if b.improves
                       else " -> differs: no gain although C1 holds, " + b.why())
        c2 = (f"C2 (teacher within small KL): KL_0 {self.kl0:.3f} nats/token "
              f"{'<=' if self.c2 else '>'} KL_c {self.kl_c:.3f} -> {'holds' if self.c2 else 'FAILS'}; "
              f"after warmup {self.kl_after_warmup:.3f} -> {'holds' if self.c2_after_warmup else 'FAILS'}")
        if self.opd is not None and self.opd_after_warmup is not None:
            c2 += (f"; predicted: OPD alone {_pts(self.opd.gain)}, OPD after the warmup "
                   f"{_pts(self.opd_after_warmup.gain)}")
            if self.c2_agrees:
                c2 += " -> agrees"
            else:
                why = [self._c2_why(label, holds, kl, step) for label, holds, kl, step in (
                    ("OPD alone", self.c2, self.kl0, self.opd),
                    ("after the warmup", self.c2_after_warmup, self.kl_after_warmup, self.opd_after_warmup))
                    if holds != step.improves]
                c2 += " -> differs: " + "; ".join(why)
        return f"{self.teacher}:\n    {c1}\n    {c2}"

    def _c2_why(self, label: str, holds: bool, kl: float, step: StepEffect) -> str:
        if step.improves:  # C2 fails, OPD still gains
            return (f"{label} gains although C2 fails: the trust region lets through "
                    f"e^(-{kl:.2f}/{self.kl_c:.2f}) = {np.exp(-kl / self.kl_c):.0%} of OPD's step (C2 fails "
                    f"below {_C2_PASS:.0%}); it damps the step, it does not stop it")
        moved = f"loses {-step.gain:.1f}" if step.gain <= -_NAMED else "gains nothing"
        edge = "" if self.c1 else " (C2 asks only that the teacher be close; C1 fails)"
        return f"{label} {moved} although C2 holds: {step.why()}{edge}"


def check_conditions(*, teacher: str, teacher_accuracy: float, student_accuracy: float,
                     teacher_compliance: float, student_compliance: float, kl0: float, kl_c: float,
                     phi_w: float, bridge: StepEffect | None = None, opd: StepEffect | None = None,
                     opd_after_warmup: StepEffect | None = None) -> ConditionCheck:
    """The paper's C1/C2 verdicts from the numbers; `bridge`, `opd`, `opd_after_warmup` (optional) are
    the dynamics' predictions for the stages they govern, compared with the verdicts in `explain`."""
    kl_after = kl0 * (1.0 - phi_w)
    return ConditionCheck(
        teacher=teacher, teacher_accuracy=float(teacher_accuracy), student_accuracy=float(student_accuracy),
        teacher_compliance=float(teacher_compliance), student_compliance=float(student_compliance),
        kl0=float(kl0), kl_after_warmup=float(kl_after), kl_c=float(kl_c),
        c1=bool(teacher_compliance >= student_compliance and teacher_accuracy > student_accuracy),
        c2=bool(kl0 <= kl_c), c2_after_warmup=bool(kl_after <= kl_c),
        bridge=bridge, opd=opd, opd_after_warmup=opd_after_warmup)
