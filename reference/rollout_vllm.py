"""vLLM rollouts behind the `reference.rollout.Rollout` protocol (optional extra: `pip install .[vllm]`).

`VLLMRollout(tokenizer, cfg)` samples with a colocated vLLM engine per model (student, teacher),
created lazily from the model's checkpoint path and refreshed with the trainer's current weights
before each call (the trainer's parameters are the truth; vLLM holds a bf16 copy). The result is the
same `RolloutBatch` layout HF generation produces, and every stage recomputes log-probs with the
training model (`completion_logits`), so the two backends are interchangeable.

When vllm is not importable (CPU machines, the GPU-check image) the same object delegates to
`HFRollout` with a static KV cache — the fallback the config asks for — and says so once.
Weight refresh goes through vLLM's `load_weights` on the driver model; its internal path moved
between vLLM releases, so `_vllm_model` tries the known ones and fails with one clear line.
This backend is not exercised by the CPU tests (no vllm here); scripts/gpu_check.py times the
fallback, and the vLLM path needs a GPU session with the wheel.
"""

from __future__ import annotations

import sys
from typing import Any

import torch

from reference.rollout import HFRollout, RolloutBatch, completion_mask
from theory.errors import InputError


def vllm_available() -> bool:
    try:
        import vllm  # noqa: F401
    except Exception:  # noqa: BLE001 — a broken CUDA install raises more than ImportError
        return False
    return True


def _vllm_model(llm) -> Any:
    """The torch module inside a vLLM `LLM` (for `load_weights`), across vLLM versions."""
    engine = llm.llm_engine
    paths = (
        lambda: engine.model_executor.driver_worker.model_runner.model,
        lambda: engine.model_executor.driver_worker.worker.model_runner.model,
        lambda: engine.engine_core.engine_core.model_executor.driver_worker.worker.model_runner.model,
    )
    for get in paths:
        try:
            return get()
        except AttributeError:
            continue
    raise InputError("this vLLM version hides its model from load_weights; set engine.rollout = 'hf'")


class VLLMRollout:
    def __init__(self, tokenizer, cfg, *, gpu_memory_utilization: float = 0.35):
        self.tok = tokenizer
        self.cfg = cfg
        self.gpu_memory_utilization = gpu_memory_utilization
        self._engines: dict[int, Any] = {}
        if vllm_available():
            self.backend = "vllm"
            self._fallback = None
        else:
            self.backend = "hf-static-cache"
            self._fallback = HFRollout(tokenizer, static_cache=True, micro_batch=cfg.engine.rollout_micro_batch,
                                       kv_cache_gib=cfg.engine.kv_cache_gib)
            print("engine.rollout = 'vllm' but vllm is not installed: using HF generate with a static cache",
                  file=sys.stderr)

    def _engine_for(self, model):
        key = id(model)
        if key not in self._engines:
            from vllm import LLM

            path = getattr(model.config, "_name_or_path", "")
            if not path:
                raise InputError("vLLM rollouts need a model loaded from a path or hub id")
            self._engines[key] = LLM(model=path, dtype="bfloat16", gpu_memory_utilization=self.gpu_memory_utilization,
                                     enable_sleep_mode=True, max_model_len=self.cfg.world.max_prompt_tokens
                                     + max(self.cfg.grpo.max_new_tokens, self.cfg.eval.max_new_tokens))
        llm = self._engines[key]
        if any(p.requires_grad for p in model.parameters()):  # a trained model: push current weights
            _vllm_model(llm).load_weights(((k, v.detach()) for k, v in model.state_dict().items()))
        return llm

    @torch.no_grad()
    def generate(self, model, prompts, *, n, temperature, top_p=1.0, top_k=0, max_new_tokens, greedy=False):
        if self._fallback is not None:
            return self._fallback.generate(model, prompts, n=n, temperature=temperature, top_p=top_p, top_k=top_k,
                                           max_new_tokens=max_new_tokens, greedy=greedy)
        from vllm import SamplingParams

        llm = self._engine_for(model)
        sp = SamplingParams(n=n, temperature=0.0 if greedy else temperature, top_p=top_p,
                            top_k=top_k if top_k > 0 else -1, max_tokens=max_new_tokens)
        outs = llm.generate(list(prompts), sp, use_tqdm=False)
        tok = self.tok
        eos, pad = tok.eos_token_id, tok.pad_token_id
        comps: list[list[int]] = []
        for o in outs:
            for c in o.outputs:
                ids = list(c.token_ids)
                if c.finish_reason == "stop" and (not ids or ids[-1] != eos):
                    ids.append(eos)  # keep EOS in the mask, as HF generation does
                comps.append(ids[:max_new_tokens] or [pad])
        T = max(len(c) for c in comps)
        device = next(model.parameters()).device
        comp = torch.full((len(comps), T), pad, dtype=torch.long)
        for i, c in enumerate(comps):
            comp[i, : len(c)] = torch.tensor(c)
        enc = tok(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False)
        ids = enc["input_ids"].repeat_interleave(n, 0)
        att = enc["attention_mask"].repeat_interleave(n, 0)
        mask = completion_mask(comp, eos)
        lengths = torch.tensor([len(c) for c in comps])
        mask = mask * (torch.arange(T)[None, :] < lengths[:, None]).float()
        comp = torch.where(mask.bool(), comp, torch.full_like(comp, pad))
        texts = tuple(tok.batch_decode(comp, skip_special_tokens=True))
        return RolloutBatch(torch.cat([ids, comp], 1).to(device), torch.cat([att, mask.long()], 1).to(device),
                            ids.shape[1], comp.to(device), mask.to(device), texts, n)
