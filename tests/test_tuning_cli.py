"""`matched-tuning` end to end on the synthetic arm, its one-line errors, and the reference adapter."""

import subprocess
import sys

import pandas as pd
import pytest

from tuning.cli import main
from tuning.interface import Budget
from tuning.reference_arms import ReferenceArms
from tuning.report import CSV_COLUMNS

SYN = ["--arm-source", "synthetic", "--labels", "64", "--eval-seeds", "10"]


@pytest.mark.slow  # a study end to end
def test_run_then_report_writes_csv_markdown_and_figures(tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/s.db"
    assert main(["run", "--arms", "direct_grpo,rl_teacher_bridge", "--trials", "3", "--storage", url,
                 "--study", "cli", *SYN]) == 0
    out = tmp_path / "report"
    assert main(["report", "--study", "cli", "--storage", url, "--out", str(out)]) == 0
    df = pd.read_csv(out / "fairness_report.csv")
    assert list(df.columns[: len(CSV_COLUMNS)]) == CSV_COLUMNS
    assert list(df["arm"]) == ["direct_grpo", "rl_teacher_bridge"]
    assert (df["trials"] == 3).all() and (df["eval_n"] == 10).all()
    assert (df["eval_ci_low"] <= df["eval_mean"]).all() and (df["eval_mean"] <= df["eval_ci_high"]).all()
    assert (df["best_score"] > 1).all()  # percent, not a fraction
    md = (out / "fairness_report.md").read_text()
    assert "## Label-matched comparison" in md and "## Compute-matched comparison" in md
    assert "n_startup_trials = 2" in md and "rl_teacher_bridge | 10 |" in md
    assert (out / "fairness_report_curves.png").stat().st_size > 0
    assert (out / "fairness_report_eval.png").stat().st_size > 0
    # resume with the stored rules runs nothing new; with another budget it refuses, naming the field
    assert main(["resume", "--study", "cli", "--storage", url]) == 0
    assert main(["resume", "--study", "cli", "--storage", url, "--trials", "4"]) == 2
    err = capsys.readouterr().err
    assert "error: study 'cli' exists with a different protocol: trials_per_arm: stored 3, given 4" in err


@pytest.mark.parametrize("argv,needle", [
    (["run", "--arms", "direct_grpo", "--trials", "2", "--storage", "postgresql://u:secret@127.0.0.1:1/x", *SYN],
     "is unreachable"),
    (["run", "--arms", "direct_grpo", "--trials", "2", "--storage", "sqlite:////nonexistent/dir/s.db", *SYN],
     "is unreachable"),
    (["run", "--arms", "direct_grpo", "--trials", "2", "--storage", "journal:///nonexistent/dir/s.log", *SYN],
     "does not exist"),
    (["run", "--arms", "direct_grpo", "--trials", "2", "--storage", "ftp://x", *SYN], "unknown scheme"),
    (["run", "--arms", "direct_grpo,bogus", "--trials", "2", "--storage", "JOURNAL", *SYN], "unknown arm 'bogus'"),
    (["run", "--arms", "direct_grpo", "--trials", "2", "--storage", "JOURNAL", *SYN, "--arm-options", "{"],
     "--arm-options is not valid JSON"),
    (["run", "--arms", "direct_grpo", "--trials", "2", "--storage", "JOURNAL", "--arm-source", "nomodule:fn",
      "--labels", "4"], "cannot import 'nomodule'"),
    (["run", "--arms", "direct_grpo", "--trials", "0", "--storage", "JOURNAL"], "--trials must be >= 1"),
    (["report", "--study", "missing", "--storage", "JOURNAL", "--out", "OUT"], "study 'missing' does not exist"),
])
def test_bad_input_is_one_line_and_exit_2(argv, needle, tmp_path, capsys):
    argv = [a.replace("JOURNAL", f"journal:///{tmp_path}/j.log").replace("OUT", str(tmp_path / "o")) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err
    assert "secret" not in err  # passwords are masked


@pytest.mark.parametrize("argv,needle", [
    (["report", "--study", "x", "--out", "o"], "study 'x' does not exist"),  # default sqlite:///matched_tuning.db
    (["status", "--study", "x"], "study 'x' does not exist"),
    (["status", "--study", "x", "--storage", "journal:///JOURNAL"], "study 'x' does not exist"),
    (["status", "--study", "x", "--storage", "s.log"], "study 'x' does not exist"),
    (["resume", "--study", "x", "--storage", "s.db"], "study 'x' does not exist"),
    (["resume", "--study", "x", "--arms", "nope"], "--arms: unknown arm 'nope'"),
    (["run", "--arms", "nope,direct_grpo", "--trials", "1", "--storage", "sqlite:///study.db", *SYN],
     "--arms: unknown arm"),
    (["run", "--arms", "direct_grpo", "--trials", "1", "--seed", "-1", "--storage", "sqlite:///study.db", *SYN],
     "--seed"),
    (["run", "--arms", "direct_grpo", "--trials", "1", "--labels", "-3", "--storage", "journal:///JOURNAL", *SYN[:2]],
     "label"),
])
def test_bad_input_leaves_no_storage_file(argv, needle, tmp_path, monkeypatch, capsys):
    """Opening a missing SQLite or journal file creates it: every input is checked before that."""
    monkeypatch.chdir(tmp_path)
    argv = [a.replace("/JOURNAL", f"{tmp_path}/j.log") for a in argv]
    assert main(argv) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], lines
    assert list(tmp_path.iterdir()) == []


def test_the_installed_entry_point_prints_one_line_not_a_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "tuning.cli", "run", "--arms", "direct_grpo", "--trials", "2",
                           "--storage", "postgresql://u:secret@127.0.0.1:1/x", *SYN],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error: storage 'postgresql://u:***@")


def test_reference_adapter_passes_the_budget_and_split(tmp_path, monkeypatch):
    (tmp_path / "fake_api.py").write_text(
        "from dataclasses import dataclass\n"
        "PARAM_SPACE = {'direct_grpo': {'lr': {'kind': 'float', 'low': 1e-4, 'high': 1e-2, 'log': True}}}\n"
        "CALLS = []\n"
        "@dataclass(frozen=True)\n"
        "class R:\n    accuracy: float\n    metrics: dict\n    compute_tokens: int\n    label_account: object = None\n"
        "def run_arm(arm, *, params, labels, seed, teacher_labels=None, config='toy_short', split='val',"
        " report=None, workdir=None):\n"
        "    CALLS.append(dict(arm=arm, params=params, labels=labels, seed=seed, split=split, config=config))\n"
        "    report(0, 10.0)\n"
        "    return R(42.0, {'accuracy': 42.0, 'compliance': 90.0}, 1234)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    arms = ReferenceArms(config="configs/toy_short.toml", api_module="fake_api")
    assert arms.param_space()["direct_grpo"]["lr"]["high"] == 1e-2
    seen = []
    res = arms("direct_grpo", params={"lr": 1e-3}, budget=Budget(labels=128), seed=7, split="val",
               report=lambda s, v: seen.append((s, v)))
    assert (res.accuracy, res.compute_tokens, res.split, res.metrics["compliance"]) == (42.0, 1234, "val", 90.0)
    assert seen == [(0, 10.0)]
    import fake_api

    assert fake_api.CALLS == [dict(arm="direct_grpo", params={"lr": 1e-3}, labels=128, seed=7, split="val",
                                   config="configs/toy_short.toml")]


def test_reference_adapter_gives_each_configuration_its_own_run_directory(tmp_path, monkeypatch):
    """Trials and evaluations sharing a seed must not meet in one run directory (named by arm, seed and
    labels only); the same configuration gets the same directory back, so a rerun resumes or reads it."""
    (tmp_path / "fake_api2.py").write_text(
        "from dataclasses import dataclass\n"
        "DIRS = []\n"
        "@dataclass(frozen=True)\n"
        "class R:\n    accuracy: float\n    metrics: dict\n    compute_tokens: int\n"
        "def run_arm(arm, *, params, labels, seed, teacher_labels=None, split='val', report=None, workdir=None):\n"
        "    DIRS.append(workdir)\n"
        "    return R(1.0, {}, 1)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    arms = ReferenceArms(api_module="fake_api2", workdir=str(tmp_path / "w"))
    for params in ({"lr": 1e-3, "temperature": 1.0}, {"temperature": 1.0, "lr": 1e-3}, {"lr": 2e-3, "temperature": 1.0}):
        arms("direct_grpo", params=params, budget=Budget(labels=64), seed=7, split="val")
    arms("rl_teacher_bridge", params={"lr": 1e-3, "temperature": 1.0}, budget=Budget(labels=64), seed=7, split="val")
    import fake_api2

    a, same, other, bridge = fake_api2.DIRS
    assert a == same == arms.run_workdir("direct_grpo", {"temperature": 1.0, "lr": 1e-3})
    assert len({a, other, bridge}) == 3 and all(d.parent == tmp_path / "w" for d in (a, other, bridge))
    assert ReferenceArms(api_module="fake_api2").run_workdir("direct_grpo", {"lr": 1e-3}) is None


def test_compute_matched_evaluation_is_skipped_when_stages_stop_at_their_plateau(tmp_path):
    """Under the plateau protocol a longer cap buys no tokens: no stretched run is made (equal compute is
    read off the evaluation runs' curves); without the protocol the same study makes them."""
    from tuning.evaluation import evaluate_compute_matched, evaluate_label_matched
    from tuning.sources import load_arm_source
    from tuning.storage import open_storage

    made = {}
    for plateau in (False, True):
        url = f"journal:///{tmp_path}/p{int(plateau)}.log"
        assert main(["run", "--arms", "direct_grpo,rl_teacher_bridge", "--trials", "2", "--storage", url,
                     "--study", "s", "--arm-source", "synthetic", "--labels", "64", "--eval-seeds", "2"]) == 0
        handle, source = open_storage(url), load_arm_source("synthetic", {})
        assert evaluate_label_matched(handle, "s", source) == 4
        if plateau:
            source.fn.stops_at_plateau = lambda: True
        made[plateau] = evaluate_compute_matched(handle, "s", source)
    assert made[False] > 0 and made[True] == 0


def test_status_prints_counts(tmp_path, capsys):
    url = f"journal:///{tmp_path}/j.log"
    assert main(["run", "--arms", "direct_grpo", "--trials", "2", "--storage", url, "--study", "st", *SYN]) == 0
    capsys.readouterr()
    assert main(["status", "--study", "st", "--storage", url]) == 0
    line = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("direct_grpo")][0]
    assert line.split()[1:] == ["2", "2", "0", "0", "0", "0", "0"]


@pytest.mark.slow
def test_run_logs_progress_with_best_so_far_and_report_ends_with_a_verdict(tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/s.db"
    assert main(["run", "--arms", "direct_grpo,rl_teacher_bridge", "--trials", "2", "--storage", url,
                 "--study", "v", *SYN]) == 0
    progress = [ln.split("] ", 1)[1] for ln in capsys.readouterr().err.splitlines() if "] progress: " in ln]
    assert [p.split(" trials")[0] for p in progress] == [f"progress: {k}/4" for k in range(1, 5)]
    assert progress[-1].startswith("progress: 4/4 trials (100%); best so far: direct_grpo ")
    assert "ETA" in progress[0] and "ETA" not in progress[-1]
    # best so far equals the best stored trial of each arm
    report_dir = tmp_path / "r"
    assert main(["report", "--study", "v", "--storage", url, "--out", str(report_dir)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    df = pd.read_csv(report_dir / "fairness_report.csv")
    assert len(df) == 2  # one row per arm
    for arm, best in zip(df["arm"], df["best_score"]):
        assert f"{arm} {best:.2f}%" in progress[-1]
    lead = df.sort_values("eval_mean").iloc[-1]
    assert last.startswith("verdict: ") and f"{lead['arm']} {lead['eval_mean']:.1f}%" in last
    assert ("beats" in last) != ("no clear winner" in last)


def test_verdict_reads_the_paired_interval():
    import numpy as np

    from tuning.report import paired_comparisons, verdict

    def rep(acc_a, acc_b, improving=(False, False)):
        seeds = range(len(acc_a))
        evals = pd.DataFrame([{"arm": "a", "seed": s, "accuracy": x} for s, x in zip(seeds, acc_a)]
                             + [{"arm": "b", "seed": s, "accuracy": x} for s, x in zip(seeds, acc_b)])
        summary = pd.DataFrame({"arm": ["a", "b"], "eval_mean": [np.mean(acc_a), np.mean(acc_b)],
                                "eval_ci_low": [min(acc_a), min(acc_b)], "eval_ci_high": [max(acc_a), max(acc_b)],
                                "still_improving": list(improving)})
        cmp = paired_comparisons(evals, ["a", "b"], np.random.default_rng(0))
        return type("Rep", (), {"summary": summary, "evals": evals, "comparisons": cmp})()

    clear = verdict(rep([20.0, 21, 22, 23], [30.0, 31, 33, 32]))
    assert clear.startswith("verdict: b 31.5% [30.0, 33.0] beats a 21.5% by +10.0 points")
    assert clear.endswith("over 4 paired seeds; no arm was still improving; no best value at the edge of its range")
    tie = verdict(rep([20.0, 25, 22, 23], [21.0, 22, 24, 22], improving=(True, False)))
    assert tie.startswith("verdict: no clear winner: ") and "includes 0" in tie
    assert "still improving at the end of the budget: a (more trials could change this)" in tie
    edged = rep([20.0, 21, 22, 23], [30.0, 31, 33, 32])
    edged.summary["at_edge"] = ["", "fkl_steps=0.03"]
    assert verdict(edged).endswith("best value at the edge of its range: b fkl_steps=0.03 (the range may cut off "
                                   "the optimum)")
    empty = rep([20.0], [21.0])
    empty.summary["eval_mean"] = np.nan
    assert verdict(empty).startswith("verdict: no evaluation")


@pytest.mark.slow
def test_compute_matched_view_stretches_the_cheaper_arm_to_equal_tokens(tmp_path, capsys):
    """The report's second view re-runs the cheaper arm's best configuration with longer stages until
    its per-run tokens lie within 5% of the dearer arm's, and compares on the same evaluation seeds."""
    url = f"sqlite:///{tmp_path}/s.db"
    assert main(["run", "--arms", "direct_grpo,rl_teacher_bridge", "--trials", "2", "--storage", url,
                 "--study", "cm", *SYN]) == 0
    out = tmp_path / "r"
    assert main(["report", "--study", "cm", "--storage", url, "--out", str(out)]) == 0
    label = pd.read_csv(out / "fairness_report_evals.csv").groupby("arm")["compute_tokens"].mean()
    assert label["rl_teacher_bridge"] > 1.5 * label["direct_grpo"]  # the bridge is dearer per run
    cm = pd.read_csv(out / "fairness_report_evals_compute.csv")
    tokens = cm.groupby("arm")["compute_tokens"].mean()
    assert abs(tokens["direct_grpo"] / tokens["rl_teacher_bridge"] - 1) <= 0.05
    assert set(cm.groupby("arm")["seed"].apply(tuple).map(len)) == {10}
    factor = cm[cm.arm == "direct_grpo"]["factor"].iloc[0]
    assert factor > 1.5 and (cm[cm.arm == "rl_teacher_bridge"]["factor"] == 1.0).all()
    md = (out / "fairness_report.md").read_text()
    assert "## Compute-matched comparison (same per-run training tokens" in md and f"×{factor:.2f}" in md
    assert "| dims |" in md.replace("| arm | dims |", "| dims |")
    # a second report resumes: nothing is re-run
    capsys.readouterr()
    assert main(["report", "--study", "cm", "--storage", url, "--out", str(out)]) == 0
    assert "compute-matched eval" not in capsys.readouterr().err


def test_range_positions_flag_the_committed_studies_edge_values():
    """Issue 22: two committed studies had a best value at the edge of its range that nothing flagged:
    fairness_direct's bridge fkl_steps = 49 in [40, 400] and fairness_paper_world's teacher_lr = 1.4e-6
    in the log range [1e-6, 1e-3]. Both are read from the committed reports and flagged; a middle value is not."""
    import json
    from pathlib import Path

    from reference.api import PARAM_SPACE
    from tuning.report import at_edge, range_positions

    root = Path(__file__).resolve().parents[1] / "docs" / "results"
    space = PARAM_SPACE["rl_teacher_bridge"]
    for study, name, where in (("fairness_direct", "fkl_steps", 0.025), ("fairness_paper_world", "teacher_lr", 0.05)):
        row = pd.read_csv(root / study / "fairness_report.csv").set_index("arm").loc["rl_teacher_bridge"]
        pos = range_positions(space, json.loads(row["best_params"]))
        assert pos[name] == pytest.approx(where, abs=0.005) and at_edge(pos[name])
        assert not at_edge(0.5) and at_edge(0.95)


def test_lengths_are_not_searched_under_the_plateau_protocol():
    """Under [plateau] each stage's length is chosen by its validation plateau, so no trial searches it."""
    from conftest import tiny_config
    from reference.api import LENGTH_PARAMS, param_space
    fixed, plateau = param_space(tiny_config()), param_space(tiny_config(**{"plateau.enabled": True}))
    assert "fkl_steps" in fixed["rl_teacher_bridge"] and "grpo_epochs" in fixed["direct_grpo"]
    for arm, space in plateau.items():
        assert not set(space) & set(LENGTH_PARAMS)
        assert set(space) == set(fixed[arm]) - set(LENGTH_PARAMS)
