"""Rollouts behind one interface: prompts in, sampled completions (token tensors + text) out.

`HFRollout` uses transformers' `generate` (static KV cache optional, for GPUs); `HFRollout(tok, lean=True)`
decodes a plain Qwen3ForCausalLM with `lean_decode` instead (below) and scores its batches in length
buckets (`completion_logits`): same distribution, not the same random stream. A vLLM backend
(reference.rollout_vllm, SCALE) implements the same `Rollout` protocol. Every stage scores
completions with `completion_logits` below, so log-probs are always recomputed by the training model
(never trusted from the sampler), which keeps the two backends interchangeable.

Layout: each prompt is repeated n times contiguously (row p*n + g is sample g of prompt p); prompts
are left-padded to a common length L_p, completions right-padded to T with EOS kept in the mask.

Memory: a batch decodes in micro-batches of rows (`HFRollout(micro_batch=..., kv_cache_gib=...)`,
`engine.rollout_micro_batch` / `engine.kv_cache_gib`), one sampler call each, so the KV cache held at
once is `kv_cache_bytes` x the micro-batch rather than x the whole batch (the 8B teacher's 512
sequences of 1024 + 8192 tokens per GPU would need 648 GiB). A model sharded by FSDP2 is all-gathered
once per `generate` call (`reference.engines.gathered`), not once per layer per decoded token.
"""

from __future__ import annotations

from dataclasses import dataclass
import hashlib
from typing import Protocol

import torch

from theory.errors import InputError

GiB = 1024**3


@dataclass(frozen=True)
class RolloutBatch:
    input_ids_BL: torch.Tensor  # prompt (left-padded) + completion
    attention_BL: torch.Tensor
    prompt_len: int  # L_p: completion token t sits at column prompt_len + t
    completion_BT: torch.Tensor
    mask_BT: torch.Tensor  # 1 on completion tokens up to and including the first EOS
    texts: tuple[str, ...]  # decoded completions, special tokens dropped
    n: int  # samples per prompt
    # score rows in length buckets, each cut to its longest counted completion (`completion_logits`);
    # set by the lean sampler only, so every committed number keeps its one whole-batch forward
    score_buckets: bool = False

    @property
    def tokens(self) -> int:
        """Tokens this batch occupies (prompt + counted completion), for compute accounting."""
        return int(self.attention_BL[:, : self.prompt_len].sum() + self.mask_BT.sum())

    @property
    def lengths_B(self) -> torch.Tensor:
        return self.mask_BT.sum(-1)

    def truncated_B(self, eos_id: int) -> torch.Tensor:
        """True where the completion never emitted EOS (cut off at max_new_tokens)."""
        return ~(self.completion_BT == eos_id).any(-1)


class Rollout(Protocol):
    def generate(self, model, prompts: list[str], *, n: int, temperature: float, top_p: float = 1.0,
                 top_k: int = 0, max_new_tokens: int, greedy: bool = False) -> RolloutBatch: ...


def kv_cache_bytes(*, layers: int, kv_heads: int, head_dim: int, tokens: int, dtype_bytes: int) -> int:
    """KV cache of one sequence of `tokens` positions: a key and a value vector (2) of kv_heads x
    head_dim entries per layer per position. Qwen3-8B (36 layers, 8 KV heads, head_dim 128, bf16):
    144 KiB a token, 1.27 GiB for 1024 + 8192 tokens."""
    return 2 * layers * kv_heads * head_dim * tokens * dtype_bytes


def model_kv_cache_bytes(config, tokens: int, dtype_bytes: int) -> int:
    """`kv_cache_bytes` for a transformers model config (Qwen3, Llama: head_dim or hidden / heads)."""
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    return kv_cache_bytes(layers=config.num_hidden_layers, kv_heads=kv_heads, head_dim=head_dim, tokens=tokens,
                          dtype_bytes=dtype_bytes)


def rollout_micro_batch(rows: int, *, micro_batch: int = 0, kv_cache_gib: float = 0.0, seq_bytes: int = 0) -> int:
    """Rows per sampler call: `micro_batch` when > 0, else as many sequences of `seq_bytes` KV cache as
    `kv_cache_gib` holds when that is > 0, else all `rows` (one call; the toy configs); never more than
    `rows`, never fewer than 1. A budget below one sequence is refused (it would hold no row)."""
    if micro_batch < 0 or kv_cache_gib < 0:
        key, v = (("engine.rollout_micro_batch", micro_batch) if micro_batch < 0
                  else ("engine.kv_cache_gib", kv_cache_gib))
        raise InputError(f"{key} must be >= 0 (0: not set), got {v!r}")
    if micro_batch > 0:
        return max(1, min(micro_batch, rows))
    if kv_cache_gib > 0:
        fit = int(kv_cache_gib * GiB // seq_bytes)
        if fit < 1:
            raise InputError(f"engine.kv_cache_gib = {kv_cache_gib:g} holds no sequence: one needs "
                             f"{seq_bytes / GiB:.3g} GiB of KV cache; raise it or set engine.rollout_micro_batch")
        return max(1, min(fit, rows))
    return max(1, rows)


def completion_mask(completion_BT: torch.Tensor, eos_id: int) -> torch.Tensor:
    is_eos = (completion_BT == eos_id).long()
    # positions strictly after the first EOS are padding: cumsum of EOS seen *before* this position
    seen_before = torch.cumsum(is_eos, dim=-1) - is_eos
    return (seen_before == 0).float()


class HFRollout:
    """Sampling through transformers' `generate`, or with `lean=True` through `lean_decode` wherever the
    model allows it (`lean_decodable`: a plain, unsharded Qwen3ForCausalLM), HF `generate` otherwise.

    Lean draws from the same distribution (same temperature / top-k / top-p order, same EOS and padding
    layout) but not the same random stream: it stops computing finished rows, so it consumes torch's RNG
    differently. Its batches are also scored in length buckets. Hence opt-in: committed runs keep HF's
    samples.

    Micro-batches: the rows decode in consecutive chunks of `rollout_micro_batch(...)` rows (`micro_batch`,
    else what `kv_cache_gib` holds at the model's KV bytes per sequence of this batch's prompt width +
    max_new_tokens), each chunk one sampler call on torch's one RNG stream, its common left padding cut
    off; completions are right-padded to the widest chunk. A chunked batch is exactly the batches of
    consecutive calls on the chunks' rows (tests/test_rollout_memory.py), which is the same distribution as
    one call but not the same draws. The default (0, 0) is one chunk: one call on the whole batch, the
    code path and samples of before."""

    def __init__(self, tokenizer, *, static_cache: bool = False, micro_batch: int = 0, kv_cache_gib: float = 0.0,
                 lean: bool = False):
        rollout_micro_batch(1, micro_batch=micro_batch, kv_cache_gib=kv_cache_gib, seq_bytes=1)  # signs only
        self.tok = tokenizer
        self.static_cache = static_cache
        self.micro_batch = micro_batch
        self.kv_cache_gib = kv_cache_gib
        self.lean = lean

    def rows_per_call(self, model, rows: int, tokens: int) -> int:
        """Rows each sampler call decodes, for sequences of `tokens` positions (prompt + max new)."""
        seq_bytes = 0
        if self.micro_batch == 0 and self.kv_cache_gib > 0:
            # the cache holds what the forward computes in: the autocast dtype of a mixed-precision model
            # (reference.stage_plan: fp32 master, bf16 compute), else the weights' dtype
            dtype = getattr(model, "_autocast_dtype", None) or next(model.parameters()).dtype
            seq_bytes = model_kv_cache_bytes(model.config, tokens, torch.empty(0, dtype=dtype).element_size())
        return rollout_micro_batch(rows, micro_batch=self.micro_batch, kv_cache_gib=self.kv_cache_gib,
                                   seq_bytes=seq_bytes)

    @torch.no_grad()
    def generate(self, model, prompts, *, n, temperature, top_p=1.0, top_k=0, max_new_tokens, greedy=False):
        from reference.engines import gathered
        tok = self.tok
        enc = tok(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False)
        device = next(model.parameters()).device
        ids = enc["input_ids"].repeat_interleave(n, dim=0).to(device)
        att = enc["attention_mask"].repeat_interleave(n, dim=0).to(device)
        n_real, n_model = len(tok), int(getattr(model.config, "vocab_size", len(tok)))
        B, P = ids.shape
        with gathered(model):  # FSDP2: one all-gather of the weights for every chunk and decode step below
            lean = self.lean and lean_decodable(model)
            mb = self.rows_per_call(model, B, P + max_new_tokens)
            comps = []
            for start in range(0, B, mb):
                ids_c, att_c = ids[start:start + mb], att[start:start + mb]
                cut = int((att_c.sum(0) > 0).int().argmax())  # left padding every row of the chunk shares
                ids_c, att_c = ids_c[:, cut:], att_c[:, cut:]
                if lean:
                    comps.append(lean_decode(model, ids_c, att_c, max_new_tokens=max_new_tokens,
                                             eos_id=tok.eos_token_id, pad_id=tok.pad_token_id,
                                             vocab=min(n_real, n_model), temperature=temperature, top_p=top_p,
                                             top_k=top_k, greedy=greedy))
                else:
                    comps.append(self._hf_generate(model, ids_c, att_c, n_real, n_model, temperature=temperature,
                                                   top_p=top_p, top_k=top_k, max_new_tokens=max_new_tokens,
                                                   greedy=greedy))
        width = max(c.shape[1] for c in comps)  # a chunk narrower than the widest ended every row with EOS
        comp = torch.cat([torch.nn.functional.pad(c, (0, width - c.shape[1]), value=tok.pad_token_id) for c in comps])
        if comp.shape[1] == 0:  # max_new_tokens reached zero-length edge: keep one pad column
            comp = torch.full((B, 1), tok.pad_token_id, dtype=ids.dtype, device=device)
        mask = completion_mask(comp, tok.eos_token_id)
        comp = torch.where(mask.bool(), comp, torch.full_like(comp, tok.pad_token_id))
        full = torch.cat([ids, comp], dim=1)
        full_att = torch.cat([att, mask.long()], dim=1)
        texts = tuple(tok.batch_decode(comp, skip_special_tokens=True))
        return RolloutBatch(full, full_att, P, comp, mask, texts, n, score_buckets=lean)

    def _hf_generate(self, model, ids, att, n_real, n_model, *, temperature, top_p, top_k, max_new_tokens, greedy):
        """The completion columns of transformers' `generate` (finished rows padded, as it pads them)."""
        tok = self.tok
        kwargs = dict(max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        if greedy:
            kwargs.update(do_sample=False)
        else:
            kwargs.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=top_k)
        if self.static_cache:
            kwargs["cache_implementation"] = "static"
        if n_model > n_real:  # a padded vocabulary (Qwen3: 151936 > 151669): never sample a padding id
            from transformers import LogitsProcessorList
            kwargs["logits_processor"] = LogitsProcessorList([_MaskPaddedVocab(n_real)])
        from reference.engines import is_sharded
        if is_sharded(model):
            # gathered (`engines.gathered`): the forwards are local, so each rank decodes until its own rows end;
            # transformers would otherwise step every rank in lockstep (synced_gpus) for an FSDP-managed model
            kwargs["synced_gpus"] = False
        was_training = model.training
        model.eval()
        out = model.generate(input_ids=ids, attention_mask=att, **kwargs)
        model.train(was_training)
        return out[:, ids.shape[1]:]


class FixedRollout:
    """A deterministic `Rollout`: each prompt's completions are fixed pseudo-random token strings seeded
    by the prompt text, so every rank sees the same data per prompt. Full length, no EOS (what
    scripts/gpu_check.py times); `varied_lengths=True` (scripts/ddp_parity.py) cuts each sample at a pseudo-random
    EOS, so ranks hold different token counts (what the global token mean is for), and makes its text
    the sum of its counted tokens, so `parity_reward` gives varied rewards."""

    def __init__(self, tokenizer, vocab: int, eos_id: int, *, varied_lengths: bool = False):
        self.tok, self.vocab, self.eos_id, self.varied = tokenizer, vocab, eos_id, varied_lengths

    def generate(self, model, prompts, *, n, temperature, top_p=1.0, top_k=0, max_new_tokens, greedy=False):
        enc = self.tok(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False)
        ids = enc["input_ids"].repeat_interleave(n, 0)
        att = enc["attention_mask"].repeat_interleave(n, 0)
        comps, masks = [], []
        for p in prompts:
            g = torch.Generator().manual_seed(int(hashlib.sha1(p.encode()).hexdigest()[:8], 16))
            c = torch.randint(0, self.vocab, (n, max_new_tokens), generator=g)
            c = torch.where(c == self.eos_id, (c + 1) % self.vocab, c)
            length = (torch.randint(1, max_new_tokens + 1, (n, 1), generator=g) if self.varied
                      else torch.full((n, 1), max_new_tokens))
            pos = torch.arange(max_new_tokens).unsqueeze(0)
            if self.varied:
                c = torch.where(pos == length - 1, torch.full_like(c, self.eos_id), c)  # EOS ends the sample
                c = torch.where(pos >= length, torch.full_like(c, self.tok.pad_token_id), c)
            comps.append(c)
            masks.append((pos < length).float())
        comp, mask = torch.cat(comps), torch.cat(masks)
        texts = (tuple(str(int((c * m).sum())) for c, m in zip(comp, mask)) if self.varied
                 else tuple("" for _ in comp))
        device = next(model.parameters()).device
        return RolloutBatch(torch.cat([ids, comp], 1).to(device), torch.cat([att, mask.long()], 1).to(device),
                            ids.shape[1], comp.to(device), mask.to(device), texts, n)


class _MaskPaddedVocab:
    """Logits processor: padded vocabulary columns get -inf (a random-init model would sample them,
    and a sampled id past the real vocabulary breaks every log-prob gather downstream)."""

    def __init__(self, n_real: int):
        self.n_real = n_real

    def __call__(self, input_ids, scores):
        scores[:, self.n_real:] = float("-inf")
        return scores


# --- lean decoding -------------------------------------------------------------------------------
# A toy model (186k parameters) spends most of an HF `generate` step (~5 ms on one core) in per-call
# overhead, and the batch decodes until its longest row ends (60 steps for 11-token answers).
# `lean_decode` runs the same Qwen3 maths as a bare KV-cached loop over the module's weights (q|k|v and
# gate|up fused, one RMSNorm call for q and k together; ~1.5 ms a step), samples with HF's warpers in
# HF's order, and drops finished rows, so the long tail decodes only the rows still writing.


def lean_decodable(model) -> bool:
    """True for a plain Qwen3ForCausalLM that `lean_decode` computes exactly as HF does: default RoPE,
    full attention, SiLU MLP, no biases, not sharded by FSDP2 (DTensor weights, collective forwards),
    not wrapped (peft/DDP wrappers are other classes)."""
    from transformers import Qwen3ForCausalLM
    if type(model) is not Qwen3ForCausalLM:
        return False
    from reference.engines import is_sharded
    c = model.config
    rope = getattr(c, "rope_parameters", None) or {}
    return (not is_sharded(model) and rope.get("rope_type", "default") == "default" and not c.attention_bias
            and c.hidden_act == "silu" and all(t == "full_attention" for t in c.layer_types))


class _Qwen3Weights:
    """One generate call's view of a Qwen3ForCausalLM's weights: q|k|v and gate|up fused into one
    matrix each (copies, remade every call), q_norm|k_norm stacked, and HF's RoPE cos/sin tabulated."""

    def __init__(self, model, max_len: int):
        c, m = model.config, model.model
        self.h, self.kv, self.hd, self.eps = c.num_attention_heads, c.num_key_value_heads, c.head_dim, c.rms_norm_eps
        self.embed = m.embed_tokens.weight
        self.layers = []
        for layer in m.layers:
            a, mlp = layer.self_attn, layer.mlp
            qk_norm = torch.cat([a.q_norm.weight.expand(self.h, self.hd), a.k_norm.weight.expand(self.kv, self.hd)])
            self.layers.append((layer.input_layernorm.weight,
                                torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]), qk_norm,
                                a.o_proj.weight, layer.post_attention_layernorm.weight,
                                torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]), mlp.down_proj.weight))
        self.norm, self.head = m.norm.weight, model.lm_head.weight
        rot = m.rotary_emb  # HF's own cos/sin formula, tabulated once per call
        pos = torch.arange(max_len, device=self.embed.device)
        cos, sin = rot(self.embed, pos[None])
        self.cos, half = cos[0], self.hd // 2
        # rotate_half(x) * sin == flip_halves(x) * (-sin1, sin2): one flip and one multiply
        self.sin_signed = torch.cat([-sin[0, :, :half], sin[0, :, half:]], dim=-1)

    def forward(self, ids_BT, pos_BT, cache, col: int, bias_B1TL) -> torch.Tensor:
        """Last-position hidden state [B, D] after feeding ids_BT at cache columns col..col+T-1.
        `cache` is a list of (k, v) [B, kv, L, hd] per layer; `bias_B1TL` the additive attention mask
        over columns 0..col+T-1 (0 or -inf)."""
        F = torch.nn.functional
        B, T = ids_BT.shape
        h, kv, hd, eps = self.h, self.kv, self.hd, self.eps
        x = F.embedding(ids_BT, self.embed)
        cos, sin = self.cos[pos_BT].unsqueeze(2), self.sin_signed[pos_BT].unsqueeze(2)  # [B, T, 1, hd]
        end = col + T
        for (w_in, w_qkv, w_qk, w_o, w_post, w_gu, w_down), (k_cache, v_cache) in zip(self.layers, cache):
            qkv = F.linear(_rms_norm(x, w_in, eps), w_qkv).view(B, T, h + 2 * kv, hd)
            qk = _rms_norm(qkv[:, :, : h + kv], w_qk, eps)
            qk = torch.addcmul(qk * cos, qk.view(B, T, h + kv, 2, hd // 2).flip(3).view(B, T, h + kv, hd), sin)
            q = qk[:, :, :h].transpose(1, 2)
            k_cache[:, :, col:end] = qk[:, :, h:].transpose(1, 2)
            v_cache[:, :, col:end] = qkv[:, :, h + kv:].transpose(1, 2)
            att = F.scaled_dot_product_attention(q, k_cache[:, :, :end], v_cache[:, :, :end], attn_mask=bias_B1TL,
                                                 scale=hd ** -0.5, enable_gqa=True)
            x = x + F.linear(att.transpose(1, 2).reshape(B, T, h * hd), w_o)
            gate, up = F.linear(_rms_norm(x, w_post, eps), w_gu).chunk(2, dim=-1)
            x = x + F.linear(F.silu(gate) * up, w_down)
        return x[:, -1]

    def logits(self, x_BD, vocab: int) -> torch.Tensor:
        return torch.nn.functional.linear(_rms_norm(x_BD, self.norm, self.eps), self.head[:vocab])


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """HF's Qwen3RMSNorm: statistics in float32, rounded back to the input dtype, then the weight."""
    return weight * torch.nn.functional.rms_norm(x.float(), (x.shape[-1],), None, eps).to(x.dtype)


def sample_next(scores_BV: torch.Tensor, *, temperature: float, top_p: float, top_k: int, greedy: bool) -> torch.Tensor:
    """Next token ids [B] as HF `generate` picks them: argmax when greedy; otherwise temperature, then
    top-k, then top-p (HF's warper order and tie rules, min_tokens_to_keep = 1), softmax, multinomial."""
    if greedy:
        return scores_BV.argmax(-1)
    if temperature != 1.0:
        scores_BV = scores_BV / temperature
    if top_k:
        kth = torch.topk(scores_BV, min(top_k, scores_BV.shape[-1])).values[..., -1:]
        scores_BV = scores_BV.masked_fill(scores_BV < kth, float("-inf"))
    if top_p < 1.0:
        sorted_V, order_V = torch.sort(scores_BV, descending=False)
        remove = sorted_V.softmax(-1).cumsum(-1) <= (1 - top_p)
        remove[..., -1:] = False
        scores_BV = scores_BV.masked_fill(remove.scatter(1, order_V, remove), float("-inf"))
    return torch.multinomial(scores_BV.softmax(-1), 1).squeeze(1)


def _lean_setup(model, ids_BP, att_BP, width: int):
    """Weights, empty KV cache of `width` columns, the additive key mask (prompt padding -inf) and each
    row's first generated position (its count of real prompt tokens)."""
    w = _Qwen3Weights(model, width)  # positions stay below the cache width (left padding only shifts them down)
    B, P = ids_BP.shape
    cache = [(torch.zeros(B, w.kv, width, w.hd, dtype=w.embed.dtype, device=ids_BP.device),
              torch.zeros(B, w.kv, width, w.hd, dtype=w.embed.dtype, device=ids_BP.device))
             for _ in w.layers]
    key_bias_BL = torch.zeros(B, width, dtype=w.embed.dtype, device=ids_BP.device)
    key_bias_BL[:, :P].masked_fill_(att_BP == 0, float("-inf"))
    return w, cache, key_bias_BL, att_BP.sum(-1)


def _prefill(w, cache, ids_BP, att_BP, key_bias_BL):
    """Run the prompt through the cache; hidden state at its last column. A padding query may see
    itself (a row of -inf would make NaN and leak into the cache), real queries never see padding."""
    P = ids_BP.shape[1]
    pos_BP = (torch.cumsum(att_BP, -1) - 1).clamp(min=0)
    causal = torch.ones(P, P, dtype=torch.bool, device=ids_BP.device).tril()
    bias = key_bias_BL[:, None, None, :P].masked_fill(~causal, float("-inf"))
    bias = bias.masked_fill(torch.eye(P, dtype=torch.bool, device=ids_BP.device), 0.0)
    return w.forward(ids_BP, pos_BP, cache, 0, bias)


# compact the decode batch once this share of its rows has finished: a compaction copies the live rows'
# cache (its written columns), a finished row left in costs its share of every later step; 0.25 vs 0.5
# vs 0.1 was within noise (~5%) on the paper-like world's GRPO and FKL batches, 0.25 the lowest
COMPACT_WHEN = 0.25


def _keep_rows(cache_BKLD: torch.Tensor, keep: torch.Tensor, used: int) -> torch.Tensor:
    """Rows `keep` of a KV cache, copying only the `used` columns written so far."""
    out = cache_BKLD.new_empty((keep.shape[0], *cache_BKLD.shape[1:]))
    out[:, :, :used] = cache_BKLD[keep, :, :used]
    return out


@torch.no_grad()
def lean_decode(model, ids_BP, att_BP, *, max_new_tokens: int, eos_id: int, pad_id: int, vocab: int,
                temperature: float, top_p: float = 1.0, top_k: int = 0, greedy: bool = False) -> torch.Tensor:
    """Completion ids [B, S] (S = steps until every row emitted EOS, at most max_new_tokens; after its
    EOS a row holds pad_id), as HF `generate` lays them out. Rows that finished leave the batch: the
    cache is compacted whenever a share COMPACT_WHEN of the rows still in it are done."""
    B, P = ids_BP.shape
    out_BS = torch.full((B, max_new_tokens), pad_id, dtype=ids_BP.dtype, device=ids_BP.device)
    if max_new_tokens == 0:
        return out_BS
    w, cache, key_bias_BL, first_pos_B = _lean_setup(model, ids_BP, att_BP, P + max_new_tokens)
    rows = torch.arange(B, device=ids_BP.device)  # original row of each row in the cache
    x = _prefill(w, cache, ids_BP, att_BP, key_bias_BL)
    live = torch.ones(B, dtype=torch.bool, device=ids_BP.device)  # over the rows in the cache
    steps = 0
    for t in range(max_new_tokens):
        nxt = sample_next(w.logits(x, vocab).float(), temperature=temperature, top_p=top_p, top_k=top_k, greedy=greedy)
        out_BS[rows[live], t] = nxt[live]
        live = live & (nxt != eos_id)
        steps = t + 1
        n_live = int(live.sum())
        if n_live == 0 or t + 1 == max_new_tokens:
            break
        col = P + t
        if live.shape[0] - n_live >= max(1.0, COMPACT_WHEN * live.shape[0]):  # compact: keep the live rows only
            keep = live.nonzero().squeeze(1)
            cache = [(_keep_rows(k, keep, col), _keep_rows(v, keep, col)) for k, v in cache]
            key_bias_BL, first_pos_B, rows, nxt = (key_bias_BL[keep], first_pos_B[keep], rows[keep], nxt[keep])
            live = live[keep]
        x = w.forward(nxt[:, None], (first_pos_B + t)[:, None], cache, col, key_bias_BL[:, None, None, : col + 1])
    return out_BS[:, :steps]


@torch.no_grad()
def lean_completion_logits(model, batch: RolloutBatch, vocab_size: int) -> torch.Tensor:
    """The logits `completion_logits` gives, computed the way `lean_decode` computes them while sampling
    (prefill, then one cached step per completion token): what the agreement test compares."""
    ids, att, P = batch.input_ids_BL, batch.attention_BL, batch.prompt_len
    T = batch.completion_BT.shape[1]
    w, cache, key_bias_BL, first_pos_B = _lean_setup(model, ids[:, :P], att[:, :P], P + T)
    x = _prefill(w, cache, ids[:, :P], att[:, :P], key_bias_BL)
    out = [w.logits(x, vocab_size)]
    for t in range(T - 1):
        col = P + t
        x = w.forward(ids[:, col:col + 1], (first_pos_B + t)[:, None], cache, col, key_bias_BL[:, None, None, : col + 1])
        out.append(w.logits(x, vocab_size))
    return torch.stack(out, dim=1)


def completion_logits(model, batch: RolloutBatch, vocab_size: int) -> torch.Tensor:
    """Logits predicting each completion token, [B, T, V], restricted to the real vocabulary.

    Position ids follow the attention mask so left padding does not shift positions (as in generate).
    With `batch.score_buckets` the rows go through the model in length buckets (`length_buckets`),
    each cut after its longest counted completion; positions past a bucket's width get zero logits
    (masked out of every loss). Causal attention makes the kept logits the same maths as one forward.
    """
    P, T = batch.prompt_len, batch.completion_BT.shape[1]
    if not batch.score_buckets:
        return _forward_logits(model, batch.input_ids_BL, batch.attention_BL, P, T, vocab_size)
    parts, order = [], []
    for rows, width in length_buckets(batch.mask_BT.sum(-1), BUCKET_OVERHEAD):
        logits = _forward_logits(model, batch.input_ids_BL[rows, : P + width - 1], batch.attention_BL[rows, : P + width - 1],
                                 P, width, vocab_size)
        parts.append(torch.nn.functional.pad(logits, (0, 0, 0, T - width)))
        order.append(rows)
    order_B = torch.cat(order)
    inverse = torch.empty_like(order_B)
    inverse[order_B] = torch.arange(order_B.shape[0], device=order_B.device)
    return torch.cat(parts)[inverse]


def _forward_logits(model, ids_BL, att_BL, P: int, T: int, vocab_size: int) -> torch.Tensor:
    pos = (torch.cumsum(att_BL, dim=-1) - 1).clamp(min=0)
    out = model(input_ids=ids_BL, attention_mask=att_BL, position_ids=pos)
    return out.logits[:, P - 1: P - 1 + T, :vocab_size]


# one more forward/backward call costs about as much as this many more (row x column) positions: on
# the paper-like world's student, ~4 ms a call against ~33 us a position (1 thread, measured
# 2026-12-07); it keeps the buckets from splitting finer than they pay for
BUCKET_OVERHEAD = 128


def length_buckets(lengths_B: torch.Tensor, overhead: int) -> list[tuple[torch.Tensor, int]]:
    """Rows grouped by completion length, as (row ids, width = longest length in the group): the
    grouping of rows sorted by length that minimises sum(rows x width) + overhead per group (exact,
    by dynamic programming over the distinct lengths)."""
    import numpy as np
    lens = lengths_B.long().cpu().numpy()
    widths, counts = np.unique(lens, return_counts=True)
    cum = np.concatenate([[0], np.cumsum(counts)])  # rows with length <= widths[j-1]
    n = len(widths)
    best = np.zeros(n + 1)
    cut = np.zeros(n + 1, dtype=int)
    for j in range(1, n + 1):  # best[j]: the first j distinct lengths grouped; the last group starts at i
        cost = best[:j] + (cum[j] - cum[:j]) * widths[j - 1] + overhead
        cut[j] = int(np.argmin(cost))
        best[j] = cost[cut[j]]
    bounds, j = [], n
    while j > 0:
        bounds.append((cut[j], j))
        j = cut[j]
    order = torch.as_tensor(np.argsort(lens, kind="stable"), device=lengths_B.device)
    return [(order[cum[i]:cum[j]], int(max(1, widths[j - 1]))) for i, j in reversed(bounds)]
