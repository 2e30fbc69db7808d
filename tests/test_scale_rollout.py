"""Rollouts behind one interface: the vLLM backend falls back to static-cache HF generation when vllm
is absent; gradient checkpointing on a model loaded by path; GPU-only checks marked and skipped."""

from pathlib import Path

import pytest
import torch

from reference.config import load_config
from reference.models import build_tiny_qwen3_dir, load_causal_lm, load_tokenizer
from reference.rollout_vllm import VLLMRollout, vllm_available

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = build_tiny_qwen3_dir(tmp_path_factory.mktemp("roll") / "m", seed=3)
    return load_causal_lm(d), load_tokenizer(d)


@pytest.mark.skipif(vllm_available(), reason="checks the fallback taken without vllm")
def test_vllm_rollout_falls_back_to_static_hf(tiny, capsys):
    model, tok = tiny
    cfg = load_config(ROOT / "configs" / "paper-qwen3-math.toml")
    ro = VLLMRollout(tok, cfg)
    assert ro.backend == "hf-static-cache"
    assert "vllm is not installed" in capsys.readouterr().err
    torch.manual_seed(0)
    b = ro.generate(model, ["12+3=", "7*7="], n=3, temperature=1.0, top_k=20, top_p=0.8, max_new_tokens=5)
    assert b.completion_BT.shape[0] == 6 and b.n == 3 and len(b.texts) == 6
    assert b.input_ids_BL.shape[1] == b.prompt_len + b.completion_BT.shape[1]
    # mask covers a prefix and stops after the first EOS
    m = b.mask_BT
    assert torch.all(m[:, 1:] <= m[:, :-1])


def test_gradient_checkpointing_flag(tmp_path):
    d = build_tiny_qwen3_dir(tmp_path / "m", seed=4)
    model = load_causal_lm(d, gradient_checkpointing=True)
    model.train()
    assert model.is_gradient_checkpointing
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    model(ids, labels=ids).loss.backward()
    ref = load_causal_lm(d)
    ref(ids, labels=ids).loss.backward()
    g1 = model.get_input_embeddings().weight.grad
    g2 = ref.get_input_embeddings().weight.grad
    torch.testing.assert_close(g1, g2, rtol=1e-4, atol=1e-6)  # recomputation, same gradients


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_tiny_check_runs_on_cuda(tmp_path):
    import subprocess
    import sys

    import json
    res = tmp_path / "gc.json"
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--tiny", "--device", "cuda",
                          "--out", str(res)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "OPD lowered KL" in out.stdout
    assert not [k for k in json.loads(res.read_text()) if k.endswith("_error")]  # no section failed
