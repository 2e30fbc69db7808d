"""Sharded stages on a CPU: `accelerate launch` with configs/accelerate/fsdp2.yaml and 2 processes over
gloo shards the trained model with FSDP2, gathers the full state dict into the same atomic stage
checkpoint one process writes, is stopped after that checkpoint (as a kill would), resumes from it,
and ends with the weights of one process (within the derived bounds of tests/_parity.py).

Rollouts are `FixedRollout` (deterministic per prompt): sampled rollouts would differ between ranks
and one process by construction (each rank samples its shard from its own stream), which is not what
this test is about. The one-process reference runs the same config (`engine.launcher = "accelerate"`,
not launched: one process, world size 1), because the stage key hashes the engine section and seeds
the data order from it.
"""

import json
from pathlib import Path
import sys

import pytest
import torch

from _launch import accelerate_launch, run as _run  # tests/ is on sys.path
from conftest import stage_checkpoints
import _parity as parity

ROOT = Path(__file__).resolve().parents[1]

_SCRIPT = """
import json, sys
from pathlib import Path
sys.path[:0] = [sys.argv[3], sys.argv[4]]
import torch
from conftest import tiny_config
from _parity import GradientRecorder
import reference.assemble as assemble
import reference.pipeline as pl
import reference.stages as stages
from reference.rollout import FixedRollout

assemble.HFRollout = lambda tok, **kw: FixedRollout(tok, len(tok), tok.eos_token_id, varied_lengths=True)
work, phase = Path(sys.argv[1]), sys.argv[2]
RECORD, OPTIMIZER = GradientRecorder(), stages.optimizer


def watched_optimizer(model, lr):
    RECORD.watch(model)
    return OPTIMIZER(model, lr)


stages.optimizer = watched_optimizer
cfg = tiny_config(**{"engine.launcher": "accelerate", "engine.micro_batch": 1, "fkl.lr": 1e-3, "opd.lr": 1e-3})
stop = {"first": 0, "resume": 1, "one": 1}[phase]
try:
    pl.run_pipeline(cfg, "raw_teacher_bridge", 0, workdir=work, split="val", progress=False, stop_after=stop)
except pl.Stopped:
    pass
RECORD.save(work / f"grads_{phase}.pt")
if phase == "resume":
    # the resumed run loaded stage 0 into a fresh model; also load a checkpoint into an already
    # sharded model and gather it back: the round trip must give the file's tensors
    import torch.distributed as dist
    from reference import checkpoint as ckpt
    from reference.engines import fsdp2_shard, full_state_dict, make_engine
    from reference.tokenizer import toy_tokenizer
    engine = make_engine(cpu=True)
    tok = toy_tokenizer()
    model = fsdp2_shard(ckpt.tiny_qwen3(cfg.student, len(tok), pad_id=tok.pad_token_id, eos_id=tok.eos_token_id),
                        engine)
    stage = next(d for d in (work / "stages").glob("*/meta.json")
                 if not d.parent.name.startswith(".") and json.loads(d.read_text())["stage"] == "opd").parent
    ckpt.load_weights(model, stage)
    state = full_state_dict(model)
    if engine.is_main:
        torch.save(state, work / "roundtrip.pt")
    print("sharding", engine.sharding, "world", engine.world_size, flush=True)
from reference.engines import exit_rank
exit_rank()  # end the rank without interpreter teardown (engines.exit_rank)
"""


def _base_student() -> dict:
    """The weights the pipeline's first student stage starts from (tiny_config's base asset)."""
    from conftest import tiny_config  # tests/ is on sys.path
    from reference.assemble import build_models
    return {k: v.detach().clone() for k, v in build_models(tiny_config(), need_teacher=False).student.state_dict().items()}


@pytest.mark.slow
def test_fsdp2_two_processes_kill_resume_match_one_process(tmp_path):
    script = tmp_path / "sharded.py"
    script.write_text(_SCRIPT)
    args = [str(ROOT / "tests"), str(ROOT)]
    launch = accelerate_launch("--config_file", str(ROOT / "configs" / "accelerate" / "fsdp2.yaml"),
                               "--num_processes", "2", str(script))
    two = tmp_path / "two"
    _run([*launch, str(two), "first", *args])
    first = stage_checkpoints(two)
    assert list(first) == ["fkl_warmup"]  # stopped after its checkpoint
    out = _run([*launch, str(two), "resume", *args])
    assert "sharding fsdp2 world 2" in out.stdout
    _run([sys.executable, str(script), str(tmp_path / "one"), "one", *args])

    one, sharded = stage_checkpoints(tmp_path / "one"), stage_checkpoints(two)
    assert set(one) == set(sharded) == {"fkl_warmup", "opd"}
    rec_one = torch.load(tmp_path / "one" / "grads_one.pt")
    rec_two = torch.load(two / "grads_first.pt") + torch.load(two / "grads_resume.pt")
    assert len(rec_one) == len(rec_two) == 2  # FKL, OPD
    base = _base_student()
    for (name, r1, r2) in zip(("fkl_warmup", "opd"), rec_one, rec_two):
        (w1, m1), (w2, m2) = one[name], sharded[name]
        assert w1.keys() == w2.keys() and set(r1["grads"]) == set(r2["grads"]) and set(r1["grads"]) <= set(w1)
        starts = {"start_one": one["fkl_warmup"][0], "start_two": sharded["fkl_warmup"][0]} if name == "opd" else {}
        parity.check(w1, w2, r1, r2, name, **starts)  # derived in tests/_parity.py
        loss_key = "forward_kl" if name == "fkl_warmup" else "kl_to_teacher"
        assert len(m1["log"]) == len(m2["log"]) == 2  # tiny_config: 2 steps per stage
        for e1, e2 in zip(m1["log"], m2["log"]):
            assert e2[loss_key] == pytest.approx(e1[loss_key], rel=1e-4)
        start = base if name == "fkl_warmup" else first["fkl_warmup"][0]
        assert max(float((v - start[k]).abs().max()) for k, v in w1.items()) > 1e-4  # the stage trained
    back = torch.load(two / "roundtrip.pt")
    opd = sharded["opd"][0]
    assert back.keys() == opd.keys() and all(torch.equal(back[k], opd[k]) for k in opd)


_EVAL = """
import json, sys
from pathlib import Path
sys.path[:0] = [sys.argv[3], sys.argv[4]]
import torch
from conftest import tiny_config
from reference.assemble import build_models, build_world, engine_for
from reference.evaluate import evaluate

out, mode = Path(sys.argv[1]), sys.argv[2]
# 18 problems, k 2, batch 8: chunks of 4 problems -> 5 chunks, one more on rank 0 than on rank 1
cfg = tiny_config(**{"engine.launcher": "accelerate" if mode == "two" else "single", "eval.k": 2, "eval.batch": 8,
                     "eval.greedy": True})
engine = engine_for(cfg)
models = build_models(cfg, need_teacher=False, engine=engine)
problems = build_world(cfg, models.tokenizer).val[:18]
rows = {}
torch.manual_seed(7)
res = evaluate(models.student, problems, models.ctx, cfg.eval, keyed=True)
rows["replicated"] = {"metrics": res.metrics, "correct": res.problems["correct"].tolist(),
                      "compliant": res.problems["compliant"].tolist()}
if mode == "two":  # the same on a model sharded by FSDP2 (lockstep decoding, a padded round on rank 1)
    from reference.engines import fsdp2_shard
    fsdp2_shard(models.student, engine)
    torch.manual_seed(7)
    res = evaluate(models.student, problems, models.ctx, cfg.eval)  # keyed by default on 2 ranks
    rows["sharded"] = {"metrics": res.metrics, "correct": res.problems["correct"].tolist(),
                       "compliant": res.problems["compliant"].tolist()}
rank = 0 if engine is None else engine.rank
(out / f"eval_{mode}_rank{rank}.json").write_text(json.dumps(rows))
from reference.engines import exit_rank
exit_rank()  # end the rank without interpreter teardown (engines.exit_rank)
"""


@pytest.mark.slow
def test_sharded_evaluation_matches_one_process(tmp_path):
    """Problems split across 2 ranks (a chunk of problems per `generate` call, each chunk seeded by
    its index), results gathered: the per-problem counts and every metric equal one process's,
    on a replicated model and on an FSDP2-sharded one; both ranks end with the same result."""
    script = tmp_path / "eval.py"
    script.write_text(_EVAL)
    args = [str(ROOT / "tests"), str(ROOT)]
    _run(accelerate_launch("--config_file", str(ROOT / "configs" / "accelerate" / "fsdp2.yaml"),
                           "--num_processes", "2", str(script), str(tmp_path), "two", *args))
    _run([sys.executable, str(script), str(tmp_path), "one", *args])
    one = json.loads((tmp_path / "eval_one_rank0.json").read_text())["replicated"]
    r0, r1 = (json.loads((tmp_path / f"eval_two_rank{r}.json").read_text()) for r in (0, 1))
    assert r0 == r1
    assert r0["replicated"] == one and r0["sharded"] == one
    assert sum(one["correct"]) > 0 and len(one["correct"]) == 18 and "accuracy_greedy" in one["metrics"]


_PILOT = """
import sys
from pathlib import Path
sys.path[:0] = [sys.argv[3], sys.argv[4]]
from conftest import tiny_config
import reference.evaluate as ev
from reference.pilot import PilotConfig, run_pilot

out, mode = Path(sys.argv[1]), sys.argv[2]
if mode == "one":  # one process through the rank-layout-free path the sharded pilot takes
    plain = ev.evaluate
    ev.evaluate = lambda *a, **kw: plain(*a, **{"keyed": True, **kw})
cfg = tiny_config(**{"engine.launcher": "accelerate" if mode == "two" else "single", "eval.batch": 8})
run_pilot(cfg, PilotConfig(k=2, problems=18), out / mode, progress=None)
from reference.engines import exit_rank
exit_rank()  # end the rank without interpreter teardown (engines.exit_rank)
"""


@pytest.mark.slow
def test_sharded_pilot_matches_one_process(tmp_path):
    """The pilot under 2 ranks: probe problems split across ranks and gathered; rank 0 writes. The
    per-problem pass counts, the summary and the KL rows equal one process's."""
    import pandas as pd

    script = tmp_path / "pilot.py"
    script.write_text(_PILOT)
    args = [str(ROOT / "tests"), str(ROOT)]
    _run(accelerate_launch("--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision",
                           "no", "--dynamo_backend", "no", str(script), str(tmp_path), "two", *args))
    _run([sys.executable, str(script), str(tmp_path), "one", *args])
    for name in ("problems.csv", "summary.csv", "pilot_runs.csv"):
        one, two = pd.read_csv(tmp_path / "one" / name), pd.read_csv(tmp_path / "two" / name)
        pd.testing.assert_frame_equal(two, one)
    problems = pd.read_csv(tmp_path / "one" / "problems.csv")
    assert len(problems) == 2 * 18 and problems["correct"].sum() > 0


_TRL = '''
import hashlib, sys
from pathlib import Path
from types import SimpleNamespace
sys.path[:0] = [sys.argv[3], sys.argv[4]]
import torch
import torch.distributed as dist
from transformers import Qwen3ForCausalLM
from conftest import tiny_config
from _parity import GradientRecorder
import reference.pipeline as pl
import reference.stages as stages
import reference.trl_backend as tb

work, phase = Path(sys.argv[1]), sys.argv[2]
ORIGINAL = Qwen3ForCausalLM.generate


def fixed_generate(self, input_ids=None, attention_mask=None, generation_config=None, return_dict_in_generate=False,
                   **kw):
    """TRL's sampling (the trainers pass a generation config) replaced by completions fixed by the
    prompt and its occurrence in the batch, cut at a pseudo-random EOS: a group's samples differ,
    and ranks see what one process sees. The project's own sampling (evaluation) is left alone."""
    if generation_config is None:
        return ORIGINAL(self, input_ids=input_ids, attention_mask=attention_mask, **kw)
    n_new, pad = generation_config.max_new_tokens, generation_config.pad_token_id
    eos = generation_config.eos_token_id
    eos = eos[0] if isinstance(eos, list) else eos
    seen, comps = {}, []
    for row, mask in zip(input_ids, attention_mask):
        key = bytes(str(row[mask.bool()].tolist()), "ascii")
        j = seen[key] = seen.get(key, -1) + 1
        g = torch.Generator().manual_seed(int(hashlib.sha1(key).hexdigest()[:8], 16) + 7919 * j)
        c = torch.randint(3, self.config.vocab_size, (n_new,), generator=g)
        c = torch.where((c == eos) | (c == pad), torch.full_like(c, 3), c)
        length = int(torch.randint(1, n_new + 1, (1,), generator=g))
        c[length - 1] = eos
        c[length:] = pad
        comps.append(c)
    seq = torch.cat([input_ids, torch.stack(comps).to(input_ids.device)], 1)
    return SimpleNamespace(sequences=seq) if return_dict_in_generate else seq


CALLS = []


def parity_reward(ctx):
    """1 for an odd completion length, else 0; on the first GRPO step the first half of the global
    batch (all of rank 0's share under 2 processes) scores 0: one rank has no signal, the other has."""
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)

    def reward(prompts, completions, gold, **_):
        first = not CALLS
        CALLS.append(1)
        n = len(completions)
        return [0.0 if first and rank * n + i < n * world // 2 else float(len(c) % 2)
                for i, c in enumerate(completions)]
    return reward


Qwen3ForCausalLM.generate = fixed_generate
tb._reward = parity_reward
SHARD, SHARDED = tb._sharded, []


RECORD = GradientRecorder()


def shard_and_record(model, ctx):
    model = SHARD(model, ctx)
    RECORD.watch(model)
    SHARDED.append(any(type(p).__name__ == "DTensor" for p in model.parameters()))
    return model


tb._sharded = shard_and_record
cfg = tiny_config(**{"engine.launcher": "accelerate", "engine.trainer": "trl", "grpo.teacher_lr": 1e-3,
                     "fkl.lr": 1e-3, "opd.lr": 1e-3})
stop = {"first": 0, "resume": 2, "one": 2, "bug": 2}[phase]
if phase == "bug":  # the mutation: GKD's per-rank "batchmean" (DDP then averages two ranks' token means)
    stages.normaliser = lambda count, ctx: count.clamp(min=1.0)
try:
    pl.run_pipeline(cfg, "rl_teacher_bridge", 0, workdir=work, split="val", progress=False, stop_after=stop)
except pl.Stopped:
    pass
RECORD.save(work / f"grads_{phase}.pt")
print(f"trained sharded: {sum(SHARDED)} of {len(SHARDED)}", flush=True)
from reference.engines import exit_rank
exit_rank()  # end the rank without interpreter teardown (engines.exit_rank)
'''


@pytest.mark.slow
@pytest.mark.parametrize("launch", ["ddp", "fsdp2"])
def test_trl_backend_two_processes_kill_resume_match_one_process(tmp_path, launch):
    """The TRL backend under `accelerate launch` (configs/accelerate/{ddp,fsdp2}.yaml, 2 processes over
    gloo): DDP through the trainers' own accelerate, or the trained model sharded by FSDP2
    (`trl_backend._sharded`); each rank takes half of every global batch, rank 0 writes the stage
    checkpoint (gathered from the shards under FSDP2). Teacher GRPO, stopped after its checkpoint, then a
    resumed FKL warmup (GKDTrainer) and OPD (DistillationTrainer) end where one process ends.

    What it checks beyond plumbing: GRPO's no-signal skip is decided over all ranks (on the first
    step rank 0's share has no signal; a per-rank decision leaves rank 0's weights behind), GKD's loss
    is the global token mean (its per-rank "batchmean" would average two rank means), and the compute
    account is global. Gradients and weights: `_parity.check` (derived in tests/_parity.py: first-step
    gradients within float noise, every move within the AdamW bound, entries above the measured gradient
    noise within 2/(K-1) of it); each step's logged loss at rel 1e-4. The DDP case also re-creates the
    per-rank GKD normaliser and requires the check to fail on it (first-step gradient gap 0.59).
    Run with `-s` to see each stage's figures."""
    script = tmp_path / "trl_ddp.py"
    script.write_text(_TRL)
    args = [str(ROOT / "tests"), str(ROOT)]
    fsdp2 = launch == "fsdp2"  # every stage's trained model sharded, on both ranks; none under DDP
    cmd = accelerate_launch("--config_file", str(ROOT / "configs" / "accelerate" / f"{launch}.yaml"),
                            "--num_processes", "2", str(script))
    two = tmp_path / "two"
    first = _run([*cmd, str(two), "first", *args]).stdout
    assert list(stage_checkpoints(two)) == ["teacher_grpo"]  # stopped after its checkpoint
    resumed = _run([*cmd, str(two), "resume", *args]).stdout
    assert first.count(f"trained sharded: {int(fsdp2)} of 1") == 2
    assert resumed.count(f"trained sharded: {2 * fsdp2} of 2") == 2
    _run([sys.executable, str(script), str(tmp_path / "one"), "one", *args])
    one, multi = stage_checkpoints(tmp_path / "one"), stage_checkpoints(two)
    rec_one = torch.load(tmp_path / "one" / "grads_one.pt")
    rec_two = torch.load(two / "grads_first.pt") + torch.load(two / "grads_resume.pt")
    _match_one_process(one, multi, rec_one, rec_two)
    assert one["teacher_grpo"][1]["log"][0]["zero_signal_fraction"] == 0.5  # rank 0's share: no signal
    fkl = multi["fkl_warmup"][0]
    assert max(float((v - fkl[k]).abs().max()) for k, v in multi["opd"][0].items()) > 1e-4  # the resumed OPD trained
    if not fsdp2:  # the mutation check: re-create the per-rank GKD normaliser; the parity check must fail on it
        bug = tmp_path / "bug"
        _run([*cmd, str(bug), "bug", *args])
        buggy, rec_bug = stage_checkpoints(bug), torch.load(bug / "grads_bug.pt")
        parity.check(*(s["teacher_grpo"][0] for s in (one, buggy)), rec_one[0], rec_bug[0], "teacher_grpo (unchanged)")
        with pytest.raises(AssertionError):
            parity.check(one["fkl_warmup"][0], buggy["fkl_warmup"][0], rec_one[1], rec_bug[1], "fkl_warmup (bug)")
    if fsdp2:  # uninterrupted: FKL and OPD score with the teacher that teacher GRPO sharded in place (a resumed
        # run reloads it whole), through TRL's chunked kernels, with the scorer's gradients off for the stage
        straight = tmp_path / "straight"
        assert _run([*cmd, str(straight), "one", *args]).stdout.count("trained sharded: 3 of 3") == 2
        _match_one_process(one, stage_checkpoints(straight), rec_one, torch.load(straight / "grads_one.pt"))


def _match_one_process(one: dict, multi: dict, rec_one: list, rec_multi: list) -> dict:
    """Every stage of a 2-process run against one process: tokens, logged losses, gradients and weights
    (`_parity.check`, derived in tests/_parity.py); OPD's moves are taken from each run's own FKL checkpoint."""
    assert set(one) == set(multi) == {"teacher_grpo", "fkl_warmup", "opd"}
    keys = {"teacher_grpo": "loss", "fkl_warmup": "forward_kl", "opd": "kl_to_teacher"}
    assert len(rec_one) == len(rec_multi) == len(keys)  # one recorded stage per trained stage, in pipeline order
    report = {}
    for (name, key), r1, r2 in zip(keys.items(), rec_one, rec_multi):
        (w1, m1), (w2, m2) = one[name], multi[name]
        assert m2["result"]["tokens"] == m1["result"]["tokens"] > 0  # the compute account is global
        assert len(m1["log"]) == len(m2["log"]) == len(r1["lr"]) == 2
        assert [e[key] for e in m2["log"]] == pytest.approx([e[key] for e in m1["log"]], rel=1e-4)
        assert w1.keys() == w2.keys() and set(r1["grads"]) == set(r2["grads"]) and set(r1["grads"]) <= set(w1)
        starts = {"start_one": one["fkl_warmup"][0], "start_two": multi["fkl_warmup"][0]} if name == "opd" else {}
        report[name] = parity.check(w1, w2, r1, r2, name, **starts)
    return report
