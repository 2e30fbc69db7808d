"""Rollouts behind one interface: prompts in, sampled completions (token tensors + text) out.

`HFRollout` uses transformers' `generate` (static KV cache optional, for GPUs). A vLLM backend
(reference.rollout_vllm, SCALE) implements the same `Rollout` protocol. Every stage scores
completions with `completion_logits` below, so log-probs are always recomputed by the training model
(never trusted from the sampler), which keeps the two backends interchangeable.

Layout: each prompt is repeated n times contiguously (row p*n + g is sample g of prompt p); prompts
are left-padded to a common length L_p, completions right-padded to T with EOS kept in the mask.
"""

from __future__ import annotations

from dataclasses import dataclass
import hashlib
from typing import Protocol

import torch


@dataclass(frozen=True)
class RolloutBatch:
    input_ids_BL: torch.Tensor  # prompt (left-padded) + completion
    attention_BL: torch.Tensor
    prompt_len: int  # L_p: completion token t sits at column prompt_len + t
    completion_BT: torch.Tensor
    mask_BT: torch.Tensor  # 1 on completion tokens up to and including the first EOS
    texts: tuple[str, ...]  # decoded completions, special tokens dropped
    n: int  # samples per prompt

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


def completion_mask(completion_BT: torch.Tensor, eos_id: int) -> torch.Tensor:
    is_eos = (completion_BT == eos_id).long()
    # positions strictly after the first EOS are padding: cumsum of EOS seen *before* this position
    seen_before = torch.cumsum(is_eos, dim=-1) - is_eos
    return (seen_before == 0).float()


class HFRollout:
    def __init__(self, tokenizer, *, static_cache: bool = False, micro_batch: int = 0):
        self.tok = tokenizer
        self.static_cache = static_cache
        self.micro_batch = micro_batch

    @torch.no_grad()
    def generate(self, model, prompts, *, n, temperature, top_p=1.0, top_k=0, max_new_tokens, greedy=False):
        tok = self.tok
        enc = tok(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False)
        device = next(model.parameters()).device
        ids = enc["input_ids"].repeat_interleave(n, dim=0).to(device)
        att = enc["attention_mask"].repeat_interleave(n, dim=0).to(device)
        kwargs = dict(max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        if greedy:
            kwargs.update(do_sample=False)
        else:
            kwargs.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=top_k)
        if self.static_cache:
            kwargs["cache_implementation"] = "static"
        n_real, n_model = len(tok), int(getattr(model.config, "vocab_size", len(tok)))
        if n_model > n_real:  # a padded vocabulary (Qwen3: 151936 > 151669): never sample a padding id
            from transformers import LogitsProcessorList
            kwargs["logits_processor"] = LogitsProcessorList([_MaskPaddedVocab(n_real)])
        from reference.engines import sharded_across_ranks
        if sharded_across_ranks(model):  # FSDP2: every decode step all-gathers, so ranks step together until all finish
            kwargs["synced_gpus"] = True
        was_training = model.training
        model.eval()
        out = model.generate(input_ids=ids, attention_mask=att, **kwargs)
        model.train(was_training)
        P = ids.shape[1]
        comp = out[:, P:]
        if comp.shape[1] == 0:  # max_new_tokens reached zero-length edge: keep one pad column
            comp = torch.full((ids.shape[0], 1), tok.pad_token_id, dtype=ids.dtype, device=device)
        mask = completion_mask(comp, tok.eos_token_id)
        comp = torch.where(mask.bool(), comp, torch.full_like(comp, tok.pad_token_id))
        full = torch.cat([ids, comp], dim=1)
        full_att = torch.cat([att, mask.long()], dim=1)
        texts = tuple(tok.batch_decode(comp, skip_special_tokens=True))
        return RolloutBatch(full, full_att, P, comp, mask, texts, n)


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


def completion_logits(model, batch: RolloutBatch, vocab_size: int) -> torch.Tensor:
    """Logits predicting each completion token, [B, T, V], restricted to the real vocabulary.

    Position ids follow the attention mask so left padding does not shift positions (as in generate).
    """
    att = batch.attention_BL
    pos = (torch.cumsum(att, dim=-1) - 1).clamp(min=0)
    out = model(input_ids=batch.input_ids_BL, attention_mask=att, position_ids=pos)
    P, T = batch.prompt_len, batch.completion_BT.shape[1]
    return out.logits[:, P - 1: P - 1 + T, :vocab_size]
