"""The toy world: graded-difficulty integer arithmetic with disjoint, seeded splits.

A problem is an expression of `terms` integers in [0, max_operand] joined by +/- (difficulty grows with
the number of terms). Prompt: "12+7-3=". Protocol answer: "\\boxed{16}" (scored by
reference.rewards). Two solution styles exist in pre-training text:
  direct: "\\boxed{16}"                       (the student's base style)
  steps:  "12+7=19;19-3=16;\\boxed{16}"        (the teacher's base style: running partial sums)
and a protocol break replaces the final "\\boxed{16}" with "ANS16" (not verifiable -> reward 0).
A base model of style "mix" saw steps in a share of its documents (per problem family when the world
has `families`, each its own operator set): the step mode is a skill its base rarely uses, so reward
can teach it to choose it (the world family of issue 11).

Splits (labeled train = the budget N, val, unlabeled bridge prompts, test) are drawn without
replacement from one stream of distinct expressions, so they are disjoint by construction and the
check in `make_world` makes it explicit. Pre-training text never uses an expression from a split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reference.config import WorldConfig
from theory.errors import InputError


@dataclass(frozen=True)
class Problem:
    pid: str
    prompt: str
    gold: str
    terms: int
    family: int = -1  # index into world.families; -1 for a one-family world


@dataclass(frozen=True)
class World:
    labeled: tuple[Problem, ...]
    val: tuple[Problem, ...]
    unlabeled: tuple[Problem, ...]  # golds kept only for diagnostics; stages never read them
    test: tuple[Problem, ...]
    config: WorldConfig

    def split(self, name: str) -> tuple[Problem, ...]:
        if name not in ("labeled", "val", "unlabeled", "test"):
            raise InputError(f"split must be one of labeled, val, unlabeled, test; got {name!r}")
        return getattr(self, name)

    def sizes(self) -> dict[str, int]:
        return {s: len(getattr(self, s)) for s in ("labeled", "val", "unlabeled", "test")}


def _expression(rng: np.random.Generator, cfg: WorldConfig) -> tuple[list[int], list[str], int]:
    """Terms, operators and family index (-1: one-family world; its draws are as before families)."""
    fams = cfg.family_ops
    fam = int(rng.integers(0, len(fams))) if fams else -1
    ops_set = fams[fam] if fams else cfg.ops
    n = int(rng.integers(cfg.min_terms, cfg.max_terms + 1))
    nums = [int(x) for x in rng.integers(0, cfg.max_operand + 1, size=n)]
    ops = [ops_set[int(i)] for i in rng.integers(0, len(ops_set), size=n - 1)]
    return nums, ops, fam


def _text(nums: list[int], ops: list[str]) -> str:
    return str(nums[0]) + "".join(o + str(x) for o, x in zip(ops, nums[1:]))


def _apply(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def evaluate_left_to_right(nums: list[int], ops: list[str]) -> tuple[int, list[str]]:
    """Value and the running-sum steps. '*' is only allowed with left-to-right semantics documented."""
    acc, steps = nums[0], []
    for op, x in zip(ops, nums[1:]):
        new = _apply(acc, op, x)
        steps.append(f"{acc}{op}{x}={new}")
        acc = new
    return acc, steps


def solution(nums: list[int], ops: list[str], style: str, broken: bool) -> str:
    value, steps = evaluate_left_to_right(nums, ops)
    final = f"ANS{value}" if broken else f"\\boxed{{{value}}}"
    if style == "direct":
        return final
    return ";".join(steps + [final])


def make_world(cfg: WorldConfig) -> World:
    if cfg.kind != "toy":
        raise InputError("make_world builds the toy world; world.kind='dataset' is read by reference.data")
    rng = np.random.default_rng([cfg.seed, 12345])
    need = cfg.labels + cfg.val + cfg.unlabeled + cfg.test
    seen: set[str] = set()
    items: list[Problem] = []
    tries = 0
    while len(items) < need:
        tries += 1
        if tries > 50 * need + 10_000:
            raise InputError(f"world: cannot draw {need} distinct problems with max_terms={cfg.max_terms}, "
                             f"max_operand={cfg.max_operand}; enlarge the problem space or shrink the splits")
        nums, ops, fam = _expression(rng, cfg)
        text = _text(nums, ops)
        if text in seen:
            continue
        seen.add(text)
        value, _ = evaluate_left_to_right(nums, ops)
        items.append(Problem(pid=f"p{len(items)}", prompt=text + "=", gold=str(value), terms=len(nums), family=fam))
    # test first and labeled last: test/val do not move when the budget N changes, and a smaller
    # budget's labeled set is a prefix of a larger one's (nested budgets for budget sweeps)
    a = cfg.test
    b = a + cfg.val
    c = b + cfg.unlabeled
    world = World(labeled=tuple(items[c:need]), val=tuple(items[a:b]), unlabeled=tuple(items[b:c]),
                  test=tuple(items[:a]), config=cfg)
    check_disjoint(world)
    return world


def check_disjoint(world: World) -> None:
    names = ("labeled", "val", "unlabeled", "test")
    for i, x in enumerate(names):
        px = {p.prompt for p in world.split(x)}
        for y in names[i + 1:]:
            overlap = px & {p.prompt for p in world.split(y)}
            if overlap:
                raise InputError(f"world splits overlap: {x} and {y} share {len(overlap)} problem(s), "
                                 f"e.g. {sorted(overlap)[0]!r}")


def pretraining_text(world: World, *, style: str, protocol_break: float, n: int,
                     rng: np.random.Generator, shares: tuple[float, ...] = (), drills: float = 0.0) -> list[str]:
    """n documents "prompt+solution" on fresh expressions (never one from a split). Style "mix" writes
    steps with probability `shares[family]` (one share: every family alike). A share `drills` of the
    documents are bare running-sum chains ("12+7=19;19-3=16;"): the step skill without a prompt, so it
    is trained without teaching the model to choose the step mode after one."""
    cfg = world.config
    if style == "mix":
        want = max(1, len(cfg.family_ops))
        if len(shares) not in (1, want):
            raise InputError(f"steps_share has {len(shares)} values; the world has {want} problem families")
    taken = {p.prompt for s in ("labeled", "val", "unlabeled", "test") for p in world.split(s)}
    out: list[str] = []
    while len(out) < n:
        nums, ops, fam = _expression(rng, cfg)
        prompt = _text(nums, ops) + "="
        if prompt in taken:
            continue
        if drills and rng.random() < drills:
            out.append(";".join(evaluate_left_to_right(nums, ops)[1]) + ";")
            continue
        s = style
        if style == "mix":
            s = "steps" if rng.random() < shares[fam if len(shares) > 1 else 0] else "direct"
        out.append(prompt + solution(nums, ops, s, bool(rng.random() < protocol_break)))
    return out
