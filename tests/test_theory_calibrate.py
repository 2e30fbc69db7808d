"""Calibration: recovery from data the model generates, the paper's in-sample fit, refusals."""

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from budget_planner.presets import load_scenario
from theory.calibrate import calibrate, simulate_pilot
from theory.errors import InputError
from theory.fitting import fit_scenario
from theory.scenario import loads_scenario, scenario_to_toml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from make_pilot_example import CONFIGS  # noqa: E402

RATES = ("kappa", "rho", "phi_w", "phi_o", "kl_c")


def test_calibration_recovers_known_rates_from_model_generated_pilots():
    """Three synthetic pilots (fixed seeds) from docs/examples/pilot_truth.toml, calibrated with the
    generic priors: the 95% intervals must cover the true rate in >= 13 of 15 cases, and the two
    best-identified rates (rho, phi_w) must land within 0.1 of the truth every time."""
    truth = load_scenario(ROOT / "docs/examples/pilot_truth.toml")
    covered = 0
    for seed in range(3):
        runs, problems = simulate_pilot(truth, CONFIGS, seeds=4, n_items=400, k=16, rng=np.random.default_rng(seed))
        fit = fit_scenario(calibrate(runs, problems))
        par = fit.parameters().set_index("input")
        for k in RATES:
            row, true = par.loc[f"rates.{k}"], truth.get(f"rates.{k}").value
            covered += int(row["lo"] <= true <= row["hi"])
        for k in ("rho", "phi_w"):
            assert par.loc[f"rates.{k}", "map"] == pytest.approx(truth.get(f"rates.{k}").value, abs=0.1), (seed, k)
    assert covered >= 13


def test_paper_in_sample_within_one_point():
    fit = fit_scenario(load_scenario("paper-qwen3-math"))
    res = fit.residuals()
    res = res[(res["benchmark"] == "MATH") & (res["labels"] == 14000) & res["teacher_labels"].isna()].set_index("arm")
    for arm, value in (("direct_grpo", 75.9), ("rl_teacher_bridge", 79.3), ("raw_teacher_bridge", 71.5)):
        assert res.loc[arm, "observed"] == value
        assert abs(res.loc[arm, "predicted"] - value) < 1.0, arm
        assert res.loc[arm, "lo"] < value < res.loc[arm, "hi"]
    # every assumed input is a fitted parameter (the budget and the training-length inputs excepted: the
    # observations ran at the reference lengths, where those do not act; see Tagged.fitted)
    scn = fit.scenario
    assumed = {t.path for t in scn.inputs if t.tag == "assumed"}
    assert set(fit.names) == assumed - {"inputs.budget", "inputs.dataset_size", "lengths.reuse", "lengths.bridge_reach"}
    assert fit.cov.shape == (len(fit.names), len(fit.names))
    # the shipped preset fits all ten published numbers (docs/theory.md section 9)
    assert len(scn.observations) == 10 and not scn.holdout
    assert any("inform at most 10" in w for w in fit.warnings)


def test_holdout_residuals_are_computed_not_fitted():
    from dataclasses import replace
    full = load_scenario("paper-qwen3-math")
    held = {"no_fkl", "no_opd", "rl_teacher_bridge_stage3", "replay_control"}
    fit = fit_scenario(replace(full, observations=tuple(o for o in full.observations if o.arm not in held),
                               holdout=tuple(o for o in full.observations if o.arm in held)))
    hold = fit.residuals(holdout=True)
    assert set(hold["arm"]) >= {"no_fkl", "no_opd", "rl_teacher_bridge_stage3", "replay_control"}
    assert np.isfinite(hold["predicted"]).all()
    # holdout numbers must not enter the fit: removing them leaves the MAP unchanged
    scn = fit.scenario
    assert np.allclose(fit_scenario(replace(scn, holdout=())).z_map, fit.z_map)


def _tiny_runs(rows):
    return pd.DataFrame([{"arm": a, "seed": s, "world": "w", "teacher_labels": t, "student_labels": n,
                          "compute_tokens": 1, "split": "test", "metric": "accuracy", "value": v}
                         for a, s, t, n, v in rows])


def test_calibrate_refuses_too_few_observations():
    truth = load_scenario(ROOT / "docs/examples/pilot_truth.toml")
    _, problems = simulate_pilot(truth, CONFIGS[:1], seeds=1, n_items=50, k=4, rng=np.random.default_rng(0))
    with pytest.raises(InputError, match="at least 2"):
        calibrate(_tiny_runs([("direct_grpo", 0, 0, 100, 40.0), ("direct_grpo", 1, 0, 100, 41.0)]), problems)
    scn = calibrate(_tiny_runs([("direct_grpo", 0, 0, 100, 40.0), ("direct_grpo", 0, 0, 400, 45.0)]), problems)
    fit = fit_scenario(scn)
    assert any("set by their priors alone" in w for w in fit.warnings)
    assert "one seed" in scn.description


def test_calibrated_scenario_round_trips_through_toml(tmp_path):
    truth = load_scenario(ROOT / "docs/examples/pilot_truth.toml")
    runs, problems = simulate_pilot(truth, CONFIGS, seeds=2, n_items=100, k=8, rng=np.random.default_rng(0))
    scn = calibrate(runs, problems)
    again = loads_scenario(scenario_to_toml(scn))
    assert again.inputs == scn.inputs and again.observations == scn.observations
    assert again.compute == scn.compute


def test_rates_borrowed_from_an_earlier_calibration():
    """A new student/teacher pair with only a pilot (no runs): the rates' priors are the earlier
    posterior (mean and sd of its draws), the start states come from the new pilot."""
    from theory.calibrate import posterior_priors
    truth = load_scenario(ROOT / "docs/examples/pilot_truth.toml")
    runs, problems = simulate_pilot(truth, CONFIGS, seeds=2, n_items=100, k=8, rng=np.random.default_rng(0))
    first = fit_scenario(calibrate(runs, problems, name="first"))
    borrowed = posterior_priors(first)
    kappa_i = first.names.index("rates.kappa")
    assert borrowed["rates.kappa"]["value"] == pytest.approx(float(np.exp(first.z_draws[:, kappa_i].mean())))
    assert borrowed["rates.kappa"]["sd"] == pytest.approx(float(first.z_draws[:, kappa_i].std()))
    with pytest.raises(InputError, match="no rows with metric 'accuracy'"):
        calibrate(runs[runs["metric"] == "kl0_per_token"], problems)
    second = calibrate(runs[runs["metric"] == "kl0_per_token"], problems, name="second", rates_from=first)
    assert second.observations == ()
    assert second.get("rates.kappa").value == pytest.approx(borrowed["rates.kappa"]["value"])
    assert second.get("rates.kappa").sd == pytest.approx(borrowed["rates.kappa"]["sd"])
    assert "posterior of scenario 'first'" in second.get("rates.rho").note


def test_predict_configs_matches_plan_and_narrows_with_seeds():
    from budget_planner import plan
    from budget_planner.planner import predict_configs
    p = plan("paper-qwen3-math", labels=2000)
    one = predict_configs("paper-qwen3-math", [("direct_grpo", 2000, None), ("rl_teacher_bridge_stage3", 2000, 500)])
    many = predict_configs("paper-qwen3-math", [("direct_grpo", 2000, None)], n_seeds=25)
    direct = next(a for a in p.arms if a.arm == "direct_grpo")
    assert one.loc[0, "pred_mean"] == pytest.approx(direct.accuracy)
    assert (one.loc[1, "teacher_labels"], one.loc[1, "student_labels"]) == (500, 1500)
    w1 = one.loc[0, "pred_hi"] - one.loc[0, "pred_lo"]
    assert many.loc[0, "pred_hi"] - many.loc[0, "pred_lo"] < w1
    with pytest.raises(InputError, match="unknown arm"):
        predict_configs("paper-qwen3-math", [("nope", 10, None)])


def test_same_checkpoint_keeps_its_calibrated_start_state():
    truth = load_scenario(ROOT / "docs/examples/pilot_truth.toml")
    runs, problems = simulate_pilot(truth, CONFIGS, seeds=2, n_items=100, k=8, rng=np.random.default_rng(0))
    first = fit_scenario(calibrate(runs, problems, name="first"))
    kl = runs[runs["metric"] == "kl0_per_token"]
    copy = calibrate(kl, problems, name="copy", rates_from=first, same_models={"teacher": "student"})
    i = first.names.index("student.benchmarks.pilot.compliance")
    want = float(1 / (1 + np.exp(-first.z_draws[:, i].mean())))
    assert copy.get("teacher.benchmarks.pilot.compliance").value == pytest.approx(want)
    # the student was not named: it keeps this pilot's measurement
    assert copy.get("student.benchmarks.pilot.compliance").tag == "measured"
    with pytest.raises(InputError, match="same_models needs rates_from"):
        calibrate(runs, problems, same_models={"teacher": "student"})


def test_borrowed_scenario_keeps_measured_seed_spread_and_budget():
    truth = load_scenario(ROOT / "docs/examples/pilot_truth.toml")
    runs, problems = simulate_pilot(truth, CONFIGS, seeds=2, n_items=100, k=8, rng=np.random.default_rng(0))
    first_scn = calibrate(runs, problems, name="first")
    first = fit_scenario(first_scn)
    second = calibrate(runs[runs["metric"] == "kl0_per_token"], problems, name="second", rates_from=first)
    se1, se2 = (s.get("benchmarks.pilot.eval_se") for s in (first_scn, second))
    assert se1.tag == "measured" and (se2.value, se2.tag) == (se1.value, "measured")
    assert second.budget == first_scn.budget


def test_self_distillation_pilot_measures_stage_costs():
    """Problem rows of the student after a self-distilled FKL warmup (ability -0.8) and after OPD too
    (a further -0.3): calibrate reads the costs as measured inputs, and a bridge then loses them."""
    from theory import irt
    from theory.calibrate import SELF_DISTILL_MODELS
    truth = load_scenario(ROOT / "docs/examples/pilot_truth.toml")
    runs, _ = simulate_pilot(truth, CONFIGS, seeds=2, n_items=50, k=4, rng=np.random.default_rng(0))
    problems = irt.simulate_problems([0.0, 1.5, -0.8, -1.1], [0.9, 0.8, 0.9, 0.9], 1.0, n_items=600, k=16,
                                     rng=np.random.default_rng(1),
                                     models=["student", "teacher", *SELF_DISTILL_MODELS])
    scn = calibrate(runs, problems)
    fkl, opd = scn.get("rates.cost_fkl"), scn.get("rates.cost_opd")
    assert (fkl.tag, opd.tag) == ("measured", "measured")
    assert fkl.value == pytest.approx(0.8, abs=3 * fkl.sd) and opd.value == pytest.approx(0.3, abs=3 * opd.sd)
    assert fkl.sd < 0.2 and opd.sd < 0.1  # so the 3-sd bands above are tight enough to mean something
    # without the self-distillation rows there is no cost (the original theory)
    plain = calibrate(runs, problems[problems["model"].isin(["student", "teacher"])])
    assert not plain.has("rates.cost_fkl")


def test_too_few_runs_name_what_is_missing_and_the_command_that_makes_it():
    from theory.tables import read_table

    runs = read_table(ROOT / "docs/examples/pilot_runs.csv", "runs")
    problems = read_table(ROOT / "docs/examples/pilot_problems.csv", "problems")
    with pytest.raises(InputError, match=r"holds only kl0_per_token; calibrate needs trained runs of at least 2 "
                                         r"arms: `reference-pipeline run --config CONFIG --arm direct_grpo"):
        calibrate(runs[runs["metric"] != "accuracy"], problems)  # a pilot's rows alone
    with pytest.raises(InputError, match=r"found 1 \(direct_grpo: .*--arm rl_teacher_bridge --out runs.csv`"):
        one = runs[runs["arm"] == "direct_grpo"]
        calibrate(one[one["student_labels"] == one["student_labels"].max()], problems)  # one arm, one budget
    with pytest.raises(InputError, match=r"accuracy rows exist on split 'test': give that split \(--split\)"):
        calibrate(runs, problems, split="val")
