"""Tiers 2-3: config, world, checkpoints, every stage and arm shrunk to seconds, kill-and-resume, CLI errors."""

from __future__ import annotations

import json
import os
from pathlib import Path
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from reference.config import diff_fields, from_dict, load_config
from reference.world import World, check_disjoint, make_world
from theory.arms import ARMS, Stage
from theory.errors import InputError
from theory.tables import validate_runs

from conftest import tiny_config, write_config  # tests/ is on sys.path

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable


# ---------- config ----------

def test_configs_in_repo_load_and_hash_stably():
    names = ("toy", "toy_short", "toy_counterfactual")
    # another process with another str-hash seed: the hash depends on the config alone
    code = f"from reference.config import load_config; print(*[load_config(n).hash() for n in {names!r}])"
    out = subprocess.run([PY, "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "12345"}).stdout.split()
    assert out == [load_config(n).hash() for n in names]
    # one gated schedule: toy_short is toy.toml's settings (comments are not hashed); the old protocol differs
    assert load_config("toy").hash() == load_config("toy_short").hash()
    assert load_config("toy").hash() != load_config("legacy/toy").hash()


@pytest.mark.parametrize("raw,needle", [
    ({"grpo": {"lrr": 1.0}}, "grpo.lrr"),
    ({"bogus": {}}, "[bogus]"),
    ({"grpo": {"lr": -1.0}}, "grpo.lr"),
    ({"grpo": {"group_size": 1}}, "grpo.group_size"),
    ({"teacher": {"heads": 3, "kv_heads": 2}}, "teacher.heads"),
    ({"opd": {"estimator": "cheap"}}, "opd.estimator"),
    ({"eval": {"k": "four"}}, "eval.k"),
    ({"world": {"min_terms": 5, "max_terms": 3}}, "world.min_terms"),
])
def test_bad_config_names_the_field(raw, needle):
    with pytest.raises(InputError) as e:
        from_dict(raw)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_malformed_toml_is_one_line(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[grpo\nlr = ")
    with pytest.raises(InputError, match="malformed TOML"):
        load_config(p)


def test_override_and_diff_fields():
    a = load_config("toy")
    b = a.override({"grpo.lr": 5e-4, "opd.steps": 7})
    assert b.grpo.lr == 5e-4 and a.grpo.lr != 5e-4  # frozen original untouched
    assert diff_fields(a.to_dict(), b.to_dict()) == ["grpo.lr", "opd.steps"]
    with pytest.raises(InputError, match="grpo.nope"):
        a.override({"grpo.nope": 1})


# ---------- world ----------

def test_world_splits_are_disjoint_seeded_and_nested():
    cfg = load_config("toy").world
    w1, w2 = make_world(cfg), make_world(cfg)
    assert w1 == w2
    assert w1.sizes() == {"labeled": cfg.labels, "val": cfg.val, "unlabeled": cfg.unlabeled, "test": cfg.test}
    small = make_world(load_config("toy").override({"world.labels": 64}).world)
    assert small.test == w1.test and small.val == w1.val  # test does not move with the budget
    assert small.labeled == w1.labeled[:64]  # nested budgets
    assert {p.terms for p in w1.test} == {2, 3, 4}
    for p in w1.test[:50]:
        assert eval(p.prompt[:-1]) == int(p.gold)  # '+'/'-' left to right = Python's evaluation


def test_problem_families_and_a_mixed_style_base():
    """World family (issue 11): each problem draws a family (its own operator set), and a "mix" base
    writes steps in each family's share of its pre-training documents. A world without families draws
    exactly as before, and the new fields stay out of every hash at their defaults."""
    import numpy as np

    from reference.world import pretraining_text
    base = load_config("toy")
    fam = base.override({"world.families": "+,-,+-", "world.min_terms": 4, "world.max_terms": 6})
    w = make_world(fam.world)
    assert {p.family for p in w.test} == {0, 1, 2}
    for p in w.test:
        body = p.prompt[:-1]
        assert set(c for c in body if c in "+-") <= set(fam.world.family_ops[p.family])
        assert eval(body) == int(p.gold)
    assert {p.family for p in make_world(base.world).test} == {-1}
    assert base.hash() == load_config("toy").override({"world.families": ""}).hash()
    docs = pretraining_text(w, style="mix", protocol_break=0.0, n=3000, rng=np.random.default_rng(0),
                            shares=(1.0, 0.5, 0.0))
    by = {"+": [], "-": [], "+-": []}
    for d in docs:
        prompt = d.split("=")[0]
        ops = "".join(sorted(set(c for c in prompt if c in "+-")))
        by["+-" if ops == "+-" else ops].append("=" in d[len(prompt) + 1:])
    # only family 2 ("+-", share 0) shows both operators; it can also draw one operator only, so it
    # dilutes the one-operator buckets a little
    assert not any(by["+-"]) and np.mean(by["+"]) > 0.9 and 0.35 < np.mean(by["-"]) < 0.55
    drilled = pretraining_text(w, style="direct", protocol_break=0.0, n=400, rng=np.random.default_rng(1),
                               drills=0.5)
    bare = [d for d in drilled if "\\boxed" not in d]
    assert 120 < len(bare) < 280 and all(d.endswith(";") and "=" in d for d in bare)
    assert base.hash() == base.override({"student.step_drills": 0.0}).hash()
    with pytest.raises(InputError, match="step_drills"):
        base.override({"student.step_drills": 1.0})
    with pytest.raises(InputError, match="steps_share"):
        base.override({"student.style": "mix"})
    with pytest.raises(InputError, match="families"):
        pretraining_text(w, style="mix", protocol_break=0.0, n=1, rng=np.random.default_rng(0), shares=(0.1, 0.2))
    with pytest.raises(InputError, match="world.families"):
        base.override({"world.families": "+,/"})


def test_overlapping_splits_are_refused():
    w = make_world(load_config("toy").world)
    bad = World(labeled=w.labeled, val=w.val, unlabeled=w.unlabeled, test=w.test[:5] + w.labeled[:1], config=w.config)
    with pytest.raises(InputError, match="overlap"):
        check_disjoint(bad)


def test_tokenizer_is_a_real_hf_tokenizer_with_protocol_tokens():
    from transformers import PreTrainedTokenizerFast

    from reference.tokenizer import toy_tokenizer
    tok = toy_tokenizer()
    assert isinstance(tok, PreTrainedTokenizerFast)
    text = "12+7=19;19-3=16;\\boxed{16}"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(ids).count("\\boxed{") == 1
    assert tok.decode(ids) == text
    assert tok.convert_tokens_to_ids("ANS") != tok.unk_token_id


# ---------- models and checkpoints ----------

def test_assets_load_with_hash_check_and_corruption_is_one_line(tmp_path):
    import shutil

    from reference import checkpoint as ckpt
    from reference.assemble import build_models
    cfg = load_config("toy")
    m = build_models(cfg, need_teacher=True)
    assert sum(p.numel() for p in m.teacher.parameters()) > 2 * sum(p.numel() for p in m.student.parameters())
    d = tmp_path / "ck"
    shutil.copytree(ckpt.asset_dir(cfg.student.asset), d)
    w = d / ckpt.WEIGHTS
    data = bytearray(w.read_bytes())
    data[-10] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(InputError, match="corrupt"):
        ckpt.load_weights(m.student, d)
    with pytest.raises(InputError, match="missing"):
        ckpt.load_weights(m.student, tmp_path / "nowhere")
    with pytest.raises(InputError, match="another spec"):
        ckpt.load_asset(m.student, cfg.student.asset, expected_spec={"hidden": 1})


# ---------- every stage and arm, shrunk ----------

@pytest.fixture(scope="module")
def arm_results(tmp_path_factory):
    from reference.pipeline import run_pipeline
    cfg = tiny_config()
    work = tmp_path_factory.mktemp("arms")
    return cfg, work, {name: run_pipeline(cfg, name, 0, workdir=work, progress=False) for name in ARMS}


@pytest.mark.slow  # the arm_results fixture: every arm on the toy
def test_every_arm_runs_its_registry_stages_with_label_accounting(arm_results):
    cfg, _, results = arm_results
    n = cfg.world.labels
    for name, res in results.items():
        arm = ARMS[name]
        assert [s["name"] for s in res.stages[:-1]] == [s.value for s in arm.stages]
        assert res.label_account == arm.labels(n)
        assert res.compute_tokens > 0
        m = res.metrics
        for key in ("accuracy", "pass_at_k", "compliance", "accuracy_given_compliance", "accuracy_greedy"):
            assert 0.0 <= m[key] <= 100.0
        assert m["pass_at_k"] >= m["accuracy"]
    table = pd.concat([r.to_frame() for r in results.values()])
    assert len(validate_runs(table)) == len(table)
    # the RL teacher is trained once per seed and shared by every arm whose prefix matches
    assert results["rl_teacher_bridge"].stages[0]["cached"] is False and results["no_fkl"].stages[0]["cached"]
    assert results["no_opd"].stages[0]["cached"] and results["no_opd"].stages[1]["cached"]
    assert results["replay_control"].stages[2]["cached"]  # same split prefix as stage 3's arm


@pytest.mark.slow
def test_stage_logs_carry_the_promised_metrics(arm_results):
    _, work, _ = arm_results
    metas = [json.loads(p.read_text()) for p in (work / "stages").glob("*/meta.json")]
    by_stage = {m["stage"]: m for m in metas if m["stage"] != "student_grpo"}
    # the stage-3 GRPO (after the half-label teacher), not direct GRPO on all labels
    by_stage["student_grpo"] = next(m for m in metas if m["stage"] == "student_grpo" and len(m["prefix"]) > 1)
    g = by_stage["student_grpo"]["log"][0]
    for key in ("reward", "pass_rate", "zero_signal_fraction", "length", "compliance"):
        assert key in g
    assert "kl_to_teacher" in by_stage["opd"]["log"][0]
    assert "forward_kl" in by_stage["fkl_warmup"]["log"][0]
    # replay control draws as many student rollouts as stage-3 GRPO: steps x (prompts x group)
    rep = by_stage["replay_opd"]
    assert rep["result"]["steps"] == by_stage["student_grpo"]["result"]["steps"]


def test_each_stage_trains_the_model_the_table_names(monkeypatch):
    """The stage dispatch hands each stage the model theory.arms.STAGES says it trains (and the
    teacher to the bridge stages); the curves draw the stages in the table's order."""
    from types import SimpleNamespace

    import torch

    from reference import curves, stages
    from reference.assemble import Models
    from reference.stage_runner import TrainingSetup, train_stage
    from theory.arms import STAGES, LabelAccount

    seen = []
    monkeypatch.setattr(stages, "grpo", lambda policy, problems, cfg, ctx, **k: seen.append((policy, None)))
    monkeypatch.setattr(stages, "fkl_warmup", lambda student, teacher, *a, **k: seen.append((student, teacher)))
    monkeypatch.setattr(stages, "opd", lambda student, teacher, *a, **k: seen.append((student, teacher)))
    roles = {"teacher": torch.nn.Module(), "student": torch.nn.Module()}  # weightless: the stage plan has nothing to cast
    models = Models(teacher=roles["teacher"], student=roles["student"], ctx=None, tokenizer=None)
    setup = TrainingSetup(tiny_config(), models, SimpleNamespace(labeled=(), unlabeled=()), LabelAccount(0, 0, 0))
    for stage, spec in STAGES.items():
        train_stage(stage, setup, 0)
        assert seen.pop() == (roles[spec.trains], roles.get(spec.scorer)), stage
    assert curves.STAGE_ORDER == [s.value for s in STAGES]


@pytest.mark.slow
def test_opd_lowers_the_kl_to_the_teacher():
    """OPD steps move a random-init student toward the frozen teacher (per-token reverse KL on its
    own samples). Deterministic on CPU (seeded), so the margin cannot flake."""
    import torch

    from reference import stages
    from reference.assemble import build_models, build_world
    cfg = tiny_config(**{"student.asset": "", "opd.lr": 3e-3, "opd.prompts_per_step": 16})
    m = build_models(cfg, need_teacher=True)
    world = build_world(cfg)
    torch.manual_seed(0)
    res = stages.opd(m.student, m.teacher, world.unlabeled, cfg.opd, m.ctx, seed=0, steps=25)
    kl = [e["kl_to_teacher"] for e in res.log]
    assert sum(kl[-5:]) / 5 < 0.92 * sum(kl[:5]) / 5


@pytest.mark.slow
def test_changed_config_refuses_and_names_the_field(arm_results, tmp_path):
    from reference.pipeline import run_pipeline
    cfg, work, _ = arm_results
    with pytest.raises(InputError, match=r"config changed .*grpo\.lr"):
        run_pipeline(cfg.override({"grpo.lr": 1e-5}), "direct_grpo", 0, workdir=work, progress=False)


def test_corrupt_stage_checkpoint_is_one_clear_line(tmp_path):
    from reference.pipeline import Stopped, run_pipeline
    cfg = tiny_config()
    with pytest.raises(Stopped):
        run_pipeline(cfg, "rl_teacher_bridge", 3, workdir=tmp_path, progress=False, stop_after=0)
    (w,) = list((tmp_path / "stages").glob("*/model.safetensors"))
    w.write_bytes(b"garbage")
    with pytest.raises(InputError, match="corrupt"):
        run_pipeline(cfg, "rl_teacher_bridge", 3, workdir=tmp_path, progress=False)


def _cli(*args, env=None, **kw):
    return subprocess.run([PY, "-m", "reference.cli", *args], cwd=REPO, capture_output=True, text=True,
                          env=env, timeout=300, **kw)


@pytest.mark.slow  # two toy runs, one a killed subprocess
def test_sigkill_then_restart_gives_the_same_numbers(tmp_path):
    """A run killed with SIGKILL after its first checkpoint resumes from it and ends with the numbers
    of an uninterrupted run (same seed, CPU). The killed run is a real `reference-pipeline` process."""
    from reference.pipeline import run_pipeline
    cfg_path = tmp_path / "tiny.toml"
    cfg = tiny_config(**{"opd.steps": 12})
    write_config(cfg, cfg_path)
    ref = run_pipeline(cfg, "rl_teacher_bridge", 1, workdir=tmp_path / "a", progress=False)

    work = tmp_path / "b"
    proc = subprocess.Popen([PY, "-m", "reference.cli", "run", "--arm", "rl_teacher_bridge", "--seed", "1",
                             "--config", str(cfg_path), "--workdir", str(work)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    def finished() -> int:  # renamed checkpoints only: a ".<key>.tmp-*" directory is a stage still being written
        return sum(not m.parent.name.startswith(".") for m in (work / "stages").glob("*/meta.json"))
    while time.time() < deadline and finished() < 2 and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not list((work / "runs").glob("*/result_test.json"))  # killed before the end
    done = run_pipeline(load_config(cfg_path), "rl_teacher_bridge", 1, workdir=work, progress=False)
    assert [s["cached"] for s in done.stages[:2]] == [True, True]  # resumed, not restarted
    pd.testing.assert_frame_equal(ref.to_frame(), done.to_frame())


@pytest.mark.parametrize("args,needle", [
    (["run", "--arm", "nope", "--config", "toy_short"], "unknown arm"),
    (["run", "--arm", "direct_grpo", "--config", "nowhere.toml"], "config file not found"),
    (["run", "--arm", "rl_teacher_bridge_stage3", "--config", "toy_short", "--teacher-labels", "9999"], "--teacher-labels"),
    (["run", "--arm", "direct_grpo", "--config", "toy_short", "--student-labels", "3"], "does not split labels"),
    (["table", "--seeds", "0", "--out", "/tmp/never"], "--seeds"),
])
def test_cli_bad_input_exits_2_with_one_line(args, needle, capsys):
    from reference.cli import main
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.strip().startswith("error:") and needle in err and len(err.strip().splitlines()) == 1


def test_cli_unknown_config_field_exits_2(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[grpo]\nlearning_rate = 1e-3\n")
    r = _cli("run", "--arm", "direct_grpo", "--config", str(p))
    assert r.returncode == 2 and "grpo.learning_rate" in r.stderr


# ---------- tuner interface ----------

def test_param_space_shares_names_and_ranges_across_arms():
    from reference.api import PARAM_SPACE
    assert set(PARAM_SPACE) == set(ARMS)
    seen: dict[str, dict] = {}
    for arm, space in PARAM_SPACE.items():
        assert "temperature" in space and ("lr" in space) == (Stage.STUDENT_GRPO in ARMS[arm].stages)
        for name, spec in space.items():
            assert seen.setdefault(name, spec) == spec, f"{name} differs in {arm}"
    assert "teacher_lr" not in PARAM_SPACE["direct_grpo"] and "teacher_lr" in PARAM_SPACE["rl_teacher_bridge"]


def test_inner_curve_points_do_not_change_the_numbers(tmp_path):
    """eval.curve_every adds validation points inside a stage (for a pruner) on a forked RNG: the
    trained model and the final numbers are those of a run without them."""
    from reference.pipeline import run_pipeline
    seen = []
    plain = run_pipeline(tiny_config(), "direct_grpo", 5, workdir=tmp_path / "a", progress=False)
    dense = run_pipeline(tiny_config(**{"eval.curve_every": 1}), "direct_grpo", 5, workdir=tmp_path / "b",
                         progress=False, report=lambda step, v: seen.append(step))
    assert plain.metrics == dense.metrics
    assert seen == sorted(seen) and len(seen) == dense.stages[0]["steps"]  # inner points + the stage end


def test_run_arm_reports_val_accuracy_and_rejects_foreign_params(tmp_path):
    from reference.api import apply_params, run_arm
    seen = []
    res = run_arm("no_fkl", params={"opd_lr": 1e-3, "teacher_lr": 1e-4}, labels=16, seed=0,
                  config=tiny_config(), report=lambda step, v: seen.append((step, v)), workdir=tmp_path)
    assert 0 <= res.accuracy <= 100 and res.label_account.teacher == 16
    assert seen and all(0 <= v <= 100 for _, v in seen)
    cfg = apply_params(tiny_config(), "no_fkl", {"teacher_lr": 2e-3, "opd_lr": 1e-3})
    assert cfg.opd.lr == 1e-3 and cfg.grpo.lr_for("teacher") == 2e-3
    with pytest.raises(InputError, match="'lr'"):  # no_fkl has no student GRPO stage: lr would be dead
        apply_params(tiny_config(), "no_fkl", {"lr": 2e-3})
    with pytest.raises(InputError, match="fkl_lr"):
        apply_params(tiny_config(), "no_fkl", {"fkl_lr": 1e-3})


@pytest.mark.slow
def test_demo_says_where_it_wrote_and_reads_the_result(tmp_path, capsys):
    """The demo names its output folder first, counts arms as it goes, and ends with a table with
    intervals, a legend line, one reading line, a run-table CSV and a figure."""
    from reference import cli
    cfg_path = write_config(tiny_config(), tmp_path / "tiny.toml")
    work = tmp_path / "demo"
    assert cli.main(["demo", "--config", str(cfg_path), "--workdir", str(work)]) == 0
    out = capsys.readouterr().out
    assert f"results go to {work.resolve()}" in out.splitlines()[0] and "2 worker(s)" in out.splitlines()[0]
    assert "[1 of 7] " in out and "[7 of 7] " in out
    assert "95% interval" in out and "acc = sampled avg@k" in out and "\nreading: best arm " in out
    runs = validate_runs(pd.read_csv(work / "demo_results.csv"))
    assert set(runs["arm"]) == set(ARMS) and (work / "demo.png").stat().st_size > 0
    # two workers sharing stages give the numbers one process gives
    assert cli.main(["demo", "--config", str(cfg_path), "--workdir", str(tmp_path / "one"), "--jobs", "1"]) == 0
    one = pd.read_csv(tmp_path / "one" / "demo_results.csv")
    key = ["arm", "seed", "split", "metric"]
    pd.testing.assert_frame_equal(runs.sort_values(key).reset_index(drop=True)[key + ["value"]],
                                  one.sort_values(key).reset_index(drop=True)[key + ["value"]])


def test_demo_order_starts_the_shared_trunks_first():
    """Each arm in the demo's order trains the most stages no earlier arm trains: the RL teacher's
    bridge and the split arms' bridge come before the arms that reuse them."""
    from reference.cli import demo_order
    order = demo_order(list(ARMS), 256)
    assert sorted(order) == sorted(ARMS)
    assert order.index("rl_teacher_bridge") < min(order.index(a) for a in ("no_fkl", "no_opd"))
    assert order.index("rl_teacher_bridge_stage3") < order.index("replay_control")  # same split bridge
    assert order[-1] == "no_opd"  # it trains nothing the full bridge does not


def _hold(path, entered, release):
    from reference.checkpoint import claim
    with claim(path):
        entered.set()
        release.wait(30)


def test_claim_makes_a_second_process_wait_for_the_stage(tmp_path):
    import multiprocessing as mp

    from reference.checkpoint import claim
    ctx = mp.get_context("spawn")
    entered, release = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_hold, args=(tmp_path / "stages" / "s", entered, release))
    p.start()
    try:
        assert entered.wait(60)
        import threading
        got = threading.Event()
        def take():
            with claim(tmp_path / "stages" / "s"):
                got.set()
        t = threading.Thread(target=take, daemon=True)
        t.start()
        assert not got.wait(1.0)  # held by the other process
        release.set()
        assert got.wait(30)  # released: ours now
    finally:
        release.set()
        p.join(30)
    with claim(tmp_path / "stages" / "t", enabled=False):  # ranks that do not write never lock
        pass
    assert [p.name for p in (tmp_path / "stages.locks").iterdir()] == ["s.lock"]  # beside the checkpoints
