"""The arm registry: every arm of the paper's ablation, declared once.

The planner (`budget_planner`), the reference pipeline (`reference`) and the tuner (`tuning`) all read
this table; a test asserts none of them keeps its own list. An arm is a named composition of stages,
with the teacher it uses and how it spends the label budget N.

Stages (arXiv 2605.12483, abstract): (1) GRPO on the teacher with the labels; (2a) forward-KL warmup of
the student on teacher rollouts; (2b) on-policy distillation (OPD) on student rollouts; (3) optional GRPO
on the student with held-out labels. `replay_opd` is the matched control for stage 3: the same student
compute spent on more bridge (OPD) steps instead of sparse-reward GRPO.

`STAGES` holds the facts about each stage that every layer needs (which model it trains, with which
update, on whose rollouts, scored by whom, which labels size it, how its tokens are priced); the
dynamics, the pipeline, the dry run, the curves and the tuners read it instead of naming stages.
Facts of one layer only (search ranges, for instance) stay in that layer, keyed by the stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
import math

from theory.errors import InputError


class Stage(str, Enum):
    TEACHER_GRPO = "teacher_grpo"
    FKL_WARMUP = "fkl_warmup"
    OPD = "opd"
    STUDENT_GRPO = "student_grpo"
    REPLAY_OPD = "replay_opd"


TEACHER, STUDENT, HELD_BACK = "teacher", "student", "held_back"


@dataclass(frozen=True)
class StageSpec:
    """What one stage does, in the terms every layer shares.

    trains   the model whose weights the stage updates
    update   the update rule, also the name of its config section: "grpo" (sparse reward on labels),
             "fkl" (forward KL on teacher rollouts) or "opd" (reverse KL on student rollouts)
    samples  whose rollouts it learns from
    scorer   the frozen model that scores every token (the bridge's teacher); None for GRPO
    labels   which share of the label account sizes it ("teacher", "student", or "held_back": the
             labels stage-3 GRPO would have used, which the replay control never reads); None if none
    tokens   how ComputeModel prices it: "grpo" (per label it is sized by), "fkl" or "opd" (per pass)
    """

    trains: str
    update: str
    samples: str
    scorer: str | None
    labels: str | None
    tokens: str

    @property
    def replays(self) -> bool:
        """The stage-3 control: sized by the held-back labels' GRPO compute, never reading those labels."""
        return self.labels == HELD_BACK


class Teacher(str, Enum):
    NONE = "none"  # the arm never looks at a teacher
    RAW = "raw"  # the teacher as it comes, not shaped by the reward (tests C1)
    RL = "rl"  # the teacher after stage-1 GRPO with the labels


@dataclass(frozen=True)
class LabelAccount:
    """How an arm spends a budget of N labeled problems. teacher + student + unused == N."""

    teacher: int
    student: int
    unused: int

    @property
    def total(self) -> int:
        return self.teacher + self.student + self.unused


@dataclass(frozen=True)
class ComputeModel:
    """Token costs of each stage at its reference length; the toy world and Qwen3 configs each carry one.

    Letters: G = group size (samples per labeled prompt), L_p / L_r = prompt / response tokens
    (L_b = the bridge's response tokens, default L_r), U = bridge prompts of one unit, S = samples per
    bridge prompt.

    Three counts that used to share the word "epochs", one name each (docs/theory.md, "Training length"):
      label_passes  e0: passes over the GRPO labels, each re-sampling the rollouts (the reference's
                    `[grpo] epochs`, the paper recipe's 15 epochs). The reference length of both GRPO
                    stages: the dynamics' kappa is a rate at this length, and the plan varies it.
      train_passes  training passes over each GRPO rollout batch (TRL `num_iterations`, mu in the GRPO
                    paper); costs only (the dynamics count rollout batches, not passes over them).
      updates per batch  optimizer steps per rollout batch (mini-batches): no field, since it changes
                    neither the tokens nor, in this model, the progress.
    A GRPO label costs, per label pass, G rollouts and `train_passes` training passes over them. A
    bridge unit is U prompts x S samples: FKL samples the teacher once, then scores and trains
    `fkl_epochs` times; OPD samples, scores and trains once per `opd_epochs`. Tokens are counted once
    per model pass.
    """

    group_size: int = 8
    prompt_tokens: int = 256
    response_tokens: int = 1024
    train_passes: int = 1
    label_passes: int = 1
    bridge_prompts: int = 4096
    bridge_samples: int = 1
    fkl_epochs: int = 1
    opd_epochs: int = 1
    bridge_response_tokens: int = 0  # 0 = response_tokens (a teacher that writes its steps answers longer)

    def __post_init__(self) -> None:
        for name in ("group_size", "prompt_tokens", "response_tokens", "train_passes", "label_passes",
                     "bridge_prompts", "bridge_samples", "fkl_epochs", "opd_epochs", "bridge_response_tokens"):
            value = getattr(self, name)
            low = 0 if name == "bridge_response_tokens" else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise InputError(f"compute.{name} must be a {'non-negative' if low == 0 else 'positive'} integer, "
                                 f"got {value!r}")

    @property
    def sequence_tokens(self) -> int:
        return self.prompt_tokens + self.response_tokens

    @property
    def bridge_sequence_tokens(self) -> int:
        return self.prompt_tokens + (self.bridge_response_tokens or self.response_tokens)

    def passes(self, update: str) -> tuple[int, int]:
        """(rollout, step) model passes over each sampled sequence token of the update rule `update`
        (a StageSpec's `update`, or the `tokens` it is priced as). GRPO samples once, then trains
        train_passes times; the FKL warmup samples the teacher once, then scores and trains fkl_epochs
        times; OPD samples, scores and trains once (its opd_epochs re-sample: they repeat all three)."""
        return {"grpo": (1, self.train_passes), "fkl": (1, 2 * self.fkl_epochs), "opd": (1, 2)}[update]

    def grpo_tokens(self, labels, passes=None):
        """Tokens of a GRPO stage on `labels` labels over `passes` label passes (default label_passes):
        per label pass one rollout pass + train_passes training passes (forward+backward counted as one
        pass over the tokens). Broadcasts over array inputs."""
        passes = self.label_passes if passes is None else passes
        per_label = self.group_size * self.sequence_tokens * sum(self.passes("grpo"))
        return labels * passes * per_label

    def fkl_tokens(self, units=1):
        # teacher rollouts (once) + teacher scoring + student training per epoch, per bridge unit
        seqs = self.bridge_prompts * self.bridge_samples
        return units * seqs * self.bridge_sequence_tokens * sum(self.passes("fkl"))

    def opd_tokens(self, units=1):
        # student rollouts + teacher scoring + student training, per epoch, per bridge unit
        seqs = self.bridge_prompts * self.bridge_samples
        return units * seqs * self.bridge_sequence_tokens * sum(self.passes("opd")) * self.opd_epochs

    def stage_tokens(self, stage: Stage, labels: int, length=None):
        """Tokens `stage` processes when `labels` size it (see StageSpec.tokens), at `length` (the
        stage's length in its own unit, `stage_length`; None = the reference length)."""
        pricing = STAGES[stage].tokens
        if pricing == "grpo":
            return self.grpo_tokens(labels, length)
        units = 1 if length is None else length
        return self.fkl_tokens(units) if pricing == "fkl" else self.opd_tokens(units)

    def reference_length(self, stage: Stage) -> float:
        """A stage's reference length in its own unit: label passes (GRPO, and the replay control, which
        is sized as the GRPO it replaces) or bridge units (FKL, OPD)."""
        return float(self.label_passes) if STAGES[Stage(stage)].tokens == "grpo" else 1.0


@dataclass(frozen=True)
class Arm:
    name: str
    stages: tuple[Stage, ...]
    teacher: Teacher
    splits_labels: bool  # True when the labels are shared between teacher GRPO and student GRPO
    description: str
    # A control exists to be compared with another arm (it holds back labels and spends their compute
    # otherwise): the planner predicts and shows it but never recommends it.
    control: bool = False

    def labels(self, n: int, teacher_labels: int | None = None) -> LabelAccount:
        """Label accounting for a budget of n. `teacher_labels` applies only to arms that split."""
        n = check_budget(n)
        spends = {STAGES[s].labels for s in self.stages}
        if self.splits_labels:
            t = default_teacher_labels(n) if teacher_labels is None else int(teacher_labels)
            if not 0 <= t <= n:
                raise InputError(f"teacher_labels={teacher_labels} must lie in [0, labels={n}]")
            student = n - t if STUDENT in spends else 0
            return LabelAccount(teacher=t, student=student, unused=n - t - student)
        if teacher_labels is not None and int(teacher_labels) != self._full_teacher(n):
            raise InputError(f"arm {self.name} does not split labels; drop teacher_labels")
        if TEACHER in spends:
            return LabelAccount(teacher=n, student=0, unused=0)
        if STUDENT in spends:
            return LabelAccount(teacher=0, student=n, unused=0)
        return LabelAccount(teacher=0, student=0, unused=n)

    def _full_teacher(self, n: int) -> int:
        return n if any(STAGES[s].labels == TEACHER for s in self.stages) else 0

    def compute_tokens(self, n: int, cost: ComputeModel, teacher_labels: int | None = None,
                       lengths: dict | None = None) -> dict[str, int]:
        """Tokens processed per stage (rollout + training + teacher scoring) for a budget of n, each stage
        at its length in `lengths` ({stage: length in its unit}; a stage not named: its reference length)."""
        acct = self.labels(n, teacher_labels)
        lengths = {} if lengths is None else {Stage(k): v for k, v in lengths.items()}
        return {stage.value: int(round(float(cost.stage_tokens(stage, stage_labels(stage, acct), lengths.get(stage)))))
                for stage in self.stages}

    def total_compute_tokens(self, n: int, cost: ComputeModel, teacher_labels: int | None = None,
                             lengths: dict | None = None) -> int:
        return sum(self.compute_tokens(n, cost, teacher_labels, lengths).values())


DEFAULT_TEACHER_FRACTION = 0.5  # the paper's stage-3 experiment is a half split (appendix B title)


def default_teacher_labels(n: int) -> int:
    return int(round(n * DEFAULT_TEACHER_FRACTION))


MAX_LABELS = 10_000_000


def check_budget(n) -> int:
    """A label budget: a finite non-negative integer no larger than MAX_LABELS."""
    if isinstance(n, bool):
        raise InputError(f"labels must be a non-negative integer, got {n!r}")
    try:
        f = float(n)
    except (TypeError, ValueError):
        raise InputError(f"labels must be a non-negative integer, got {n!r}") from None
    if math.isnan(f) or math.isinf(f):
        raise InputError(f"labels must be finite, got {n!r}")
    if f < 0:
        raise InputError(f"labels must be >= 0, got {n!r}")
    if f != int(f):
        raise InputError(f"labels must be a whole number, got {n!r}")
    if f > MAX_LABELS:
        raise InputError(f"labels={int(f)} is larger than the supported maximum {MAX_LABELS}")
    return int(f)


S = Stage
# The table of stages, in the order the curves draw them (stage 3 and its replay control last).
STAGES: dict[Stage, StageSpec] = {
    S.TEACHER_GRPO: StageSpec(trains=TEACHER, update="grpo", samples=TEACHER, scorer=None, labels=TEACHER,
                              tokens="grpo"),
    S.FKL_WARMUP: StageSpec(trains=STUDENT, update="fkl", samples=TEACHER, scorer=TEACHER, labels=None,
                            tokens="fkl"),
    S.OPD: StageSpec(trains=STUDENT, update="opd", samples=STUDENT, scorer=TEACHER, labels=None, tokens="opd"),
    # the matched control for stage 3: OPD steps worth the GRPO compute of the held-back labels
    S.REPLAY_OPD: StageSpec(trains=STUDENT, update="opd", samples=STUDENT, scorer=TEACHER, labels=HELD_BACK,
                            tokens="grpo"),
    S.STUDENT_GRPO: StageSpec(trains=STUDENT, update="grpo", samples=STUDENT, scorer=None, labels=STUDENT,
                              tokens="grpo"),
}


def stage_labels(stage: Stage, acct: LabelAccount) -> int:
    """Labels that size `stage` under the account `acct` (0 for a stage no labels size)."""
    return {TEACHER: acct.teacher, STUDENT: acct.student, HELD_BACK: acct.total - acct.teacher}.get(
        STAGES[stage].labels, 0)


ARMS: dict[str, Arm] = {
    a.name: a
    for a in (
        Arm("direct_grpo", (S.STUDENT_GRPO,), Teacher.NONE, False,
            "GRPO with all labels directly on the deployment student (the usual move)."),
        Arm("raw_teacher_bridge", (S.FKL_WARMUP, S.OPD), Teacher.RAW, False,
            "Dense bridge from the teacher before any RL; labels unused (tests C1)."),
        Arm("rl_teacher_bridge", (S.TEACHER_GRPO, S.FKL_WARMUP, S.OPD), Teacher.RL, False,
            "The paper's workflow: labels as sparse reward on the teacher, then warmup + OPD."),
        Arm("no_fkl", (S.TEACHER_GRPO, S.OPD), Teacher.RL, False,
            "RL teacher, OPD only: no forward-KL warmup (tests C2)."),
        Arm("no_opd", (S.TEACHER_GRPO, S.FKL_WARMUP), Teacher.RL, False,
            "RL teacher, forward-KL warmup only: no on-policy distillation."),
        Arm("rl_teacher_bridge_stage3", (S.TEACHER_GRPO, S.FKL_WARMUP, S.OPD, S.STUDENT_GRPO), Teacher.RL, True,
            "Labels split: teacher GRPO, bridge, then post-bridge student GRPO with the rest."),
        Arm("replay_control", (S.TEACHER_GRPO, S.FKL_WARMUP, S.OPD, S.REPLAY_OPD), Teacher.RL, True,
            "Stage-3 control: same split, the student compute spent on more bridge steps; student labels unused.",
            control=True),
    )
}
del S

ARM_NAMES: tuple[str, ...] = tuple(ARMS)
# the arms other modules compare by role, named once here: the headline pair (the usual move and the
# paper's workflow) and the arm whose teacher/student label split the planner recommends
DIRECT_ARM, BRIDGE_ARM, SPLIT_ARM = "direct_grpo", "rl_teacher_bridge", "rl_teacher_bridge_stage3"
assert {DIRECT_ARM, BRIDGE_ARM, SPLIT_ARM} <= set(ARMS)


def candidate_arms() -> tuple[str, ...]:
    """Arms a plan may recommend: every registry arm that is not a control."""
    return tuple(name for name, arm in ARMS.items() if not arm.control)


def get_arm(name: str) -> Arm:
    try:
        return ARMS[name]
    except KeyError:
        raise InputError(f"unknown arm {name!r}; known arms: {', '.join(ARM_NAMES)}") from None


def parse_arms(spec: str) -> list[Arm]:
    """'a,b,c' -> [Arm, ...]; 'all' -> every arm."""
    if spec.strip() == "all":
        return list(ARMS.values())
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise InputError("arms: give at least one arm name")
    return [get_arm(n) for n in names]
