"""The plateau protocol (reference.plateau, issue 22): the stopping rule on known curves, and on the tiny
world a stage that keeps its best checkpoint, does not depend on its cap, and resumes mid-stage with the
numbers of an uninterrupted run."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_config
import reference.pipeline as pl
from reference import plateau
from reference.config import PlateauConfig
from reference.stage_runner import stage_key
from theory.errors import InputError

CFG = PlateauConfig(enabled=True, every=0.1, window=0.3, tolerance=1.0, min_fraction=0.2)


def _points(scores_per_step: dict[int, np.ndarray]) -> list[plateau.Point]:
    return [plateau.Point(s, 100 * s, np.asarray(v, dtype=float)) for s, v in scores_per_step.items()]


def test_paired_se_is_the_se_of_the_per_problem_difference():
    a, b = np.array([1.0, 0.5, 0.25, 0.75]), np.array([0.75, 0.5, 0.0, 0.25])
    d = a - b
    assert plateau.paired_se(a, b) == pytest.approx(100 * d.std(ddof=1) / 2)
    # a constant shift has no spread: the paired SE is 0 although the levels' own SEs are not
    assert plateau.paired_se(b + 0.25, b) == 0.0


def test_rising_curve_has_not_reached_its_plateau_and_a_flat_one_has():
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 1, 64)
    rising = _points({s: np.clip(base + 0.004 * s + rng.normal(0, 0.02, 64), 0, 1) for s in range(10, 110, 10)})
    st = plateau.status(rising, CFG)
    assert not st.reached and st.gain > CFG.tolerance * st.se > 0
    flat = _points({s: np.clip(base + rng.normal(0, 0.02, 64), 0, 1) for s in range(10, 110, 10)})
    assert plateau.status(flat, CFG).reached


def test_a_gain_within_one_standard_error_counts_as_the_plateau():
    """At step 60 the last window (42, 60] holds steps 50 and 60, the window before (24, 42] steps 30 and 40;
    their per-problem means are compared with a paired SE."""
    base = np.linspace(0, 1, 64)
    noise = np.tile([0.05, -0.05], 32)  # the later points differ by +-0.05 per problem: SE 0.6%
    flat = {10: base, 20: base, 30: base, 40: base}
    assert plateau.status(_points({**flat, 50: base + noise + 0.001, 60: base + noise + 0.001}), CFG).reached
    st = plateau.status(_points({**flat, 50: np.clip(base + 0.1, 0, 1), 60: np.clip(base + 0.1, 0, 1)}), CFG)
    assert not st.reached and st.gain > 5 > CFG.tolerance * st.se
    # one noisy high point in the last window does not hold the stage open: the window's mean decides
    spike = np.clip(base + 0.08, 0, 1)
    st = plateau.status(_points({**flat, 50: spike, 60: np.clip(base - 0.08, 0, 1)}), CFG)
    assert st.reached and abs(st.gain) < 1.0


def test_too_few_points_are_not_a_plateau_and_the_schedule_ends_at_the_cap():
    assert not plateau.status(_points({10: np.ones(4)}), CFG).reached
    assert plateau.schedule(40, 0.1) == [4, 8, 12, 16, 20, 24, 28, 32, 36, 40]
    assert plateau.schedule(7, 0.25) == [2, 4, 6, 7]


def test_config_checks_fractions_and_the_protocol_off_keeps_every_stage_key():
    with pytest.raises(InputError, match="plateau.window"):
        PlateauConfig(window=1.5)
    cfg = tiny_config()
    prefix = [("student_grpo", 16)]
    on = cfg.override({"plateau.enabled": True})
    # off, [plateau] is not hashed: the key is the one computed before the section existed
    assert cfg.section_hash(("world", "student", "teacher", "grpo", "fkl", "opd", "engine"),
                            extra={"seed": 0, "prefix": prefix}) == stage_key(cfg, 0, prefix)
    assert stage_key(on, 0, prefix) != stage_key(cfg, 0, prefix)
    assert cfg.hash() == cfg.override({"grpo.max_steps": 0, "grpo.warmup_steps": 0}).hash()


def test_run_to_cap_names_stages_and_changes_only_their_keys_and_those_after_them():
    with pytest.raises(InputError, match="plateau.run_to_cap: unknown stage\\(s\\) 'opd2'"):
        PlateauConfig(enabled=True, run_to_cap="opd, opd2")
    assert PlateauConfig(enabled=True, run_to_cap=" opd,fkl_warmup ").to_cap == {"opd", "fkl_warmup"}
    with pytest.raises(InputError, match="plateau.run_to_cap needs plateau.enabled = true"):
        PlateauConfig(run_to_cap="opd")
    from reference.stage_runner import seed_key
    on = tiny_config(**{"plateau.enabled": True})
    amended = on.override({"plateau.run_to_cap": "opd"})
    teacher, fkl = [("teacher_grpo", 16)], [("teacher_grpo", 16), ("fkl_warmup", 0)]
    opd, after = fkl + [("opd", 0)], fkl + [("opd", 0), ("student_grpo", 8)]
    for prefix in (teacher, fkl, [("student_grpo", 16)]):  # stages before OPD, or without it: checkpoints reused
        assert stage_key(amended, 0, prefix) == stage_key(on, 0, prefix)
    for prefix in (opd, after):  # OPD and what follows it: new checkpoints
        assert stage_key(amended, 0, prefix) != stage_key(on, 0, prefix)
        # the same seed and data order: OPD's first steps replay the run it amends
        assert seed_key(amended, 0, prefix) == seed_key(on, 0, prefix)


def test_a_run_to_cap_stage_never_stops_early_where_the_window_test_would_stop_it():
    """A flat validation curve: the window test stops the stage at its first allowed point; named in
    run_to_cap, the same stage validates on to its cap and still reports that it reached its plateau."""
    flat = np.linspace(0, 1, 16)
    model = torch.nn.Linear(2, 2)

    def run(cfg):
        w = plateau.Watch(cfg, 40, lambda m, tag: (flat, 10), "t", to_cap=bool(cfg.to_cap))
        stopped = [s for s in range(41) if w.observe(s, 100 * s, model, None, [])]
        return stopped, w.record(4000)

    stopped, rec = run(CFG)
    assert stopped and stopped[0] < 40 and rec["stopped_early"] and not rec["run_to_cap"]
    stopped, rec = run(PlateauConfig(enabled=True, every=0.1, window=0.3, min_fraction=0.2, run_to_cap="opd"))
    assert stopped == [] and rec["steps_run"] == 40 and not rec["stopped_early"] and rec["run_to_cap"]
    assert rec["reached"] and rec["why"] == "ran to the cap and reached its plateau"


def _plateau_cfg(**extra):
    # 16 labels, 4 prompts per step: 4 epochs = a cap of 16 steps, validated every 4 (16 problems, k 2);
    # constant learning rate after a 2-step warmup, so a run's first t steps do not depend on its cap
    return tiny_config(**{"plateau.enabled": True, "plateau.problems": 16, "plateau.k": 2, "plateau.every": 0.25,
                          "grpo.epochs": 4.0, "grpo.schedule": "constant", "grpo.warmup": 0.0,
                          "grpo.warmup_steps": 2, **extra})


def _stage(work: Path) -> tuple[dict, dict]:
    d = next(p for p in (work / "stages").iterdir() if not p.name.startswith("."))
    return load_file(str(d / "model.safetensors")), json.loads((d / "meta.json").read_text())


def test_a_stage_ends_on_its_best_checkpoint_whatever_its_cap(tmp_path):
    """Without early stopping (min_fraction 1) the stage runs its 16-step cap and ends holding the weights
    of its best validation point; a run capped at that step ends with the same weights and the same log
    up to it: the trajectory does not depend on the cap or on the validation passes."""
    long = _plateau_cfg(**{"plateau.min_fraction": 1.0})
    res = pl.run_pipeline(long, "direct_grpo", 0, workdir=tmp_path / "long", split="val", progress=False)
    rec = res.stages[0]["plateau"]
    assert rec["cap"] == 16 and rec["steps_run"] == 16 and not rec["stopped_early"]
    assert [c["step"] for c in rec["curve"]] == [0, 4, 8, 12, 16]  # the starting point, then every 4 steps
    scores = [c["accuracy"] for c in rec["curve"]]
    assert rec["best_score"] == max(scores) and rec["best_step"] == rec["curve"][scores.index(max(scores))]["step"]
    assert rec["tokens_spent"] == rec["train_tokens"] + rec["val_tokens"] and rec["val_tokens"] > 0
    w_long, m_long = _stage(tmp_path / "long")
    best = rec["best_step"]
    if best == 0:  # training only lowered the score: the stage returns its input, the base student
        from reference.assemble import build_models
        w_short = {k: v.detach() for k, v in build_models(long, need_teacher=False).student.state_dict().items()}
    else:  # validated at step 0 and at its cap only; steps 0 and `best` score as in the long run
        short = long.override({"grpo.max_steps": best, "plateau.every": 1.0})
        pl.run_pipeline(short, "direct_grpo", 0, workdir=tmp_path / "short", split="val", progress=False)
        w_short, m_short = _stage(tmp_path / "short")
        assert m_long["log"][best - 1] == m_short["log"][-1]  # the same trajectory up to the best step
    assert all(np.array_equal(w_long[k].numpy(), w_short[k].numpy()) for k in w_long)
    assert not any(p.name.endswith(".partial") for p in (tmp_path / "long" / "stages").iterdir())


def test_a_stage_killed_mid_way_resumes_with_the_numbers_of_an_uninterrupted_run(tmp_path, monkeypatch):
    cfg = _plateau_cfg(**{"plateau.min_fraction": 1.0})
    whole = pl.run_pipeline(cfg, "direct_grpo", 0, workdir=tmp_path / "whole", split="val", progress=False)
    seen = []
    observe = plateau.Watch.observe

    def killed_after_two(self, *a, **kw):
        out = observe(self, *a, **kw)
        seen.append(a[0])
        if len(seen) == 2:
            raise KeyboardInterrupt  # after step 4's validation point and its mid-stage checkpoint
        return out

    monkeypatch.setattr(plateau.Watch, "observe", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        pl.run_pipeline(cfg, "direct_grpo", 0, workdir=tmp_path / "cut", split="val", progress=False)
    partial = [p for p in (tmp_path / "cut" / "stages").iterdir() if p.name.endswith(".partial")]
    assert seen == [0, 4] and len(partial) == 1
    assert json.loads((partial[0] / "meta.json").read_text())["step"] == 4
    monkeypatch.setattr(plateau.Watch, "observe", observe)
    resumed = pl.run_pipeline(cfg, "direct_grpo", 0, workdir=tmp_path / "cut", split="val", progress=False)
    (w1, m1), (w2, m2) = _stage(tmp_path / "whole"), _stage(tmp_path / "cut")
    assert m1["log"] == m2["log"] and m1["result"]["plateau"]["curve"] == m2["result"]["plateau"]["curve"]
    assert all(np.array_equal(w1[k].numpy(), w2[k].numpy()) for k in w1)
    assert resumed.metrics == whole.metrics


def test_early_stopping_on_a_plateau_and_bad_validation_size(tmp_path):
    """min_fraction 0.25: the stage may stop from step 4 on; whatever it does, its record says why, and the
    steps it ran are the log's. More validation problems than the world has: one error line."""
    res = pl.run_pipeline(_plateau_cfg(**{"plateau.min_fraction": 0.25}), "direct_grpo", 0, workdir=tmp_path,
                          split="val", progress=False)
    rec = res.stages[0]["plateau"]
    assert res.stages[0]["steps"] == rec["steps_run"] <= 16
    assert rec["stopped_early"] == (rec["steps_run"] < 16) and rec["why"]
    if rec["stopped_early"]:
        assert rec["reached"]
    named = pl.run_pipeline(_plateau_cfg(**{"plateau.min_fraction": 0.25, "plateau.run_to_cap": "student_grpo"}),
                            "direct_grpo", 0, workdir=tmp_path / "to_cap", split="val", progress=False)
    rec = named.stages[0]["plateau"]
    assert rec["run_to_cap"] and rec["steps_run"] == 16 and not rec["stopped_early"]
    with pytest.raises(InputError, match="plateau.problems=64 exceeds world.val=24"):
        pl.run_pipeline(_plateau_cfg(**{"plateau.problems": 64}), "direct_grpo", 0, workdir=tmp_path / "bad",
                        split="val", progress=False)


def _synthetic_run(arm: str, seed: int, stages: list[tuple[str, str, int, list[tuple[int, int, float]]]]):
    """A RunResult whose stages carry plateau records: (name, model, train tokens, [(step, tokens, acc)])."""
    from reference.runs import RunResult
    from theory.arms import LabelAccount
    recs = [{"name": n, "model": m, "tokens": t, "steps": len(c),
             "plateau": {"validated": True, "train_tokens": t,
                         "curve": [{"step": s, "tokens": k, "accuracy": a} for s, k, a in c]}}
            for n, m, t, c in stages]
    return RunResult(arm, seed, "w", "test", LabelAccount(64, 0, 0), sum(s[2] for s in stages), {}, tuple(recs))


def test_frontier_lays_student_points_on_cumulative_tokens_and_never_falls():
    from reference.frontier import compute_matched, frontier, run_curve
    bridge = _synthetic_run("rl_teacher_bridge", 0, [
        ("teacher_grpo", "teacher", 1000, [(10, 500, 30.0), (20, 1000, 35.0)]),   # the teacher's own curve
        ("fkl_warmup", "student", 400, [(5, 200, 12.0), (10, 400, 14.0)]),
        ("opd", "student", 600, [(5, 300, 20.0), (10, 600, 18.0)])])
    c = run_curve(bridge)
    assert list(c["stage"]) == ["fkl_warmup", "fkl_warmup", "opd", "opd"]  # the teacher's points are not the student's
    assert list(c["tokens"]) == [1200, 1400, 1700, 2000]  # after the teacher's 1000 tokens, then FKL's 400
    direct = [_synthetic_run("direct_grpo", s, [("student_grpo", "student", 2000,
                                                 [(10, 500, 10.0 + s), (20, 1000, 25.0 + s), (30, 2000, 20.0)])])
              for s in (0, 1)]
    curves = pd.concat([run_curve(r) for r in (bridge, *direct)])
    front = frontier(curves, [400, 1000, 1500, 2000])
    d = front[front["arm"] == "direct_grpo"].set_index("tokens")
    assert d.loc[1000, "accuracy"] == 25.5 and d.loc[2000, "accuracy"] == 25.5  # the best so far, not the last point
    assert np.isnan(d.loc[400, "accuracy"]) and d.loc[400, "seeds"] == 0
    b = front[front["arm"] == "rl_teacher_bridge"].set_index("tokens")
    assert np.isnan(b.loc[1000, "accuracy"]) and b.loc[1500, "accuracy"] == 14.0 and b.loc[2000, "accuracy"] == 20.0
    for _, g in front.dropna().groupby("arm"):
        assert (np.diff(g["accuracy"].to_numpy()) >= 0).all()
    at = compute_matched(curves, [2000]).set_index("arm")["accuracy"]
    assert at["direct_grpo"] == 25.5 and at["rl_teacher_bridge"] == 20.0
    # seeds whose students start at different tokens (their teachers' GRPO stopped at different steps): no
    # mean until every seed has a point, so the frontier does not dip when a weaker late seed joins
    late = _synthetic_run("rl_teacher_bridge", 1, [
        ("teacher_grpo", "teacher", 1500, [(10, 500, 30.0)]),
        ("fkl_warmup", "student", 400, [(5, 200, 8.0), (10, 400, 16.0)])])
    front = frontier(pd.concat([run_curve(r) for r in (bridge, late)]), [1500, 1700, 1900])
    b = front.set_index("tokens")
    assert np.isnan(b.loc[1500, "accuracy"]) and b.loc[1500, "seeds"] == 1  # only the first seed has a point
    assert b.loc[1700, "accuracy"] == (20.0 + 8.0) / 2 and b.loc[1900, "accuracy"] == (20.0 + 16.0) / 2
