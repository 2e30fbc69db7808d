"""Tier 1: the shared vocabulary — arm registry label/compute accounting, the table of stages and the
table validator."""

import ast
import math
from pathlib import Path

import pandas as pd
import pytest

from theory.arms import (ARMS, ARM_NAMES, STAGES, STUDENT, TEACHER, ComputeModel, Stage, StageSpec, check_budget,
                         get_arm, parse_arms, stage_labels)
from theory.errors import InputError
from theory.tables import validate_problems, validate_runs


def test_registry_has_the_paper_arms():
    assert set(ARM_NAMES) >= {"direct_grpo", "raw_teacher_bridge", "rl_teacher_bridge", "no_fkl",
                              "no_opd", "rl_teacher_bridge_stage3", "replay_control"}
    assert ARMS["no_fkl"].stages == (Stage.TEACHER_GRPO, Stage.OPD)
    assert ARMS["no_opd"].stages == (Stage.TEACHER_GRPO, Stage.FKL_WARMUP)


@pytest.mark.parametrize("name", ARM_NAMES)
@pytest.mark.parametrize("n", [0, 1, 7, 5000])
def test_labels_always_add_up(name, n):
    acct = get_arm(name).labels(n)
    assert acct.total == n and min(acct.teacher, acct.student, acct.unused) >= 0


def test_label_accounting_by_arm():
    assert get_arm("direct_grpo").labels(100).student == 100
    assert get_arm("raw_teacher_bridge").labels(100).unused == 100
    assert get_arm("rl_teacher_bridge").labels(100).teacher == 100
    s3 = get_arm("rl_teacher_bridge_stage3").labels(100, teacher_labels=70)
    assert (s3.teacher, s3.student, s3.unused) == (70, 30, 0)
    rc = get_arm("replay_control").labels(100, teacher_labels=70)
    assert (rc.teacher, rc.student, rc.unused) == (70, 0, 30)
    with pytest.raises(InputError, match="teacher_labels"):
        get_arm("rl_teacher_bridge_stage3").labels(100, teacher_labels=101)


def test_replay_control_matches_stage3_student_compute():
    cost = ComputeModel(group_size=4, prompt_tokens=10, response_tokens=20, bridge_prompts=50)
    s3 = get_arm("rl_teacher_bridge_stage3").compute_tokens(200, cost, teacher_labels=120)
    rc = get_arm("replay_control").compute_tokens(200, cost, teacher_labels=120)
    assert rc["replay_opd"] == s3["student_grpo"] == cost.grpo_tokens(80)
    assert sum(rc.values()) == sum(s3.values())


@pytest.mark.parametrize("bad", [-1, 1.5, math.nan, math.inf, "x", 10**9, True])
def test_bad_budgets_name_the_field(bad):
    with pytest.raises(InputError, match="labels"):
        check_budget(bad)


def test_unknown_arm_is_one_line():
    with pytest.raises(InputError, match="unknown arm 'nope'"):
        parse_arms("direct_grpo,nope")


def _runs(**over):
    row = dict(arm="direct_grpo", seed=0, world="toy", teacher_labels=0, student_labels=10,
               compute_tokens=100, split="test", metric="accuracy", value=55.0)
    row.update(over)
    return row


def test_run_table_round_trip():
    df = pd.DataFrame([_runs(seed=0, value=40.0), _runs(seed=1, value=60.0)])
    out = validate_runs(df)
    assert list(out["value"]) == [40.0, 60.0] and out["seed"].dtype == "int64"


def test_run_table_rejects_fractions():
    df = pd.DataFrame([_runs(seed=0, value=0.41), _runs(seed=1, value=0.6)])
    with pytest.raises(InputError, match="looks like fractions"):
        validate_runs(df)


@pytest.mark.parametrize("over,field", [
    (dict(arm="mystery"), "arm"), (dict(split="dev"), "split"), (dict(value="abc"), "value"),
    (dict(teacher_labels=-3), "teacher_labels"), (dict(value=140.0), "percent"),
])
def test_run_table_names_the_bad_field(over, field):
    with pytest.raises(InputError, match=field):
        validate_runs(pd.DataFrame([_runs(**over)]))


def test_problem_table_rules():
    ok = pd.DataFrame({"model": ["s", "s"], "problem_id": ["a", "b"], "k": [8, 8], "correct": [3, 0], "compliant": [5, 8]})
    assert len(validate_problems(ok)) == 2
    with pytest.raises(InputError, match="'correct' exceeds 'compliant'"):
        validate_problems(ok.assign(correct=[6, 0]))
    with pytest.raises(InputError, match="missing column 'k'"):
        validate_problems(ok.drop(columns="k"))


# ---------- the table of stages (issue 15): declared once, read by every layer ----------

ROOT = Path(__file__).resolve().parents[1]
# the layers that once kept their own per-stage if-chains or dicts
CONSUMERS = ("theory/dynamics.py", "theory/discrepancy.py", "budget_planner/nextstep.py", "reference/pipeline.py",
             "reference/stage_runner.py", "reference/assemble.py",
             "reference/api.py", "reference/dryrun.py", "reference/curves.py", "tuning/synthetic.py")


def test_every_stage_any_arm_names_has_one_row():
    assert list(STAGES) == [Stage.TEACHER_GRPO, Stage.FKL_WARMUP, Stage.OPD, Stage.REPLAY_OPD, Stage.STUDENT_GRPO]
    assert {s for arm in ARMS.values() for s in arm.stages} <= set(STAGES)
    for spec in STAGES.values():
        assert isinstance(spec, StageSpec)
        assert spec.trains in (TEACHER, STUDENT) and spec.samples in (TEACHER, STUDENT)
        assert spec.update in ("grpo", "fkl", "opd") and spec.tokens in ("grpo", "fkl", "opd")
        assert spec.labels in (None, TEACHER, STUDENT, "held_back")
        # GRPO is scored by the verifier, the bridge by the teacher
        assert (spec.scorer is None) == (spec.update == "grpo")


def test_the_table_says_what_the_paper_says():
    t, w, o, r, s = (STAGES[x] for x in STAGES)
    assert (t.trains, t.update, t.samples, t.labels) == (TEACHER, "grpo", TEACHER, TEACHER)  # (1)
    assert (w.trains, w.update, w.samples, w.scorer) == (STUDENT, "fkl", TEACHER, TEACHER)  # (2a)
    assert (o.trains, o.update, o.samples, o.scorer) == (STUDENT, "opd", STUDENT, TEACHER)  # (2b)
    assert (s.trains, s.update, s.samples, s.labels) == (STUDENT, "grpo", STUDENT, STUDENT)  # (3)
    # the control: OPD steps, priced as the GRPO the held-back labels would have bought
    assert (r.update, r.labels, r.tokens) == ("opd", "held_back", "grpo")


def test_compute_and_labels_come_from_the_table():
    cost = ComputeModel()
    acct = get_arm("replay_control").labels(100, 30)
    assert [stage_labels(st, acct) for st in STAGES] == [30, 0, 0, 70, 0]
    tokens = get_arm("replay_control").compute_tokens(100, cost, 30)
    assert tokens == {"teacher_grpo": cost.grpo_tokens(30), "fkl_warmup": cost.fkl_tokens(),
                      "opd": cost.opd_tokens(), "replay_opd": cost.grpo_tokens(70)}
    acct = get_arm("rl_teacher_bridge_stage3").labels(100, 30)
    assert stage_labels(Stage.STUDENT_GRPO, acct) == 70 and stage_labels(Stage.TEACHER_GRPO, acct) == 30


def _stage_branches(path: Path) -> list[str]:
    """Comparisons against a stage's name (`Stage.X`, or its string) and literal lists of stage names:
    the per-stage if-chains the table replaces. Comparing a table fact (`spec.update == "opd"`) is fine."""
    names, values = {s.name for s in Stage}, {s.value for s in Stage}
    facts = set(StageSpec.__dataclass_fields__)
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(isinstance(o, ast.Attribute) and o.attr in facts for o in operands):
                continue
            for o in operands:
                for sub in ast.walk(o):
                    if (isinstance(sub, ast.Attribute) and sub.attr in names and isinstance(sub.value, ast.Name)
                            or isinstance(sub, ast.Constant) and sub.value in values):
                        found.append(f"{path.name}:{node.lineno}")
        elif isinstance(node, (ast.Set, ast.List, ast.Tuple)):
            if sum(isinstance(e, ast.Constant) and e.value in values for e in node.elts) > 1:
                found.append(f"{path.name}:{node.lineno} (a list of stage names)")
    return found


def test_no_consumer_branches_on_stage_names():
    """Which model a stage trains, what it spends, how its tokens count: asked of STAGES, never re-decided."""
    assert [hit for rel in CONSUMERS for hit in _stage_branches(ROOT / rel)] == []


def test_the_branch_finder_finds_branches(tmp_path):
    p = tmp_path / "m.py"
    p.write_text("def f(stage, spec):\n    if stage is Stage.OPD: pass\n    if stage == 'opd': pass\n"
                 "    if spec.update == 'opd': pass\n    BRIDGE = {'opd', 'fkl_warmup'}\n")
    assert _stage_branches(p) == ["m.py:2", "m.py:3", "m.py:5 (a list of stage names)"]
