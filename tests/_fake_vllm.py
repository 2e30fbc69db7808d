"""A stand-in for the `vllm` package (not installable on the CPU machines): `install()` builds a module to
put in sys.modules as `vllm`, whose `LLM` records what a colocated engine is asked to do — its constructor
arguments, every `load_weights` call (the tensors pushed), `sleep` / `wake_up` and `generate` — in one
event list, and answers `generate` with fixed completions. reference.rollout_vllm drives it as the real one."""

from __future__ import annotations

import types
from types import SimpleNamespace

import torch

EVENTS: list[tuple] = []  # ("init", kwargs) / ("load", {name: tensor}) / ("sleep", level) / ("wake",) / ("generate", n)
COMPLETION = [5, 6, 7]  # token ids every sample returns (finish_reason "length")


class _Model:
    def load_weights(self, weights):
        EVENTS.append(("load", {k: v.clone() for k, v in weights}))


class LLM:
    def __init__(self, **kwargs):
        EVENTS.append(("init", kwargs))
        self.llm_engine = SimpleNamespace(model_executor=SimpleNamespace(
            driver_worker=SimpleNamespace(model_runner=SimpleNamespace(model=_Model()))))

    def sleep(self, level=1):
        EVENTS.append(("sleep", level))

    def wake_up(self, tags=None):
        EVENTS.append(("wake",))

    def generate(self, prompts, sp, use_tqdm=False):
        EVENTS.append(("generate", len(prompts) * sp.n))
        out = SimpleNamespace(token_ids=list(COMPLETION), finish_reason="length")
        return [SimpleNamespace(outputs=[out] * sp.n) for _ in prompts]


class SamplingParams:
    def __init__(self, n=1, temperature=1.0, top_p=1.0, top_k=-1, max_tokens=16):
        self.n, self.temperature, self.top_p, self.top_k, self.max_tokens = n, temperature, top_p, top_k, max_tokens


def install() -> types.ModuleType:
    """A fresh event list and the module to put in sys.modules["vllm"] (the caller does: a test through
    monkeypatch, so that the real state comes back after it; a launched script directly)."""
    EVENTS.clear()
    mod = types.ModuleType("vllm")
    mod.LLM, mod.SamplingParams = LLM, SamplingParams
    return mod


def pushed() -> list[dict[str, torch.Tensor]]:
    return [e[1] for e in EVENTS if e[0] == "load"]
