"""The plan on the label x compute plane (issue 23): per-arm plateau, stage lengths, tokens and GPU-hours,
frontier, the recommendation within a GPU-hour budget, and the properties the issue asks of every preset."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from budget_planner.compute import GRPO_PASSES, PLATEAU_POINTS, VALIDATION, accuracy_at, hours_for
from budget_planner.planner import plan
from budget_planner.presets import preset_names
from theory.arms import ARMS, Stage, candidate_arms
from theory.errors import InputError

PRESETS = preset_names()


@pytest.fixture(scope="module")
def plans():
    return {name: plan(name) for name in PRESETS}


def test_cli_json_gives_each_arm_its_plateau_lengths_cost_and_frontier():
    out = subprocess.run([sys.executable, "-m", "budget_planner", "plan", "--scenario", "paper-qwen3-math",
                          "--json", "-"], capture_output=True, text=True, check=True).stdout
    d = json.loads(out)
    for name, a in d["arms"].items():
        lo, hi = a["plateau"]["ci"]
        assert lo <= a["plateau"]["accuracy"] <= hi, name
        assert set(a["stage_lengths"]) == {s.value for s in ARMS[name].stages}
        assert a["tokens_to_plateau"] > 0 and a["gpu_hours_to_plateau"] > 0
        front = np.array(a["frontier"])  # (gpu_hours, accuracy, lo, hi)
        assert front.shape[1] == 4 and len(front) >= 1
        on = ((np.abs(front[:, 0] - a["gpu_hours_to_plateau"]) < 1e-3)
              & (np.abs(front[:, 1] - a["plateau"]["accuracy"]) < 0.01))
        assert on.sum() == 1, name  # the plateau is a frontier point
    c = d["compute"]
    assert c["rule"].startswith("mean over") and c["recommended_at_plateau"] in candidate_arms()
    assert c["exchange_rate"]["labels"] == 1000


@pytest.mark.parametrize("name", PRESETS)
def test_every_frontier_rises_with_compute_and_the_plateau_is_on_it(plans, name):
    for arm, ac in plans[name].compute["arms"].items():
        h = np.array([q.gpu_hours for q in ac.frontier])
        a = np.array([q.accuracy for q in ac.frontier])
        assert np.all(np.diff(h) > 0) and np.all(np.diff(a) > 0), (name, arm)  # never falls as compute grows
        assert ac.plateau in ac.frontier
        assert ac.plateau.accuracy >= a.max() - PLATEAU_POINTS
        # the cheapest point within PLATEAU_POINTS of the best: every cheaper one is further
        assert all(q.accuracy < a.max() - PLATEAU_POINTS for q in ac.frontier if q.gpu_hours < ac.plateau.gpu_hours)


@pytest.mark.parametrize("name", PRESETS)
def test_more_gpu_hours_never_lower_the_recommended_accuracy(plans, name):
    cheapest = min(plans[name].compute["arms"][a].frontier[0].gpu_hours for a in candidate_arms())
    top = max(plans[name].compute["arms"][a].plateau.gpu_hours for a in candidate_arms())
    prev = -np.inf
    for h in np.geomspace(cheapest, 2 * top, 7):
        c = plan(name, gpu_hours=h).compute
        got = c["within_budget"]
        assert got["gpu_hours"] <= h + 1e-9
        assert got["accuracy"] >= prev - 1e-9, (name, h)
        prev = got["accuracy"]


@pytest.mark.parametrize("name", PRESETS)
def test_a_budget_equal_to_an_arms_plateau_cost_returns_its_plateau_lengths(plans, name):
    for arm in candidate_arms():
        p = plans[name].compute["arms"][arm].plateau
        c = plan(name, gpu_hours=p.gpu_hours).compute
        got = c["arms"][arm].at_budget
        assert got.lengths == p.lengths and got.gpu_hours == pytest.approx(p.gpu_hours), (name, arm)


def test_the_pilots_hours_come_out_of_the_budget_and_validation_is_counted():
    base = plan("paper-qwen3-math", gpu_hours=400.0).compute
    less = plan("paper-qwen3-math", gpu_hours=400.0, pilot_gpu_hours=300.0).compute
    assert less["within_budget"]["gpu_hours"] <= 100.0 + 1e-9 < base["within_budget"]["gpu_hours"]
    with pytest.raises(InputError, match="no arm fits"):
        plan("paper-qwen3-math", gpu_hours=1.0, pilot_gpu_hours=1.0)
    with pytest.raises(InputError, match="pilot_gpu_hours"):
        plan("paper-qwen3-math", gpu_hours=10.0, pilot_gpu_hours=-1)
    # validation is priced: the plateau's GPU-hours exceed its training tokens' hours alone
    pl = plan("paper-qwen3-math")
    direct = pl.compute["arms"]["direct_grpo"]
    # direct GRPO rises with every pass: the reference length (15 passes) is a frontier point, priced at
    # the table's training hours plus its validation
    (ref,) = [q for q in direct.frontier if q.lengths["student_grpo"] == 15.0]
    assert ref.gpu_hours > pl.arm("direct_grpo").gpu_hours


@pytest.mark.parametrize("config", ["paper_world", "modes_k05", "modes_k15", "modes_k30"])
def test_validation_matches_the_plateau_configs(config):
    """The planner prices the validation the plateau reruns will run."""
    from reference.config import load_config
    p = load_config(f"configs/plateau/{config}.toml").plateau
    assert (VALIDATION["problems"], VALIDATION["samples"]) == (p.problems, p.k)
    assert VALIDATION["points"] == round(1 + 1 / p.every)


def test_the_grid_holds_the_reference_length():
    assert 1.0 in GRPO_PASSES
    pl = plan("modes-k15", labels=64)
    assert pl.compute["grid"]["reference_label_passes"] == 3.0
    direct = pl.compute["arms"]["direct_grpo"]
    # at the reference length the compute plane's value is the mean of the original predictions (the
    # dynamics without lengths) over the same first COMPUTE_DRAWS posterior draws, to rounding
    from budget_planner.compute import COMPUTE_DRAWS
    from budget_planner.planner import plan_setup
    from budget_planner.presets import load_scenario
    from theory.dynamics import predict_arm
    (at_ref,) = [q for q in direct.frontier if q.lengths["student_grpo"] == 3.0]
    setup = plan_setup(load_scenario("modes-k15"), None)
    original = predict_arm(setup.setting, ARMS["direct_grpo"], 64)[1:1 + COMPUTE_DRAWS, setup.b]
    assert at_ref.accuracy == pytest.approx(float(original.mean()), abs=1e-9)


def test_frontier_reads_interpolate_in_log_hours():
    from budget_planner.compute import GridPoint
    f = (GridPoint({}, 1, 1.0, 10.0), GridPoint({}, 2, 4.0, 20.0))
    assert hours_for(f, 15.0) == pytest.approx(2.0)  # halfway in log hours
    assert accuracy_at(f, 2.0) == pytest.approx(15.0)
    assert hours_for(f, 25.0) is None and accuracy_at(f, 0.5) is None
    assert hours_for(f, 5.0) == 1.0


def test_capped_and_scheduled_predictions_read_a_plateau_run():
    """predict_capped: the best length within the caps (and a token budget); predict_schedule: what a run
    walking its stages to their plateau lengths has by a budget: nothing before the student's first
    stage, never less with more tokens, the capped plateau's student once every stage is done."""
    from budget_planner.compute import predict_capped, predict_schedule
    from budget_planner.planner import plan_setup
    from budget_planner.presets import load_scenario
    setup = plan_setup(load_scenario("modes-k15"), None)
    caps = {"teacher_grpo": 100.0, "student_grpo": 100.0, "fkl_warmup": 3.0, "opd": 3.0}
    cap = predict_capped(setup, "rl_teacher_bridge", 64, caps)
    assert set(cap["lengths"]) == {"teacher_grpo", "fkl_warmup", "opd"}
    assert all(cap["lengths"][s] <= caps[s] for s in cap["lengths"])
    assert cap["lo"] <= cap["accuracy"] <= cap["hi"] and cap["plateau_tokens"] <= cap["tokens"]
    tight = predict_capped(setup, "rl_teacher_bridge", 64, caps, tokens=cap["tokens"] / 4)
    assert tight["tokens"] <= cap["tokens"] / 4 and tight["accuracy"] <= cap["accuracy"]
    sched = cap["lengths"]
    teacher_tokens = setup.setting.compute.stage_tokens(Stage.TEACHER_GRPO, 64, sched["teacher_grpo"])
    assert np.isnan(predict_schedule(setup, "rl_teacher_bridge", 64, sched, 0.5 * teacher_tokens)["accuracy"])
    accs = [predict_schedule(setup, "rl_teacher_bridge", 64, sched, f * cap["tokens"])["accuracy"]
            for f in (0.5, 0.7, 0.9, 1.0, 2.0)]
    assert np.all(np.diff(accs) >= -1e-9)
    assert accs[-1] == pytest.approx(cap["accuracy"])
