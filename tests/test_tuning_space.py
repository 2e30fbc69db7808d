"""The reference search space has no dead dimension: every name declared for an arm changes what that
arm's stages actually receive (through the pipeline's own stage dispatch), and the arm's default
configuration is a point of its space, so a study can run it as slot 0."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("torch")

from reference import api, stages  # noqa: E402
from reference.assemble import Models  # noqa: E402
from reference.config import load_config  # noqa: E402
from reference.stage_runner import TrainingSetup, train_stage  # noqa: E402
from theory.arms import get_arm  # noqa: E402
from theory.errors import InputError  # noqa: E402

CONFIG = "toy_short"


def stage_inputs(cfg, arm: str, monkeypatch) -> list[tuple]:
    """What each stage of `arm` is handed by stage_runner.train_stage: the stage's config with the learning
    rate resolved for its role, plus schedule overrides. Models and data are stand-ins: nothing runs."""
    calls: list[tuple] = []

    def grpo(policy, problems, cfg_, ctx, *, role, seed, **kw):
        calls.append(("grpo", role, dataclasses.replace(cfg_, lr=cfg_.lr_for(role), teacher_lr=0.0)))

    def fkl_warmup(student, teacher, prompts, cfg_, ctx, *, seed, **kw):
        calls.append(("fkl", cfg_))

    def opd(student, teacher, prompts, cfg_, ctx, *, seed, steps=None, prompts_per_step=None, **kw):
        calls.append(("opd", cfg_, steps, prompts_per_step))

    monkeypatch.setattr(stages, "grpo", grpo)
    monkeypatch.setattr(stages, "fkl_warmup", fkl_warmup)
    monkeypatch.setattr(stages, "opd", opd)
    # weightless modules: the stage plan has nothing to cast
    models = Models(teacher=torch.nn.Module(), student=torch.nn.Module(), ctx=None, tokenizer=None)
    world = SimpleNamespace(labeled=(None,) * cfg.world.labels, unlabeled=())
    setup = TrainingSetup(cfg, models, world, get_arm(arm).labels(cfg.world.labels))
    for stage in get_arm(arm).stages:
        train_stage(stage, setup, 0)
    return calls


def other_value(spec: dict, default):
    """A value of the range other than `default` (the far end of the range, or another choice)."""
    if spec["kind"] == "categorical":
        return next(c for c in spec["choices"] if c != default)
    return spec["high"] if default != spec["high"] else spec["low"]


def dead_params(space: dict, cfg, monkeypatch) -> list[str]:
    """`arm.param` for every declared name whose change leaves the arm's stage inputs unchanged."""
    dead = []
    for arm, names in space.items():
        defaults = api.param_defaults(arm, cfg)
        base_cfg = api.apply_params(cfg, arm, defaults)
        base = stage_inputs(base_cfg, arm, monkeypatch)
        for name, spec in names.items():
            changed = dict(defaults, **{name: other_value(spec, defaults[name])})
            new_cfg = api.apply_params(cfg, arm, changed)
            assert new_cfg != base_cfg, f"{arm}.{name}: apply_params left the config unchanged"
            if stage_inputs(new_cfg, arm, monkeypatch) == base:
                dead.append(f"{arm}.{name}")
    return dead


def test_every_declared_parameter_acts_on_its_arm(monkeypatch):
    cfg = load_config(CONFIG)
    assert dead_params(api.PARAM_SPACE, cfg, monkeypatch) == []


def test_a_dead_dimension_is_caught(monkeypatch):
    """The old space's defect: `lr` declared on the RL-teacher bridge, whose stages read teacher_lr,
    fkl_lr and opd_lr only. apply_params must refuse it, and if forced in, the check must flag it."""
    cfg = load_config(CONFIG)
    with pytest.raises(api.InputError, match="lr"):
        api.apply_params(cfg, "rl_teacher_bridge", {"lr": 1e-3})
    space = {"rl_teacher_bridge": dict(api.PARAM_SPACE["rl_teacher_bridge"], lr=api.SHARED["lr"])}
    monkeypatch.setitem(api.PARAM_SPACE, "rl_teacher_bridge", space["rl_teacher_bridge"])
    orig = api.param_defaults
    monkeypatch.setattr(api, "param_defaults", lambda arm, c: dict(orig(arm, c), lr=c.grpo.lr))
    assert dead_params(space, cfg, monkeypatch) == ["rl_teacher_bridge.lr"]


def test_shared_names_keep_one_range_and_lr_is_student_grpo_only():
    seen: dict[str, dict] = {}
    for arm, space in api.PARAM_SPACE.items():
        for name, spec in space.items():
            assert seen.setdefault(name, spec) == spec, f"{name} differs in {arm}"
        names = {s.value for s in get_arm(arm).stages}
        assert ("lr" in space) == ("student_grpo" in names), arm
    assert set(api.PARAM_SPACE["direct_grpo"]) == {"lr", "group_size", "grpo_epochs", "temperature"}


def test_every_space_spells_its_specs_kind_and_type_is_still_read():
    from tuning.interface import ParamSpec
    from tuning.synthetic import SyntheticArms
    for space in (api.PARAM_SPACE, SyntheticArms().param_space()):
        specs = [spec for params in space.values() for spec in params.values()]
        assert all("kind" in spec and "type" not in spec for spec in specs)
    old = {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}  # an arm module written before issue 15
    new = {"kind": "float", "low": 1e-4, "high": 1e-2, "log": True}
    assert ParamSpec.parse(old, "a.lr") == ParamSpec.parse(new, "a.lr")
    assert ParamSpec.parse(old, "a.lr").to_dict()["kind"] == "float"


def test_defaults_are_the_configs_values_and_lie_in_range():
    cfg = load_config(CONFIG)
    full = api.param_space(CONFIG)
    for arm, space in full.items():
        defaults = {n: s["default"] for n, s in space.items()}
        assert None not in defaults.values(), arm
        for name, spec in space.items():
            d = spec["default"]
            assert d in spec["choices"] if spec["kind"] == "categorical" else spec["low"] <= d <= spec["high"]
        # running the defaults is running the config: same effective learning rates and schedules
        c = api.apply_params(cfg, arm, defaults)
        assert c.grpo.lr_for("teacher") == cfg.grpo.lr_for("teacher")
        assert c.override({"grpo.teacher_lr": 0.0}) == cfg.override({"grpo.teacher_lr": 0.0})
    assert full["rl_teacher_bridge"]["fkl_lr"]["default"] == cfg.fkl.lr
    assert full["direct_grpo"]["lr"]["default"] == cfg.grpo.lr


def test_lr_does_not_leak_into_the_teacher_when_teacher_lr_is_left_at_same_as_lr():
    cfg = load_config(CONFIG).override({"grpo.teacher_lr": 0.0})  # 0 = "same as lr"
    c = api.apply_params(cfg, "rl_teacher_bridge_stage3", {"lr": 2e-3})
    assert c.grpo.lr == 2e-3 and c.grpo.lr_for("teacher") == cfg.grpo.lr_for("teacher")


def test_the_tuner_enqueues_the_defaults_as_slot_zero(tmp_path):
    """Through the `reference` arm source the protocol's space carries complete defaults, so slot 0 of
    every arm is enqueued with the arm's default configuration (a budgeted slot like the others).
    Nothing is trained here: only the study is created."""
    import optuna
    from tuning.harness import arm_study_name, create_or_check
    from tuning.sources import load_arm_source
    from tuning.protocol import build_protocol
    from tuning.storage import open_storage

    arms = ["direct_grpo", "rl_teacher_bridge"]
    options = {"config": CONFIG}
    source = load_arm_source("reference", options)
    protocol = build_protocol(source, arms, trials=3, labels=64, pruner="none", arm_options=options)
    handle = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    create_or_check(handle, "d", protocol)
    for arm in arms:
        defaults = api.param_defaults(arm, load_config(CONFIG))
        study = optuna.load_study(study_name=arm_study_name("d", arm), storage=handle.storage)
        waiting = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
        assert len(waiting) == 3 and all(t.state == optuna.trial.TrialState.WAITING for t in waiting)
        fixed = [t.system_attrs.get("fixed_params", {}) for t in waiting]  # what enqueue_trial stored
        assert fixed[0] == defaults
        assert all(f == {} for f in fixed[1:])  # the rest are sampled when claimed


def test_every_learning_rate_searches_one_range_reaching_the_stable_region():
    """Issue 10: the old ranges started at 1e-4, above the stages' stable rates; now every rate of every
    arm shares one log range down to 1e-6, and each config default lies inside it (not in its outer 10%)."""
    import math
    specs = {(a, n): s for a, sp in api.PARAM_SPACE.items() for n, s in sp.items() if n.endswith("lr")}
    assert specs and all(s == api.LR_RANGE for s in specs.values())
    assert api.LR_RANGE["low"] <= 1e-6 and api.LR_RANGE["log"]
    full = api.param_space(CONFIG)
    lo, hi = math.log(api.LR_RANGE["low"]), math.log(api.LR_RANGE["high"])
    for (arm, name) in specs:
        pos = (math.log(full[arm][name]["default"]) - lo) / (hi - lo)
        assert 0.1 < pos < 0.9, (arm, name, pos)


def test_scale_compute_stretches_exactly_the_stage_lengths_an_arm_searches():
    p = api.scale_compute("direct_grpo", {"lr": 1e-4, "grpo_epochs": 2.0}, 2.5, CONFIG)
    assert p == {"lr": 1e-4, "grpo_epochs": 5.0}
    b = api.scale_compute("rl_teacher_bridge", {"fkl_steps": 100}, 2.0, CONFIG)
    cfg = load_config(CONFIG)
    assert b["fkl_steps"] == 200 and b["opd_steps"] == 2 * cfg.opd.steps and b["grpo_epochs"] == 2 * cfg.grpo.epochs
    with pytest.raises(InputError):
        api.scale_compute("direct_grpo", {}, 0.0, CONFIG)
