"""vLLM rollouts (issue 24 item 2) through a fake engine (tests/_fake_vllm.py; vllm is not installable
here): the engine receives the trained model's weights whole, in bf16, before each call, under FSDP2 on
2 processes as well; it sleeps between calls and wakes before the next; a frozen model is never pushed;
evaluation samples through the same engine; TRL with vLLM is refused when the config loads; the dry run
sizes the engine's pool with the fraction the engine is built with."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))

import _fake_vllm as fake  # noqa: E402
from conftest import tiny_config  # noqa: E402
from reference.config import Config, load_config  # noqa: E402
from theory.errors import InputError  # noqa: E402


@pytest.fixture
def vllm_rollout(monkeypatch):
    """(VLLMRollout class) with the fake `vllm` module installed, removed afterwards."""
    monkeypatch.setitem(sys.modules, "vllm", fake.install())
    from reference import rollout_vllm
    return rollout_vllm


@pytest.fixture(scope="module")
def tiny():
    from reference.assemble import build_models
    torch.set_num_threads(1)
    cfg = tiny_config()
    m = build_models(cfg, need_teacher=True)
    for model in (m.student, m.teacher):
        model.config._name_or_path = "tiny/checkpoint"  # vLLM builds its engine from a path
    return cfg, m


def test_a_trained_model_is_pushed_whole_before_each_call_and_the_engine_sleeps_between(vllm_rollout, tiny):
    cfg, m = tiny
    ro = vllm_rollout.VLLMRollout(m.tokenizer, cfg)
    assert ro.backend == "vllm"
    student = m.student.float().requires_grad_(True)  # an fp32 master, as mixed precision trains it
    b = ro.generate(student, ["1+2=", "3+4="], n=2, temperature=1.0, max_new_tokens=8)
    assert b.completion_BT.shape == (4, len(fake.COMPLETION)) and b.n == 2
    with torch.no_grad():
        next(student.parameters()).add_(1.0)  # a training step
    ro.generate(student, ["5+6="], n=2, temperature=1.0, max_new_tokens=8)
    kinds = [e[0] for e in fake.EVENTS]
    assert kinds == ["init", "load", "generate", "sleep", "wake", "load", "generate", "sleep"]
    init = fake.EVENTS[0][1]
    assert init["gpu_memory_utilization"] == vllm_rollout.GPU_MEMORY_UTILIZATION and init["enable_sleep_mode"]
    assert "distributed_executor_backend" not in init  # one process: no external launcher
    assert [e[1] for e in fake.EVENTS if e[0] == "sleep"] == [2, 2]  # weights are pushed again: drop them
    want = student.state_dict()
    for push in fake.pushed():
        assert list(push) == list(want)
    last = fake.pushed()[-1]  # the second push carries the step: full shapes, bf16, the trained values
    for name, v in want.items():
        assert last[name].shape == v.shape and last[name].dtype == torch.bfloat16
        assert torch.equal(last[name], v.detach().to(torch.bfloat16)), name
    assert not torch.equal(fake.pushed()[0][next(iter(want))], last[next(iter(want))])


def test_a_frozen_model_is_never_pushed_and_keeps_its_weights_asleep(vllm_rollout, tiny):
    cfg, m = tiny
    ro = vllm_rollout.VLLMRollout(m.tokenizer, cfg)
    teacher = m.teacher.requires_grad_(False)
    for _ in range(2):
        ro.generate(teacher, ["1+2="], n=1, temperature=1.0, max_new_tokens=8)
    assert [e[0] for e in fake.EVENTS] == ["init", "generate", "sleep", "wake", "generate", "sleep"]
    assert [e[1] for e in fake.EVENTS if e[0] == "sleep"] == [1, 1]
    teacher.requires_grad_(True)


def test_evaluation_samples_through_the_same_engine(vllm_rollout, tiny):
    import dataclasses
    from reference.assemble import build_world
    from reference.evaluate import evaluate
    cfg, m = tiny
    ctx = dataclasses.replace(m.ctx, rollout=vllm_rollout.VLLMRollout(m.tokenizer, cfg))
    problems = build_world(cfg, m.tokenizer).split("test")[:3]
    evaluate(m.student, problems, ctx, cfg.eval, extras=False)
    assert ("generate", 3 * cfg.eval.k) in fake.EVENTS


def test_trl_with_vllm_is_refused_when_the_config_loads():
    with pytest.raises(InputError, match="engine.rollout = 'vllm' with engine.trainer = 'trl'"):
        Config().override({"engine.rollout": "vllm", "engine.trainer": "trl"})
    Config().override({"engine.rollout": "vllm"})  # the reference loop drives the engine itself


def test_the_dry_run_sizes_the_pool_the_engine_is_built_with():
    from reference import rollout_vllm
    from reference.dryrun import GPU_GIB, dry_run
    d = dry_run(load_config(ROOT / "configs" / "paper-qwen3-math.toml"))
    r = d["stages"][0]["rollout"]["8"]
    assert r["vllm_pool_gib"] == round(GPU_GIB * rollout_vllm.GPU_MEMORY_UTILIZATION, 2)
    assert r["vllm_full_length_seqs"] == int((r["vllm_pool_gib"] - r["sampler_weights_gib"])
                                             / r["kv_gib_per_full_length_seq"])


_FSDP = """
import json, sys
from pathlib import Path
sys.path[:0] = [sys.argv[2], sys.argv[3]]
import torch
import _fake_vllm as fake
sys.modules["vllm"] = fake.install()
from conftest import tiny_config
from reference.assemble import build_models
from reference.engines import exit_rank, fsdp2_shard, make_engine
from reference.rollout_vllm import VLLMRollout

torch.set_num_threads(1)
engine = make_engine(cpu=True)
cfg = tiny_config()
m = build_models(cfg, need_teacher=True)
model = fsdp2_shard(m.student, engine)
model.config._name_or_path = "tiny/checkpoint"
VLLMRollout(m.tokenizer, cfg).generate(model, ["1+2="], n=2, temperature=1.0, max_new_tokens=8)
push = fake.pushed()[0]
init = [e[1] for e in fake.EVENTS if e[0] == "init"][0]
out = {"shard_rows": {k: list(v.to_local().shape) for k, v in model.state_dict().items() if hasattr(v, "to_local")},
       "pushed": {k: v.float().tolist() for k, v in push.items()},
       "backend": init.get("distributed_executor_backend")}
(Path(sys.argv[1]) / f"rank{engine.rank}.json").write_text(json.dumps(out))
exit_rank()
"""


@pytest.mark.slow
def test_fsdp2_ranks_push_whole_tensors_equal_to_the_unsharded_model(tmp_path):
    from _launch import accelerate_launch, run
    from reference.assemble import build_models
    script = tmp_path / "vllm_sync.py"
    script.write_text(_FSDP)
    run(accelerate_launch("--config_file", str(ROOT / "configs" / "accelerate" / "fsdp2.yaml"), "--num_processes",
                          "2", str(script), str(tmp_path), str(ROOT / "tests"), str(ROOT)))
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    torch.set_num_threads(1)
    whole = build_models(tiny_config(), need_teacher=True).student.state_dict()  # the same init, unsharded
    for out in ranks:
        assert out["backend"] == "external_launcher"  # one colocated engine per rank
        assert list(out["pushed"]) == list(whole)
        sharded = [k for k, rows in out["shard_rows"].items() if rows[0] < whole[k].shape[0]]
        assert sharded  # the ranks held shards...
        for k, v in whole.items():  # ...and every engine received whole tensors equal to the model's
            assert torch.equal(torch.tensor(out["pushed"][k]), v.to(torch.bfloat16).float()), k
