"""How much one label (sparse) or one unlabeled prompt (dense) can teach a policy.

Sparse: a GRPO group of G samples on one labeled problem with pass rate p.
    signal fraction     P(not all G rewards equal) = 1 - p^G - (1 - p)^G          -> `signal_fraction`
    signal size         E[std of the G binary rewards], exact sum over j ~ Bin(G, p):
                        sum_j Bin(j; G, p) * sqrt(j (G - j)) / G                  -> `signal_size`
                        (population std; with binary rewards GRPO's update size is this std)
    bits per label      H(Bin(G, p)) in bits, <= log2(G + 1)                      -> `bits_per_label`
Each is averaged over the benchmark's difficulty distribution with p = c sigmoid(theta - d)
(`*_avg`, Gauss-Hermite quadrature from `theory.irt`).

Dense: an unlabeled prompt scored by a teacher carries per-token KL(student || teacher) nats at each
of the response tokens: `dense_nats_per_prompt` = KL_0 * tokens. The paper's conditions (arXiv
2605.12483): C1, the teacher is reward-shaped (protocol compliance and accuracy at least the
student's); C2, the teacher is within a small KL of the student (KL_0 <= KL_c) -> `check_conditions`.
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


def signal_fraction_avg(theta, c, s_d, G) -> np.ndarray:
    """E_d[signal_fraction(c sigmoid(theta - d), G)] (the GRPO rate factor iota)."""
    G_ = np.asarray(G, dtype=float)[..., None]  # G may vary per draw: align it with the K axis
    return irt.expect_K(signal_fraction(irt.p_correct_K(theta, c, s_d), G_))


def signal_size_avg(theta, c, s_d, G: int) -> np.ndarray:
    return irt.expect_K(signal_size(irt.p_correct_K(theta, c, s_d), G))


def bits_per_label_avg(theta, c, s_d, G: int) -> np.ndarray:
    return irt.expect_K(bits_per_label(irt.p_correct_K(theta, c, s_d), G))


def dense_nats_per_prompt(kl_per_token, response_tokens) -> np.ndarray:
    """Dense signal of one unlabeled prompt: per-token teacher-student KL (nats) times tokens."""
    return np.asarray(kl_per_token, dtype=float) * np.asarray(response_tokens, dtype=float)


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

    def to_dict(self) -> dict:
        return asdict(self)

    def explain(self) -> str:
        c1 = (f"C1 (teacher reward-shaped): compliance {self.teacher_compliance:.3f} "
              f"{'>=' if self.teacher_compliance >= self.student_compliance else '<'} student "
              f"{self.student_compliance:.3f}, accuracy {self.teacher_accuracy:.1f} "
              f"{'>' if self.teacher_accuracy > self.student_accuracy else '<='} student "
              f"{self.student_accuracy:.1f} -> {'holds' if self.c1 else 'FAILS'}")
        c2 = (f"C2 (teacher within small KL): KL_0 {self.kl0:.3f} nats/token "
              f"{'<=' if self.c2 else '>'} KL_c {self.kl_c:.3f} -> {'holds' if self.c2 else 'FAILS'}; "
              f"after warmup {self.kl_after_warmup:.3f} -> {'holds' if self.c2_after_warmup else 'FAILS'}")
        return f"{self.teacher}: {c1}; {c2}"


def check_conditions(*, teacher: str, teacher_accuracy: float, student_accuracy: float,
                     teacher_compliance: float, student_compliance: float, kl0: float, kl_c: float,
                     phi_w: float) -> ConditionCheck:
    kl_after = kl0 * (1.0 - phi_w)
    return ConditionCheck(
        teacher=teacher, teacher_accuracy=float(teacher_accuracy), student_accuracy=float(student_accuracy),
        teacher_compliance=float(teacher_compliance), student_compliance=float(student_compliance),
        kl0=float(kl0), kl_after_warmup=float(kl_after), kl_c=float(kl_c),
        c1=bool(teacher_compliance >= student_compliance and teacher_accuracy > student_accuracy),
        c2=bool(kl0 <= kl_c), c2_after_warmup=bool(kl_after <= kl_c))
