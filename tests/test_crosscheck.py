"""theory.crosscheck and `budget-planner crosscheck`: every figure on a small example worked out by
hand, tau and split regret in their limiting cases, predictions-file validation, the CLI's JSON.
Tier 1 (pure, milliseconds) plus in-process CLI calls."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from scipy import stats

from budget_planner import cli
from theory.crosscheck import (crosscheck, kendall_tau_significant, naive_predictions, same_config_naive, split_regret,
                               validate_predictions, winkler_score)
from theory.errors import InputError

W, N = "w", 100


def run_rows(world, arm, t, s, values):
    return [{"arm": arm, "seed": i, "world": world, "teacher_labels": t, "student_labels": s, "compute_tokens": 1,
             "split": "test", "metric": "accuracy", "value": v} for i, v in enumerate(values)]


def pred(world, arm, labels, t, s, mean, lo, hi, naive, *, set_="heldout", level=0.9):
    return {"world": world, "arm": arm, "labels": labels, "teacher_labels": t, "student_labels": s, "set": set_,
            "pred_mean": mean, "pred_lo": lo, "pred_hi": hi, "level": level, "naive_mean": naive}


# Three configurations of one (world, N) group, two seeds each (se of two seeds = half their gap):
#   A direct_grpo         seeds 10, 12  mean 11  se 1
#   B rl_teacher_bridge   seeds 30, 34  mean 32  se 2
#   C raw_teacher_bridge  seeds 11, 13  mean 12  se 1
RUNS = pd.DataFrame(run_rows(W, "direct_grpo", 0, N, [10, 12]) + run_rows(W, "rl_teacher_bridge", N, 0, [30, 34])
                    + run_rows(W, "raw_teacher_bridge", 0, 0, [11, 13]))
#          pred  interval      naive   |err|  |err|/se  covered  Winkler (alpha 0.1: misses cost 20 x)
#   A      12    [10, 14]      15      1      1         yes      4
#   B      28    [27, 31]      31      4      2         no       4 + 20 * (32 - 31) = 24
#   C      10    [9, 11.5]     12      2      2         no       2.5 + 20 * (12 - 11.5) = 12.5
PREDS = pd.DataFrame([pred(W, "direct_grpo", N, 0, N, 12, 10, 14, 15),
                      pred(W, "rl_teacher_bridge", N, N, 0, 28, 27, 31, 31),
                      pred(W, "raw_teacher_bridge", N, 0, 0, 10, 9, 11.5, 12)])


def test_design_of_the_example_significance():
    # the example relies on these (scipy directly): A-B and C-B differ at p < 0.05, A-C does not
    p = lambda a, b: stats.ttest_ind(a, b, equal_var=False).pvalue  # noqa: E731
    assert p([10, 12], [30, 34]) < 0.05 and p([11, 13], [30, 34]) < 0.05 and p([10, 12], [11, 13]) > 0.05


def test_every_figure_by_hand():
    cc = crosscheck(RUNS, PREDS)
    assert cc.n_configs == 3
    cfg = cc.to_frame().set_index("arm")
    assert list(cfg.loc[["direct_grpo", "rl_teacher_bridge", "raw_teacher_bridge"], "se"]) == pytest.approx([1, 2, 1])
    assert cc.mae == pytest.approx((1 + 4 + 2) / 3)
    # the mean of per-config ratios (1, 2, 2), not mean|err| / mean se = (7/3) / (4/3) = 1.75
    assert cc.mae_over_se == pytest.approx(5 / 3)
    assert cc.coverage == pytest.approx(1 / 3)
    assert cc.mean_interval_width == pytest.approx((4 + 4 + 2.5) / 3)
    assert cc.interval_score == pytest.approx((4 + 24 + 12.5) / 3)
    assert cc.level == pytest.approx(0.9)
    assert cc.naive_mae == pytest.approx((4 + 1 + 0) / 3)
    # significant pairs A-B and C-B are ordered right (B above both); A-C is not significant, and
    # counting it (predicted A > C, measured C > A) would have given (2 - 1) / 3
    assert cc.n_significant_pairs == 2 and cc.kendall_tau == pytest.approx(1.0)
    assert cc.split_regret is None  # no rl_teacher_bridge_stage3 splits here
    assert cc.per_world == {W: {"n_configs": 3, "mae": pytest.approx(7 / 3), "naive_mae": pytest.approx(5 / 3),
                                "coverage": pytest.approx(1 / 3)}}


def test_winkler_score_by_hand():
    assert winkler_score(10, 14, 12, 0.1) == pytest.approx(4)
    assert winkler_score(10, 14, 9, 0.2) == pytest.approx(4 + 10 * 1)
    assert winkler_score(10, 14, 15.5, 0.5) == pytest.approx(4 + 4 * 1.5)


def _group(preds_by_arm: dict[str, float]):
    """Three configs with clearly separated seeds (means 10 < 20 < 30); predictions as given."""
    arms = [("direct_grpo", 0, N, [9, 10, 11]), ("rl_teacher_bridge", N, 0, [19, 20, 21]),
            ("raw_teacher_bridge", 0, 0, [29, 30, 31])]
    runs = pd.DataFrame([r for a, t, s, v in arms for r in run_rows(W, a, t, s, v)])
    preds = pd.DataFrame([pred(W, a, N, t, s, preds_by_arm[a], 0, 100, 50) for a, t, s, _ in arms])
    return runs, preds


def test_tau_perfect_reversed_and_tie():
    assert crosscheck(*_group({"direct_grpo": 1, "rl_teacher_bridge": 2, "raw_teacher_bridge": 3})).kendall_tau == 1.0
    assert crosscheck(*_group({"direct_grpo": 3, "rl_teacher_bridge": 2, "raw_teacher_bridge": 1})).kendall_tau == -1.0
    # a predicted tie between the first two counts as neither: (2 concordant - 0) / 3 pairs
    cc = crosscheck(*_group({"direct_grpo": 2, "rl_teacher_bridge": 2, "raw_teacher_bridge": 3}))
    assert cc.n_significant_pairs == 3 and cc.kendall_tau == pytest.approx(2 / 3)


def test_tau_only_within_a_budget_and_none_without_significant_pairs():
    runs = pd.DataFrame(run_rows(W, "direct_grpo", 0, 50, [10, 12]) + run_rows(W, "direct_grpo", 0, N, [30, 34]))
    preds = pd.DataFrame([pred(W, "direct_grpo", 50, 0, 50, 40, 0, 100, 1),
                          pred(W, "direct_grpo", N, 0, N, 20, 0, 100, 1)])
    cc = crosscheck(runs, preds)  # different N: never a pair, however wrong their order
    assert cc.kendall_tau is None and cc.n_significant_pairs == 0
    seeds = [pd.Series([10.0, 12.0]).to_numpy(), pd.Series([11.0, 13.0]).to_numpy()]
    cfg = pd.DataFrame({"world": [W, W], "labels": [N, N], "p": [1.0, 2.0]})
    assert kendall_tau_significant(cfg, "p", seeds) == (None, 0)


def _splits(preds_t: dict[int, float]):
    # rl_teacher_bridge_stage3 at N = 100: measured means 40 (t=25), 45 (t=50), 42 (t=75)
    meas = {25: [39, 41], 50: [44, 46], 75: [41, 43]}
    runs = pd.DataFrame([r for t, v in meas.items() for r in run_rows(W, "rl_teacher_bridge_stage3", t, N - t, v)])
    preds = pd.DataFrame([pred(W, "rl_teacher_bridge_stage3", N, t, N - t, p, 0, 100, 50) for t, p in preds_t.items()])
    return runs, preds


def test_split_regret_zero_when_predicted_best_is_measured_best():
    cc = crosscheck(*_splits({25: 41, 50: 44, 75: 43}))
    assert cc.split_regret == 0.0
    assert cc.split_regret_groups[0]["chosen_teacher_labels"] == 50 == cc.split_regret_groups[0]["best_teacher_labels"]


def test_split_regret_is_the_gap_otherwise():
    cc = crosscheck(*_splits({25: 46, 50: 44, 75: 43}))
    assert cc.split_regret == pytest.approx(45 - 40)
    # the naive column predicts 50 for every split: a predicted tie picks the smallest teacher share
    # (t = 25), measured 40 against the best 45
    assert cc.naive_split_regret == pytest.approx(5.0)
    cfg = cc.to_frame().assign(flat=1.0, best_last=[1.0, 2.0, 2.0])
    assert split_regret(cfg, "flat")[1][0]["chosen_teacher_labels"] == 25
    assert split_regret(cfg, "best_last")[0] == 0.0  # tie between t=50 (best) and t=75: t=50 is chosen


def test_unmatched_predictions_warned_and_unpredicted_runs_counted():
    runs = pd.concat([RUNS, pd.DataFrame(run_rows(W, "no_opd", N, 0, [1, 2]))], ignore_index=True)
    preds = pd.concat([PREDS, pd.DataFrame([pred(W, "no_fkl", N, N, 0, 5, 4, 6, 5)])], ignore_index=True)
    cc = crosscheck(runs, preds)
    assert cc.n_configs == 3 and len(cc.unmatched_predictions) == 1 and "no_fkl" in cc.unmatched_predictions[0]
    assert cc.unpredicted_runs == 1
    assert cc.mae == pytest.approx(7 / 3)  # the unmatched row changes nothing


def test_no_match_one_seed_and_set_errors():
    with pytest.raises(InputError, match="no prediction in set 'heldout' matches"):
        crosscheck(RUNS, PREDS.assign(world="other"))
    one = pd.DataFrame(run_rows(W, "direct_grpo", 0, N, [10]))
    with pytest.raises(InputError, match="arm=direct_grpo.*1 seed"):
        crosscheck(one, PREDS.iloc[:1])
    with pytest.raises(InputError, match="no rows in set 'calibration'"):
        crosscheck(RUNS, PREDS, set_name="calibration")


def test_a_label_free_arm_predicted_at_two_budgets_is_refused_not_counted_twice():
    # raw_teacher_bridge uses no labels: its rows at N and 2N share one run key, so both would score the
    # same two seeds; refused with one line naming both budgets, and fine again with one of the rows
    twice = pd.concat([PREDS, pd.DataFrame([pred(W, "raw_teacher_bridge", 2 * N, 0, 0, 11, 9, 13, 12)])],
                      ignore_index=True)
    with pytest.raises(InputError, match=r"labels 100 and 200 .*raw_teacher_bridge.*score the same runs twice"):
        crosscheck(RUNS, twice)
    assert crosscheck(RUNS, twice.drop(index=2)).n_configs == 3
    # a repeated key that no run matches scores nothing twice, so it is not an error
    other = pd.concat([PREDS, pd.DataFrame([pred("v", "raw_teacher_bridge", n, 0, 0, 11, 9, 13, 12)
                                            for n in (N, 2 * N)])], ignore_index=True)
    assert crosscheck(RUNS, other).n_configs == 3


def test_calibration_set_is_separate():
    preds = pd.concat([PREDS, PREDS.assign(set="calibration", pred_mean=[11.0, 32.0, 12.0])], ignore_index=True)
    assert crosscheck(RUNS, preds, set_name="calibration").mae == 0.0
    assert crosscheck(RUNS, preds).mae == pytest.approx(7 / 3)


@pytest.mark.parametrize("change,needle", [
    (lambda d: d.drop(columns=["pred_lo"]), "missing column 'pred_lo'"),
    (lambda d: d.assign(pred_lo=[15.0, 27.0, 9.0]), "pred_lo > pred_hi for world=w arm=direct_grpo"),
    (lambda d: d.assign(arm=["direct_grpo", "bogus", "raw_teacher_bridge"]), "unknown arm 'bogus'"),
    (lambda d: d.assign(set=["heldout", "test", "heldout"]), "column 'set' has 'test'"),
    (lambda d: d.assign(level=[0.9, 90.0, 0.9]), "'level' must lie in (0, 1)"),
    (lambda d: d.assign(pred_mean=[0.12, 0.28, 0.1], pred_lo=0.0, pred_hi=1.0, naive_mean=50.0), "looks like fractions"),
    (lambda d: d.assign(student_labels=[N, 7, 0]), "disagrees with the registry's label account"),
    (lambda d: pd.concat([d, d.iloc[:1]]), "duplicate row"),
])
def test_bad_predictions_one_line_error(change, needle):
    with pytest.raises(InputError) as e:
        validate_predictions(change(PREDS.copy()))
    assert needle in str(e.value) and "\n" not in str(e.value)


# ---------- CLI ----------

@pytest.fixture
def files(tmp_path):
    RUNS.to_csv(tmp_path / "runs.csv", index=False)
    PREDS.to_csv(tmp_path / "preds.csv", index=False)
    return tmp_path


def test_cli_prints_and_writes_json(files, capsys):
    out = files / "cc.json"
    assert cli.main(["crosscheck", "--runs", str(files / "runs.csv"), "--predictions", str(files / "preds.csv"),
                     "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "direct_grpo" in text and "mae 2.33" in text and "kendall tau 1.00 over 2" in text
    d = json.loads(out.read_text())
    for key in ("mae", "mae_over_se", "coverage", "mean_interval_width", "kendall_tau", "split_regret", "naive_mae",
                "n_configs", "n_significant_pairs", "interval_score", "level", "per_world", "per_config",
                "decision_regret", "crossover", "by_world"):
        assert key in d
    assert d["mae"] == pytest.approx(7 / 3) and d["split_regret"] is None and len(d["per_config"]) == 3
    # no recommended column: no decision regret; one budget per arm: a measured d, never a crossover
    assert d["decision_regret"] is None and d["crossover"][W]["measured"]["d"] == pytest.approx([32 - 11])
    assert d["crossover"][W]["measured"]["crossovers"] == [] and d["by_world"][W]["mean_interval_width"] == pytest.approx(10.5 / 3)
    assert "crossover w (rl_teacher_bridge - direct_grpo): predicted none; measured none" in text


@pytest.mark.parametrize("change,needle", [
    (lambda d: d.drop(columns=["naive_mean"]), "missing column 'naive_mean'"),
    (lambda d: d.assign(pred_hi=[9.0, 31.0, 11.5]), "pred_lo > pred_hi"),
    (lambda d: d.assign(arm="nope"), "unknown arm 'nope'"),
    (lambda d: d.assign(set="held-out"), "column 'set' has 'held-out'"),
])
def test_cli_bad_predictions_exit_2_one_line(files, change, needle, capsys):
    change(PREDS.copy()).to_csv(files / "bad.csv", index=False)
    rc = cli.main(["crosscheck", "--runs", str(files / "runs.csv"), "--predictions", str(files / "bad.csv")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: predictions") and err.count("\n") == 1 and needle in err


def test_cli_bad_flags(files, capsys):
    rc = cli.main(["crosscheck", "--runs", str(files / "runs.csv"), "--predictions", str(files / "preds.csv"),
                   "--set", "train"])
    assert rc == 2 and "--set must be one of" in capsys.readouterr().err
    rc = cli.main(["crosscheck", "--runs", str(files / "nope.csv"), "--predictions", str(files / "preds.csv")])
    assert rc == 2 and "no such file" in capsys.readouterr().err


def test_identical_seeds_leave_mae_over_se_and_json_stays_valid(tmp_path):
    runs = pd.concat([RUNS, pd.DataFrame(run_rows(W, "no_opd", N, 0, [7, 7]))], ignore_index=True)
    preds = pd.concat([PREDS, pd.DataFrame([pred(W, "no_opd", N, N, 0, 8, 6, 9, 7)])], ignore_index=True)
    cc = crosscheck(runs, preds)
    assert cc.mae_over_se == pytest.approx(5 / 3)  # the se = 0 config is left out of the ratio only
    assert cc.mae == pytest.approx((7 + 1) / 4) and any("se = 0" in w for w in cc.warnings)
    d = json.loads(json.dumps(cc.to_dict(), allow_nan=False))
    assert [c["abs_err_over_se"] for c in d["per_config"] if c["arm"] == "no_opd"] == [None]


@pytest.mark.slow
def test_plot_draws_one_point_per_configuration(tmp_path):
    fig = crosscheck(RUNS, PREDS).plot()
    ax = fig.axes[0]
    # one errorbar container per configuration, each at (measured mean, predicted mean)
    centers = sorted((float(c.lines[0].get_xdata()[0]), float(c.lines[0].get_ydata()[0])) for c in ax.containers)
    assert centers == [(11.0, 12.0), (12.0, 10.0), (32.0, 28.0)]
    crosscheck(RUNS, PREDS).plot(tmp_path / "cc.png")
    assert (tmp_path / "cc.png").stat().st_size > 10_000


@pytest.mark.slow
def test_committed_crosscheck_report_recomputes_from_committed_tables():
    """docs/results: the committed report is what the committed runs and predictions give today."""
    from pathlib import Path
    from theory.crosscheck import read_predictions
    from theory.tables import read_table
    res = Path(__file__).resolve().parent.parent / "docs" / "results"
    def runs_of(*stems):
        return pd.concat([read_table(res / f"{s}_runs.csv", "runs") for s in stems], ignore_index=True)
    posthoc = {"posthoc_costs": ("crosscheck", "direct_teacher"),
               "posthoc_style": ("crosscheck", "direct_teacher", "compliant_teacher")}
    for stem in ("crosscheck", "direct_teacher", "compliant_teacher", *posthoc):
        preds, rep = res / f"{stem}_predictions.csv", res / f"{stem}_report.json"
        runs = runs_of(*posthoc.get(stem, (stem,)))
        want = json.loads(rep.read_text())
        got = crosscheck(runs, read_predictions(preds)).to_dict()
        for k in ("mae", "mae_over_se", "coverage", "mean_interval_width", "kendall_tau", "split_regret", "naive_mae"):
            assert got[k] == pytest.approx(want[k], nan_ok=True), (stem, k)


# ---------- the pre-registered naive predictors ----------

# calibration means: direct_grpo 20 at N = 64, 30 at N = 256 (slope 5 points per doubling);
# rl_teacher_bridge 40 and 44 (slope 2); a validation row that must be ignored
CAL = pd.DataFrame(run_rows(W, "direct_grpo", 0, 64, [18.0, 22.0]) + run_rows(W, "direct_grpo", 0, 256, [30.0, 30.0])
                   + run_rows(W, "rl_teacher_bridge", 64, 0, [40.0]) + run_rows(W, "rl_teacher_bridge", 256, 0, [44.0])
                   + [{**run_rows(W, "direct_grpo", 0, 64, [99.0])[0], "split": "val"}])


def test_naive_predictions_follow_each_arms_log2_line():
    cfgs = [("any", "direct_grpo", 128, None), ("any", "direct_grpo", 512, None), ("any", "direct_grpo", 32, None),
            ("any", "rl_teacher_bridge", 128, None)]
    assert naive_predictions(CAL, cfgs) == pytest.approx([25.0, 35.0, 15.0, 42.0])


def test_naive_predictions_borrow_a_line_and_clip():
    # no calibration runs of its own: a teacher-distilling arm takes the RL bridge's line (raw teacher too)
    cfgs = [(W, "no_fkl", 128, None), (W, "raw_teacher_bridge", 128, None), (W, "direct_grpo", 2**30, None),
            (W, "direct_grpo", 1, None)]
    assert naive_predictions(CAL, cfgs) == pytest.approx([42.0, 42.0, 100.0, 0.0])
    # two teacher arms calibrated: which line an uncalibrated one borrows is ambiguous, refused
    two = pd.concat([CAL, pd.DataFrame(run_rows(W, "no_opd", 64, 0, [30.0]))], ignore_index=True)
    assert naive_predictions(two, [(W, "no_opd", 64, None)]) == pytest.approx([30.0])
    with pytest.raises(InputError, match="borrow a line"):
        naive_predictions(two, [(W, "no_fkl", 64, None)])


def test_same_config_naive_takes_the_nearest_teacher_share():
    runs = pd.DataFrame(run_rows(W, "rl_teacher_bridge_stage3", 64, 192, [50.0, 52.0])
                        + run_rows(W, "rl_teacher_bridge_stage3", 192, 64, [60.0])
                        + run_rows(W, "direct_grpo", 0, 256, [20.0, 24.0]))
    cfgs = [("other", "rl_teacher_bridge_stage3", 256, 100), ("other", "rl_teacher_bridge_stage3", 256, 160),
            ("other", "direct_grpo", 256, None)]
    assert same_config_naive(runs, cfgs) == pytest.approx([51.0, 60.0, 22.0])


def test_naive_predictors_reproduce_the_committed_naive_means():
    """docs/results: the naive_mean column of the committed predictions is what these functions give
    on the committed calibration runs (to the file's three decimals)."""
    import numpy as np
    from pathlib import Path
    from theory.arms import ARMS
    from theory.tables import read_table
    res = Path(__file__).resolve().parent.parent / "docs" / "results"
    old = read_table(res / "legacy" / "toy_ablation.csv", "runs")
    old = old[old["arm"].isin(("direct_grpo", "rl_teacher_bridge")) & old["seed"].isin(range(10))
              & (old["split"] == "test")]  # the declared calibration subset (scripts/crosscheck_toy.py)
    cal = pd.concat([old, read_table(res / "crosscheck_calibration_runs.csv", "runs")], ignore_index=True)
    for naive, runs, stem in ((naive_predictions, cal, "crosscheck"),
                              (same_config_naive, read_table(res / "direct_teacher_runs.csv", "runs"),
                               "compliant_teacher")):
        pred = pd.read_csv(res / f"{stem}_predictions.csv")
        cfgs = [(r.world, r.arm, int(r.labels), int(r.teacher_labels) if ARMS[r.arm].splits_labels else None)
                for r in pred.itertuples()]
        np.testing.assert_allclose(naive(runs, cfgs), pred["naive_mean"], atol=1.5e-3, err_msg=stem)

