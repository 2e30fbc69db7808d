"""`reference-pipeline pilot-curves` (issue 23 item 3): short capped plateau-protocol runs at small N and
their whole validation curves. Pure checks of the plan (caps, seeds, which runs), the `plateau.stop`
switch's place in the keys, one-line input errors that write nothing, and a toy pilot of two arms at two
budgets (tier 3, about 10 s): the files' schema, caps at most the fraction of the config's, a step-0 point
and a curve that reaches its cap, the cost, and a second invocation that reads every run back."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from conftest import tiny_config, write_config
from reference.cli import main
from reference.pilot_curves import CURVE_FILE_COLUMNS, plan_pilot_curves, scaled_caps
from theory.errors import InputError
from theory.tables import read_table

# the plateau tests' tiny world (16 labels, 4 prompts per step, 16 validation problems at k 2): GRPO caps of
# 4 passes (16 steps at N = 16), FKL and OPD 4 steps; validated every eighth of a cap. A tolerance of 100 SE
# calls a plateau at the first point with two points in each window, so the protocol's own stop would end
# GRPO early: the pilot must not.
PROTOCOL = {"plateau.enabled": True, "plateau.problems": 16, "plateau.k": 2, "plateau.every": 0.125,
            "plateau.tolerance": 100.0, "plateau.min_fraction": 0.2, "grpo.epochs": 4.0, "grpo.warmup_steps": 2,
            "fkl.steps": 4, "opd.steps": 4}
FRACTION = 0.5
ARMS = "direct_grpo,rl_teacher_bridge"


def _cfg(**extra):
    return tiny_config(**{**PROTOCOL, **extra})


def _plan(cfg=None, **kw):
    args = {"arms": ARMS, "labels": "8,16", "cap_fraction": FRACTION, "seeds": 1, "seed_base": 700, **kw}
    return plan_pilot_curves(cfg or _cfg(), **args)


# ---------- the plan: pure ----------

def test_caps_scale_by_the_fraction_rounded_up_to_a_whole_step():
    cfg = _cfg(**{"grpo.max_steps": 30, "fkl.steps": 600, "opd.steps": 7})
    assert scaled_caps(cfg, 0.2) == {"grpo.epochs": 0.8, "grpo.max_steps": 6, "fkl.steps": 120, "opd.steps": 2}
    assert scaled_caps(cfg, 0.1) == {"grpo.epochs": 0.4, "grpo.max_steps": 3, "fkl.steps": 60, "opd.steps": 1}
    assert scaled_caps(cfg, 0.01)["opd.steps"] == 1  # at least one step
    assert scaled_caps(_cfg(), 1.0)["grpo.max_steps"] == 0  # no step ceiling stays none
    pilot = _plan().config_for(8)
    assert (pilot.world.labels, pilot.grpo.epochs, pilot.fkl.steps, pilot.opd.steps) == (8, 2.0, 2, 2)
    assert pilot.plateau.enabled and not pilot.plateau.stop


def test_every_arm_runs_at_every_budget_except_one_that_reads_no_label():
    plan = _plan(arms="raw_teacher_bridge,direct_grpo", labels="16,4,8", seeds=2)
    assert plan.labels == (4, 8, 16) and plan.seeds == (700, 701)
    runs = plan.runs()
    assert [r for r in runs if r[1] == "raw_teacher_bridge"] == [(4, "raw_teacher_bridge", 700),
                                                                (4, "raw_teacher_bridge", 701)]
    assert [r[0] for r in runs if r[1] == "direct_grpo"] == [16, 16, 8, 8, 4, 4]  # the longest runs first


def test_the_stop_switch_is_in_the_checkpoint_key_only():
    """`plateau.stop = false` trains a different stage (it runs to the cap), so its checkpoint key differs;
    its seed key and the gate's key do not (the same first steps and the same gate verdict); at its default
    the switch is left out of every hash."""
    from reference.gate import gate_key
    from reference.stage_runner import seed_key, stage_key
    on, prefix = _cfg(), [("student_grpo", 16)]
    off = on.override({"plateau.stop": False})
    assert on.override({"plateau.stop": True}).hash() == on.hash()
    assert stage_key(off, 0, prefix) != stage_key(on, 0, prefix)
    assert seed_key(off, 0, prefix) == seed_key(on, 0, prefix)
    assert gate_key(off) == gate_key(on)


@pytest.mark.parametrize("kw, match", [
    ({"arms": "direct_grpo,nope"}, "unknown arm 'nope'"),
    ({"labels": "0,16"}, r"N=0 must lie in \[1, 16\]"),
    ({"labels": "8,17"}, r"N=17 must lie in \[1, 16\]"),
    ({"labels": "8,x"}, "'x' is not a whole number"),
    ({"labels": ","}, "at least one budget"),
    ({"cap_fraction": 0.0}, r"--cap-fraction must lie in \(0, 1\]"),
    ({"cap_fraction": 1.5}, r"--cap-fraction must lie in \(0, 1\]"),
    ({"seed_base": 899, "seeds": 2}, "reserved for the protocol checks"),
])
def test_bad_plans_are_refused(kw, match):
    with pytest.raises(InputError, match=match):
        _plan(**kw)


def test_a_config_without_the_protocol_is_refused():
    with pytest.raises(InputError, match=r"does not run the plateau protocol.*enabled = true"):
        _plan(tiny_config())


# ---------- the command line: bad input is one line, exit 2, nothing written ----------

BAD_ARGS = [
    (["--arms", "direct_grpo,nope"], "unknown arm 'nope'"),
    (["--labels", "16,17"], "N=17 must lie in [1, 16]"),
    (["--cap-fraction", "0"], "--cap-fraction must lie in (0, 1]"),
    (["--cap-fraction", "1.01"], "--cap-fraction must lie in (0, 1]"),
    (["--seeds", "0"], "argument --seeds"),
    (["--out", "FILE/sub"], "argument --out"),
    (["--config", "OFF"], "does not run the plateau protocol"),
]


@pytest.mark.parametrize("extra, message", BAD_ARGS, ids=[a[0] + " " + a[1] for a, _ in BAD_ARGS])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(extra, message, tmp_path, capsys):
    on, off, blocker = tmp_path / "on.toml", tmp_path / "off.toml", tmp_path / "FILE"
    write_config(_cfg(), on), write_config(tiny_config(), off), blocker.write_text("keep me")
    argv = ["pilot-curves", "--config", str(on), "--out", str(tmp_path / "out"), "--labels", "8,16", "--jobs", "1",
            *extra]
    subst = {"FILE": str(blocker), "OFF": str(off)}
    argv = [next((a.replace(k, v) for k, v in subst.items() if a.startswith(k)), a) for a in argv]
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(argv) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert out == "" and sorted(p.name for p in tmp_path.iterdir()) == before


# ---------- a toy pilot: two arms at N = 8 and 16, one seed ----------

@pytest.fixture(scope="module")
def pilot(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pilot_curves")
    config, out = write_config(_cfg(), tmp / "protocol.toml"), tmp / "out"
    argv = ["pilot-curves", "--config", str(config), "--out", str(out), "--arms", ARMS, "--labels", "8,16",
            "--cap-fraction", str(FRACTION), "--seeds", "1", "--jobs", "1"]
    assert main(argv) == 0
    return argv, out


@pytest.mark.slow  # the pilot fixture: four toy runs
def test_the_curve_file_has_the_schema_and_the_label_account(pilot):
    _, out = pilot
    curves = pd.read_csv(out / "pilot_curves.csv")
    assert list(curves.columns) == CURVE_FILE_COLUMNS
    assert set(curves["labels"]) == {8, 16} and set(curves["seed"]) == {700}
    acct = curves.groupby(["arm", "labels"])[["teacher_labels", "student_labels"]].first()
    assert acct.loc[("direct_grpo", 16)].tolist() == [0, 16] and acct.loc[("rl_teacher_bridge", 8)].tolist() == [8, 0]
    # the student's stages only (the RL teacher's curve is not the student's), on cumulative tokens
    assert set(curves[curves["arm"] == "rl_teacher_bridge"]["stage"]) == {"fkl_warmup", "opd"}
    for _, run in curves.groupby(["arm", "labels"]):
        assert run["tokens"].is_monotonic_increasing
    assert curves["accuracy"].between(0, 100).all()
    runs = read_table(out / "pilot_curve_runs.csv", "runs")
    assert len(runs.groupby(["arm", "teacher_labels", "student_labels", "seed"])) == 4
    assert set(runs["split"]) == {"val"}  # a pilot never reads the test split


@pytest.mark.slow
def test_caps_are_the_fraction_of_the_configs_and_every_curve_runs_to_its_cap(pilot):
    _, out = pilot
    meta = json.loads((out / "pilot_curves.json").read_text())
    assert meta["cap_fraction"] == FRACTION and meta["config"].endswith("protocol.toml")
    assert meta["caps"]["pilot"] == {"grpo.epochs": 2.0, "grpo.max_steps": 0, "fkl.steps": 2, "opd.steps": 2}
    # by hand: GRPO at N reads N labels in 4 passes of 4 prompts (N steps), FKL and OPD 4 steps; half of each
    full = {("student_grpo", 8): 8, ("student_grpo", 16): 16, ("teacher_grpo", 8): 8, ("teacher_grpo", 16): 16,
            ("fkl_warmup", 8): 4, ("fkl_warmup", 16): 4, ("opd", 8): 4, ("opd", 16): 4}
    caps = meta["stage_caps"]
    assert len(caps) == 8
    for c in caps:
        assert c["config_cap"] == full[(c["stage"], c["labels"])]
        assert c["cap"] == math.ceil(FRACTION * c["config_cap"])
        assert c["steps_run"] == c["cap"] and not c["stopped_early"]
    curves = pd.read_csv(out / "pilot_curves.csv")
    for (arm, n, stage), pts in curves.groupby(["arm", "labels", "stage"]):
        cap = next(c["cap"] for c in caps if (c["arm"], c["labels"], c["stage"]) == (arm, n, stage))
        assert pts["step"].min() == 0 and pts["step"].max() == cap  # the starting point, and the whole capped curve
        if cap >= 8:
            assert list(pts["step"]) == list(range(0, cap + 1, cap // 8))


@pytest.mark.slow
def test_the_protocols_own_stop_would_have_ended_the_same_stage_early(pilot, tmp_path):
    """The contrast that makes `steps_run == cap` mean something: with the stop on, direct GRPO at N = 16
    (the pilot's config otherwise) stops before its cap."""
    import reference.pipeline as pl
    cfg = _plan().config_for(16).override({"plateau.stop": True})
    res = pl.run_pipeline(cfg, "direct_grpo", 700, workdir=tmp_path, split="val", progress=False)
    rec = res.stages[0]["plateau"]
    assert rec["cap"] == 8 and rec["stopped_early"] and rec["steps_run"] < 8


@pytest.mark.slow
def test_the_cost_counts_training_and_validation_tokens_of_every_stage(pilot):
    _, out = pilot
    tokens = json.loads((out / "pilot_curves.json").read_text())["tokens"]
    runs = read_table(out / "pilot_curve_runs.csv", "runs")
    spent = runs[runs["metric"] == "tokens_spent"]["value"].sum()
    assert tokens["stages"] == 8 and tokens["spent"] == tokens["train"] + tokens["validation"] == spent
    assert tokens["train"] == runs[runs["metric"] == "tokens_spent"]["compute_tokens"].sum()


@pytest.mark.slow  # two spawned workers
def test_a_second_invocation_reads_every_finished_run_back(pilot, capsys):
    argv, out = pilot
    results = sorted((out / "work").glob("labels_*/runs/*/result_val.json"))
    assert len(results) == 4
    stamps = [p.stat().st_mtime_ns for p in results]
    curves = (out / "pilot_curves.csv").read_text()
    capsys.readouterr()
    assert main([*argv[:-1], "2"]) == 0  # --jobs 2 this time
    log = capsys.readouterr().out
    assert "4 runs, 4 read back, 0 trained" in log and log.count("(finished before: read back)") == 4
    assert [p.stat().st_mtime_ns for p in results] == stamps
    assert (out / "pilot_curves.csv").read_text() == curves
