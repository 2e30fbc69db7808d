"""The world family's driver (scripts/world_family.py): the budget rule fixed before the predictions,
the held-out grid it implies, and the family findings computed from a run table (synthetic tables
with known answers)."""

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import world_family as wf  # noqa: E402


def test_every_family_config_loads_and_shares_the_world_and_teacher():
    from reference.config import load_config
    cfgs = {w: load_config(p) for w, p in wf.WORLDS.items()}
    assert set(cfgs) == {"modes-k05", "modes-k15", "modes-k30"}
    worlds = {w: {k: v for k, v in vars(c.world).items() if k != "name"} for w, c in cfgs.items()}
    assert len({str(sorted(v.items())) for v in worlds.values()}) == 1  # same splits: paired across K
    assert len({c.teacher.asset for c in cfgs.values()}) == 1
    assert {c.student.steps_share for c in cfgs.values()} == {"0.075,0.05,0.025", "0.225,0.15,0.075",
                                                              "0.45,0.3,0.15"}  # K differs (1.5K, K, 0.5K)


def test_measured_budgets_add_points_only_to_straddle_a_crossover():
    assert wf.measured_budgets([]) == list(wf.HELD_N)
    assert wf.measured_budgets([{"budget": 4096.0}]) == list(wf.HELD_N)  # outside the grid: nothing added
    # a crossover at 200: below it only 64 is on the grid, so the nearest extra budget below (128) joins
    assert wf.measured_budgets([{"budget": 200.0}]) == [64, 128, 256, 1024]
    # at 400: 64, 256 below; above only 1024, so 512 joins
    assert wf.measured_budgets([{"budget": 400.0}]) == [64, 256, 512, 1024]


def test_heldout_configs_hold_the_pair_the_split_and_the_recommendation():
    prereg = {"worlds": {"modes-k05": {"measured_budgets": [64, 256, 1024], "recommendation": {
        "64": {"arm": "direct_grpo", "teacher_labels": 0, "student_labels": 64},
        "256": {"arm": "rl_teacher_bridge_stage3", "teacher_labels": 100, "student_labels": 156},
        "1024": {"arm": "rl_teacher_bridge", "teacher_labels": 1024, "student_labels": 0}}}}}
    cfgs = wf.heldout_configs("modes-k05", prereg)
    assert ("modes-k05", "rl_teacher_bridge_stage3", 256, 100) in cfgs  # the recommended split
    assert ("modes-k05", "rl_teacher_bridge_stage3", 256, 128) in cfgs  # the pre-registered half split
    assert len(cfgs) == len(set(cfgs)) == 3 * 2 + 2  # the pair at 3 budgets + two stage-3 splits


def _runs(values: dict) -> pd.DataFrame:
    rows = []
    for (world, arm, n, seed), acc in values.items():
        tl, sl = (0, n) if arm == "direct_grpo" else (n, 0)
        for metric, v in (("accuracy", acc), ("steps_share", acc / 2)):
            rows.append({"arm": arm, "seed": seed, "world": world, "teacher_labels": tl, "student_labels": sl,
                         "compute_tokens": 1, "split": "test", "metric": metric, "value": v})
    return pd.DataFrame(rows)


def test_family_findings_on_a_table_with_known_answers():
    vals, curves = {}, []
    for seed in (10, 11, 12):
        for n in wf.HELD_N:
            x = np.log2(n)
            for w in wf.WORLDS:
                vals[(w, "direct_grpo", n, seed)] = 2.0 * x + seed  # +2 points per doubling
                vals[(w, "rl_teacher_bridge", n, seed)] = 2.0 * x + seed + (3.0 if w == "modes-k05" else -3.0)
                # val curves: the teacher gains 3 points per doubling, the student 1
                curves.append({"world": w, "arm": "rl_teacher_bridge", "seed": seed, "teacher_labels": n,
                               "student_labels": 0, "stage": "teacher_grpo", "metric": "accuracy", "value": 3 * x + seed})
                curves.append({"world": w, "arm": "direct_grpo", "seed": seed, "teacher_labels": 0,
                               "student_labels": n, "stage": "student_grpo", "metric": "accuracy", "value": x + seed})
    f = wf.family_findings(_runs(vals), pd.DataFrame(curves))
    teach = f["labels_teach"]["modes-k05"]["accuracy"]
    assert teach["mean"] == pytest.approx(2.0 * (np.log2(1024) - np.log2(64)))  # 8 points, every seed
    assert teach["excludes_zero"]
    slope = f["teacher_vs_student_slope"]["modes-k15"]
    assert slope["teacher_slope"] == pytest.approx(3.0) and slope["student_slope"] == pytest.approx(1.0)
    assert slope["difference"]["mean"] == pytest.approx(2.0)
    k = f["crossover_in_K"]["256"]
    assert k["modes-k05"]["mean"] == pytest.approx(3.0) and k["modes-k30"]["mean"] == pytest.approx(-3.0)


def test_findings_need_two_seeds_for_an_interval():
    vals = {(w, arm, n, 10): 10.0 for w in wf.WORLDS for arm in wf.HEADLINE for n in wf.HELD_N}
    f = wf.family_findings(_runs(vals), pd.DataFrame(columns=["world", "arm", "seed", "teacher_labels",
                                                              "student_labels", "stage", "metric", "value"]))
    one = f["labels_teach"]["modes-k05"]["accuracy"]
    assert one["n"] == 1 and one["lo"] is None and not one["excludes_zero"]


def test_runs_refuses_an_unknown_world_before_running_anything(tmp_path, capsys):
    # one line naming the bad world and the choices; nothing is started (no run directory appears)
    with pytest.raises(SystemExit, match=r"--worlds: unknown world\(s\) modes-k99; choose from modes-k05"):
        wf.main(["runs", "--worlds", "modes-k15,modes-k99", "--seeds", "12", "--workdir", str(tmp_path)])
    assert not list(tmp_path.glob("modes-k*"))
