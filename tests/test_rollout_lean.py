"""The lean sampler (`HFRollout(tok, lean=True)`): the same log-probs and greedy outputs as transformers
on tiny Qwen3s, HF's sampling warpers bit for bit, HF's RolloutBatch layout, a fallback to `generate`
where it does not apply, and length-bucketed scoring that trains on the same numbers."""

import dataclasses

import pytest
import torch

from reference import checkpoint as ckpt
from reference import losses
from reference.rollout import (HFRollout, RolloutBatch, completion_logits, completion_mask, lean_completion_logits,
                               lean_decodable, length_buckets, sample_next)
from reference.tokenizer import toy_tokenizer

from conftest import tiny_config  # noqa: E402  (tests/ is on sys.path)


@pytest.fixture(scope="module")
def world_models():
    from reference.assemble import build_models, build_world
    torch.set_num_threads(1)
    cfg = tiny_config()
    m = build_models(cfg, need_teacher=True)  # the toy assets: trained, so completions end at varied lengths
    return m, build_world(cfg, m.tokenizer)


def _random_init(role: str = "student"):
    tok = toy_tokenizer()
    mcfg = getattr(tiny_config(), role)
    return ckpt.tiny_qwen3(mcfg, len(tok), pad_id=tok.pad_token_id, eos_id=tok.eos_token_id), tok


def _hf_sampled(model, tok, prompts, n, max_new_tokens, seed=0):
    """HF generate's own sample and the log-probs its sampler used (output_scores at T = 1)."""
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    ids, att = enc["input_ids"].repeat_interleave(n, 0), enc["attention_mask"].repeat_interleave(n, 0)
    torch.manual_seed(seed)
    out = model.eval().generate(input_ids=ids, attention_mask=att, do_sample=True, temperature=1.0, top_p=1.0,
                                top_k=0, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id,
                                eos_token_id=tok.eos_token_id, return_dict_in_generate=True, output_scores=True)
    P = ids.shape[1]
    comp = out.sequences[:, P:]
    mask = completion_mask(comp, tok.eos_token_id)
    comp = torch.where(mask.bool(), comp, torch.full_like(comp, tok.pad_token_id))
    ro = RolloutBatch(torch.cat([ids, comp], 1), torch.cat([att, mask.long()], 1), P, comp, mask, (), n)
    sampler_lp_BT = torch.gather(torch.stack([s.float().log_softmax(-1) for s in out.scores], 1), -1,
                                 comp[..., None])[..., 0]
    return ro, sampler_lp_BT


def _max_gap(a_BT, b_BT, mask_BT):
    return float((a_BT - b_BT)[mask_BT.bool()].abs().max())


U32 = 2.0 ** -24  # float32 unit roundoff


def _inner_products(model, seq_len: int) -> float:
    """Sum of sqrt(n) over the inner products one token's logit passes through in a Qwen3 forward: per
    layer the q/k/v/o projections (length hidden, o: heads x head_dim), the attention scores (head_dim)
    and mixing (seq_len), the MLP's gate/up (hidden) and down (intermediate); then the LM head (hidden)."""
    c = model.config
    per_layer = (3 * c.hidden_size ** 0.5 + (c.num_attention_heads * c.head_dim) ** 0.5 + c.head_dim ** 0.5
                 + seq_len ** 0.5 + 2 * c.hidden_size ** 0.5 + c.intermediate_size ** 0.5)
    return c.num_hidden_layers * per_layer + c.hidden_size ** 0.5


def _logp_tolerance(model, logits_BTV, seq_len: int) -> float:
    """How far two float32 computations of the same log-probs may differ from rounding alone (derived,
    not measured): Higham & Mary's probabilistic bound, lambda * sqrt(n) * u per length-n inner product
    (lambda = 1, SIAM J. Sci. Comput. 41(5), 2019), added over every inner product a logit passes through
    (first order), scaled by the largest logit; log_softmax adds 2u|z|; each of the two computations may
    be off by that much, hence the factor 2. A wrong mask, position or cache is off by >= 1e-2 in these
    tests, far above it."""
    zmax = float(logits_BTV.detach().abs().max())
    return 2 * zmax * U32 * (_inner_products(model, seq_len) + 2)


# ---------- the same log-probs as the HF model ----------

@pytest.mark.parametrize("role", ["student", "teacher"])
def test_lean_logprobs_match_hf_on_a_tiny_qwen3(role):
    model, tok = _random_init(role)
    prompts = ["12+3-4=", "7+7=", "1-20+33+2="]
    ro, sampler_lp = _hf_sampled(model, tok, prompts, n=3, max_new_tokens=16)
    with torch.no_grad():
        logits = completion_logits(model, ro, len(tok))
        hf_lp = losses.token_logp_BT(logits, ro.completion_BT)
    lean_lp = losses.token_logp_BT(lean_completion_logits(model, ro, len(tok)), ro.completion_BT)
    tol = _logp_tolerance(model, logits, ro.input_ids_BL.shape[1])
    assert ro.mask_BT.sum() > 30 and tol < 1e-3
    assert _max_gap(lean_lp, hf_lp, ro.mask_BT) <= tol  # HF's training forward
    assert _max_gap(lean_lp, sampler_lp, ro.mask_BT) <= tol  # HF generate's own cached decode


def test_lean_logprobs_are_hf_maths_in_float64(world_models):
    """On the trained toy models float32 rounding alone moves log-probs by ~1e-5 (HF generate against HF's
    own forward too); in float64 the lean decode and HF's forward agree to 1e-10: the same maths."""
    m, world = world_models
    model = ckpt.tiny_qwen3(tiny_config().student, len(m.tokenizer), pad_id=m.tokenizer.pad_token_id,
                            eos_id=m.tokenizer.eos_token_id)
    model.load_state_dict(m.student.state_dict())
    model = model.double()
    ro, _ = _hf_sampled(model, m.tokenizer, [p.prompt for p in world.labeled[:4]], n=4, max_new_tokens=24)

    def logp(logits_BTV):
        assert logits_BTV.dtype == torch.float64
        return logits_BTV.log_softmax(-1).gather(-1, ro.completion_BT[..., None])[..., 0]
    with torch.no_grad():
        hf_lp = logp(completion_logits(model, ro, len(m.tokenizer)))
    assert _max_gap(logp(lean_completion_logits(model, ro, len(m.tokenizer))), hf_lp, ro.mask_BT) <= 1e-10


# ---------- sampling: HF's semantics ----------

@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.7, 20, 0.8), (1.3, 5, 1.0), (0.5, 0, 0.3)])
def test_sample_next_is_hf_warpers_bit_for_bit(temperature, top_k, top_p):
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper
    scores = torch.randn(64, 21, generator=torch.Generator().manual_seed(1)) * 3
    procs = LogitsProcessorList(([TemperatureLogitsWarper(temperature)] if temperature != 1.0 else [])
                                + ([TopKLogitsWarper(top_k)] if top_k else [])
                                + ([TopPLogitsWarper(top_p)] if top_p < 1.0 else []))
    torch.manual_seed(5)
    hf = torch.multinomial(procs(None, scores.clone()).softmax(-1), 1).squeeze(1)
    torch.manual_seed(5)
    ours = sample_next(scores, temperature=temperature, top_p=top_p, top_k=top_k, greedy=False)
    assert torch.equal(hf, ours)
    assert torch.equal(sample_next(scores, temperature=temperature, top_p=top_p, top_k=top_k, greedy=True),
                       scores.argmax(-1))


def test_lean_greedy_batch_equals_hf_greedy_batch(world_models):
    m, world = world_models
    prompts = [p.prompt for p in world.labeled[:12]]
    for model in (m.student, m.teacher):
        a = HFRollout(m.tokenizer).generate(model, prompts, n=2, temperature=1.0, max_new_tokens=40, greedy=True)
        b = HFRollout(m.tokenizer, lean=True).generate(model, prompts, n=2, temperature=1.0, max_new_tokens=40,
                                                        greedy=True)
        lengths = a.lengths_B
        # finished rows leave the lean batch once half of it is done: this batch exercises that
        assert int((lengths < lengths.max()).sum()) * 2 >= lengths.shape[0]
        for f in ("input_ids_BL", "attention_BL", "completion_BT", "mask_BT"):
            assert torch.equal(getattr(a, f), getattr(b, f)), f
        assert (a.prompt_len, a.texts, a.n) == (b.prompt_len, b.texts, b.n)
        assert b.score_buckets and not a.score_buckets


def test_lean_sampled_batch_keeps_the_rollout_layout(world_models):
    m, world = world_models
    tok = m.tokenizer
    prompts = [p.prompt for p in world.labeled[:8]]
    torch.manual_seed(0)
    b = HFRollout(tok, lean=True).generate(m.student, prompts, n=4, temperature=1.0, top_k=20, top_p=0.9,
                                           max_new_tokens=12)
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    P = enc["input_ids"].shape[1]
    assert b.prompt_len == P and b.n == 4 and len(b.texts) == 32
    assert torch.equal(b.input_ids_BL[:, :P], enc["input_ids"].repeat_interleave(4, 0))
    assert torch.equal(b.input_ids_BL[:, P:], b.completion_BT)
    assert torch.equal(b.attention_BL[:, P:], b.mask_BT.long())
    assert torch.equal(b.mask_BT, completion_mask(b.completion_BT, tok.eos_token_id))
    L, T = b.lengths_B.long(), b.completion_BT.shape[1]
    assert T == int(L.max()) <= 12  # stops when every row has finished, as generate does
    ended = b.completion_BT.gather(1, (L - 1)[:, None])[:, 0] == tok.eos_token_id
    assert torch.all(ended | (L == 12))  # each row ends with EOS or is cut at max_new_tokens
    pad = ~b.mask_BT.bool()
    assert torch.all(b.completion_BT[pad] == tok.pad_token_id)
    assert list(b.texts) == tok.batch_decode(b.completion_BT, skip_special_tokens=True)


def test_lean_samples_hf_distribution(world_models):
    """Not HF's random stream, the same distribution: mean lengths of 4 x 64 samples agree."""
    m, world = world_models
    prompts = [p.prompt for p in world.unlabeled[:64]]
    means = {}
    for lean in (False, True):
        torch.manual_seed(1)
        lens = torch.cat([HFRollout(m.tokenizer, lean=lean).generate(m.student, prompts, n=4, temperature=1.0,
                                                                     max_new_tokens=32).lengths_B for _ in range(2)])
        means[lean] = (float(lens.float().mean()), float(lens.float().std()) / len(lens) ** 0.5)
    (a, sa), (b, sb) = means[False], means[True]
    assert abs(a - b) < 4 * (sa ** 2 + sb ** 2) ** 0.5, means


def test_padded_vocabulary_is_never_sampled(tmp_path):
    from reference.models import build_tiny_qwen3_dir, load_causal_lm, load_tokenizer
    d = build_tiny_qwen3_dir(tmp_path / "m", pad_vocab_to=160, seed=3)
    model, tok = load_causal_lm(d), load_tokenizer(d)
    assert model.config.vocab_size > len(tok) and lean_decodable(model)
    kw = dict(n=2, temperature=1.0, max_new_tokens=6)
    a = HFRollout(tok).generate(model, ["12+3=", "7*7="], greedy=True, **kw)
    b = HFRollout(tok, lean=True).generate(model, ["12+3=", "7*7="], greedy=True, **kw)
    assert torch.equal(a.completion_BT, b.completion_BT)
    torch.manual_seed(0)
    s = HFRollout(tok, lean=True).generate(model, ["12+3=", "7*7="], **kw)
    assert int(s.completion_BT.max()) < len(tok)


# ---------- where it does not apply: HF generate, unchanged ----------

def test_lean_falls_back_to_generate_for_sharded_models(world_models, monkeypatch):
    m, world = world_models
    import reference.engines
    monkeypatch.setattr(reference.engines, "is_sharded", lambda model: True)  # as an FSDP2-sharded model
    assert not lean_decodable(m.student)
    prompts = [p.prompt for p in world.labeled[:4]]
    torch.manual_seed(0)
    a = HFRollout(m.tokenizer).generate(m.student, prompts, n=2, temperature=1.0, max_new_tokens=16)
    torch.manual_seed(0)
    b = HFRollout(m.tokenizer, lean=True).generate(m.student, prompts, n=2, temperature=1.0, max_new_tokens=16)
    assert torch.equal(a.completion_BT, b.completion_BT) and not b.score_buckets


def test_only_plain_qwen3_is_lean():
    model, _ = _random_init()
    assert lean_decodable(model)
    model.config.attention_bias = True  # maths the lean step does not do
    assert not lean_decodable(model)
    assert not lean_decodable(torch.nn.Linear(2, 2))


# ---------- length-bucketed scoring ----------

def test_length_buckets_partition_rows():
    lengths = torch.tensor([3, 80, 5, 3, 64, 7, 3, 3, 12, 5])
    buckets = length_buckets(lengths, overhead=4)
    rows = torch.cat([r for r, _ in buckets])
    assert sorted(rows.tolist()) == list(range(10))
    for r, width in buckets:
        assert int(lengths[r].max()) == width
    assert len(length_buckets(lengths, overhead=10**6)) == 1  # overhead dominates: one forward
    assert len(length_buckets(lengths, overhead=0)) == len(set(lengths.tolist()))


def test_bucketed_scoring_trains_on_the_same_numbers(world_models, monkeypatch):
    import reference.rollout
    monkeypatch.setattr(reference.rollout, "BUCKET_OVERHEAD", 0)  # one bucket per length: the most cutting
    m, world = world_models
    torch.manual_seed(0)
    ro = HFRollout(m.tokenizer, lean=True).generate(m.student, [p.prompt for p in world.labeled[:8]], n=4,
                                                    temperature=1.0, max_new_tokens=32)
    assert ro.score_buckets and len(length_buckets(ro.mask_BT.sum(-1), 0)) > 1
    grads, logps = [], []
    for buckets in (False, True):
        m.student.zero_grad(set_to_none=True)
        batch = dataclasses.replace(ro, score_buckets=buckets)
        logits = completion_logits(m.student, batch, m.ctx.vocab_size)
        assert logits.shape == (*ro.completion_BT.shape, m.ctx.vocab_size)
        lp = losses.token_logp_BT(logits, ro.completion_BT)
        losses.masked_mean(lp, ro.mask_BT).backward()
        logps.append(lp.detach())
        grads.append(torch.cat([p.grad.flatten() for p in m.student.parameters()]))
    m.student.zero_grad(set_to_none=True)
    assert _max_gap(logps[0], logps[1], ro.mask_BT) <= _logp_tolerance(m.student, logits, ro.input_ids_BL.shape[1])
    # float32 sums in another order: the gradient agrees to rounding, not bit for bit; relative bound as for
    # the log-probs without the logit scale, forward and backward (twice the inner products), two computations
    grad_tol = 2 * U32 * 2 * (_inner_products(m.student, ro.input_ids_BL.shape[1]) + 2)
    assert float((grads[1] - grads[0]).norm() / grads[0].norm()) <= grad_tol


def test_a_grpo_step_runs_on_the_lean_sampler(world_models):
    import copy

    from reference import stages
    m, world = world_models
    cfg = tiny_config()
    ctx = dataclasses.replace(m.ctx, rollout=HFRollout(m.tokenizer, lean=True))
    torch.manual_seed(0)
    res = stages.grpo(copy.deepcopy(m.student), world.labeled, cfg.grpo, ctx, role="student", seed=0, limit=1)
    assert res.steps == 1 and res.tokens > 0
    torch.manual_seed(0)
    res = stages.opd(copy.deepcopy(m.student), m.teacher, world.unlabeled, cfg.opd, ctx, seed=0, limit=1)
    assert res.steps == 1 and torch.isfinite(torch.tensor(res.log[0]["kl_to_teacher"]))
