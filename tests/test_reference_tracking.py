"""Optional experiment tracking of reference runs (reference.tracking): off by default, never changes
a number or a stage key, logs every per-step entry of every stage under the stage's name, and a
missing tracker package is one line naming the install before any work."""

import pytest

pytest.importorskip("torch")
pytest.importorskip("accelerate")

import accelerate.utils  # noqa: E402

from reference import tracking  # noqa: E402
from reference.config import diff_fields, load_config  # noqa: E402
from reference.pipeline import Stopped, run_pipeline  # noqa: E402
from reference.stage_runner import stage_key  # noqa: E402
from theory.errors import InputError  # noqa: E402

from conftest import tiny_config as tiny  # noqa: E402  (tests/ is on sys.path)


class FakeTracker:
    """Stands in for an accelerate GeneralTracker: records what would be logged."""

    def __init__(self, run_name, logging_dir):
        self.run_name, self.logging_dir = run_name, logging_dir
        self.logged: list[tuple[int, dict]] = []
        self.finished = 0

    def log(self, values, step=None):
        self.logged.append((step, dict(values)))

    def finish(self):
        self.finished += 1


@pytest.fixture
def fake(monkeypatch):
    made: list[FakeTracker] = []

    def make(name, run_name, logging_dir):
        assert name == "tensorboard"
        made.append(FakeTracker(run_name, logging_dir))
        return made[-1]
    monkeypatch.setattr(accelerate.utils, "is_tensorboard_available", lambda: True)
    monkeypatch.setattr(tracking, "_make", make)
    return made


def test_off_by_default_and_never_in_a_hash():
    cfg = load_config("toy")
    assert cfg.engine.tracker == "" and cfg.engine.tracker_dir == ""
    on = cfg.override({"engine.tracker": "tensorboard", "engine.tracker_dir": "/tmp/tb"})
    assert on.hash() == cfg.hash()
    prefix = [("teacher_grpo", 16)]
    assert stage_key(on, 0, prefix) == stage_key(cfg, 0, prefix)
    assert diff_fields(cfg.to_dict(), on.to_dict()) == []
    # a manifest written before the fields existed still resumes
    old = cfg.to_dict()
    del old["engine"]["tracker"], old["engine"]["tracker_dir"]
    assert diff_fields(old, cfg.to_dict()) == []


def test_unknown_tracker_is_a_config_error():
    with pytest.raises(InputError, match="engine.tracker must be one of"):
        tiny(**{"engine.tracker": "tensorbored"})


def test_missing_package_is_one_line_before_any_work(monkeypatch, tmp_path):
    monkeypatch.setattr(accelerate.utils, "is_tensorboard_available", lambda: False)
    with pytest.raises(InputError) as e:
        run_pipeline(tiny(**{"engine.tracker": "tensorboard"}), "direct_grpo", 0, workdir=tmp_path, progress=False)
    msg = str(e.value)
    assert "pip install tensorboard" in msg and "\n" not in msg
    assert not any(tmp_path.iterdir()), "work was done before the tracker was checked"


@pytest.mark.slow  # toy runs
def test_every_stage_step_is_logged_under_its_name_and_numbers_do_not_change(fake, tmp_path):
    arm = "rl_teacher_bridge_stage3"  # teacher_grpo, fkl_warmup, opd, student_grpo
    plain = run_pipeline(tiny(), arm, 0, workdir=tmp_path / "plain", progress=False)
    tracked = run_pipeline(tiny(**{"engine.tracker": "tensorboard"}), arm, 0, workdir=tmp_path / "tracked",
                           progress=False)
    assert tracked.metrics == plain.metrics
    (t,) = fake
    assert t.finished == 1 and t.run_name == f"{arm}_s0_t{tracked.label_account.teacher}"
    assert t.logging_dir == tmp_path / "tracked" / "tracking"
    want = {"teacher_grpo": {"reward", "lr"}, "fkl_warmup": {"forward_kl", "lr"},
            "opd": {"kl_to_teacher", "lr"}, "student_grpo": {"reward", "lr"}}
    assert [s["name"] for s in tracked.stages[:-1]] == list(want) and all(s["steps"] > 0 for s in tracked.stages[:-1])
    for s in tracked.stages[:-1]:
        name = s["name"]
        steps = [step for step, v in t.logged if any(k.startswith(name + "/") for k in v)]
        assert steps == list(range(1, s["steps"] + 1)), name
        keys = {k.split("/", 1)[1] for _, v in t.logged for k in v if k.startswith(name + "/")}
        assert want[name] <= keys, (name, keys)
    final = {k: v for _, vals in t.logged for k, v in vals.items() if k.startswith("eval/")}
    assert final["eval/accuracy"] == pytest.approx(tracked.metrics["accuracy"])


def test_a_resumed_run_replays_the_stages_it_loads(fake, tmp_path):
    arm = "rl_teacher_bridge"
    with pytest.raises(Stopped):  # killed after stage 1, untracked
        run_pipeline(tiny(), arm, 0, workdir=tmp_path, progress=False, stop_after=1)
    res = run_pipeline(tiny(**{"engine.tracker": "tensorboard"}), arm, 0, workdir=tmp_path, progress=False)
    (t,) = fake
    assert [s["cached"] for s in res.stages[:-1]] == [True, True, False]
    assert all(s["steps"] > 0 for s in res.stages[:-1])
    for s in res.stages[:-1]:
        steps = [step for step, v in t.logged if any(k.startswith(s["name"] + "/") for k in v)]
        assert steps == list(range(1, s["steps"] + 1)), s["name"]


def test_real_tensorboard_writes_event_files(tmp_path):
    pytest.importorskip("tensorboard")
    cfg = tiny(**{"engine.tracker": "tensorboard", "engine.tracker_dir": str(tmp_path / "tb")})
    res = run_pipeline(cfg, "direct_grpo", 0, workdir=tmp_path / "w", progress=False)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    (run,) = list((tmp_path / "tb").iterdir())
    assert run.name == "direct_grpo_s0_t0"
    ea = EventAccumulator(str(run))
    ea.Reload()
    assert {"student_grpo/reward", "student_grpo/lr", "eval/accuracy"} <= set(ea.Tags()["scalars"])
    assert len(ea.Scalars("student_grpo/reward")) == res.stages[0]["steps"]
    assert ea.Scalars("eval/accuracy")[0].value == pytest.approx(res.metrics["accuracy"], rel=1e-6)
