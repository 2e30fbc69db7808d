"""The matched-tuning harness on the synthetic arm: objectives, budgets, failures, refusals, splits."""

import json
import subprocess
import sys

import optuna
import pytest

from theory.errors import InputError
from tuning.evaluation import evaluate_label_matched
from tuning.harness import (TrialFailed, TrialTimeout, arm_status, check_matched, create_or_check, objective,
                            run_worker)
from tuning.interface import ArmSource, Budget, parse_space, shared_params
from tuning.protocol import build_protocol
from tuning.sources import load_arm_source
from tuning.synthetic import SyntheticArms
from tuning.testing import synthetic_study

ARMS = ("direct_grpo", "rl_teacher_bridge")
DIRECT = {"lr": 2e-3, "group_size": 4, "temperature": 0.9}


def _protocol(trials=4, options=None, **kw):
    source = load_arm_source("synthetic", options or {})
    kw.setdefault("labels", 64)
    kw.setdefault("pruner", "none")
    return build_protocol(source, list(ARMS), trials=trials, arm_options=options or {}, **kw), source


def test_objective_with_fixed_trial_runs_the_arm_on_validation():
    protocol, source = _protocol()
    trial = optuna.trial.FixedTrial(DIRECT)
    value, result = objective(trial, "direct_grpo", protocol, source, seed=3)
    direct = SyntheticArms()("direct_grpo", params=DIRECT, budget=protocol.budget, seed=3, split="val")
    assert value == pytest.approx(direct.accuracy)
    assert result.split == "val"
    assert trial.user_attrs["compute_tokens"] == direct.compute_tokens > 0
    # another seed is another training run: the objective really passes the seed through
    other, _ = objective(optuna.trial.FixedTrial(DIRECT), "direct_grpo", protocol, source, seed=4)
    assert other != pytest.approx(value)


@pytest.mark.parametrize("fault,exc,words", [("nan", TrialFailed, "nan accuracy"),
                                             ("slow", TrialTimeout, "time limit"),
                                             ("raise", RuntimeError, "synthetic fault")])
def test_objective_faults_raise_with_reason(fault, exc, words):
    protocol, source = _protocol(options={"faults": {"5": fault}}, time_limit_s=0.3)
    with pytest.raises(exc, match=words):
        objective(optuna.trial.FixedTrial(DIRECT), "direct_grpo", protocol, source, seed=5)


def test_compute_cap_fails_the_trial():
    protocol, source = _protocol(compute_cap_tokens=1000)
    with pytest.raises(TrialFailed, match="over compute cap"):
        objective(optuna.trial.FixedTrial(DIRECT), "direct_grpo", protocol, source, seed=0)


@pytest.mark.slow
def test_failures_count_against_the_budget_with_reasons(tmp_path):
    # tuning seeds are 0..5: slot 1 raises, slot 2 returns NaN, slot 3 overruns its time limit
    opts = {"faults": {"1": "raise", "2": "nan", "3": "slow"}}
    handle, protocol, source = synthetic_study(f"journal:///{tmp_path}/s.log", "f", trials=6, options=opts,
                                               time_limit_s=0.5)
    run_worker(handle, "f", source)
    for arm in ARMS:
        st = arm_status(handle, "f", arm)
        assert (st.finished, st.complete, st.failed, st.running, st.waiting) == (6, 3, 3, 0, 0)
        study = optuna.load_study(study_name=f"f.{arm}", storage=handle.storage)
        reasons = {t.user_attrs["slot"]: t.user_attrs.get("fail_reason") for t in study.trials}
        assert reasons[1].startswith("raised RuntimeError: synthetic fault")
        assert reasons[2] == "returned nan accuracy"
        assert reasons[3].startswith("timeout")
        assert reasons[0] is None and reasons[4] is None
    check_matched(handle, "f")  # failed trials are finished trials: the comparison is still matched


@pytest.mark.slow
def test_slot_zero_runs_the_declared_defaults_and_seeds_follow_slots(tmp_path):
    handle, protocol, source = synthetic_study(f"sqlite:///{tmp_path}/s.db", "d", trials=3)
    run_worker(handle, "d", source)
    for arm in ARMS:
        trials = optuna.load_study(study_name=f"d.{arm}", storage=handle.storage).trials
        by_slot = {t.user_attrs["slot"]: t for t in trials}
        assert {k: t.user_attrs["tuning_seed"] for k, t in by_slot.items()} == {0: 0, 1: 1, 2: 2}
        defaults = {p: s["default"] for p, s in protocol.search_space[arm].items()}
        assert by_slot[0].params == defaults
        assert by_slot[1].params != defaults


def test_resume_refuses_a_changed_budget_arm_set_or_space(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    handle, protocol, source = synthetic_study(url, "r", trials=4)
    with pytest.raises(InputError, match="trials_per_arm: stored 4, given 5"):
        synthetic_study(url, "r", trials=5)
    with pytest.raises(InputError, match="arm set: stored direct_grpo,rl_teacher_bridge, given direct_grpo,no_fkl"):
        synthetic_study(url, "r", trials=4, arms=("direct_grpo", "no_fkl"))
    with pytest.raises(InputError, match="compute_cap_tokens"):
        synthetic_study(url, "r", trials=4, compute_cap_tokens=10**9)
    space = SyntheticArms().param_space()
    space["direct_grpo"] = dict(space["direct_grpo"], lr={"kind": "float", "low": 1e-5, "high": 1e-2, "log": True})
    space["rl_teacher_bridge"] = dict(space["rl_teacher_bridge"], lr=space["direct_grpo"]["lr"])
    wider = ArmSource("synthetic", SyntheticArms(), space)
    changed = build_protocol(wider, list(ARMS), trials=4, labels=64, pruner="none")
    with pytest.raises(InputError, match=r"search space direct_grpo\.lr: stored"):
        create_or_check(handle, "r", changed)
    create_or_check(handle, "r", protocol)  # the unchanged protocol joins without complaint


def test_shared_params_must_have_identical_ranges():
    space = SyntheticArms().param_space()
    space["direct_grpo"] = dict(space["direct_grpo"], temperature={"kind": "float", "low": 0.1, "high": 2.0})
    with pytest.raises(InputError, match="shared param 'temperature' has different ranges"):
        shared_params(parse_space(space, list(ARMS)))
    ok = shared_params(parse_space(SyntheticArms().param_space(), list(ARMS)))
    assert ok == ["group_size", "lr", "temperature"]


def test_report_refuses_an_unmatched_study(tmp_path):
    handle, protocol, source = synthetic_study(f"journal:///{tmp_path}/s.log", "u", trials=4)
    run_worker(handle, "u", source, max_trials=3)  # arms advance together: 2 + 1 finished
    with pytest.raises(InputError, match="not a matched comparison yet: arm direct_grpo has 2/4 finished"):
        check_matched(handle, "u")
    run_worker(handle, "u", source)
    check_matched(handle, "u")


def test_no_trial_touches_the_test_split(tmp_path):
    log = tmp_path / "calls.jsonl"
    handle, protocol, source = synthetic_study(f"journal:///{tmp_path}/s.log", "v", trials=4,
                                               options={"calls_log": str(log)}, eval_seeds=10)
    run_worker(handle, "v", source)
    tuning_calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(tuning_calls) == 2 * 4
    assert {c["split"] for c in tuning_calls} == {"val"}
    assert all(c["first_problem"].startswith("val-") for c in tuning_calls)
    assert evaluate_label_matched(handle, "v", source) == 2 * 10
    eval_calls = [json.loads(line) for line in log.read_text().splitlines()][len(tuning_calls):]
    assert {c["split"] for c in eval_calls} == {"test"}
    assert {c["seed"] for c in eval_calls} == set(protocol.eval_seeds)
    assert not set(protocol.eval_seeds) & set(protocol.tuning_seeds)
    assert evaluate_label_matched(handle, "v", source) == 0  # stored evaluations are not re-run


def test_an_arm_scoring_the_wrong_split_is_a_failed_trial():
    class Cheater:
        def __call__(self, arm, *, params, budget, seed, split, report=None):
            res = SyntheticArms()(arm, params=params, budget=budget, seed=seed, split="test")
            return res

    space = SyntheticArms().param_space()
    source = ArmSource("cheater", Cheater(), space)
    protocol = build_protocol(source, list(ARMS), trials=2, labels=64, pruner="none")
    with pytest.raises(TrialFailed, match="validation split only"):
        objective(optuna.trial.FixedTrial(DIRECT), "direct_grpo", protocol, source, seed=0)


@pytest.mark.slow  # a subprocess
def test_tuning_imports_no_torch():
    code = ("import sys, tuning.cli, tuning.evaluation, tuning.figures, tuning.harness, tuning.report, "
            "tuning.reference_arms, tuning.sources, tuning.synthetic; "
            "assert 'torch' not in sys.modules, 'torch loaded'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_budget_and_protocol_validation():
    source = load_arm_source("synthetic")
    with pytest.raises(InputError, match="--trials"):
        build_protocol(source, list(ARMS), trials=0, labels=64)
    with pytest.raises(InputError, match="unknown arm"):
        build_protocol(source, ["direct_grpo", "nope"], trials=2, labels=64)
    with pytest.raises(InputError, match="listed twice"):
        build_protocol(source, ["direct_grpo", "direct_grpo"], trials=2, labels=64)
    p = build_protocol(source, list(ARMS), trials=8, labels=64)
    assert p.sampler["n_startup_trials"] == 4  # half the budget, not optuna's default 10 (= random search)
    assert p.label_accounts["rl_teacher_bridge"] == {"teacher": 64, "student": 0, "unused": 0}
    assert p.budget == Budget(labels=64, teacher_labels=None, compute_cap_tokens=None, time_limit_s=3600.0)
