"""The real-scale code path end to end on a CPU: the paper config with `path` models (tiny random Qwen3
saved with save_pretrained), a dataset world from hub-schema fixtures, every stage of the full arm."""

from pathlib import Path

import pytest

from reference.config import load_config
from reference.data import load_world
from reference.models import build_tiny_qwen3_dir, load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests" / "fixtures" / "data"


def tiny_paper_config(tmp_path):
    s = build_tiny_qwen3_dir(tmp_path / "student", seed=1, pad_vocab_to=128)
    t = build_tiny_qwen3_dir(tmp_path / "teacher", seed=2, pad_vocab_to=128, hidden=48, heads=4, kv_heads=2,
                             head_dim=12, intermediate=96)
    shape = lambda role, h, hd, i: {f"{role}.hidden": h, f"{role}.layers": 2, f"{role}.heads": 4,  # noqa: E731
                                    f"{role}.kv_heads": 2, f"{role}.head_dim": hd, f"{role}.intermediate": i,
                                    f"{role}.tie_embeddings": True, f"{role}.dtype": "float32"}
    return load_config(ROOT / "configs" / "paper-qwen3-math.toml").override({
        "student.path": str(s), "teacher.path": str(t), **shape("student", 32, 8, 64), **shape("teacher", 48, 12, 96),
        "world.train_path": str(FIX / "math_train.jsonl"), "world.test_path": str(FIX / "math500.jsonl"),
        "world.unlabeled_path": str(FIX / "dapo_math_17k.parquet"),
        "world.val_fraction": 0.34, "world.labels": 2, "world.val": 0, "world.max_prompt_tokens": 400,
        "grpo.prompts_per_step": 1, "grpo.group_size": 2, "grpo.epochs": 1.0, "grpo.max_new_tokens": 6, "grpo.lr": 1e-3,
        "fkl.steps": 1, "fkl.prompts_per_step": 2, "fkl.max_new_tokens": 6,
        "opd.steps": 1, "opd.prompts_per_step": 2, "opd.max_new_tokens": 6,
        "eval.k": 1, "eval.max_new_tokens": 6, "eval.curve_problems": 1, "eval.batch": 8,
        "engine.device": "cpu", "engine.rollout": "hf", "engine.static_cache": False, "engine.launcher": "single",
        "engine.gradient_checkpointing": False, "engine.micro_batch": 0,
    })


def test_dataset_world_splits(tmp_path):
    cfg = tiny_paper_config(tmp_path)
    w = load_world(cfg.world, load_tokenizer(cfg.student.path))
    assert w.sizes() == {"labeled": 2, "val": 1, "unlabeled": 3, "test": 5}
    assert not {p.pid for p in w.labeled} & {p.pid for p in w.val}
    assert all(p.prompt.endswith("<think>\n\n</think>\n\n") for p in w.test)
    short = load_world(cfg.override({"world.max_prompt_tokens": 120}).world, load_tokenizer(cfg.student.path))
    assert len(short.test) < len(w.test)  # long prompts dropped, not truncated


@pytest.mark.slow
def test_full_arm_runs_every_stage_on_path_models(tmp_path):
    from reference.pipeline import run_pipeline

    cfg = tiny_paper_config(tmp_path)
    res = run_pipeline(cfg, "rl_teacher_bridge_stage3", 0, workdir=tmp_path / "work", teacher_labels=1,
                       split="test", progress=False)
    names = [s["name"] for s in res.stages]
    assert names == ["teacher_grpo", "fkl_warmup", "opd", "student_grpo", "eval"]
    assert all(s["tokens"] > 0 for s in res.stages[:-1])
    assert 0.0 <= res.metrics["accuracy"] <= 100.0
