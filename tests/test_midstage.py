"""Mid-stage checkpoints (issue 24 item 6; reference.midstage): a stage SIGKILLed part-way resumes from
its last checkpoint and ends bit-identical to an uninterrupted run (one process, the reference loop); the
checkpoint is written every `engine.checkpoint_every` steps without the plateau protocol, removed once
the stage's own checkpoint is written, and changes no hash; TRL's trainers are refused in one line."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import stage_checkpoints, tiny_config
from reference import pipeline as pl
from theory.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
CUT = {"fkl.steps": 6, "opd.steps": 6, "engine.checkpoint_every": 2}

_KILLED = """
import os, signal, sys
sys.path[:0] = [sys.argv[2], sys.argv[3]]
import torch
from conftest import tiny_config
from reference import midstage, pipeline
torch.set_num_threads(1)
calls = []
save = midstage.MidStage.save


def save_then_die(self, step, *a, **kw):
    save(self, step, *a, **kw)
    calls.append(step)
    if len(calls) == 5:  # FKL wrote at steps 2, 4, 6; OPD at 2, then 4: killed half-way through OPD
        os.kill(os.getpid(), signal.SIGKILL)


midstage.MidStage.save = save_then_die
pipeline.run_pipeline(tiny_config(**%s), "raw_teacher_bridge", 0, workdir=sys.argv[1], split="val", progress=False)
""" % repr(CUT)


def _resumed_as_whole(tmp_path: Path, whole, resumed, stages: set[str]) -> None:
    """The cut-and-resumed run under tmp_path/cut ended as the uninterrupted one under tmp_path/whole: the
    same stages, logs and weights bit for bit, the same metrics and tokens, and no mid-stage checkpoint left."""
    a, b = stage_checkpoints(tmp_path / "whole"), stage_checkpoints(tmp_path / "cut")
    assert set(a) == set(b) == stages
    for name in a:
        (wa, ma), (wb, mb) = a[name], b[name]
        assert ma["log"] == mb["log"], name
        assert all(np.array_equal(wa[k].numpy(), wb[k].numpy()) for k in wa), name
    assert resumed.metrics == whole.metrics and resumed.compute_tokens == whole.compute_tokens
    assert not any(p.name.endswith(".partial") for p in (tmp_path / "cut" / "stages").iterdir())


@pytest.mark.slow
def test_a_stage_sigkilled_half_way_resumes_bit_identical(tmp_path):
    torch.set_num_threads(1)
    cfg = tiny_config(**CUT)
    whole = pl.run_pipeline(cfg, "raw_teacher_bridge", 0, workdir=tmp_path / "whole", split="val", progress=False)
    script = tmp_path / "killed.py"
    script.write_text(_KILLED)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "cut"), str(ROOT / "tests"), str(ROOT)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    finished = stage_checkpoints(tmp_path / "cut")
    assert list(finished) == ["fkl_warmup"]  # the first stage finished; OPD was killed part-way
    partial = [p for p in (tmp_path / "cut" / "stages").iterdir() if p.name.endswith(".partial")]
    assert len(partial) == 1 and json.loads((partial[0] / "meta.json").read_text())["step"] == 4
    resumed = pl.run_pipeline(cfg, "raw_teacher_bridge", 0, workdir=tmp_path / "cut", split="val", progress=False)
    _resumed_as_whole(tmp_path, whole, resumed, {"fkl_warmup", "opd"})


def test_checkpoints_every_k_steps_without_the_plateau_protocol(tmp_path, monkeypatch):
    from reference import midstage
    steps = []
    save = midstage.MidStage.save

    def recorded(self, step, *a, **kw):
        save(self, step, *a, **kw)
        steps.append((self.directory.name, step, (self.directory / "state.pt").is_file()))
    monkeypatch.setattr(midstage.MidStage, "save", recorded)
    torch.set_num_threads(1)
    cfg = tiny_config(**{"fkl.steps": 5, "engine.checkpoint_every": 2})
    pl.run_pipeline(cfg, "raw_teacher_bridge", 0, workdir=tmp_path, split="val", progress=False)
    assert [s for _, s, _ in steps] == [2, 4, 2]  # FKL's 5 steps, then OPD's 2
    assert all(written for *_, written in steps) and len({d for d, _, _ in steps}) == 2  # one directory per stage
    assert not any(p.name.endswith(".partial") for p in (tmp_path / "stages").iterdir())
    # it changes no number: the same hash, so the same stage keys and seeds
    assert cfg.hash() == cfg.override({"engine.checkpoint_every": 0}).hash()


_RANKS = """
import os, signal, sys
from pathlib import Path
sys.path[:0] = [sys.argv[3], sys.argv[4]]
import torch
from conftest import tiny_config
import reference.assemble as assemble
from reference import midstage, pipeline
from reference.engines import exit_rank
from reference.rollout import FixedRollout

assemble.HFRollout = lambda tok, **kw: FixedRollout(tok, len(tok), tok.eos_token_id, varied_lengths=True)
work, phase = Path(sys.argv[1]), sys.argv[2]
calls = []
save = midstage.MidStage.save


def save_then_die(self, step, *a, **kw):
    save(self, step, *a, **kw)  # every rank: its shards and rank file in, then the rename (collective)
    calls.append(step)
    if len(calls) == 5:  # FKL wrote at 2, 4, 6; OPD at 2, then 4: every rank killed half-way through OPD
        os.kill(os.getpid(), signal.SIGKILL)


if phase == "cut":
    midstage.MidStage.save = save_then_die
cfg = tiny_config(**{**%s, "engine.launcher": "accelerate", "engine.micro_batch": 1, "fkl.lr": 1e-3,
                     "opd.lr": 1e-3})
pipeline.run_pipeline(cfg, "raw_teacher_bridge", 0, workdir=work, split="val", progress=False)
exit_rank()
""" % repr(CUT)


@pytest.mark.slow
def test_two_fsdp2_processes_sigkilled_half_way_resume_as_an_uninterrupted_pair(tmp_path):
    """The same kill under `accelerate launch` with FSDP2 on 2 processes: the resumed pair ends where an
    uninterrupted pair ends, within the sharded test's tolerance (tests/_parity.py; measured: identical)."""
    import os
    from _launch import accelerate_launch, run
    script = tmp_path / "ranks.py"
    script.write_text(_RANKS)
    launch = accelerate_launch("--config_file", str(ROOT / "configs" / "accelerate" / "fsdp2.yaml"),
                               "--num_processes", "2", str(script))
    args = [str(ROOT / "tests"), str(ROOT)]
    run([*launch, str(tmp_path / "whole"), "whole", *args])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cut = subprocess.run([*launch, str(tmp_path / "cut"), "cut", *args], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=600)
    assert cut.returncode != 0 and "SIGKILL" in cut.stderr, cut.stderr[-2000:]
    assert list(stage_checkpoints(tmp_path / "cut")) == ["fkl_warmup"]
    partial = [p for p in (tmp_path / "cut" / "stages").iterdir() if p.name.endswith(".partial")]
    assert len(partial) == 1 and json.loads((partial[0] / "meta.json").read_text()) == {"step": 4, "every": 2,
                                                                                       "ranks": 2}
    assert sorted(p.name for p in partial[0].glob("rank*.pt")) == ["rank0.pt", "rank1.pt"]
    run([*launch, str(tmp_path / "cut"), "resume", *args])
    a, b = stage_checkpoints(tmp_path / "whole"), stage_checkpoints(tmp_path / "cut")
    assert set(a) == set(b) == {"fkl_warmup", "opd"}
    for name in a:
        (wa, ma), (wb, mb) = a[name], b[name]
        loss = "forward_kl" if name == "fkl_warmup" else "kl_to_teacher"
        assert [e[loss] for e in mb["log"]] == pytest.approx([e[loss] for e in ma["log"]], rel=1e-4), name
        assert all(torch.allclose(wa[k], wb[k], rtol=1e-4, atol=1e-5) for k in wa), name
    assert not any(p.name.endswith(".partial") for p in (tmp_path / "cut" / "stages").iterdir())


def test_bad_checkpoint_every_is_one_line():
    with pytest.raises(InputError, match="engine.checkpoint_every must be >= 0"):
        tiny_config(**{"engine.checkpoint_every": -1})


_TRL = """
import os, signal, sys
sys.path[:0] = [sys.argv[2], sys.argv[3]]
import torch
from conftest import tiny_config
from reference import pipeline, trl_backend
torch.set_num_threads(1)
calls = []
save = trl_backend._Pinned._save_checkpoint


def save_then_die(self, model, trial):
    save(self, model, trial)
    calls.append(self.state.global_step)
    if len(calls) == int(sys.argv[5]):
        os.kill(os.getpid(), signal.SIGKILL)


trl_backend._Pinned._save_checkpoint = save_then_die
pipeline.run_pipeline(tiny_config(**%s), sys.argv[4], 0, workdir=sys.argv[1], split="val", progress=False)
""" % repr({**CUT, "engine.trainer": "trl", "grpo.epochs": 1.5})


@pytest.mark.slow
@pytest.mark.parametrize("arm,kill_after,finished,stages", [
    ("raw_teacher_bridge", 5, ["fkl_warmup"], {"fkl_warmup", "opd"}), ("direct_grpo", 1, [], {"student_grpo"})])
def test_trl_stage_sigkilled_half_way_resumes_bit_identical(tmp_path, arm, kill_after, finished, stages):
    """The same on TRL's trainers, through the Trainer's own checkpoints (save_steps = checkpoint_every,
    resume_from_checkpoint) plus this stage's sampling stream, tokens and log: FKL and OPD (killed after
    OPD's step-4 checkpoint) and GRPO (16 labels x 1.5 passes / 4 prompts = 6 steps, killed after step 2)."""
    torch.set_num_threads(1)
    cfg = tiny_config(**{**CUT, "engine.trainer": "trl", "grpo.epochs": 1.5})
    whole = pl.run_pipeline(cfg, arm, 0, workdir=tmp_path / "whole", split="val", progress=False)
    script = tmp_path / "killed.py"
    script.write_text(_TRL)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "cut"), str(ROOT / "tests"), str(ROOT), arm,
                           str(kill_after)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert list(stage_checkpoints(tmp_path / "cut")) == finished
    partial = [p for p in (tmp_path / "cut" / "stages").iterdir() if p.name.endswith(".partial")]
    assert len(partial) == 1 and [c.name for c in partial[0].glob("checkpoint-*")]
    resumed = pl.run_pipeline(cfg, arm, 0, workdir=tmp_path / "cut", split="val", progress=False)
    _resumed_as_whole(tmp_path, whole, resumed, stages)
