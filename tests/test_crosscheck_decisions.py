"""theory.crosscheck's decision figures: decision regret (the optional `recommended` column), the
rl_teacher_bridge / direct_grpo crossover with its paired bootstrap, by_world; worked by hand on small
tables. Tier 1 (pure, well under a second) plus an in-process CLI call."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from budget_planner import cli
from theory.crosscheck import crosscheck, sign_crossovers, validate_predictions
from theory.errors import InputError

W = "w"


def runs_of(world, arm, t, s, by_seed: dict[int, float]):
    return [{"arm": arm, "seed": k, "world": world, "teacher_labels": t, "student_labels": s, "compute_tokens": 1,
             "split": "test", "metric": "accuracy", "value": v} for k, v in by_seed.items()]


def seeds(*values):
    return dict(enumerate(values))


def pred(world, arm, labels, t, s, mean, *, rec=0, set_="heldout"):
    return {"world": world, "arm": arm, "labels": labels, "teacher_labels": t, "student_labels": s, "set": set_,
            "pred_mean": mean, "pred_lo": max(mean - 5, 0), "pred_hi": min(mean + 5, 100), "level": 0.9,
            "naive_mean": 50.0, "recommended": rec}


# ---------- decision regret ----------

# N = 100: direct_grpo 10, rl_teacher_bridge 12 (the best), raw_teacher_bridge 5; the planner picks direct_grpo.
# N = 50: direct_grpo 8 measured, the pick (no_opd) has no runs.
REGRET_RUNS = pd.DataFrame(runs_of(W, "direct_grpo", 0, 100, seeds(9, 11)) + runs_of(W, "rl_teacher_bridge", 100, 0, seeds(11, 13))
                           + runs_of(W, "raw_teacher_bridge", 0, 0, seeds(4, 6)) + runs_of(W, "direct_grpo", 0, 50, seeds(7, 9)))
REGRET_PREDS = pd.DataFrame([pred(W, "direct_grpo", 100, 0, 100, 14, rec=1), pred(W, "rl_teacher_bridge", 100, 100, 0, 11),
                             pred(W, "raw_teacher_bridge", 100, 0, 0, 6), pred(W, "direct_grpo", 50, 0, 50, 8),
                             pred(W, "no_opd", 50, 50, 0, 9, rec=1)])


def test_decision_regret_by_hand_and_unmeasured_pick_listed():
    cc = crosscheck(REGRET_RUNS, REGRET_PREDS)
    dr = cc.decision_regret
    assert dr["mean"] == pytest.approx(2.0) and dr["max"] == pytest.approx(2.0)
    assert dr["groups"] == [{"world": W, "labels": 100, "recommended_arm": "direct_grpo", "recommended_teacher_labels": 0,
                             "best_arm": "rl_teacher_bridge", "best_teacher_labels": 100, "recommended_mean": 10.0,
                             "best_mean": 12.0, "regret": pytest.approx(2.0)}]
    assert dr["unmeasured"] == [{"world": W, "labels": 50, "arm": "no_opd", "teacher_labels": 50}]
    bw = cc.by_world[W]
    assert bw["decision_regret_mean"] == pytest.approx(2.0) and bw["decision_regret_groups"] == 1
    assert bw["decision_regret_unmeasured"] == 1
    assert bw["mean_interval_width"] == pytest.approx(10.0) and bw["n_configs"] == 4
    # by_world repeats per_world's figures; per_world keeps exactly its original keys
    assert set(cc.per_world[W]) == {"n_configs", "mae", "naive_mae", "coverage"}
    assert all(bw[k] == cc.per_world[W][k] for k in cc.per_world[W])


def test_decision_regret_zero_when_pick_is_best_and_none_without_picks():
    picks_best = REGRET_PREDS.assign(recommended=[0, 1, 0, 0, 0])
    dr = crosscheck(REGRET_RUNS, picks_best).decision_regret
    assert dr["mean"] == 0.0 and dr["unmeasured"] == [] and dr["groups"][0]["best_arm"] == "rl_teacher_bridge"
    # no recommended column at all: an old file, still valid, no decision regret; the other figures unchanged
    old = REGRET_PREDS.drop(columns=["recommended"])
    cc_old, cc_new = crosscheck(REGRET_RUNS, old), crosscheck(REGRET_RUNS, REGRET_PREDS)
    assert cc_old.decision_regret is None and list(validate_predictions(old)["recommended"]) == [0] * 5
    assert cc_old.mae == cc_new.mae and cc_old.coverage == cc_new.coverage
    # only the pick at N = 50, which has no runs: listed, no mean
    only_unmeasured = crosscheck(REGRET_RUNS, REGRET_PREDS.assign(recommended=[0, 0, 0, 0, 1])).decision_regret
    assert only_unmeasured["mean"] is None and only_unmeasured["groups"] == [] and len(only_unmeasured["unmeasured"]) == 1


@pytest.mark.parametrize("rec,needle", [
    ([2, 0, 0, 0, 0], "column 'recommended' must be 0 or 1, got 2 for world=w arm=direct_grpo labels=100"),
    (["yes", 0, 0, 0, 0], "must be 0 or 1, got 'yes'"),
    ([0, 0, 0.5, 0, 0], "got 0.5 for world=w arm=raw_teacher_bridge"),
    ([1, 1, 0, 0, 0], "2 rows with recommended=1 for set 'heldout' world=w labels=100"),
])
def test_recommended_validation_one_line(rec, needle):
    with pytest.raises(InputError) as e:
        validate_predictions(REGRET_PREDS.assign(recommended=rec))
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_one_pick_per_group_is_per_set():
    both = pd.concat([REGRET_PREDS, REGRET_PREDS.assign(set="calibration")], ignore_index=True)
    assert int(validate_predictions(both)["recommended"].sum()) == 4


# ---------- crossover ----------

def test_sign_crossovers_interpolate_in_log2_budget():
    assert sign_crossovers([64, 256], [-2, 2]) == [
        {"budget": pytest.approx(128.0), "between": [64, 256], "direction": "bridge_wins_above"}]
    # unsorted input; 3/4 of the way in log2 from 2**4 to 2**8 (d = +3 -> -1): 2**7
    c = sign_crossovers([256, 16, 1024], [-1, 3, -5])
    assert [x["budget"] for x in c] == [pytest.approx(128.0)] and c[0]["direction"] == "direct_wins_above"
    # an exact zero between opposite signs: that budget
    assert [x["budget"] for x in sign_crossovers([64, 128, 256], [-1, 0, 1])] == [128.0]
    assert sign_crossovers([64, 128, 256], [-1, -2, -0.5]) == [] and sign_crossovers([64, 128], [0, 1]) == []


def _crossover_tables(bridge_at_256):
    # predicted d: -2 at N = 64, bridge_at_256 - 20 at N = 256; N = 1024 predicted (d = +10), never run
    preds = pd.DataFrame([pred(W, "direct_grpo", 64, 0, 64, 20), pred(W, "rl_teacher_bridge", 64, 64, 0, 18),
                          pred(W, "direct_grpo", 256, 0, 256, 20), pred(W, "rl_teacher_bridge", 256, 256, 0, bridge_at_256),
                          pred(W, "direct_grpo", 1024, 0, 1024, 20), pred(W, "rl_teacher_bridge", 1024, 1024, 0, 30)])
    # measured, paired by seed: d = -2.5, -3, -2.5, -3 at 64 (mean -2.75); +4, +3.5, +4, +3.5 at 256 (+3.75)
    runs = pd.DataFrame(runs_of(W, "direct_grpo", 0, 64, seeds(20, 22, 21, 23))
                        + runs_of(W, "rl_teacher_bridge", 64, 0, seeds(17.5, 19, 18.5, 20))
                        + runs_of(W, "direct_grpo", 0, 256, seeds(20, 21, 22, 23))
                        + runs_of(W, "rl_teacher_bridge", 256, 0, seeds(24, 24.5, 26, 26.5)))
    return runs, preds


def test_crossover_predicted_and_measured_with_ratio_and_paired_intervals():
    c = crosscheck(*_crossover_tables(22)).crossover[W]
    # predicted over every predicted budget (1024 has no runs): one crossover, at 2**7
    assert c["predicted"]["budgets"] == [64, 256, 1024] and c["predicted"]["d"] == pytest.approx([-2, 2, 10])
    assert [(x["budget"], x["direction"]) for x in c["predicted"]["crossovers"]] == [(pytest.approx(128.0), "bridge_wins_above")]
    # measured over the measured budgets: zero of d at log2 N = 6 + 2 * 2.75 / 6.5
    want = 2 ** (6 + 2 * 2.75 / 6.5)
    assert c["measured"]["budgets"] == [64, 256] and c["measured"]["d"] == pytest.approx([-2.75, 3.75])
    assert c["measured"]["crossovers"][0]["budget"] == pytest.approx(want)
    assert c["ratio"] == pytest.approx(128 / want) and c["within_factor_2"] is True
    p64, p256 = c["paired"]
    assert p64["labels"] == 64 and p64["n_pairs"] == 4 and p64["d"] == pytest.approx(-2.75)
    assert -3 <= p64["lo"] <= p64["hi"] <= -2.5 and p64["excludes_zero"] and p64["winner"] == "direct_grpo"
    assert 3.5 <= p256["lo"] <= p256["hi"] <= 4 and p256["excludes_zero"] and p256["winner"] == "rl_teacher_bridge"
    assert c["direct_wins_at"] == [64] and c["bridge_wins_at"] == [256]


def test_no_predicted_sign_change_gives_empty_list_and_no_ratio():
    c = crosscheck(*_crossover_tables(19)).crossover[W]  # predicted d = -2, -1, +10: crossover above 256 only
    assert [x["between"] for x in c["predicted"]["crossovers"]] == [[256, 1024]]
    preds = _crossover_tables(19)[1]
    preds = preds[preds["labels"] < 1024]  # d = -2, -1: no sign change
    c = crosscheck(_crossover_tables(19)[0], preds).crossover[W]
    assert c["predicted"]["crossovers"] == [] and c["ratio"] is None and c["within_factor_2"] is None
    assert len(c["measured"]["crossovers"]) == 1


def test_paired_interval_pairs_by_seed_and_can_include_zero():
    # seeds 1 and 2 run by both arms: d = +1, +1 (pairing by position would give 11, 11, 69)
    runs = pd.DataFrame(runs_of(W, "direct_grpo", 0, 64, {0: 10.0, 1: 20.0, 2: 30.0})
                        + runs_of(W, "rl_teacher_bridge", 64, 0, {1: 21.0, 2: 31.0, 3: 99.0})
                        # N = 256: d = +1, -1, +2, -2 over four seeds: the interval straddles 0
                        + runs_of(W, "direct_grpo", 0, 256, seeds(20, 20, 20, 20))
                        + runs_of(W, "rl_teacher_bridge", 256, 0, seeds(21, 19, 22, 18)))
    preds = pd.DataFrame([pred(W, "direct_grpo", 64, 0, 64, 20), pred(W, "rl_teacher_bridge", 64, 64, 0, 18),
                          pred(W, "direct_grpo", 256, 0, 256, 20), pred(W, "rl_teacher_bridge", 256, 256, 0, 22)])
    p64, p256 = crosscheck(runs, preds).crossover[W]["paired"]
    assert p64["n_pairs"] == 2 and p64["d"] == pytest.approx(1.0) and p64["excludes_zero"]
    assert p256["n_pairs"] == 4 and p256["d"] == pytest.approx(0.0) and p256["lo"] < 0 < p256["hi"]
    assert not p256["excludes_zero"] and p256["winner"] is None
    # one common seed: no interval
    one = runs[~((runs["arm"] == "rl_teacher_bridge") & (runs["seed"] == 2))]
    p64 = crosscheck(one, preds).crossover[W]["paired"][0]
    assert p64["n_pairs"] == 1 and p64["d"] is None and p64["excludes_zero"] is False


def test_crossover_is_reproducible_and_skips_worlds_without_both_arms():
    a = crosscheck(*_crossover_tables(22)).crossover
    b = crosscheck(*_crossover_tables(22)).crossover
    assert a == b
    assert crosscheck(REGRET_RUNS, REGRET_PREDS.iloc[[0, 2, 3]]).crossover == {}  # no rl_teacher_bridge predicted


# ---------- CLI ----------

def test_cli_text_and_json_carry_the_decision_figures(tmp_path, capsys):
    runs, preds = _crossover_tables(22)
    preds = preds.assign(recommended=[1, 0, 0, 1, 0, 1])  # 64: direct (best); 256: bridge (best); 1024: unmeasured
    runs.to_csv(tmp_path / "runs.csv", index=False)
    preds.to_csv(tmp_path / "preds.csv", index=False)
    out = tmp_path / "cc.json"
    assert cli.main(["crosscheck", "--runs", str(tmp_path / "runs.csv"), "--predictions", str(tmp_path / "preds.csv"),
                     "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "decision regret 0.00 mean, 0.00 max points over 2 group(s); 1 recommended configuration(s) unmeasured" in text
    assert "predicted N=128 (bridge_wins_above)" in text and "N=64 -2.8 [" in text and "]*" in text
    d = json.loads(out.read_text())
    assert d["decision_regret"]["max"] == 0.0 and d["decision_regret"]["unmeasured"][0]["labels"] == 1024
    assert d["crossover"][W]["predicted"]["crossovers"][0]["budget"] == pytest.approx(128.0)
    assert d["by_world"][W]["decision_regret_groups"] == 2 and np.isclose(d["by_world"][W]["mean_interval_width"], 10.0)
    # a bad recommended value: exit 2, one line
    preds.assign(recommended=[1, 0, 0, 1, 0, 3]).to_csv(tmp_path / "bad.csv", index=False)
    rc = cli.main(["crosscheck", "--runs", str(tmp_path / "runs.csv"), "--predictions", str(tmp_path / "bad.csv")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "column 'recommended' must be 0 or 1, got 3" in err
