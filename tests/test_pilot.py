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

# The pilot's mechanics on the old short schedule (20-step bridge stages, configs/legacy/): seconds, not
# the minutes of the gated schedule; what is tested here does not depend on the learning rates.
SHORT = "legacy/toy_short"

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
    res = pl.run_pilot(SHORT, pl.PilotConfig(k=K, problems=N_PROBLEMS), out, progress=None)
    return res, out


@pytest.mark.slow  # the main_pilot fixture: a toy pilot (base models, rollouts, KL)
def test_tables_validate_and_calibrate_reads_them(main_pilot):
    from theory.calibrate import calibrate

    res, out = main_pilot
    problems = read_table(out / "problems.csv", "problems")
    assert sorted(problems["model"].unique()) == ["student", "teacher"]
    assert len(problems) == 2 * N_PROBLEMS and (problems["k"] == K).all()
    pilot_runs = read_table(out / "pilot_runs.csv", "runs")
    assert set(pilot_runs["metric"]) == {"kl0_per_token", "kl_forward_per_token", "kl0_compliant_per_token"}
    assert (pilot_runs["split"] == "probe").all() and (pilot_runs["arm"] == "raw_teacher_bridge").all()
    # a small measured run table beside the pilot's rows, as a user would give calibrate
    rows = [{"arm": arm, "seed": s, "world": "toy-arith", "teacher_labels": t, "student_labels": n - t,
             "compute_tokens": 1, "split": "test", "metric": "accuracy", "value": v + s}
            for arm, n, t, v in (("direct_grpo", 256, 0, 40.0), ("rl_teacher_bridge", 256, 256, 45.0))
            for s in range(2)]
    scn = calibrate(pd.concat([pd.DataFrame(rows), pilot_runs], ignore_index=True), problems)
    kl0 = scn.get("inputs.kl0")
    assert kl0.tag == "measured" and kl0.value == pytest.approx(res.kl["kl0_per_token"]["value"])


@pytest.mark.slow
def test_pass_at_k_monotone_and_pass1_is_accuracy(main_pilot):
    res, out = main_pilot
    pak = pd.read_csv(out / "pass_at_k.csv")
    summ = pd.read_csv(out / "summary.csv")
    assert set(pak["model"]) == {"student", "teacher"}
    for model, g in pak.groupby("model"):
        v = g.sort_values("k")["pass_at_k"].to_numpy()
        assert list(g.sort_values("k")["k"]) == list(range(1, K + 1))
        assert (np.diff(v) >= -1e-12).all()
        acc = summ.loc[summ["model"] == model, "accuracy"].item()
        assert v[0] == pytest.approx(acc)
        assert v[-1] == pytest.approx(summ.loc[summ["model"] == model, "pass_at_k"].item())


@pytest.mark.slow
def test_kl_is_zero_with_a_copied_teacher_and_positive_otherwise(main_pilot, tmp_path):
    res, _ = main_pilot
    assert res.kl["kl0_per_token"]["value"] > 0.1 and res.kl["kl_forward_per_token"]["value"] > 0.1
    cf = pl.run_pilot("toy_counterfactual", pl.PilotConfig(k=1, problems=8), tmp_path, progress=None)
    assert cf.kl["kl0_per_token"]["tokens"] > 0
    assert abs(cf.kl["kl0_per_token"]["value"]) < 1e-6
    assert abs(cf.kl["kl_forward_per_token"]["value"]) < 1e-6
    assert abs(cf.kl["kl0_compliant_per_token"]["value"]) < 1e-6
    # the style part averages over protocol-following rollouts only
    c = res.kl["kl0_compliant_per_token"]
    assert 0 < c["compliant_sequences"] <= c["sequences"] and c["tokens"] > 0


@pytest.mark.slow
def test_rerun_resumes_without_recomputing(main_pilot, tmp_path, monkeypatch):
    res, out = main_pilot
    before = {f: (out / f).read_text() for f in ("problems.csv", "pass_at_k.csv", "pilot_runs.csv")}

    def boom(*a, **k):
        raise AssertionError("recomputed a finished part")
    monkeypatch.setattr("reference.evaluate.evaluate", boom)
    monkeypatch.setattr(pl, "mean_token_kl", boom)
    again = pl.run_pilot(SHORT, pl.PilotConfig(k=K, problems=N_PROBLEMS), out, progress=None)
    assert all(p["cached"] for p in again.parts.values()) and len(again.parts) == 5
    assert {f: (out / f).read_text() for f in before} == before


@pytest.mark.slow  # a pilot run (student only)
def test_student_only_writes_no_kl(tmp_path):
    res = pl.run_pilot(SHORT, pl.PilotConfig(k=2, problems=4, models=("student",)), tmp_path, progress=None)
    assert res.runs is None and not (tmp_path / "pilot_runs.csv").exists()
    assert set(read_table(tmp_path / "problems.csv", "problems")["model"]) == {"student"}


# ---------- CLI ----------

@pytest.mark.parametrize("flags,needle", [
    (["--k", "0"], "k must be >= 1"),
    (["--k", "abc"], "--k"),
    (["--models", "student,critic"], "unknown model 'critic'"),
    (["--problems", "101"], "exceeds the 100 problems"),  # the short config has 100 val problems
    (["--split", "train"], "split must be one of"),
    (["--seed", "1.5"], "--seed"),
    (["--self-distill", "--models", "teacher"], "--self-distill needs the student"),
])
def test_cli_bad_flags_one_line(flags, needle, tmp_path, capsys):
    rc = cli.main(["pilot", "--config", SHORT, "--out", str(tmp_path / "o"), "--workdir", str(tmp_path / "w"),
                   *flags])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and needle in err


def test_negative_seed_is_refused_by_the_config_too():
    with pytest.raises(InputError, match="pilot: seed must be >= 0, got -1"):
        pl.PilotConfig(seed=-1)


def test_cli_missing_config_one_line(tmp_path, capsys):
    assert cli.main(["pilot", "--config", "no_such_config", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no_such_config" in err


@pytest.mark.slow
def test_cli_prints_and_writes(main_pilot, capsys):
    _, out = main_pilot  # finished parts: the CLI only loads and writes
    assert cli.main(["pilot", "--config", SHORT, "--k", str(K), "--problems", str(N_PROBLEMS),
                     "--out", str(out), "--workdir", str(out / ".work")]) == 0
    text = capsys.readouterr().out
    assert "5 loaded" in text  # the module fixture's parts, not recomputed
    assert "kl0_per_token" in text and "pass@4" in text and "wall" in text
    assert Path(out / "pilot.json").is_file()


# ---------- self-distillation: the bridge stages with teacher = the student's own copy ----------

SD_MODELS = ["self_distill_fkl_warmup", "self_distill_opd"]


@pytest.fixture(scope="module")
def sd_pilot(tmp_path_factory):
    out = tmp_path_factory.mktemp("pilot_sd")
    res = pl.run_pilot(SHORT, pl.PilotConfig(k=K, problems=N_PROBLEMS, self_distill=True), out, progress=None)
    return res, out


@pytest.mark.slow  # the sd_pilot fixture: a self-distilled toy pilot
def test_self_distill_adds_two_models_that_validate(sd_pilot, main_pilot):
    from theory.tables import validate_problems

    res, out = sd_pilot
    problems = validate_problems(read_table(out / "problems.csv", "problems"))
    assert list(problems["model"].unique()) == ["student", "teacher", *SD_MODELS]
    for model in SD_MODELS:
        g = problems[problems["model"] == model]
        assert len(g) == N_PROBLEMS and (g["k"] == K).all()
        assert ((0 <= g["correct"]) & (g["correct"] <= K) & (g["compliant"] <= K)).all()
    assert set(pd.read_csv(out / "summary.csv")["model"]) == {"student", "teacher", *SD_MODELS}
    # the base parts are the same measurement with or without the flag (the copies never touch the student)
    base = read_table(main_pilot[1] / "problems.csv", "problems")
    pd.testing.assert_frame_equal(problems[problems["model"].isin(["student", "teacher"])].reset_index(drop=True),
                                  base)
    # both stages ran the config's schedule and were recorded
    assert [res.self_distill[s]["steps"] for s in ("fkl_warmup", "opd")] == [20, 20]


@pytest.mark.slow
def test_self_distill_teacher_is_an_exact_copy(sd_pilot):
    import torch

    from reference.assemble import build_models, build_world
    from reference.config import load_config

    cfg = load_config(SHORT)
    models = build_models(cfg, need_teacher=False)
    teacher, trainable = pl.self_distill_pair(models.student)
    base = models.student.state_dict()
    for name, w in teacher.state_dict().items():
        assert torch.equal(w, base[name]) and torch.equal(trainable.state_dict()[name], base[name])
    assert not any(p.requires_grad for p in teacher.parameters())
    prompts = [p.prompt for p in build_world(cfg, models.tokenizer).val[:6]]
    kl = pl.mean_token_kl(trainable, trainable, teacher, prompts, models.ctx, temperature=1.0,
                          max_new_tokens=20, direction="reverse", batch=6)
    assert kl["tokens"] > 0 and kl["value"] == 0.0
    # and inside the run: the warmup's own KL before its first update is exactly 0, then training moves it
    fkl = sd_pilot[0].self_distill["fkl_warmup"]
    assert fkl["first"]["forward_kl"] == 0.0 and fkl["last"]["forward_kl"] > 0.0


@pytest.mark.slow
def test_self_distill_rerun_resumes_without_recomputing(sd_pilot, monkeypatch):
    res, out = sd_pilot
    before = {f: (out / f).read_text() for f in ("problems.csv", "pass_at_k.csv", "summary.csv")}

    def boom(*a, **k):
        raise AssertionError("recomputed a finished part")
    monkeypatch.setattr("reference.evaluate.evaluate", boom)
    monkeypatch.setattr("reference.stage_runner.train_stage", boom)
    monkeypatch.setattr(pl, "mean_token_kl", boom)
    again = pl.run_pilot(SHORT, pl.PilotConfig(k=K, problems=N_PROBLEMS, self_distill=True), out,
                         progress=None)
    assert all(p["cached"] for p in again.parts.values()) and len(again.parts) == 7
    assert {f: (out / f).read_text() for f in before} == before
    assert set(again.self_distill) == {"fkl_warmup", "opd"}  # stage records come from the cached weights


@pytest.mark.slow
def test_self_distill_partial_rerun_loads_the_warmup_weights(sd_pilot, monkeypatch, tmp_path):
    import shutil

    import reference.stage_runner as runner

    _, out = sd_pilot
    work = tmp_path / "work"
    shutil.copytree(out / ".work", work)
    opd_samples = next(work.glob("samples_self_distill_opd_*.csv"))
    expected = opd_samples.read_text()
    opd_samples.unlink()
    shutil.rmtree(next(work.glob("self_distill_fkl_warmup_opd_*")))  # the trained-after-OPD weights
    ran = []
    real = runner.train_stage

    def counting(stage, *a, **k):
        ran.append(stage.value)
        return real(stage, *a, **k)
    monkeypatch.setattr(runner, "train_stage", counting)
    again = pl.run_pilot(SHORT, pl.PilotConfig(k=K, problems=N_PROBLEMS, self_distill=True), tmp_path / "o",
                         workdir=work, progress=None)
    assert ran == ["opd"]  # FKL came from its cached weights
    assert [p for p, v in again.parts.items() if not v["cached"]] == ["samples_self_distill_opd"]
    assert opd_samples.read_text() == expected  # same numbers as the uninterrupted run


@pytest.mark.slow
def test_pilot_and_pipeline_share_one_cached_stage_runner(sd_pilot, monkeypatch, tmp_path):
    """Checkpoint, resume and seeding of a stage live in stage_runner.run_stage alone: the pilot's
    self-distillation and the pipeline both go through it (issue 15)."""
    import shutil

    import reference.pipeline as pipeline
    import reference.stage_runner as runner
    from conftest import tiny_config  # tests/ is on sys.path

    calls = []
    real = runner.run_stage

    def spy(stage, *a, **k):
        done = real(stage, *a, **k)
        calls.append((stage.value, done.cached))
        return done
    monkeypatch.setattr(runner, "run_stage", spy)  # where the pilot looks it up
    monkeypatch.setattr(pipeline, "run_stage", spy)  # where the pipeline does
    _, out = sd_pilot
    work = tmp_path / "work"
    shutil.copytree(out / ".work", work)
    next(work.glob("samples_self_distill_opd_*.csv")).unlink()
    shutil.rmtree(next(work.glob("self_distill_fkl_warmup_opd_*")))
    pl.run_pilot(SHORT, pl.PilotConfig(k=K, problems=N_PROBLEMS, self_distill=True), tmp_path / "o",
                 workdir=work, progress=None)
    assert calls == [("fkl_warmup", True), ("opd", False)]
    calls.clear()
    pipeline.run_pipeline(tiny_config(), "raw_teacher_bridge", 0, workdir=tmp_path / "p", progress=False)
    assert calls == [("fkl_warmup", False), ("opd", False)]


@pytest.mark.slow
def test_without_the_flag_outputs_are_unchanged(sd_pilot, main_pilot, tmp_path):
    import json

    _, sd_out = sd_pilot
    _, main_out = main_pilot
    # same workdir as the self-distill run (base parts shared), no flag: the base pilot's files exactly
    res = pl.run_pilot(SHORT, pl.PilotConfig(k=K, problems=N_PROBLEMS), tmp_path, workdir=sd_out / ".work",
                       progress=None)
    assert all(p["cached"] for p in res.parts.values()) and len(res.parts) == 5
    for f in ("problems.csv", "pass_at_k.csv", "summary.csv", "pilot_runs.csv"):
        assert (tmp_path / f).read_bytes() == (main_out / f).read_bytes(), f
    d = json.loads((tmp_path / "pilot.json").read_text())
    assert "self_distill" not in d["pilot"] and "self_distill_stages" not in d
    assert "self_distill" not in pl.format_pilot(res) and "student  " in pl.format_pilot(res)


@pytest.mark.slow
def test_cli_self_distill_prints_the_new_models(sd_pilot, capsys):
    _, out = sd_pilot
    assert cli.main(["pilot", "--config", SHORT, "--k", str(K), "--problems", str(N_PROBLEMS),
                     "--self-distill", "--out", str(out), "--workdir", str(out / ".work")]) == 0
    text = capsys.readouterr().out
    assert "7 loaded" in text and "self_distill_fkl_warmup" in text and "self_distill_opd" in text
    assert "self-distill opd: 20 steps" in text


# ---------- pilot -> calibrate, as the README runs it ----------

@pytest.mark.slow  # a tiny pilot, two tiny trained arms, two calibrations (~10 s)
def test_pilot_then_calibrate_names_the_missing_runs_then_works(tmp_path, monkeypatch, capsys):
    from budget_planner.cli import main as planner
    from conftest import tiny_config, write_config

    monkeypatch.chdir(tmp_path)
    config = str(write_config(tiny_config(), tmp_path / "tiny.toml"))
    assert cli.main(["pilot", "--config", config, "--out", "pilot/", "--k", "2", "--problems", "12",
                     "--workdir", "w"]) == 0
    out = capsys.readouterr().out
    assert "pilot//" not in out and "wrote pilot/problems.csv" in out
    tables = ["--problems", "pilot/problems.csv", "--out", "my.toml"]
    # the pilot alone: base models, no trained arm; the one line names what is missing and how to make it
    assert planner(["calibrate", "--runs", "pilot/pilot_runs.csv", *tables]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: run table: no rows with metric 'accuracy'"), err
    assert "`reference-pipeline run --config CONFIG --arm direct_grpo --out runs.csv`" in err[0]
    assert "rl_teacher_bridge" in err[0] and not (tmp_path / "my.toml").exists()
    # the sequence the pilot prints next (and the README shows): two trained arms, then both tables
    for arm in ("direct_grpo", "rl_teacher_bridge"):
        assert cli.main(["run", "--config", config, "--arm", arm, "--out", "runs.csv", "--workdir", "w"]) == 0
    assert planner(["calibrate", "--runs", "runs.csv", "pilot/pilot_runs.csv", *tables]) == 0
    assert "wrote my.toml: calibrated from a pilot (2 observations)" in capsys.readouterr().out
