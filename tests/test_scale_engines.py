"""Scale-out on existing engines: real OPD and GRPO stage steps under `accelerate launch --num_processes 2`
(DDP over gloo, CPU, through the stages' engine path) match one process; accelerate configs parse; LoRA and the global token mean."""

from pathlib import Path
import sys

import pytest
import torch

from _launch import accelerate_launch, run  # tests/ is on sys.path
import _parity as parity
from reference.engines import Engine, apply_lora, load_accelerate_config, shard
from reference.stages import StageContext, normaliser
from reference.models import build_tiny_qwen3_dir, load_causal_lm
from theory.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("ddp")
    s = build_tiny_qwen3_dir(d / "student", seed=1)
    t = build_tiny_qwen3_dir(d / "teacher", seed=2, hidden=48, heads=4, kv_heads=2, head_dim=12, intermediate=96)
    return d, s, t


@pytest.mark.slow
def test_stage_steps_ddp_two_processes_match_one(pair):
    """One OPD step then one GRPO step through the stages' engine path (`StageContext.engine`: rank
    shards, `Accelerator.prepare`, global token means): 2 DDP processes with micro-batches of one
    sequence (gradient accumulation) give the gradients of one process on the whole batch."""
    d, s, t = pair
    base = [str(ROOT / "scripts" / "ddp_parity.py"), "--student", str(s), "--teacher", str(t), "--prompts", "4"]
    run([sys.executable, *base, "--out", str(d / "one.pt")])
    # --multi_gpu selects accelerate's torchrun launcher; on a CPU machine the processes use gloo
    run(accelerate_launch("--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                          "--mixed_precision", "no", "--dynamo_backend", "no", *base, "--micro-batch", "1",
                          "--out", str(d / "two.pt")))
    one, two = torch.load(d / "one.pt"), torch.load(d / "two.pt")
    assert one["result"]["world_size"] == 1 and two["result"]["world_size"] == 2
    assert one["result"]["grpo_steps"] == two["result"]["grpo_steps"] == 1  # GRPO had signal: it stepped
    assert two["result"]["kl_to_teacher"] == pytest.approx(one["result"]["kl_to_teacher"], rel=1e-5)
    assert two["result"]["grpo_loss"] == pytest.approx(one["result"]["grpo_loss"], rel=1e-5)
    assert len(one["grads"]) == len(two["grads"]) == 2  # OPD step, GRPO step
    for g1, g2 in zip(one["grads"], two["grads"]):
        assert g1.keys() == g2.keys() and len(g1) > 10 and all(g.abs().max() > 0 for g in g1.values())
    # each stage is one AdamW step (lr 1e-2, scripts/ddp_parity.py) from weights both runs share (OPD) or
    # from each run's own OPD result (GRPO); tests/_parity.py derives the bounds: gradients within float
    # noise, signal entries within 2/(K-1) of the step bound, every entry within 2 steps
    init = load_causal_lm(s).state_dict()
    rec = [[parity.stage_record(run["grads"][i], lr=1e-2, betas=(0.9, 0.99)) for run in (one, two)] for i in (0, 1)]
    parity.check(one["before"][1], two["before"][1], *rec[0], "opd")
    parity.check(one["params"], two["params"], *rec[1], "grpo", start_one=one["before"][1], start_two=two["before"][1])
    assert any((one["before"][1][k] - init[k]).abs().max() > 1e-3 for k in init)  # the step did move it


def test_accelerate_configs_parse():
    kinds = {}
    for name in ("ddp", "fsdp2", "zero3"):
        cfg = load_accelerate_config(ROOT / "configs" / "accelerate" / f"{name}.yaml")
        kinds[name] = str(cfg["distributed_type"])
    assert kinds == {"ddp": "MULTI_GPU", "fsdp2": "FSDP", "zero3": "DEEPSPEED"}
    fsdp = load_accelerate_config(ROOT / "configs" / "accelerate" / "fsdp2.yaml")["fsdp_config"]
    assert fsdp["fsdp_version"] == 2 and fsdp["fsdp_transformer_layer_cls_to_wrap"] == "Qwen3DecoderLayer"
    with pytest.raises(InputError, match="does not exist"):
        load_accelerate_config(ROOT / "configs" / "accelerate" / "nope.yaml")


class _FakeAcc:
    def __init__(self, other_tokens):
        self.other = other_tokens

    def reduce(self, t, reduction="sum"):
        return t + self.other


def test_normaliser_weighs_tokens_not_ranks():
    """The stages' normaliser (global count / world size per rank) makes DDP's average of the ranks'
    losses the token mean of the global batch, whatever each rank's token count."""
    def ctx(engine):
        return StageContext(rollout=None, vocab_size=0, eos_id=0, score_batch=None, is_compliant=None, engine=engine)

    # rank 0 holds 1 token (loss 1.0); rank 1 holds 3 tokens (loss 3.0 each): global mean = 10/4
    x0, m0 = torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([[1.0, 0.0, 0.0]])
    x1, m1 = torch.tensor([[3.0, 3.0, 3.0]]), torch.tensor([[1.0, 1.0, 1.0]])
    l0 = (x0 * m0).sum() / normaliser(m0.sum(), ctx(Engine(_FakeAcc(torch.tensor(3.0)), 0, 2)))
    l1 = (x1 * m1).sum() / normaliser(m1.sum(), ctx(Engine(_FakeAcc(torch.tensor(1.0)), 1, 2)))
    assert float((l0 + l1) / 2) == pytest.approx(10 / 4)  # what DDP's averaging produces
    assert float((x1 * m1).sum() / normaliser(m1.sum(), ctx(None))) == pytest.approx(3.0)


def test_shard_is_even_and_disjoint():
    items = list(range(8))
    parts = [shard(items, Engine(None, r, 4)) for r in range(4)]
    assert sum(parts, []) == items
    with pytest.raises(InputError, match="multiple"):
        shard(list(range(7)), Engine(None, 0, 2))


def test_lora_trains_only_adapters(pair):
    _, s, _ = pair
    model = load_causal_lm(s)
    full = sum(p.numel() for p in model.parameters() if p.requires_grad)
    lora = apply_lora(model, rank=4)
    n = sum(p.numel() for p in lora.parameters() if p.requires_grad)
    assert 0 < n < full / 5
    out = lora(torch.tensor([[1, 2, 3, 4]]), labels=torch.tensor([[1, 2, 3, 4]]))
    out.loss.backward()
    grads = [p for p in lora.parameters() if p.grad is not None]
    assert grads and all(p.requires_grad for p in grads)
    with pytest.raises(InputError, match="lora_rank"):
        apply_lora(load_causal_lm(s), rank=0)


def test_launcher_failure_names_the_rank_and_signal():
    """torchrun's error summary (what `accelerate launch` prints when a rank dies) becomes one line per rank."""
    from _launch import failed_ranks
    summary = """Root Cause (first observed failure):
[0]:
  time      : 2026-12-07_06:00:00
  host      : box
  rank      : 1 (local_rank: 1)
  exitcode  : -6 (pid: 4242)
  error_file: <N/A>
  traceback : Signal 6 (SIGABRT) received by PID 4242
"""
    assert failed_ranks(summary) == ["rank 1 exit -6 (SIGABRT)"]
    assert failed_ranks("rank      : 0 (local_rank: 0)\n  exitcode  : 1 (pid: 7)") == ["rank 0 exit 1"]
    assert failed_ranks("Traceback: ValueError") == []
    # the CI run of 2026-12-07: a log line naming "local_rank: 0" with rank 0's code comes before the
    # entries; it was once read as rank 0 with rank 1's SIGTERM
    ci = ("E1207 09:19:55 api.py:1002] failed (exitcode: -6) local_rank: 0 (pid: 3381) of binary: python\n"
          "Failures:\n[1]:\n  rank      : 1 (local_rank: 1)\n  exitcode  : -15 (pid: 3382)\n"
          "Root Cause (first observed failure):\n[0]:\n  rank      : 0 (local_rank: 0)\n  exitcode  : -6 (pid: 3381)\n")
    assert failed_ranks(ci) == ["rank 1 exit -15 (SIGTERM)", "rank 0 exit -6 (SIGABRT)"]
