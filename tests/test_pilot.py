"""`reference-pipeline pilot`: the pass@k estimator, the tables it writes (and that calibrate reads),
the KL at the start of the bridge, resume, and one-line flag errors. Tier 2-3: toy base models, a few
problems, seconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from reference import cli
from reference import pilot as pl
from theory.errors import InputError
from theory.tables import read_table

K, N_PROBLEMS = 4, 12


# ---------- pure estimator ----------

def test_pass_at_k_unbiased_by_hand():
    # n=4 samples, c=2 correct: pass@1 = 2/4; pass@2 = 1 - C(2,2)/C(4,2) = 1 - 1/6; pass@3 = 1 (n-c < 3)
    assert pl.pass_at_k_unbiased([4], [2], 1) == pytest.approx(50.0)
    assert pl.pass_at_k_unbiased([4], [2], 2) == pytest.approx(100 * 5 / 6)
    assert pl.pass_at_k_unbiased([4], [2], 3) == pytest.approx(100.0)
    # averaged over problems: (0 + 1 - C(7,3)/C(8,3)) / 2 = (0 + 3/8) / 2 with c = 0 and c = 1 of 8
    assert pl.pass_at_k_unbiased([8, 8], [0, 1], 3) == pytest.approx(100 * 3 / 16)
    with pytest.raises(InputError):
        pl.pass_at_k_unbiased([2], [1], 3)


def test_summary_by_hand():
    probs = pd.DataFrame({"model": ["s", "s"], "problem_id": ["a", "b"], "k": [4, 4], "correct": [2, 0],
                          "compliant": [4, 1]})
    r = pl.summary_table(probs).iloc[0]
    assert r.accuracy == pytest.approx(25.0)  # 2 of 8
    assert r.compliance == pytest.approx(62.5)  # 5 of 8
    assert r.accuracy_given_compliance == pytest.approx(40.0)  # 2 of 5
    assert r.pass_at_k == pytest.approx(50.0)  # one problem of two ever solved


# ---------- a real pilot on the toy base models ----------

@pytest.fixture(scope="module")
def main_pilot(tmp_path_factory):
    out = tmp_path_factory.mktemp("pilot_main")
    res = pl.run_pilot("toy_short", pl.PilotConfig(k=K, problems=N_PROBLEMS), out, progress=None)
    return res, out


def test_tables_validate_and_calibrate_reads_them(main_pilot):
    from theory.calibrate import calibrate

    res, out = main_pilot
    problems = read_table(out / "problems.csv", "problems")
    assert sorted(problems["model"].unique()) == ["student", "teacher"]
    assert len(problems) == 2 * N_PROBLEMS and (problems["k"] == K).all()
    pilot_runs = read_table(out / "pilot_runs.csv", "runs")
    assert set(pilot_runs["metric"]) == {"kl0_per_token", "kl_forward_per_token"}
    assert (pilot_runs["split"] == "probe").all() and (pilot_runs["arm"] == "raw_teacher_bridge").all()
    # a small measured run table beside the pilot's rows, as a user would give calibrate
    rows = [{"arm": arm, "seed": s, "world": "toy-arith", "teacher_labels": t, "student_labels": n - t,
             "compute_tokens": 1, "split": "test", "metric": "accuracy", "value": v + s}
            for arm, n, t, v in (("direct_grpo", 256, 0, 40.0), ("rl_teacher_bridge", 256, 256, 45.0))
            for s in range(2)]
    scn = calibrate(pd.concat([pd.DataFrame(rows), pilot_runs], ignore_index=True), problems)
    kl0 = scn.get("inputs.kl0")
    assert kl0.tag == "measured" and kl0.value == pytest.approx(res.kl["kl0_per_token"]["value"])


def test_pass_at_k_monotone_and_pass1_is_accuracy(main_pilot):
    res, out = main_pilot
    pak = pd.read_csv(out / "pass_at_k.csv")
    summ = pd.read_csv(out / "summary.csv")
    for model, g in pak.groupby("model"):
        v = g.sort_values("k")["pass_at_k"].to_numpy()
        assert list(g.sort_values("k")["k"]) == list(range(1, K + 1))
        assert (np.diff(v) >= -1e-12).all()
        acc = summ.loc[summ["model"] == model, "accuracy"].item()
        assert v[0] == pytest.approx(acc)
        assert v[-1] == pytest.approx(summ.loc[summ["model"] == model, "pass_at_k"].item())


def test_kl_is_zero_with_a_copied_teacher_and_positive_otherwise(main_pilot, tmp_path):
    res, _ = main_pilot
    assert res.kl["kl0_per_token"]["value"] > 0.1 and res.kl["kl_forward_per_token"]["value"] > 0.1
    cf = pl.run_pilot("toy_counterfactual", pl.PilotConfig(k=1, problems=8), tmp_path, progress=None)
    assert cf.kl["kl0_per_token"]["tokens"] > 0
    assert abs(cf.kl["kl0_per_token"]["value"]) < 1e-6
    assert abs(cf.kl["kl_forward_per_token"]["value"]) < 1e-6


def test_rerun_resumes_without_recomputing(main_pilot, tmp_path, monkeypatch):
    res, out = main_pilot
    before = {f: (out / f).read_text() for f in ("problems.csv", "pass_at_k.csv", "pilot_runs.csv")}

    def boom(*a, **k):
        raise AssertionError("recomputed a finished part")
    monkeypatch.setattr("reference.evaluate.evaluate", boom)
    monkeypatch.setattr(pl, "mean_token_kl", boom)
    again = pl.run_pilot("toy_short", pl.PilotConfig(k=K, problems=N_PROBLEMS), out, progress=None)
    assert all(p["cached"] for p in again.parts.values()) and len(again.parts) == 4
    assert {f: (out / f).read_text() for f in before} == before


def test_student_only_writes_no_kl(tmp_path):
    res = pl.run_pilot("toy_short", pl.PilotConfig(k=2, problems=4, models=("student",)), tmp_path, progress=None)
    assert res.runs is None and not (tmp_path / "pilot_runs.csv").exists()
    assert set(read_table(tmp_path / "problems.csv", "problems")["model"]) == {"student"}


# ---------- CLI ----------

@pytest.mark.parametrize("flags,needle", [
    (["--k", "0"], "k must be >= 1"),
    (["--k", "abc"], "--k"),
    (["--models", "student,critic"], "unknown model 'critic'"),
    (["--problems", "101"], "exceeds the 100 problems"),  # toy_short has 100 val problems
    (["--split", "train"], "split must be one of"),
    (["--seed", "1.5"], "--seed"),
])
def test_cli_bad_flags_one_line(flags, needle, tmp_path, capsys):
    rc = cli.main(["pilot", "--config", "toy_short", "--out", str(tmp_path / "o"), "--workdir", str(tmp_path / "w"),
                   *flags])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and needle in err


def test_cli_missing_config_one_line(tmp_path, capsys):
    assert cli.main(["pilot", "--config", "no_such_config", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no_such_config" in err


def test_cli_prints_and_writes(main_pilot, capsys):
    _, out = main_pilot  # finished parts: the CLI only loads and writes
    assert cli.main(["pilot", "--config", "toy_short", "--k", str(K), "--problems", str(N_PROBLEMS),
                     "--out", str(out), "--workdir", str(out / ".work")]) == 0
    text = capsys.readouterr().out
    assert "4 loaded" in text  # the module fixture's parts, not recomputed
    assert "kl0_per_token" in text and "pass@4" in text and "wall" in text
    assert Path(out / "pilot.json").is_file()
