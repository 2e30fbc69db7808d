"""theory.crosscheck with compute levels (issue 23): the optional `compute` / `tokens` columns, the
crossover in compute, the "seen" set and the aims' verdicts, on a synthetic table whose answers are
known by construction; legacy files score as before. Tier 1 (pure, about a second) plus a CLI call."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from budget_planner import cli
from theory.arms import ARMS
from theory.crosscheck import aims, crosscheck, read_predictions, read_runs, validate_compute_runs, validate_predictions
from theory.errors import InputError

DIRECT, BRIDGE = "direct_grpo", "rl_teacher_bridge"
TOKENS = {"low": 2**20, "plateau": 2**22}
# Measured means (the truth). Seeds are mean - 1, mean, mean + 1: se = 1 / sqrt(3) everywhere.
#                        N = 64, 256, 1024      d = bridge - direct
TRUTH = {("wa", "plateau"): {DIRECT: (20, 30, 40), BRIDGE: (16, 33, 48)},  # -4, +3, +8
         ("wa", "low"): {DIRECT: (15, 25, 35), BRIDGE: (8, 20, 30)},  # -7, -5, -5
         ("wb", "plateau"): {DIRECT: (10, 20, 30), BRIDGE: (30, 36, 42)},  # +20, +16, +12
         ("wb", "low"): {DIRECT: (8, 15, 25), BRIDGE: (6, 11, 19)}}  # -2, -4, -6
BUDGETS = (64, 256, 1024)
# Predictions: direct = truth + 1, bridge = truth - 1 (|err| = 1 everywhere, predicted d = measured d - 2,
# never exactly 0); intervals: direct [pred - 0.5, pred + 0.5] misses, bridge [pred - 2, pred + 2] covers;
# naive = truth + 3. Recommended: the higher prediction, except at wb / plateau / 1024, where direct is
# picked against the measured best bridge (regret 42 - 30 = 12).
OFFSET, HALF_WIDTH = {DIRECT: 1.0, BRIDGE: -1.0}, {DIRECT: 0.5, BRIDGE: 2.0}


def _acct(arm, n):
    a = ARMS[arm].labels(n)
    return a.teacher, a.student


def make_runs(truth=TRUTH, *, compute=True):
    rows = []
    for (world, level), arms in truth.items():
        for arm, means in arms.items():
            for n, m in zip(BUDGETS, means):
                t, s = _acct(arm, n)
                rows += [{"arm": arm, "seed": k, "world": world, "teacher_labels": t, "student_labels": s,
                          "compute_tokens": TOKENS[level], "split": "test", "metric": "accuracy",
                          "value": float(m + dv), **({"compute": level} if compute else {})}
                         for k, dv in enumerate((-1, 0, 1))]
    return pd.DataFrame(rows)


def make_preds(truth=TRUTH, *, set_="heldout"):
    rows = []
    for (world, level), arms in truth.items():
        for i, n in enumerate(BUDGETS):
            mean = {arm: arms[arm][i] + OFFSET[arm] for arm in arms}
            pick = DIRECT if (world, level, n) == ("wb", "plateau", 1024) else max(mean, key=mean.get)
            for arm in (DIRECT, BRIDGE):
                t, s = _acct(arm, n)
                rows.append({"world": world, "arm": arm, "labels": n, "teacher_labels": t, "student_labels": s,
                             "set": set_, "pred_mean": mean[arm], "pred_lo": mean[arm] - HALF_WIDTH[arm],
                             "pred_hi": mean[arm] + HALF_WIDTH[arm], "level": 0.9,
                             "naive_mean": arms[arm][i] + 3.0, "recommended": int(arm == pick),
                             "compute": level, "tokens": TOKENS[level]})
    return pd.DataFrame(rows)


RUNS, PREDS = make_runs(), make_preds()


def test_figures_by_construction():
    cc = crosscheck(RUNS, PREDS)
    assert cc.n_configs == 24 and cc.unmatched_predictions == () and cc.unpredicted_runs == 0
    assert cc.mae == pytest.approx(1.0) and cc.naive_mae == pytest.approx(3.0)
    assert cc.mae_over_se == pytest.approx(np.sqrt(3))  # |err| = 1, se = 1/sqrt(3)
    assert cc.coverage == pytest.approx(0.5)  # every bridge interval covers, no direct one does
    assert cc.mean_interval_width == pytest.approx((1 + 4) / 2)
    # one decision per (world, compute, labels): 12 groups, all right but one with regret 12
    dr = cc.decision_regret
    assert len(dr["groups"]) == 12 and dr["mean"] == pytest.approx(1.0) and dr["max"] == pytest.approx(12.0)
    worst = max(dr["groups"], key=lambda g: g["regret"])
    assert (worst["world"], worst["compute"], worst["labels"], worst["best_arm"]) == ("wb", "plateau", 1024, BRIDGE)
    cfg = cc.to_frame()
    assert set(cfg["compute"]) == {"low", "plateau"} and set(cfg["tokens"]) == set(TOKENS.values())


def test_crossover_in_n_per_world_and_compute_level():
    c = crosscheck(RUNS, PREDS).crossover
    assert set(c) == {"wa@low", "wa@plateau", "wb@low", "wb@plateau"}
    wa = c["wa@plateau"]
    assert (wa["world"], wa["compute"]) == ("wa", "plateau")
    assert wa["measured"]["d"] == pytest.approx([-4, 3, 8]) and wa["predicted"]["d"] == pytest.approx([-6, 1, 6])
    # zero of d in log2 N between 64 and 256: measured 6 + 2 * 4/7, predicted 6 + 2 * 6/7
    assert wa["measured"]["crossovers"][0]["budget"] == pytest.approx(2 ** (6 + 8 / 7))
    assert wa["predicted"]["crossovers"][0]["budget"] == pytest.approx(2 ** (6 + 12 / 7))
    assert wa["ratio"] == pytest.approx(2 ** (4 / 7)) and wa["within_factor_2"] is True
    for key in ("wa@low", "wb@low", "wb@plateau"):
        assert c[key]["measured"]["crossovers"] == [] and c[key]["ratio"] is None


def test_crossover_in_compute_interpolates_in_log2_tokens():
    cx = {(x["world"], x["labels"]): x for x in crosscheck(RUNS, PREDS).crossover_compute}
    assert set(cx) == {(w, n) for w in ("wa", "wb") for n in BUDGETS}
    x = cx[("wa", 256)]
    assert x["measured"]["compute"] == ["low", "plateau"] and x["measured"]["tokens"] == [2**20, 2**22]
    assert x["measured"]["d"] == pytest.approx([-5, 3]) and x["predicted"]["d"] == pytest.approx([-7, 1])
    # log2 tokens from 20 to 22: measured zero at 20 + 2 * 5/8, predicted at 20 + 2 * 7/8
    assert x["measured"]["crossovers"][0]["budget"] == pytest.approx(2**21.25)
    assert x["predicted"]["crossovers"][0]["direction"] == "bridge_wins_above"
    assert x["ratio"] == pytest.approx(2**0.5) and x["within_factor_2"] is True
    # the others: (measured d low -> plateau, predicted d) and the ratio 2 ** (gap in log2 tokens)
    for key, exponent in {("wa", 1024): 4 / 13, ("wb", 64): 2 / 11, ("wb", 256): 0.2, ("wb", 1024): 2 / 9}.items():
        assert cx[key]["ratio"] == pytest.approx(2**exponent), key
    assert cx[("wa", 64)]["measured"]["crossovers"] == [] and cx[("wa", 64)]["ratio"] is None


def test_aims_one_met_one_missed():
    a = aims(crosscheck(RUNS, PREDS))
    assert a["mae"]["verdict"] == "met" and a["mae"]["mae"] == pytest.approx(1.0)  # 1 <= 3 and <= 0.5 x 3
    assert a["coverage"]["verdict"] == "missed" and a["coverage"]["coverage"] == pytest.approx(0.5)
    assert a["decision_regret"]["verdict"] == "missed"  # mean 1.0 is within, max 12 is not
    # crossovers: 1 in N (wa@plateau) and 5 in compute, all within 2x
    assert a["crossover"]["verdict"] == "met" and (a["crossover"]["measured"], a["crossover"]["within"]) == (6, 6)


def test_aims_not_evaluable_and_a_crossover_the_prediction_misses():
    # another level: coverage is not evaluable; no recommended row and no crossover: neither is regret nor
    # the crossover aim
    one = PREDS[(PREDS["world"] == "wb") & (PREDS["compute"] == "plateau")]
    a = aims(crosscheck(RUNS, one.assign(level=0.8, recommended=0)))
    assert [a[k]["verdict"] for k in ("coverage", "decision_regret", "crossover")] == ["not-evaluable"] * 3
    # the wa@plateau crossover in N measured but not predicted (predicted bridge always ahead): missed
    wa = PREDS[(PREDS["world"] == "wa") & (PREDS["compute"] == "plateau")].copy()
    wa.loc[wa["arm"] == BRIDGE, ["pred_mean", "pred_lo", "pred_hi"]] = 90.0
    a = aims(crosscheck(RUNS, wa))
    assert a["crossover"]["verdict"] == "missed" and a["crossover"]["crossovers"][0]["ratio"] is None


def test_seen_set_is_scored_on_its_own():
    # the "seen" rows predict the truth itself, with wide intervals; the heldout rows are untouched
    seen = make_preds(set_="seen")
    seen = seen.assign(pred_mean=seen["pred_mean"] - seen["arm"].map(OFFSET), pred_lo=0.0, pred_hi=100.0)
    preds = pd.concat([PREDS, seen], ignore_index=True)
    cs, ch = crosscheck(RUNS, preds, set_name="seen"), crosscheck(RUNS, preds)
    assert cs.set_name == "seen" and cs.mae == 0.0 and cs.coverage == 1.0
    assert ch.mae == pytest.approx(1.0) and ch.coverage == pytest.approx(0.5)


def test_compute_crossover_needs_tokens_and_one_budget_per_level():
    assert crosscheck(RUNS, PREDS.drop(columns=["tokens"])).crossover_compute == ()
    # the bridge's plateau row at a different budget: that level is left out at (wa, 256), with a warning
    odd = PREDS.copy()
    odd.loc[(odd["world"] == "wa") & (odd["labels"] == 256) & (odd["arm"] == BRIDGE)
            & (odd["compute"] == "plateau"), "tokens"] = 2**23
    cc = crosscheck(RUNS, odd)
    assert ("wa", 256) not in {(x["world"], x["labels"]) for x in cc.crossover_compute}
    assert len(cc.crossover_compute) == 5 and any("different tokens" in w for w in cc.warnings)


@pytest.mark.parametrize("change,needle", [
    (lambda d: d.assign(compute=[""] + ["low"] * (len(d) - 1)), "column 'compute' has empty values"),
    (lambda d: d.assign(compute=[None] + ["low"] * (len(d) - 1)), "column 'compute' has empty values"),
    (lambda d: pd.concat([d, d.iloc[:1]]), "duplicate row for world=wa arm=direct_grpo labels=64"),
    (lambda d: d.assign(tokens=0), "column 'tokens' must be > 0"),
    (lambda d: d.assign(tokens="many"), "column 'tokens' has a non-numeric"),
    (lambda d: d.assign(recommended=1), "2 rows with recommended=1 for set 'heldout' world=wa compute=low labels=64"),
])
def test_bad_predictions_one_line_error(change, needle):
    with pytest.raises(InputError) as e:
        validate_predictions(change(PREDS.copy()))
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_the_same_configuration_at_two_levels_is_not_a_duplicate_but_within_one_it_is():
    assert len(validate_predictions(PREDS)) == 24  # each (config, N) once per level
    with pytest.raises(InputError) as e:
        validate_compute_runs(pd.concat([RUNS, RUNS.iloc[:1]]))
    assert "duplicate row" in str(e.value) and "compute level 'plateau'" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(InputError, match="column 'compute' has empty values"):
        validate_compute_runs(RUNS.assign(compute=["plateau"] * (len(RUNS) - 1) + [" "]))
    with pytest.raises(InputError, match="predictions name compute levels but the run table has no 'compute'"):
        crosscheck(make_runs({k: v for k, v in TRUTH.items() if k[1] == "low"}, compute=False), PREDS)


# ---------- legacy files: no compute, no tokens ----------

def test_a_single_named_level_scores_like_a_legacy_file():
    plateau = {k: v for k, v in TRUTH.items() if k[1] == "plateau"}
    runs, preds = make_runs(plateau), make_preds(plateau)
    named = crosscheck(runs, preds).to_dict()
    legacy = crosscheck(runs.drop(columns=["compute"]), preds.drop(columns=["compute", "tokens"])).to_dict()
    for k in ("mae", "mae_over_se", "coverage", "interval_score", "naive_mae", "kendall_tau", "per_world", "by_world"):
        assert named[k] == legacy[k], k
    assert named["decision_regret"]["mean"] == legacy["decision_regret"]["mean"] == pytest.approx(12 / 6)
    assert named["crossover"]["wa@plateau"]["ratio"] == legacy["crossover"]["wa"]["ratio"]
    # a legacy file's outputs never mention compute or tokens
    assert "compute" not in legacy["per_config"][0] and "tokens" not in legacy["per_config"][0]
    assert "compute" not in legacy["decision_regret"]["groups"][0] and "compute" not in legacy["crossover"]["wa"]
    assert legacy["crossover_compute"] == []


def test_committed_legacy_report_is_unchanged():
    """docs/results/crosscheck_report.json (written before the compute columns): every per-config row,
    per-world figure and headline number recomputes as committed."""
    res = Path(__file__).resolve().parent.parent / "docs" / "results"
    got = crosscheck(read_runs(res / "crosscheck_runs.csv"), read_predictions(res / "crosscheck_predictions.csv"))
    got = json.loads(json.dumps(got.to_dict(), allow_nan=False))
    want = json.loads((res / "crosscheck_report.json").read_text())
    for k in ("per_config", "per_world", "mae", "coverage", "kendall_tau", "naive_mae", "split_regret_groups"):
        assert got[k] == want[k], k


# ---------- CLI ----------

def test_cli_scores_compute_levels_and_the_seen_set(tmp_path, capsys):
    RUNS.to_csv(tmp_path / "runs.csv", index=False)
    pd.concat([PREDS, PREDS.assign(set="seen")]).to_csv(tmp_path / "preds.csv", index=False)
    out = tmp_path / "cc.json"
    for set_ in ("heldout", "seen"):
        assert cli.main(["crosscheck", "--runs", str(tmp_path / "runs.csv"), "--predictions",
                         str(tmp_path / "preds.csv"), "--set", set_, "--json", str(out)]) == 0
        text = capsys.readouterr().out
        d = json.loads(out.read_text())
        assert d["set"] == set_ and d["n_configs"] == 24 and d["aims"]["mae"]["verdict"] == "met"
    assert "aims (issue 23):" in text and "coverage 0.50 at level 0.9" in text
    assert "crossover in compute wa N=256" in text and "wa@plateau" in text
    assert len(d["crossover_compute"]) == 6 and d["per_config"][0]["compute"] in ("low", "plateau")
    PREDS.assign(compute=[""] + ["low"] * (len(PREDS) - 1)).to_csv(tmp_path / "bad.csv", index=False)
    rc = cli.main(["crosscheck", "--runs", str(tmp_path / "runs.csv"), "--predictions", str(tmp_path / "bad.csv")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "column 'compute' has empty values" in err
