"""Dry run: build the whole pipeline of a config on the `meta` device — no weights, no GPU, no data.

`dry_run(config) -> dict` instantiates the student and teacher (`Qwen3ForCausalLM` from the shape
fields of the config, or from `config.json` when `path` is a local directory), counts parameters,
checks the vocabulary (Qwen3: 151936), and for every stage reports the trainable and frozen model,
a memory estimate per GPU on 1 GPU and on 8 GPUs, and the exact launch command.

Memory model (an analytic estimate, not a measurement; compared with the H100 anchors in
docs/scale.md). Per GPU, for a micro-batch of `tokens` = micro_batch x (max prompt + max new tokens):
- trainable model, full fine-tune in bf16 with torch AdamW (state in the parameter dtype):
  weights + grads + 2 moments = 4 x 2 B/param; sharded over n GPUs by FSDP2 / ZeRO-3, replicated by DDP.
- frozen scorer: 2 B/param on every GPU (reference.engines shards only the model a stage trains; the
  scorer is replicated), no grads, no optimizer state.
- activations kept for backward: per token per layer (5h + 4·q + 3·kv + 4·i) elements in bf16
  without checkpointing (layer norms, q/k/v and their norms/rotary, attention out, SwiGLU); with
  checkpointing one h-vector per layer plus one layer's full set.
- logits: tokens x V x (2 B bf16 + 4 B fp32 log-softmax + 4 B its grad) for the trained model,
  tokens x V x (2 + 4) B for a frozen scorer — the full-vocabulary KL needs both.
- rollout (vLLM/HF): weights + KV cache of 2 x layers x kv_heads x head_dim x 2 B per token
  (`reference.rollout.kv_cache_bytes`). HF sampling decodes a GPU's rollouts in micro-batches
  (`reference.rollout.rollout_micro_batch` of `engine.rollout_micro_batch` / `engine.kv_cache_gib`):
  each stage reports `rollout_micro_batch` and the `kv_cache_gib` one micro-batch holds, per GPU count
  (vLLM, when installed, pages its own cache instead).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from theory.arms import STAGES
from theory.errors import InputError

GiB = 1024**3
BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
GPU_GIB = 80.0  # H100/A100-80G class; the dry run flags stages that exceed it


@dataclass(frozen=True)
class Shape:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool
    vocab_source: str
    config_dir: str = ""  # a local checkpoint: build its own architecture (Llama, ...) from config.json


def _shape(mcfg, role: str) -> Shape:
    """Shapes from a local config.json when there is one, else from the config's shape fields."""
    from reference.models import QWEN3_VOCAB

    if mcfg.is_tiny:
        from reference.tokenizer import toy_tokenizer

        return Shape(mcfg.hidden, mcfg.layers, mcfg.heads, mcfg.kv_heads, mcfg.head_dim, mcfg.intermediate,
                     len(toy_tokenizer()), mcfg.tie_embeddings, "toy tokenizer")
    local = Path(mcfg.path).expanduser()
    if (local / "config.json").is_file():
        raw = json.loads((local / "config.json").read_text())
        s = Shape(raw["hidden_size"], raw["num_hidden_layers"], raw["num_attention_heads"],
                  raw.get("num_key_value_heads", raw["num_attention_heads"]),
                  raw.get("head_dim", raw["hidden_size"] // raw["num_attention_heads"]),
                  raw["intermediate_size"], raw["vocab_size"], bool(raw.get("tie_word_embeddings", False)),
                  f"{local}/config.json", str(local))
        declared = (mcfg.hidden, mcfg.layers, mcfg.heads, mcfg.kv_heads, mcfg.head_dim, mcfg.intermediate)
        if declared != (s.hidden, s.layers, s.heads, s.kv_heads, s.head_dim, s.intermediate):
            raise InputError(f"{role}: shape fields in the config {declared} disagree with {local}/config.json")
        return s
    vocab = getattr(mcfg, "vocab", 0) or 0
    src = f"{role}.vocab"
    if not vocab:
        if not mcfg.path.startswith("Qwen/Qwen3"):
            raise InputError(f"{role}: no local config.json and no vocab size for {mcfg.path!r}; "
                             "give a local directory or a Qwen3 hub id")
        vocab, src = QWEN3_VOCAB, "Qwen3 family (config.json vocab_size)"
    return Shape(mcfg.hidden, mcfg.layers, mcfg.heads, mcfg.kv_heads, mcfg.head_dim, mcfg.intermediate,
                 vocab, mcfg.tie_embeddings, src)


def build_meta_model(shape: Shape):
    """The real module tree with meta tensors (no memory, no init cost): the checkpoint's own
    architecture when its config.json is local, else `Qwen3ForCausalLM` from the config's shapes."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, Qwen3Config, Qwen3ForCausalLM

    if shape.config_dir:
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(shape.config_dir))

    cfg = Qwen3Config(vocab_size=shape.vocab, hidden_size=shape.hidden, num_hidden_layers=shape.layers,
                      num_attention_heads=shape.heads, num_key_value_heads=shape.kv_heads,
                      head_dim=shape.head_dim, intermediate_size=shape.intermediate,
                      tie_word_embeddings=shape.tied)
    with torch.device("meta"):
        model = Qwen3ForCausalLM(cfg)
    return model


def _act_elems_per_token_layer(s: Shape) -> int:
    return 5 * s.hidden + 4 * s.heads * s.head_dim + 3 * s.kv_heads * s.head_dim + 4 * s.intermediate


def memory_estimate(*, trained: tuple[Shape, int] | None, frozen: tuple[Shape, int] | None, tokens: int,
                    checkpointing: bool, n_gpus: int, shard: bool, dtype_bytes: int = 2) -> dict[str, float]:
    """Per-GPU GiB by component at the training micro-step peak (see the module docstring)."""
    div = n_gpus if shard else 1
    out: dict[str, float] = {}
    if trained is not None:
        s, p = trained
        out["train_states"] = 4 * dtype_bytes * p / div / GiB
        per_layer = _act_elems_per_token_layer(s) * dtype_bytes
        if checkpointing:
            act = tokens * (s.layers * s.hidden * dtype_bytes + per_layer)
        else:
            act = tokens * s.layers * per_layer
        out["activations"] = act / GiB
        out["logits"] = tokens * s.vocab * (dtype_bytes + 4 + 4) / GiB
    if frozen is not None:
        s, p = frozen
        out["frozen_weights"] = dtype_bytes * p / GiB  # replicated: only the trained model is sharded
        out["frozen_logits"] = tokens * s.vocab * (dtype_bytes + 4) / GiB
    out["total"] = sum(out.values())
    return {k: round(v, 2) for k, v in out.items()}


def rollout_estimate(sampler: tuple[Shape, int], *, resident_gib: float, seq_tokens: int, n_seqs: int,
                     dtype_bytes: int = 2) -> dict[str, float]:
    """Rollout phase per GPU: a sampler weight copy (vLLM) + paged KV cache in what training leaves free.

    `resident_gib` is what stays on the GPU while sampling (trainer states, frozen weights; vLLM's
    sleep mode frees its own memory during training, not the trainer's).
    """
    from reference.rollout import kv_cache_bytes

    s, p = sampler
    weights = dtype_bytes * p / GiB
    kv_per_token = kv_cache_bytes(layers=s.layers, kv_heads=s.kv_heads, head_dim=s.head_dim, tokens=1,
                                  dtype_bytes=dtype_bytes)
    kv_per_seq = kv_per_token * seq_tokens / GiB
    free = GPU_GIB * 0.9 - resident_gib - weights  # vLLM gpu_memory_utilization 0.9
    return {
        "sampler_weights_gib": round(weights, 2),
        "kv_kib_per_token": round(kv_per_token / 1024, 1),
        "kv_gib_per_full_length_seq": round(kv_per_seq, 3),
        "concurrent_full_length_seqs_in_80gib": max(0, int(free / kv_per_seq)),
        "seqs_per_step_per_gpu": n_seqs,
    }


def rollout_micro_batches(sampler: Shape, engine, *, seq_tokens: int, seqs_per_gpu: int,
                          dtype_bytes: int = 2) -> tuple[int, float]:
    """(sequences per sampler call, GiB of KV cache one call holds) for a GPU's `seqs_per_gpu` rollouts of
    `seq_tokens` positions: the rule HFRollout applies (`reference.rollout.rollout_micro_batch`)."""
    from reference.rollout import kv_cache_bytes, rollout_micro_batch

    seq = kv_cache_bytes(layers=sampler.layers, kv_heads=sampler.kv_heads, head_dim=sampler.head_dim,
                         tokens=seq_tokens, dtype_bytes=dtype_bytes)
    mb = rollout_micro_batch(seqs_per_gpu, micro_batch=engine.rollout_micro_batch, kv_cache_gib=engine.kv_cache_gib,
                             seq_bytes=seq)
    return mb, round(mb * seq / GiB, 2)


def launch_command(config_path: str, arm: str, seed: int, *, n_gpus: int, accelerate_config: str) -> str:
    cfg = shlex.quote(config_path)
    if n_gpus <= 1:
        return f"reference-pipeline run --config {cfg} --arm {arm} --seed {seed}"
    return (f"accelerate launch --config_file {shlex.quote(accelerate_config)} --num_processes {n_gpus} "
            f"-m reference.cli run --config {cfg} --arm {arm} --seed {seed}")


def dry_run(config, *, arm: str = "rl_teacher_bridge_stage3", seed: int = 0, gpus: tuple[int, ...] = (1, 8)) -> dict:
    """Build every stage of `arm` (default: all four stages) on the meta device and size it."""
    from reference.config import Config, load_config
    from reference.models import QWEN3_VOCAB, count_params
    from theory.arms import get_arm

    cfg: Config = config if isinstance(config, Config) else load_config(config)
    arm_obj = get_arm(arm)
    shapes = {"student": _shape(cfg.student, "student"), "teacher": _shape(cfg.teacher, "teacher")}
    models: dict[str, Any] = {}
    params: dict[str, int] = {}
    for role, s in shapes.items():
        m = build_meta_model(s)
        params[role] = count_params(m)
        mcfg = getattr(cfg, role)
        if mcfg.path.startswith("Qwen/Qwen3") and s.vocab != QWEN3_VOCAB:
            raise InputError(f"{role}: vocab {s.vocab} is not Qwen3's {QWEN3_VOCAB}")
        models[role] = {
            "name": mcfg.path or f"tiny-qwen3({mcfg.hidden}x{mcfg.layers})",
            "class": type(m).__name__,
            "params": params[role],
            "params_b": round(params[role] / 1e9, 3),
            "device": str(next(m.parameters()).device),
            "hidden": s.hidden, "layers": s.layers, "heads": s.heads, "kv_heads": s.kv_heads,
            "head_dim": s.head_dim, "intermediate": s.intermediate, "vocab": s.vocab, "tied": s.tied,
            "vocab_source": s.vocab_source, "dtype": mcfg.dtype,
        }
        del m
    db = BYTES[cfg.student.dtype]
    shard = "ddp" not in Path(cfg.engine.accelerate_config or "fsdp2").stem
    mb = cfg.engine.micro_batch or 1
    prompt = cfg.world.max_prompt_tokens or 0
    ckpt = cfg.engine.gradient_checkpointing
    try:
        import vllm  # noqa: F401

        rollout = "vllm"
    except ImportError:
        rollout = ("hf-static-cache" if cfg.engine.rollout == "vllm" or cfg.engine.static_cache
                   else "lean" if cfg.engine.rollout == "lean" else "hf")
    rollout_note = rollout if rollout == cfg.engine.rollout else f"{rollout} (vllm not installed here)"

    def stage_entry(name: str, trained_role: str | None, frozen_role: str | None, sampler: str, max_new: int,
                    n_seq_rollout: int) -> dict:
        tokens = mb * (prompt + max_new)
        per_gpu, rollout_gpu, sampling = {}, {}, {}
        for n in gpus:
            sampling[str(n)] = rollout_micro_batches(shapes[sampler], cfg.engine, seq_tokens=prompt + max_new,
                                                     seqs_per_gpu=-(-n_seq_rollout // n), dtype_bytes=db)
            per_gpu[str(n)] = memory_estimate(
                trained=(shapes[trained_role], params[trained_role]) if trained_role else None,
                frozen=(shapes[frozen_role], params[frozen_role]) if frozen_role else None,
                tokens=tokens, checkpointing=ckpt, n_gpus=n, shard=shard, dtype_bytes=db,
            )
            resident = per_gpu[str(n)].get("train_states", 0.0) + per_gpu[str(n)].get("frozen_weights", 0.0)
            rollout_gpu[str(n)] = rollout_estimate((shapes[sampler], params[sampler]), resident_gib=resident,
                                                   seq_tokens=prompt + max_new, n_seqs=-(-n_seq_rollout // n),
                                                   dtype_bytes=db)
        if trained_role is None:  # evaluation: sampling only
            for n in per_gpu:
                per_gpu[n] = {"sampler_weights": rollout_gpu[n]["sampler_weights_gib"],
                              "total": rollout_gpu[n]["sampler_weights_gib"]}
        main = trained_role or sampler
        return {
            "name": name,
            "model": models[main]["name"],
            "params": params[main],
            "trainable": trained_role,
            "frozen": models[frozen_role]["name"] if frozen_role else None,
            "frozen_params": params[frozen_role] if frozen_role else 0,
            "sampler": models[sampler]["name"],
            "tokens_per_micro_batch": tokens,
            "memory_gib": {n: v["total"] for n, v in per_gpu.items()},
            "memory_breakdown_gib": per_gpu,
            "rollout": rollout_gpu,
            "rollout_micro_batch": {n: v[0] for n, v in sampling.items()},  # sequences per sampler call, per GPU
            "kv_cache_gib": {n: v[1] for n, v in sampling.items()},  # KV cache of one such call
            "fits_80gib": {n: v["total"] <= GPU_GIB for n, v in per_gpu.items()},
            "launch": {n: launch_command(cfg.source or "CONFIG", arm, seed, n_gpus=int(n),
                                         accelerate_config=cfg.engine.accelerate_config or "configs/accelerate/fsdp2.yaml")
                       for n in map(str, gpus)},
        }

    def from_table(stage) -> dict:
        spec = STAGES[stage]
        sec = getattr(cfg, spec.update)  # the stage's config section: grpo, fkl or opd
        rollouts = sec.prompts_per_step * (sec.group_size if spec.update == "grpo" else 1)
        return stage_entry(stage.value, spec.trains, spec.scorer, spec.samples, sec.max_new_tokens, rollouts)

    e = cfg.eval
    stages = [from_table(s) for s in arm_obj.stages]
    stages.append(stage_entry("eval", None, None, "student", e.max_new_tokens, e.batch))
    return {
        "config": cfg.source,
        "arm": arm,
        "seed": seed,
        "device": "meta",
        "models": models,
        "engine": {"launcher": cfg.engine.launcher, "accelerate_config": cfg.engine.accelerate_config,
                   "sharded_states": shard, "gradient_checkpointing": ckpt, "micro_batch": mb,
                   "rollout": rollout_note, "dtype": cfg.student.dtype},
        "stages": stages,
        "memory_model": "analytic estimate per GPU (reference/dryrun.py docstring); not a measurement",
    }


def format_dry_run(d: dict) -> str:
    """Human-readable table of `dry_run` output (the CLI prints this without --json)."""
    lines = [f"dry run of {d['config']} (arm {d['arm']}), everything built on the meta device"]
    for role, m in d["models"].items():
        lines.append(f"  {role:8s} {m['name']:20s} {m['class']}  {m['params'] / 1e9:6.3f}B params  hidden {m['hidden']}"
                     f" x {m['layers']} layers, heads {m['heads']}/{m['kv_heads']}, vocab {m['vocab']}"
                     f" ({m['vocab_source']}), {'tied' if m['tied'] else 'untied'}")
    eng = d["engine"]
    lines.append(f"  engine: {eng['launcher']} {eng['accelerate_config']}  micro_batch {eng['micro_batch']}"
                 f"  checkpointing {eng['gradient_checkpointing']}  rollout {eng['rollout']}")
    gpus = list(d["stages"][0]["memory_gib"])
    head = f"  {'stage':14s} {'trains':20s} {'frozen scorer':16s} {'params':>8s} " + " ".join(
        f"{'GiB/GPU@' + n:>12s}" for n in gpus) + " " + " ".join(f"{'seqs@' + n:>8s}" for n in gpus) + " " + " ".join(
        f"{'KV GiB x mb@' + n:>16s}" for n in gpus)
    lines += ["", head]
    for s in d["stages"]:
        mem = " ".join(f"{s['memory_gib'][n]:>11.1f}{'' if s['fits_80gib'][n] else '!'}" for n in gpus)
        mem += " " + " ".join(f"{s['rollout'][n]['concurrent_full_length_seqs_in_80gib']:>8d}" for n in gpus)
        mem += " " + " ".join(f"{s['kv_cache_gib'][n]:>10.1f} x {s['rollout_micro_batch'][n]:<3d}" for n in gpus)
        trains = s["model"] if s["trainable"] else "(sampling only)"
        lines.append(f"  {s['name']:14s} {trains:20s} {str(s['frozen'] or '-'):16s} {s['params'] / 1e9:7.2f}B {mem}")
    if eng["sharded_states"]:
        lines.append("  GiB/GPU@n > 1: sharded (FSDP2): the trained model's weights, grads and AdamW moments / n;"
                     " the frozen scorer whole on every GPU")
    else:
        lines.append("  GiB/GPU@n > 1: replicated (DDP): every GPU holds the whole trained model and its AdamW moments")
    lines.append("  GiB/GPU: training micro-step peak (analytic estimate); ! = over 80 GiB: lower engine.micro_batch,")
    lines.append("  enable gradient checkpointing, use LoRA (engine.lora_rank) or shard over more GPUs.")
    lines.append("  seqs: full-length sequences whose KV cache fits beside the resident training state (vLLM, 90% of 80 GiB).")
    lines.append("  KV GiB x mb: KV cache of one HF sampler call x its sequences a call (engine.rollout_micro_batch,")
    lines.append("  engine.kv_cache_gib).")
    lines += ["", "launch:"]
    for n, cmd in d["stages"][0]["launch"].items():
        lines.append(f"  {n} GPU{'s' if n != '1' else ''}: {cmd}")
    return "\n".join(lines)
