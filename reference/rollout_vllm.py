"""vLLM rollouts behind the `reference.rollout.Rollout` protocol (optional extra: `pip install .[vllm]`).

`VLLMRollout(tokenizer, cfg)` samples with a colocated vLLM engine per model (student, teacher) and per
rank (under `accelerate launch` each process holds its own engine, vLLM's "external_launcher"), created
lazily from the model's checkpoint path. Every stage recomputes log-probs with the training model
(`completion_logits`), so the result is the same `RolloutBatch` layout HF generation produces and the
two backends are interchangeable; evaluation and the plateau protocol's validation sample through the
same object (`StageContext.rollout`), so at scale they use the same engine.

Weight sync (`full_weights`): before a call on a model that trains, the engine receives the trainer's
current weights whole. An FSDP2-sharded entry (a DTensor: each rank holds 1/n of it) is all-gathered
(`DTensor.full_tensor`, one entry at a time, a collective every rank runs in the same order), so no
engine ever loads a shard; master weights in fp32 are cast to the engine's bf16. vLLM's `load_weights`
sits on its driver model, whose path moved between releases: `_vllm_model` tries the known ones and
fails with one clear line.

Memory: the engine's pool (its weight copy + KV cache) is `GPU_MEMORY_UTILIZATION` of the GPU, beside
what training keeps resident (the dry run sizes rollouts with the same fraction); between calls the
engine sleeps (`LLM.sleep`: level 2, weights and cache dropped, for a model that trains and is pushed
again at the next call; level 1, weights kept in CPU memory, for a frozen model) and wakes up
(`LLM.wake_up`) before the next one, so training gets the pool back.

When vllm is not importable (CPU machines, the GPU-check image) the same object delegates to
`HFRollout` with a static KV cache — the fallback the config asks for — and says so once. The CPU tests
drive the vLLM path through a fake engine (tests/_fake_vllm.py): the pushed tensors are full-size and
equal the trained model's, under FSDP2 on 2 processes too; the real engine needs a GPU session with the
wheel. TRL's trainers generate with their own sampler, so `engine.rollout = "vllm"` with
`engine.trainer = "trl"` is refused when the config loads (reference.config).
"""

from __future__ import annotations

import sys
from typing import Any

import torch

from reference.rollout import HFRollout, RolloutBatch, completion_mask
from theory.errors import InputError

# vLLM's share of a GPU (its weights + KV cache), colocated with the trainer's resident state; the dry run
# (reference.dryrun.rollout_estimate) sizes the rollout phase with the same fraction
GPU_MEMORY_UTILIZATION = 0.35
ENGINE_DTYPE = torch.bfloat16


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


def full_weights(model, dtype: torch.dtype = ENGINE_DTYPE):
    """(name, whole tensor in `dtype`) for every entry of `model`'s state dict, one at a time: a sharded
    entry (DTensor) is all-gathered first. Every rank must iterate it in full (each gather is a collective)."""
    from torch.distributed.tensor import DTensor

    for name, v in model.state_dict().items():
        if isinstance(v, DTensor):
            v = v.full_tensor()
        yield name, v.detach().to(dtype)


def _trains(model) -> bool:
    return any(p.requires_grad for p in model.parameters())


def _distributed() -> bool:
    import torch.distributed as dist
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class VLLMRollout:
    def __init__(self, tokenizer, cfg, *, gpu_memory_utilization: float = GPU_MEMORY_UTILIZATION):
        self.tok = tokenizer
        self.cfg = cfg
        self.gpu_memory_utilization = gpu_memory_utilization
        self._engines: dict[int, Any] = {}
        self._asleep: dict[int, int] = {}  # engine key -> the sleep level it is at
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
        """The model's engine, awake and holding the model's current weights."""
        key = id(model)
        if key not in self._engines:
            from vllm import LLM

            path = getattr(model.config, "_name_or_path", "")
            if not path:
                raise InputError("vLLM rollouts need a model loaded from a path or hub id")
            extra = {"distributed_executor_backend": "external_launcher"} if _distributed() else {}
            self._engines[key] = LLM(model=path, dtype="bfloat16", gpu_memory_utilization=self.gpu_memory_utilization,
                                     enable_sleep_mode=True, max_model_len=self.cfg.world.max_prompt_tokens
                                     + max(self.cfg.grpo.max_new_tokens, self.cfg.eval.max_new_tokens), **extra)
        llm = self._engines[key]
        if self._asleep.pop(key, None) is not None:
            llm.wake_up()
        if _trains(model):  # a trained model: push its current weights, whole
            _vllm_model(llm).load_weights(full_weights(model))
        return llm

    def _sleep(self, model, llm) -> None:
        """Give the pool back to training: level 2 (drop weights and cache) for a model whose weights are pushed
        again at the next call, level 1 (weights kept in CPU memory) for a frozen one."""
        level = 2 if _trains(model) else 1
        llm.sleep(level=level)
        self._asleep[id(model)] = level

    @torch.no_grad()
    def generate(self, model, prompts, *, n, temperature, top_p=1.0, top_k=0, max_new_tokens, greedy=False):
        if self._fallback is not None:
            return self._fallback.generate(model, prompts, n=n, temperature=temperature, top_p=top_p, top_k=top_k,
                                           max_new_tokens=max_new_tokens, greedy=greedy)
        from vllm import SamplingParams

        llm = self._engine_for(model)
        sp = SamplingParams(n=n, temperature=0.0 if greedy else temperature, top_p=top_p,
                            top_k=top_k if top_k > 0 else -1, max_tokens=max_new_tokens)
        try:
            outs = llm.generate(list(prompts), sp, use_tqdm=False)
        finally:
            self._sleep(model, llm)
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
