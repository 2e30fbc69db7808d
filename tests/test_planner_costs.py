"""GPU-hours per arm (theory/costs.py) and the planner's GPU-hour budget (plan --gpu-hours)."""

import contextlib
import io
import json
import math

import pytest

from budget_planner.planner import plan
from theory.arms import ARMS, ComputeModel, Stage
from theory.costs import (
    COLUMNS,
    DEFAULT_TABLE,
    CostTable,
    _DEFAULT_RATES,
    arm_cost,
    builtin_defaults,
    parallel_efficiency,
    phase_passes,
)
from theory.errors import InputError
from budget_planner.presets import load_scenario

PAPER = "paper-qwen3-math"


@pytest.fixture(autouse=True)
def _private_fit_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("SPARSE2DENSE_CACHE", str(tmp_path_factory.getbasetemp() / "fitcache"))


def test_committed_table_parses_with_every_stage_and_phase():
    t = CostTable.from_csv(DEFAULT_TABLE)
    assert {(r.stage, r.phase) for r in t.rows} == {(s, p) for s in Stage for p in ("rollout", "step")}
    assert all(r.gpus == 1 and r.tokens_per_s > 0 and r.source for r in t.rows)
    # rollouts were never timed at the scenario's shapes; every step was (docs/scale.md, one H200)
    assert {r.tag for r in t.rows if r.phase == "rollout"} == {"assumed"}
    assert {r.tag for r in t.rows if r.phase == "step"} == {"measured"}


def test_builtin_defaults_match_the_committed_table_and_are_assumed():
    committed = {(r.stage.value, r.phase): r.tokens_per_s for r in CostTable.from_csv(DEFAULT_TABLE).rows}
    assert committed == {k: rate for k, (_, rate) in _DEFAULT_RATES.items()}
    assert {r.tag for r in builtin_defaults().rows} == {"assumed"}


def test_phase_passes_agree_with_the_compute_model():
    """Rollout tokens = sequences x L (one pass); the rest are step passes: checked against arms.py."""
    cost = ComputeModel(group_size=4, prompt_tokens=100, response_tokens=300, train_passes=2, bridge_prompts=50,
                        bridge_samples=3, fkl_epochs=3, opd_epochs=2)
    L, n = cost.sequence_tokens, 70
    rollout = {  # tokens of the rollout pass, written from ComputeModel's docstring
        Stage.STUDENT_GRPO: n * cost.group_size * L,
        Stage.FKL_WARMUP: cost.bridge_prompts * cost.bridge_samples * L,
        Stage.OPD: cost.bridge_prompts * cost.bridge_samples * L * cost.opd_epochs,
    }
    counted = {Stage.STUDENT_GRPO: cost.grpo_tokens(n), Stage.FKL_WARMUP: cost.fkl_tokens(),
               Stage.OPD: cost.opd_tokens()}
    for stage, tokens in counted.items():
        k = phase_passes(stage, cost)
        assert k["rollout"] * tokens == pytest.approx(rollout[stage])
        assert k["rollout"] + k["step"] == pytest.approx(1.0)
    # the replay is counted as the GRPO it replaces but runs OPD (rollout + scoring + training) on its rollouts
    k = phase_passes(Stage.REPLAY_OPD, cost)
    assert k["rollout"] * cost.grpo_tokens(n) == pytest.approx(n * cost.group_size * L)
    assert k["step"] == pytest.approx(2 * k["rollout"])


def test_gpu_hours_is_tokens_over_throughput_by_hand():
    scn = load_scenario(PAPER)
    table = CostTable.from_csv(DEFAULT_TABLE)
    arm = ARMS["direct_grpo"]
    n = scn.budget
    tokens = arm.compute_tokens(n, scn.compute)["student_grpo"]
    # G = 8, 256 + 1024 tokens, 15 label passes (the recipe), each one rollout + one training pass
    assert tokens == n * 15 * 8 * (256 + 1024) * 2
    # half the counted tokens are rollout passes at 9,553 tok/s, half training passes at 28,543 tok/s (one GPU)
    seconds_1 = tokens / 2 / 9553 + tokens / 2 / 28543
    assert arm_cost(arm, n, scn.compute, table, gpus=1).gpu_hours == pytest.approx(seconds_1 / 3600)
    c8 = arm_cost(arm, n, scn.compute, table, gpus=8)
    assert c8.gpu_hours == pytest.approx(seconds_1 / 3600 / 0.9)  # assumed efficiency 0.9 on one node
    assert c8.wall_hours == pytest.approx(c8.gpu_hours / 8)
    assert c8.tags["student_grpo"] == {"rollout": "assumed", "step": "measured", "scaling": "assumed"}


def test_every_arm_gets_gpu_hours_for_the_paper_scenario():
    pl = plan(PAPER)
    d = json.loads(json.dumps(pl.to_dict(), allow_nan=False))
    assert set(d["arms"]) == set(ARMS)
    for name, a in d["arms"].items():
        assert a["gpu_hours"] > 0 and a["feasible"] is True, name
        stages = {s.value for s in ARMS[name].stages}
        assert set(d["gpu_costs"]["stage_gpu_hours"][name]) == stages
    gc = d["gpu_costs"]
    assert gc["gpus"] == 8 and gc["parallel_efficiency_tag"] == "assumed" and gc["budget_gpu_hours"] is None
    assert gc["table"] == "docs/results/gpu_costs.csv"
    assert gc["models_match"] is True and gc["table_models"] == ["Qwen3-1.7B", "Qwen3-8B"]
    # the teacher's 8B GRPO is the dearest stage: the RL-teacher bridge costs more than direct GRPO
    assert d["arms"]["rl_teacher_bridge"]["gpu_hours"] > d["arms"]["direct_grpo"]["gpu_hours"]


def test_gpu_hour_budget_flips_the_recommendation():
    free = plan(PAPER)
    rec = free.recommendation.arm
    hours = {a.arm: a.gpu_hours for a in free.arms}
    budget = hours[rec] * 0.99  # the recommended arm no longer fits
    tight = plan(PAPER, gpu_hours=budget)
    assert tight.recommendation.arm != rec
    assert not tight.arm(rec).feasible and tight.arm(rec).p_best is None
    chosen = tight.arm(tight.recommendation.arm)
    assert chosen.feasible and chosen.gpu_hours <= budget
    assert rec in tight.gpu_costs["infeasible"]
    # every prediction is the same: the budget only changes what may be recommended
    assert [a.accuracy for a in tight.arms] == [a.accuracy for a in free.arms]
    with pytest.raises(InputError, match="no arm fits"):
        plan(PAPER, gpu_hours=min(hours.values()) / 2)


def test_more_gpus_cost_more_gpu_hours_and_less_wall_time():
    scn = load_scenario(PAPER)
    arm = ARMS["rl_teacher_bridge"]
    c1, c8, c64 = (arm_cost(arm, scn.budget, scn.compute, gpus=g) for g in (1, 8, 64))
    assert c1.gpu_hours < c8.gpu_hours < c64.gpu_hours
    assert c1.wall_hours > c8.wall_hours > c64.wall_hours
    assert c64.gpu_hours == pytest.approx(c1.gpu_hours / parallel_efficiency(64))


def _table(tmp_path, *lines, header=",".join(COLUMNS)):
    p = tmp_path / "costs.csv"
    p.write_text("\n".join((header,) + lines) + "\n")
    return p


GOOD = "opd,step,Qwen3-1.7B,reference,single,1,1000,50,measured,a run"


@pytest.mark.parametrize("line, needle", [
    ("sft,step,m,reference,single,1,1000,,assumed,why", "unknown stage 'sft'"),
    ("opd,train,m,reference,single,1,1000,,assumed,why", "phase must be one of"),
    ("opd,step,m,reference,single,1,0,,assumed,why", "tokens_per_s must be a positive"),
    ("opd,step,m,reference,single,1,-5,,assumed,why", "tokens_per_s must be a positive"),
    ("opd,step,m,reference,single,1,fast,,assumed,why", "tokens_per_s must be a number"),
    ("opd,step,m,reference,single,1,inf,,assumed,why", "tokens_per_s must be a positive"),
    ("opd,step,m,reference,single,0,1000,,assumed,why", "gpus must be a positive whole number"),
    ("opd,step,m,reference,single,1.5,1000,,assumed,why", "gpus must be a positive whole number"),
    ("opd,step,m,reference,single,1,1000,,guessed,why", "tag must be one of"),
    ("opd,step,m,reference,single,1,1000,,assumed,", "source must say"),
    ("opd,step,m,reference,single,1,1000,,assumed", "missing column 'source'"),
    ("opd,step,m,reference,single,1,1000,,assumed,why,extra", "more fields"),
    (GOOD, "two rows for stage opd"),
])
def test_bad_rows_fail_with_one_line(tmp_path, line, needle):
    with pytest.raises(InputError, match=needle) as e:
        CostTable.from_csv(_table(tmp_path, GOOD, line))
    msg = str(e.value)
    assert "\n" not in msg and ("row 3" in msg or "two rows" in msg)


def test_bad_tables_fail_with_one_line(tmp_path):
    with pytest.raises(InputError, match="unknown column 'speed'"):
        CostTable.from_csv(_table(tmp_path, GOOD, header=",".join(COLUMNS) + ",speed"))
    with pytest.raises(InputError, match="not found"):
        CostTable.from_csv(tmp_path / "nope.csv")
    with pytest.raises(InputError, match="no rows"):
        CostTable.from_csv(_table(tmp_path))
    # a table without a stage an arm uses: the arm cannot be priced, and the message names the stage
    with pytest.raises(InputError, match="no rollout row for stage fkl_warmup"):
        arm_cost(ARMS["raw_teacher_bridge"], 10, ComputeModel(), CostTable.from_csv(_table(tmp_path, GOOD)))


def _cli(*args):
    from budget_planner.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(args))
    return rc, out.getvalue(), err.getvalue()


def test_cli_json_has_gpu_hours_and_the_budget_option(tmp_path):
    path = tmp_path / "plan.json"
    rc, out, err = _cli("plan", "--scenario", PAPER, "--json", str(path))
    assert rc == 0, err
    assert "GPU-hours" in out and "GPU-hours on 8 GPU(s)" in out
    d = json.loads(path.read_text())
    assert all(math.isfinite(a["gpu_hours"]) and a["gpu_hours"] > 0 for a in d["arms"].values())
    rec = d["recommendation"]["arm"]
    rc, out, err = _cli("plan", "--scenario", PAPER, "--gpus", "64",
                        "--gpu-hours", str(d["gpu_costs"]["stage_gpu_hours"][rec]["teacher_grpo"] * 0.5))
    assert rc == 0, err
    assert "over budget (never recommended): " in out and f"recommended: {rec} " not in out
    for args, needle in ((("--gpus", "0"), "--gpus must be a positive whole number"),
                         (("--gpu-hours", "-3"), "--gpu-hours must be a positive number"),
                         (("--gpu-hours", "0.01"), "no arm fits 0.01 GPU-hours on 8 GPU(s)"),
                         (("--costs", str(tmp_path / "missing.csv")), "not found")):
        rc, out, err = _cli("plan", "--scenario", PAPER, *args)
        assert rc == 2 and needle in err and len(err.strip().splitlines()) == 1, (args, err)


def test_without_the_committed_table_the_builtin_defaults_price_the_same_hours_tagged_assumed(monkeypatch, tmp_path):
    """An installed wheel has no docs/: the same rates, every one tagged assumed."""
    import theory.costs as costs

    scn = load_scenario(PAPER)
    with_table = {name: arm_cost(arm, scn.budget, scn.compute).gpu_hours for name, arm in ARMS.items()}
    monkeypatch.setattr(costs, "DEFAULT_TABLE", tmp_path / "absent.csv")
    table = CostTable.default()
    assert table.origin == "built-in defaults"
    for name, arm in ARMS.items():
        c = arm_cost(arm, scn.budget, scn.compute, table)
        assert c.gpu_hours == pytest.approx(with_table[name]) and not c.measured
