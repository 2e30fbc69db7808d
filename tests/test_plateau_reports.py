"""Reports of the plateau reruns (scripts/plateau_reruns.py): the fairness study's equal-compute view
(`tuning-compute`: each arm's evaluation runs, found in the directory of its best configuration, read off
their student validation curves at each arm's median training tokens) and the committed cap checks."""

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from reference.runs import RunResult, write_result
from theory.arms import LabelAccount
from tuning.cli import main as tuning_main
from tuning.evaluation import best_trial
from tuning.harness import arm_study_name, check_matched, load_study
from tuning.reference_arms import ReferenceArms
from tuning.storage import open_storage

ROOT = Path(__file__).resolve().parents[1]


def _stage(name, model, train_tokens, curve):
    return {"name": name, "model": model, "tokens": train_tokens,
            "plateau": {"validated": True, "train_tokens": train_tokens,
                        "curve": [{"step": i, "tokens": t, "accuracy": a} for i, (t, a) in enumerate(curve)]}}


def test_tuning_compute_reads_each_arm_at_both_levels_from_its_best_configuration(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "scripts"))
    import plateau_reruns as pr

    url = f"journal:///{tmp_path}/study.log"
    common = ["--storage", url, "--study", "pw"]
    assert tuning_main(["run", "--arms", "direct_grpo,rl_teacher_bridge", "--trials", "2", *common,
                        "--arm-source", "synthetic", "--labels", "64", "--eval-seeds", "2"]) == 0
    opts = {"workdir": str(tmp_path / "runs")}
    monkeypatch.setattr(pr, "_tuning_setup", lambda workdir: (url, "pw", opts))
    out = tmp_path / "report"
    out.mkdir()
    (out / "fairness_report.md").write_text("# Fairness report\n\nabove\n")
    monkeypatch.setattr(pr, "TUNING_OUT", out)
    handle = open_storage(url)
    protocol = check_matched(handle, "pw")
    source = ReferenceArms(**opts)
    # direct GRPO: 100 tokens per run, its curve 10 -> 20; the bridge: a teacher stage of 1000 tokens,
    # then a student curve 30 -> 40 over 200 more (seed-dependent by one point)
    for arm in protocol.arms:
        params = dict(best_trial(load_study(handle, arm_study_name("pw", arm))).params)
        for j, seed in enumerate(protocol.eval_seeds):
            if arm == "direct_grpo":
                stages, tokens = (_stage("student_grpo", "student", 100, [(0, 10.0 + j), (100, 20.0 + j)]),), 100
            else:
                stages = (_stage("teacher_grpo", "teacher", 1000, [(0, 50.0), (1000, 60.0)]),
                          _stage("fkl", "student", 200, [(0, 30.0 + j), (200, 40.0 + j)]))
                tokens = 1200
            for where, acc in ((params, 5.0 + j), ({**params, "other": 1}, 99.0)):
                # the second: the same seed under another configuration, which must not be read
                d = source.run_workdir(arm, where) / "runs" / f"{arm}_s{seed}"
                d.mkdir(parents=True)
                to_best = 50.0 if arm == "direct_grpo" else 1100.0
                write_result(RunResult(arm, seed, "w", "test", LabelAccount(0, 64, 0), tokens,
                                       {"accuracy": acc, "tokens_to_best": to_best},
                                       stages if acc < 99 else tuple(_stage(s["name"], s["model"], 1, [(0, 99.0)])
                                                                     for s in stages)), d / "result_test.json")
    assert pr.main(["tuning-compute", "--workdir", str(tmp_path)]) == 0
    m = pd.read_csv(out / "compute_matched.csv")
    got = {(r.arm, r.tokens): r.accuracy for r in m.itertuples()}
    assert sorted({t for _, t in got}) == [50.0, 100.0, 1100.0, 1200.0]  # each arm's tokens to best and spent
    assert got[("direct_grpo", 50.0)] == pytest.approx(10.5) and got[("direct_grpo", 100.0)] == pytest.approx(20.5)
    assert got[("direct_grpo", 1200.0)] == pytest.approx(20.5)
    assert np.isnan(got[("rl_teacher_bridge", 100.0)])  # no student point yet at direct GRPO's tokens
    assert got[("rl_teacher_bridge", 1100.0)] == pytest.approx(30.5)
    assert got[("rl_teacher_bridge", 1200.0)] == pytest.approx(40.5)
    body = (out / "fairness_report.md").read_text()
    assert body.startswith("# Fairness report\n\nabove\n") and "direct_grpo 5.5, rl_teacher_bridge 5.5" in body
    # a rerun replaces its section instead of appending a second one
    assert pr.main(["tuning-compute", "--workdir", str(tmp_path)]) == 0
    assert (out / "fairness_report.md").read_text() == body


def test_tuning_compute_names_a_missing_evaluation(tmp_path, monkeypatch, capsys):
    sys.path.insert(0, str(ROOT / "scripts"))
    import plateau_reruns as pr

    url = f"journal:///{tmp_path}/study.log"
    common = ["--storage", url, "--study", "pw"]
    assert tuning_main(["run", "--arms", "direct_grpo,rl_teacher_bridge", "--trials", "1", *common,
                        "--arm-source", "synthetic", "--labels", "64", "--eval-seeds", "2"]) == 0
    monkeypatch.setattr(pr, "_tuning_setup", lambda workdir: (url, "pw", {"workdir": str(tmp_path / "runs")}))
    with pytest.raises(Exception, match="direct_grpo has 0 of 2 evaluation runs"):
        pr.main(["tuning-compute", "--workdir", str(tmp_path)])


def test_cap_check_lines_compare_each_scaled_arm_with_its_committed_mean(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "scripts"))
    import plateau_reruns as pr

    monkeypatch.setattr(pr, "OUT", tmp_path / "plateau_reruns")
    d = tmp_path / "plateau_reruns" / f"{pr.ABLATION_RESULTS}-cap4x"
    d.mkdir(parents=True)

    def run(arm, seed, acc):
        return RunResult(arm, seed, "w", "test", LabelAccount(0, 64, 0), 1, {"accuracy": acc}, ())

    for seed, acc in ((2000, 30.0), (2001, 26.0)):  # direct GRPO: 28.0 against 24.0 committed, +4 > 3
        write_result(run("direct_grpo", seed, acc), d / f"direct_grpo_n64_s{seed}.json")
    write_result(run("raw_teacher_bridge", 2000, 9.0), d / "raw_teacher_bridge_n64_s2000.json")
    committed = [run("direct_grpo", 1000, 23.0), run("direct_grpo", 1001, 25.0), run("raw_teacher_bridge", 1000, 10.0)]
    lines = pr._cap_check_lines(committed)
    t = pd.read_csv(tmp_path / "paper_world_cap_check.csv")
    got = {r.arm: (r.scale, r.scaled_mean, r.committed_mean, r.gain, r.passed) for r in t.itertuples()}
    assert got == {"direct_grpo": (4.0, 28.0, 24.0, 4.0, False), "raw_teacher_bridge": (4.0, 9.0, 10.0, -1.0, True)}
    assert any("| direct_grpo | 4x | 2000 2001 | 28.0 | 24.0 (2 seeds) | +4.0 | **no** |" == ln for ln in lines)
    assert lines[-1].startswith("Not checked yet: rl_teacher_bridge")
    monkeypatch.setattr(pr, "OUT", tmp_path / "none")
    assert pr._cap_check_lines(committed) == []


def test_a_change_of_opd_cap_reuses_the_stages_before_opd_and_retrains_opd(tmp_path):
    """`link_unchanged_stages`: config B is config A with a longer OPD cap. A's teacher GRPO and FKL warmup
    appear under B's keys (B's run loads them: cached, the same weights), A's OPD does not (B trains its
    own); configs that differ in anything but caps are refused in one line."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import plateau_reruns as pr
    from conftest import stage_checkpoints, tiny_config
    from reference.pipeline import run_pipeline

    a = tiny_config(**{"plateau.enabled": True, "plateau.problems": 16, "plateau.k": 2, "plateau.every": 0.5,
                       "plateau.run_to_cap": "opd"})
    b = a.override({"opd.steps": 2 * a.opd.steps})
    run_pipeline(a, "rl_teacher_bridge", 0, workdir=tmp_path, split="val", progress=False)
    before = stage_checkpoints(tmp_path)
    stale = tmp_path / "stages" / ".0123456789abcdef.partial"  # a killed stage's mid-stage directory
    stale.mkdir()
    (stale / "meta.json").write_text(json.dumps({"step": 4, "every": 0}))
    # a longer GRPO cap sets the teacher's trajectory, and so every stage after it: nothing to reuse
    assert pr.link_unchanged_stages(a, a.override({"grpo.max_steps": 99}), tmp_path / "stages") == 0
    assert pr.link_unchanged_stages(a, b, tmp_path / "stages") == 2
    assert pr.link_unchanged_stages(a, b, tmp_path / "stages") == 0  # already linked
    res = run_pipeline(b, "rl_teacher_bridge", 0, workdir=tmp_path / "b", split="val", progress=False)
    assert not res.stages[0].get("cached")  # another workdir: nothing to reuse there
    # the run directory's manifest names A's config: B's run there would be refused, so it moves aside
    assert pr.set_aside_stale_runs(tmp_path, b) == 1 and pr.set_aside_stale_runs(tmp_path, b) == 0
    assert (tmp_path / "runs_set_aside" / "rl_teacher_bridge_s0_t16" / "manifest.json").is_file()
    res = run_pipeline(b, "rl_teacher_bridge", 0, workdir=tmp_path, split="val", progress=False)
    cached = {s["name"]: bool(s.get("cached")) for s in res.stages if s["name"] != "eval"}
    assert cached == {"teacher_grpo": True, "fkl_warmup": True, "opd": False}
    opd = next(s for s in res.stages if s["name"] == "opd")["plateau"]
    assert opd["cap"] == b.opd.steps == opd["steps_run"]
    for name in ("teacher_grpo", "fkl_warmup"):
        assert all(np.array_equal(before[name][0][k].numpy(), stage_checkpoints(tmp_path / "b")[name][0][k].numpy())
                   for k in before[name][0])  # what B trains from scratch is what it reused
    with pytest.raises(Exception, match="differ in stage caps only; these differ in opd.lr"):
        pr.link_unchanged_stages(a, a.override({"opd.lr": 2 * a.opd.lr}), tmp_path / "stages")
