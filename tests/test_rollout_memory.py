"""Bounded rollout memory (issue 24, item 1): the sampler decodes a batch in micro-batches sized by
`engine.rollout_micro_batch` or by a KV-cache budget (`engine.kv_cache_gib`), a chunked batch is
exactly the batches of consecutive sampler calls on its chunks (hence the same distribution as one
call, not the same draws), training scores it as it scores those, the default stays one call on the
whole batch, and the KV-cache formula matches a hand computation for Qwen3-8B. The FSDP2 part
(slow, 2 processes over gloo): the weights are all-gathered once per `generate` call, not per decode
step, and the samples equal the unsharded model's at the same seed."""

import json
from pathlib import Path

import pytest
import torch

from reference import losses
from reference.config import Config, load_config
from reference.rollout import (GiB, HFRollout, completion_logits, kv_cache_bytes, model_kv_cache_bytes,
                               rollout_micro_batch)
from theory.errors import InputError

from conftest import tiny_config  # noqa: E402  (tests/ is on sys.path)

ROOT = Path(__file__).resolve().parents[1]


# ---------- the KV-cache formula and the micro-batch rule (pure) ----------

def test_kv_cache_of_qwen3_8b_by_hand():
    # 2 (key, value) x 36 layers x 8 KV heads x 128 dims x 2 B (bf16) = 147456 B = 144 KiB a token
    per_token = kv_cache_bytes(layers=36, kv_heads=8, head_dim=128, tokens=1, dtype_bytes=2)
    assert per_token == 2 * 36 * 8 * 128 * 2 == 144 * 1024
    # one sequence of the paper config's 1024 prompt + 8192 new tokens: 9216 x 144 KiB = 1.265625 GiB
    assert kv_cache_bytes(layers=36, kv_heads=8, head_dim=128, tokens=9216, dtype_bytes=2) == 1.265625 * GiB
    from transformers import Qwen3Config
    c = Qwen3Config(hidden_size=4096, num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8, head_dim=128)
    assert model_kv_cache_bytes(c, 9216, 2) == 1.265625 * GiB


def test_the_648_gib_figure_is_one_call_on_a_ranks_teacher_grpo_batch():
    """Issue 24's figure: the paper config's teacher GRPO batch (512 prompts x 8 samples over 8 GPUs =
    512 sequences per GPU) decoded in one call holds 512 x 1.265625 GiB = 648 GiB of KV cache."""
    cfg = load_config(ROOT / "configs" / "paper-qwen3-math.toml")
    t = cfg.teacher
    seqs_per_gpu = cfg.grpo.prompts_per_step * cfg.grpo.group_size // 8
    tokens = cfg.world.max_prompt_tokens + cfg.grpo.max_new_tokens
    assert (seqs_per_gpu, tokens, t.layers, t.kv_heads, t.head_dim) == (512, 9216, 36, 8, 128)
    one_call = seqs_per_gpu * kv_cache_bytes(layers=t.layers, kv_heads=t.kv_heads, head_dim=t.head_dim, tokens=tokens,
                                             dtype_bytes=2)
    assert one_call / GiB == 648.0


def test_rollout_micro_batch_rule():
    seq = 10 * 2**20  # 10 MiB a sequence
    assert rollout_micro_batch(12) == 12  # nothing set: the whole batch in one call
    assert rollout_micro_batch(12, micro_batch=5) == 5
    assert rollout_micro_batch(3, micro_batch=5) == 3  # never more than the rows
    assert rollout_micro_batch(12, kv_cache_gib=35 / 1024, seq_bytes=seq) == 3  # 35 MiB hold 3 sequences
    assert rollout_micro_batch(2, kv_cache_gib=1.0, seq_bytes=seq) == 2
    assert rollout_micro_batch(12, micro_batch=4, kv_cache_gib=1.0, seq_bytes=seq) == 4  # explicit wins


def test_dry_run_reports_each_stages_rollout_micro_batch_and_its_kv_cache():
    """The paper config (kv_cache_gib = 32) on 8 GPUs: 25 teacher sequences a call (31.64 GiB) where one
    call on a GPU's 512 would hold 648 GiB; stages with fewer sequences per GPU decode them all at once."""
    from reference.dryrun import dry_run, format_dry_run
    d = dry_run(load_config(ROOT / "configs" / "paper-qwen3-math.toml"))
    got = {s["name"]: (s["rollout"]["8"]["micro_batch"], s["rollout"]["8"]["kv_cache_gib"]) for s in d["stages"]}
    assert got == {"teacher_grpo": (25, 31.64), "fkl_warmup": (8, 10.12), "opd": (8, 7.88),
                   "student_grpo": (32, 31.5), "eval": (32, 31.5)}
    assert {s["name"]: s["rollout"]["1"]["micro_batch"] for s in d["stages"]}["fkl_warmup"] == 25  # 64 on one GPU
    assert "roll mb@8" in format_dry_run(d)
    with pytest.raises(InputError, match="engine.kv_cache_gib"):  # below one 8B sequence: refused before any GPU
        dry_run(load_config(ROOT / "configs" / "paper-qwen3-math.toml").override({"engine.kv_cache_gib": 1.0}))


@pytest.mark.parametrize("kw,key", [(dict(micro_batch=-1), "engine.rollout_micro_batch"),
                                    (dict(kv_cache_gib=-0.5), "engine.kv_cache_gib"),
                                    (dict(kv_cache_gib=0.001, seq_bytes=2 * 2**20), "engine.kv_cache_gib")])
def test_bad_micro_batch_or_budget_is_one_line_naming_the_key(kw, key):
    with pytest.raises(InputError) as e:
        rollout_micro_batch(8, **kw)
    assert key in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("field,value", [("rollout_micro_batch", -2), ("kv_cache_gib", -1.0)])
def test_config_refuses_negative_rollout_sizes(field, value):
    with pytest.raises(InputError, match=f"engine.{field} must be >= 0"):
        Config().override({f"engine.{field}": value})


def test_new_engine_fields_are_hash_neutral_at_their_defaults():
    from reference.config import _digest, _hashed
    base = load_config("toy_short")
    d = base.to_dict()
    del d["engine"]["rollout_micro_batch"], d["engine"]["kv_cache_gib"]  # a config written before the fields
    assert _digest(_hashed(d)) == base.hash()
    assert base.override({"engine.rollout_micro_batch": 4}).hash() != base.hash()  # chunked draws: another key


# ---------- chunked sampling on the toy models ----------

@pytest.fixture(scope="module")
def toy():
    from reference.assemble import build_models, build_world
    torch.set_num_threads(1)
    cfg = tiny_config()
    m = build_models(cfg, need_teacher=True)  # the toy teacher writes steps: completions end at varied lengths
    return m.teacher, m.tokenizer, [p.prompt for p in build_world(cfg, m.tokenizer).labeled[:6]]


class _Widest:
    """Records the most rows the decoder is run on (a forward pre-hook) or a sampler call is given."""

    def __init__(self):
        self.rows = 0

    def hook(self, module, args, kwargs):
        x = kwargs.get("input_ids") if kwargs.get("input_ids") is not None else kwargs.get("inputs_embeds")
        self.rows = max(self.rows, x.shape[0])

    def wrap(self, fn):
        def recorded(model, ids_BP, *a, **kw):
            self.rows = max(self.rows, ids_BP.shape[0])
            return fn(model, ids_BP, *a, **kw)
        return recorded


def _padded(rows: list[torch.Tensor], pad: int) -> torch.Tensor:
    width = max(r.shape[1] for r in rows)
    return torch.cat([torch.nn.functional.pad(r, (0, width - r.shape[1]), value=pad) for r in rows])


@pytest.mark.parametrize("lean", [False, True])
def test_chunked_sampling_is_consecutive_calls_and_respects_the_bound(toy, monkeypatch, lean):
    """12 rows (6 prompts x 2) in chunks of 4: the batch equals three calls on 2 prompts each at the same
    torch stream, padded to the widest chunk; no call decodes more than 4 rows. Each call samples each
    row from the model independently, so chunking leaves the distribution as it is."""
    import reference.rollout as rollout
    model, tok, prompts = toy
    widest = _Widest()
    handle = model.model.register_forward_pre_hook(widest.hook, with_kwargs=True)
    monkeypatch.setattr(rollout, "lean_decode", widest.wrap(rollout.lean_decode))
    kw = dict(n=2, temperature=1.0, top_k=8, max_new_tokens=24)
    try:
        torch.manual_seed(3)
        chunked = HFRollout(tok, micro_batch=4, lean=lean).generate(model, prompts, **kw)
    finally:
        handle.remove()
    assert widest.rows == 4
    torch.manual_seed(3)
    calls = [HFRollout(tok, lean=lean).generate(model, prompts[i:i + 2], **kw) for i in range(0, 6, 2)]
    assert len({c.completion_BT.shape[1] for c in calls}) > 1  # chunks of different widths were merged
    assert torch.equal(chunked.completion_BT, _padded([c.completion_BT for c in calls], tok.pad_token_id))
    assert torch.equal(chunked.mask_BT, _padded([c.mask_BT for c in calls], 0))
    assert chunked.texts == sum((c.texts for c in calls), ())
    assert chunked.score_buckets == lean


def test_chunked_batch_is_scored_as_its_calls_are(toy):
    """The training forward on the merged batch (prompts re-padded to the batch's width, completions to
    the widest chunk) gives each counted token the log-prob it gets in its own call's batch."""
    model, tok, prompts = toy
    kw = dict(n=2, temperature=1.0, max_new_tokens=24)
    torch.manual_seed(4)
    chunked = HFRollout(tok, micro_batch=4).generate(model, prompts, **kw)
    torch.manual_seed(4)
    calls = [HFRollout(tok).generate(model, prompts[i:i + 2], **kw) for i in range(0, 6, 2)]
    with torch.no_grad():
        lp = losses.token_logp_BT(completion_logits(model, chunked, len(tok)), chunked.completion_BT)
        lp_calls = [losses.token_logp_BT(completion_logits(model, c, len(tok)), c.completion_BT) for c in calls]
    merged = _padded(lp_calls, 0.0)
    mask = chunked.mask_BT.bool()
    assert float((lp - merged)[mask].abs().max()) <= 1e-5  # float32: padding changes the attention sums' order


def test_greedy_chunks_equal_the_whole_batch(toy):
    """Greedy decoding has no stream: chunks of 5 (not a multiple of n, so a prompt's samples straddle
    two calls) give the whole-batch call's batch exactly."""
    model, tok, prompts = toy
    kw = dict(n=2, temperature=1.0, max_new_tokens=24, greedy=True)
    whole = HFRollout(tok).generate(model, prompts, **kw)
    chunked = HFRollout(tok, micro_batch=5).generate(model, prompts, **kw)
    for f in ("input_ids_BL", "attention_BL", "completion_BT", "mask_BT"):
        assert torch.equal(getattr(whole, f), getattr(chunked, f)), f
    assert (whole.prompt_len, whole.texts) == (chunked.prompt_len, chunked.texts)


def test_kv_budget_sizes_the_micro_batch(toy):
    model, tok, prompts = toy
    P = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)["input_ids"].shape[1]
    seq = model_kv_cache_bytes(model.config, P + 24, 4)  # float32 toy weights
    widest = _Widest()
    handle = model.model.register_forward_pre_hook(widest.hook, with_kwargs=True)
    try:
        HFRollout(tok, kv_cache_gib=3.5 * seq / GiB).generate(model, prompts, n=2, temperature=1.0, max_new_tokens=24)
    finally:
        handle.remove()
    assert widest.rows == 3
    with pytest.raises(InputError, match="engine.kv_cache_gib"):
        HFRollout(tok, kv_cache_gib=0.5 * seq / GiB).generate(model, prompts, n=2, temperature=1.0, max_new_tokens=24)


def test_kv_budget_counts_the_compute_dtype_of_a_mixed_precision_model(toy):
    """A model trained under mixed precision holds fp32 master weights and computes (and caches K/V) in
    bf16: the budget is sized at 2 bytes an entry, as the dry run sizes it, not at the master's 4."""
    model, tok, _ = toy
    ro = HFRollout(tok, kv_cache_gib=7 * model_kv_cache_bytes(model.config, 40, 2) / GiB)
    assert ro.rows_per_call(model, 64, 40) == 3  # float32 weights: 3 sequences of 4-byte K/V fit
    model._autocast_dtype = torch.bfloat16  # what reference.stage_plan.to_master sets
    try:
        assert ro.rows_per_call(model, 64, 40) == 7
    finally:
        del model._autocast_dtype


def test_default_is_one_generate_call_on_the_whole_batch(toy):
    """engine.rollout_micro_batch = 0 and kv_cache_gib = 0 (every toy config): the samples of one
    transformers `generate` call on the whole batch, as before micro-batching existed."""
    model, tok, prompts = toy
    torch.manual_seed(6)
    b = HFRollout(tok).generate(model, prompts, n=2, temperature=1.0, max_new_tokens=24)
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    ids, att = enc["input_ids"].repeat_interleave(2, 0), enc["attention_mask"].repeat_interleave(2, 0)
    torch.manual_seed(6)
    out = model.eval().generate(input_ids=ids, attention_mask=att, do_sample=True, temperature=1.0, top_p=1.0,
                                top_k=0, max_new_tokens=24, pad_token_id=tok.pad_token_id,
                                eos_token_id=tok.eos_token_id)
    model.train()
    comp = out[:, ids.shape[1]:]
    assert torch.equal(b.completion_BT, torch.where(b.mask_BT.bool(), comp, torch.full_like(comp, tok.pad_token_id)))


# ---------- FSDP2: one gather per rollout phase (2 processes, gloo) ----------

_FSDP = """
import json, sys
from pathlib import Path
sys.path[:0] = [sys.argv[2], sys.argv[3]]
import torch
import torch.distributed.fsdp._fully_shard._fsdp_param_group as group
from conftest import tiny_config
from reference.assemble import build_models
from reference.engines import exit_rank, fsdp2_shard, make_engine
from reference.rollout import HFRollout

GATHERS = []
ALL_GATHER = group.foreach_all_gather


def counted(*a, **kw):
    GATHERS.append(1)
    return ALL_GATHER(*a, **kw)


group.foreach_all_gather = counted
torch.set_num_threads(1)
engine = make_engine(cpu=True)
cfg = tiny_config()
m = build_models(cfg, need_teacher=True)
tok, model = m.tokenizer, fsdp2_shard(m.teacher, engine)
prompts = json.loads(sys.argv[4])[engine.rank]  # each rank its own prompts: its own decode length
out = {}
for name, kw in (("greedy", {"greedy": True}), ("sampled", {"top_k": 8})):
    GATHERS.clear()
    torch.manual_seed(5)
    b = HFRollout(tok, micro_batch=3).generate(model, prompts, n=2, temperature=1.0, max_new_tokens=24, **kw)
    out[name] = {"completion": b.completion_BT.tolist(), "gathers": len(GATHERS)}
layers = [mod for mod in model.modules() if type(mod).__name__.endswith("Qwen3DecoderLayer")]
out["units"] = len(layers) + 1
out["sharded_after"] = all(type(p).__name__ == "DTensor" for p in model.parameters())
# every unit reshards after a training forward again (the phase gave back fsdp2_shard's setting)
model.train()
ids = torch.tensor([[5, 6, 7, 8]])
loss = model(input_ids=ids).logits.float().logsumexp(-1).mean()
out["sharded_after_forward"] = all(type(p).__name__ == "DTensor" for p in model.parameters())
loss.backward()
out["grads"] = all(p.grad is not None for p in model.parameters())
# the per-step gathers it replaces: transformers' generate on the sharded model, ranks in lockstep
GATHERS.clear()
enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
with torch.no_grad():
    seq = model.eval().generate(**enc, do_sample=False, max_new_tokens=8, min_new_tokens=8, synced_gpus=True,
                                pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
out["per_step_gathers"] = len(GATHERS)
(Path(sys.argv[1]) / f"rank{engine.rank}.json").write_text(json.dumps(out))
exit_rank()
"""


@pytest.mark.slow
def test_fsdp2_rollout_gathers_once_and_samples_as_one_process(tmp_path):
    from _launch import accelerate_launch, run
    from reference.assemble import build_models
    prompts = [["3+4=", "12-5=", "7+1+2="], ["1+1=", "9-3+4=", "15+2="]]
    script = tmp_path / "fsdp_rollout.py"
    script.write_text(_FSDP)
    run(accelerate_launch("--config_file", str(ROOT / "configs" / "accelerate" / "fsdp2.yaml"), "--num_processes",
                          "2", str(script), str(tmp_path), str(ROOT / "tests"), str(ROOT), json.dumps(prompts)))
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    torch.set_num_threads(1)
    m = build_models(tiny_config(), need_teacher=True)
    for r, out in enumerate(ranks):
        assert out["sharded_after"] and out["sharded_after_forward"] and out["grads"]
        # 6 rows in 2 chunks and up to 24 decode steps: one all-gather per FSDP unit (3 layers + root)
        assert out["greedy"]["gathers"] == out["sampled"]["gathers"] == out["units"] == 4
        assert out["per_step_gathers"] == 8 * out["units"]  # before: every unit at each of 8 forwards
        for name, kw in (("greedy", {"greedy": True}), ("sampled", {"top_k": 8})):
            torch.manual_seed(5)
            one = HFRollout(m.tokenizer, micro_batch=3).generate(m.teacher, prompts[r], n=2, temperature=1.0,
                                                                 max_new_tokens=24, **kw)
            assert one.completion_BT.tolist() == out[name]["completion"], (r, name)
    # the ranks decoded different numbers of steps (17 and 18 sampled columns) without meeting at each one:
    # a collective left in the gathered forwards would have hung or crossed the next phase's gathers
    assert len(ranks[0]["sampled"]["completion"][0]) != len(ranks[1]["sampled"]["completion"][0])
