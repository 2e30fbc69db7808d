"""Dry run: build the whole pipeline of a config on the `meta` device — no weights, no GPU, no data.

`dry_run(config) -> dict` instantiates the student and teacher (`Qwen3ForCausalLM` from the shape
fields of the config, or from `config.json` when `path` is a local directory), counts parameters,
checks the vocabulary (Qwen3: 151936), and for every stage reports the trainable and frozen model,
a memory estimate per GPU on 1 GPU and on 8 GPUs, and the exact launch command.

What it assumes it reads from the objects the pipeline builds, never from its own copies: each stage's
dtypes (parameters, gradients, AdamW moments, compute), checkpointing, the frozen scorer's dtype and
placement, the micro-batch and the updates per rollout batch from `reference.stage_plan.stage_plan`
(what `stage_runner.train_stage` applies); the sharding from the launch config through
`reference.engines.check_accelerate_config` (what the engine refuses, the dry run refuses); the rows of
a forward/backward chunk through `stages.chunk_rows` (what `stages._backward` cuts).
tests/test_stage_plan.py trains each stage of a bf16 toy config and checks the objects against it.

Memory model (an analytic estimate, not a measurement; compared with the H100 anchors in
docs/scale.md). Per GPU, for one forward/backward chunk of `tokens` = rows x (max prompt + max new):
- trained model: parameters + gradients + 2 AdamW moments in the plan's dtypes (mixed precision:
  4 + 4 + 8 = 16 B/param; pure bf16: 8 B/param), sharded over n GPUs by FSDP2, replicated by DDP;
  plus the bf16 compute copy under mixed precision: every weight's autocast cast by the end of the
  forward without sharding (2 B/param), the all-gathered units with FSDP2 (root + two decoder layers).
- frozen scorer: the plan's dtype (2 B/param in bf16) on every GPU (replicated), no grads, no state.
- activations kept for backward: per token per layer (5h + 4·q + 3·kv + 4·i) elements without
  checkpointing (layer norms, q/k/v and their norms/rotary, attention out, SwiGLU); with checkpointing
  one h-vector per layer plus one layer's full set; 2 B per element, 4 B under autocast over fp32
  weights (the residual stream stays fp32 there).
- logits: tokens x V x (logits + fp32 log-softmax + its grad) for the trained model: 2 + 4 + 4 B, or
  4 + 4 + 4 B when the forward returns fp32 logits (mixed precision); tokens x V x (2 + 4) B for a
  frozen scorer, 4 + 4 B under mixed precision — the full-vocabulary KL needs both.
- rollout: the sampler's weights, the resident training state, and the KV cache of one sampler call
  (2 x layers x kv_heads x head_dim x 2 B per token per sequence, `reference.rollout.kv_cache_bytes`).
  HF sampling decodes a GPU's rollouts in micro-batches by the rule HFRollout applies
  (`reference.rollout.rollout_micro_batch` of `engine.rollout_micro_batch` / `engine.kv_cache_gib`): each
  stage reports `rollout_micro_batch` and the `kv_cache_gib` one call holds, per GPU count (vLLM, when
  installed, pages its own cache instead).
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


def _unit_params(s: Shape, params: int) -> tuple[int, int]:
    """(root unit's parameters: embeddings, final norm, untied head; one decoder layer's parameters)."""
    root = s.vocab * s.hidden * (1 if s.tied else 2) + s.hidden
    return root, (params - root) // s.layers


def memory_estimate(*, trained: tuple[Shape, int] | None, frozen: tuple[Shape, int] | None, tokens: int,
                    checkpointing: bool, n_gpus: int, shard: bool, dtype_bytes: int = 2,
                    master_bytes: int | None = None, frozen_bytes: int | None = None) -> dict[str, float]:
    """Per-GPU GiB by component at the training micro-step peak (see the module docstring).
    `dtype_bytes`: the compute dtype; `master_bytes`: the trained parameters' (and gradients' and AdamW
    moments') dtype, `dtype_bytes` when None (pure precision); `frozen_bytes`: the scorer's dtype."""
    div = n_gpus if shard else 1
    master = dtype_bytes if master_bytes is None else master_bytes
    mixed = master != dtype_bytes
    autocast = mixed and not shard  # FSDP2's mixed-precision policy casts the units instead
    out: dict[str, float] = {}
    if trained is not None:
        s, p = trained
        out["train_states"] = 4 * master * p / div / GiB
        if mixed or shard:
            root, layer = _unit_params(s, p)
            out["compute_copy"] = dtype_bytes * (p if not shard else root + 2 * layer) / GiB
        act_bytes = 4 if autocast else dtype_bytes
        per_layer = _act_elems_per_token_layer(s) * act_bytes
        if checkpointing:
            act = tokens * (s.layers * s.hidden * act_bytes + per_layer)
        else:
            act = tokens * s.layers * per_layer
        out["activations"] = act / GiB
        out["logits"] = tokens * s.vocab * ((4 if mixed else dtype_bytes) + 4 + 4) / GiB
    if frozen is not None:
        s, p = frozen
        fb = dtype_bytes if frozen_bytes is None else frozen_bytes
        out["frozen_weights"] = fb * p / GiB  # replicated: only the trained model is sharded
        out["frozen_logits"] = tokens * s.vocab * ((4 if mixed else fb) + 4) / GiB  # mixed: fp32 logits
    out["total"] = sum(out.values())
    return {k: round(v, 2) for k, v in out.items()}


def rollout_micro_batches(sampler: Shape, engine, *, seq_tokens: int, seqs_per_gpu: int,
                          dtype_bytes: int = 2) -> tuple[int, float]:
    """(sequences per sampler call, GiB of KV cache one call holds) for a GPU's `seqs_per_gpu` rollouts of
    `seq_tokens` positions: the rule HFRollout applies (`reference.rollout.rollout_micro_batch`)."""
    from reference.rollout import kv_cache_bytes, rollout_micro_batch

    seq = kv_cache_bytes(layers=sampler.layers, kv_heads=sampler.kv_heads, head_dim=sampler.head_dim,
                         tokens=seq_tokens, dtype_bytes=dtype_bytes)
    mb = rollout_micro_batch(seqs_per_gpu, micro_batch=engine.rollout_micro_batch, kv_cache_gib=engine.kv_cache_gib,
                             seq_bytes=seq)
    return mb, mb * seq / GiB


def rollout_estimate(sampler: tuple[Shape, int], engine, *, resident_gib: float, seq_tokens: int, n_seqs: int,
                     dtype_bytes: int = 2) -> dict[str, float]:
    """Rollout phase per GPU: a sampler weight copy + the KV cache of one sampler call (`engine`'s
    micro-batch rule) beside what training keeps resident (`resident_gib`: trainer states, frozen weights)."""
    from reference.rollout import kv_cache_bytes
    from reference.rollout_vllm import GPU_MEMORY_UTILIZATION

    s, p = sampler
    weights = dtype_bytes * p / GiB
    kv_per_token = kv_cache_bytes(layers=s.layers, kv_heads=s.kv_heads, head_dim=s.head_dim, tokens=1,
                                  dtype_bytes=dtype_bytes)
    kv_per_seq = kv_per_token * seq_tokens / GiB
    pool = GPU_GIB * GPU_MEMORY_UTILIZATION  # a colocated vLLM engine's share (its weights + KV cache)
    free = min(pool, GPU_GIB - resident_gib) - weights
    mb, kv = rollout_micro_batches(s, engine, seq_tokens=seq_tokens, seqs_per_gpu=n_seqs, dtype_bytes=dtype_bytes)
    peak = resident_gib + weights + kv
    return {
        "sampler_weights_gib": round(weights, 2),
        "kv_kib_per_token": round(kv_per_token / 1024, 1),
        "kv_gib_per_full_length_seq": round(kv_per_seq, 3),
        "vllm_pool_gib": round(pool, 2),
        "vllm_full_length_seqs": max(0, int(free / kv_per_seq)),  # KV cache the pool holds beside its weights
        "seqs_per_step_per_gpu": n_seqs,
        "micro_batch": mb,
        "kv_cache_gib": round(kv, 2),
        "peak_gib": round(peak, 2),
        "fits_80gib": peak <= GPU_GIB,
    }


def launch_command(config_path: str, arm: str, seed: int, *, n_gpus: int, accelerate_config: str) -> str:
    cfg = shlex.quote(config_path)
    if n_gpus <= 1:
        return f"reference-pipeline run --config {cfg} --arm {arm} --seed {seed}"
    return (f"accelerate launch --config_file {shlex.quote(accelerate_config)} --num_processes {n_gpus} "
            f"-m reference.cli run --config {cfg} --arm {arm} --seed {seed}")


def configured_launch(cfg) -> tuple[str, str]:
    """(accelerate config path, the sharding it launches): the file `engine.accelerate_config` names (the
    paper default fsdp2.yaml when empty), checked as the engine checks a launch."""
    from reference.config import REPO_ROOT
    from reference.engines import check_accelerate_config, load_accelerate_config

    name = cfg.engine.accelerate_config or "configs/accelerate/fsdp2.yaml"
    path = Path(name) if Path(name).is_file() or Path(name).is_absolute() else REPO_ROOT / name
    return name, check_accelerate_config(load_accelerate_config(path), where=f"engine.accelerate_config {name!r}")


def dry_run(config, *, arm: str = "rl_teacher_bridge_stage3", seed: int = 0, gpus: tuple[int, ...] = (1, 8)) -> dict:
    """Build every stage of `arm` (default: all four stages) on the meta device and size it."""
    from reference.config import Config, load_config
    from reference.models import QWEN3_VOCAB, count_params
    from reference.stage_plan import stage_plan
    from reference.stages import chunk_rows
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
    accelerate_config, sharding = configured_launch(cfg)
    shard = sharding == "fsdp2"
    prompt = cfg.world.max_prompt_tokens or 0
    try:
        import vllm  # noqa: F401

        rollout = "vllm"
    except ImportError:
        rollout = ("hf-static-cache" if cfg.engine.rollout == "vllm" or cfg.engine.static_cache
                   else "lean" if cfg.engine.rollout == "lean" else "hf")
    rollout_note = rollout if rollout == cfg.engine.rollout else f"{rollout} (vllm not installed here)"

    def stage_entry(name: str, plan, sampler: str, max_new: int, rows: int, rollouts: int) -> dict:
        """`rows`: sequences of one update (global); `rollouts`: sequences one rollout batch samples (global)."""
        trained_role = plan.trains if plan is not None else None
        frozen_role = plan.scorer if plan is not None else None
        per_gpu, rollout_gpu, chunk, tokens = {}, {}, {}, {}
        for n in gpus:
            key = str(n)
            chunk[key] = chunk_rows(-(-rows // n), plan.micro_batch) if plan is not None else 0
            tokens[key] = chunk[key] * (prompt + max_new)
            sampler_dtype = BYTES[getattr(cfg, sampler).dtype]
            if plan is not None:
                per_gpu[key] = memory_estimate(
                    trained=(shapes[trained_role], params[trained_role]),
                    frozen=(shapes[frozen_role], params[frozen_role]) if frozen_role else None,
                    tokens=tokens[key], checkpointing=plan.checkpointing, n_gpus=n, shard=shard and n > 1,
                    dtype_bytes=BYTES[plan.compute_dtype], master_bytes=BYTES[plan.param_dtype],
                    frozen_bytes=BYTES[plan.scorer_dtype] if plan.scorer_dtype else None)
            resident = per_gpu[key].get("train_states", 0.0) + per_gpu[key].get("frozen_weights", 0.0) if plan else 0.0
            per_rank = rollouts if plan is None else -(-rollouts // n)  # evaluation: one chunk per call, any n
            rollout_gpu[key] = rollout_estimate((shapes[sampler], params[sampler]), cfg.engine, resident_gib=resident,
                                                seq_tokens=prompt + max_new, n_seqs=per_rank,
                                                dtype_bytes=sampler_dtype)
            if plan is None:  # evaluation: sampling only
                per_gpu[key] = {"sampler_weights": rollout_gpu[key]["sampler_weights_gib"],
                                "total": rollout_gpu[key]["sampler_weights_gib"]}
        main = trained_role or sampler
        return {
            "name": name,
            "model": models[main]["name"],
            "params": params[main],
            "trainable": trained_role,
            "frozen": models[frozen_role]["name"] if frozen_role else None,
            "frozen_params": params[frozen_role] if frozen_role else 0,
            "sampler": models[sampler]["name"],
            "plan": plan.to_dict() if plan is not None else None,
            "rows_per_chunk": chunk,
            "tokens_per_micro_batch": tokens,
            "memory_gib": {n: v["total"] for n, v in per_gpu.items()},
            "memory_breakdown_gib": per_gpu,
            "rollout": rollout_gpu,
            "fits_80gib": {n: v["total"] <= GPU_GIB for n, v in per_gpu.items()},
            "launch": {n: launch_command(cfg.source or "CONFIG", arm, seed, n_gpus=int(n),
                                         accelerate_config=accelerate_config)
                       for n in map(str, gpus)},
        }

    def from_table(stage) -> dict:
        spec, plan = STAGES[stage], stage_plan(cfg, stage)
        sec = getattr(cfg, spec.update)  # the stage's config section: grpo, fkl or opd
        if spec.update == "grpo":
            rollouts = sec.prompts_per_step * sec.group_size
        elif spec.replays:  # the replay control: as many student rollouts per step as stage-3 GRPO draws
            rollouts = cfg.grpo.prompts_per_step * cfg.grpo.group_size
        else:
            rollouts = sec.prompts_per_step
        return stage_entry(stage.value, plan, spec.samples, sec.max_new_tokens, rollouts // plan.mini_batches,
                           rollouts)

    e = cfg.eval
    stages = [from_table(s) for s in arm_obj.stages]
    stages.append(stage_entry("eval", None, "student", e.max_new_tokens, 0, max(1, e.batch // e.k) * e.k))
    return {
        "config": cfg.source,
        "arm": arm,
        "seed": seed,
        "device": "meta",
        "models": models,
        "engine": {"launcher": cfg.engine.launcher, "accelerate_config": accelerate_config,
                   "sharded_states": shard, "gradient_checkpointing": cfg.engine.gradient_checkpointing,
                   "micro_batch": cfg.engine.micro_batch, "precision": cfg.engine.precision,
                   "rollout": rollout_note, "dtype": cfg.student.dtype},
        "stages": stages,
        "memory_model": "analytic estimate per GPU (reference/dryrun.py docstring); not a measurement",
    }


def _dt(name: str | None) -> str:
    return {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", None: "-"}[name]


def format_dry_run(d: dict) -> str:
    """Human-readable table of `dry_run` output (the CLI prints this without --json)."""
    lines = [f"dry run of {d['config']} (arm {d['arm']}), everything built on the meta device"]
    for role, m in d["models"].items():
        lines.append(f"  {role:8s} {m['name']:20s} {m['class']}  {m['params'] / 1e9:6.3f}B params  hidden {m['hidden']}"
                     f" x {m['layers']} layers, heads {m['heads']}/{m['kv_heads']}, vocab {m['vocab']}"
                     f" ({m['vocab_source']}), {'tied' if m['tied'] else 'untied'}")
    eng = d["engine"]
    lines.append(f"  engine: {eng['launcher']} {eng['accelerate_config']}  precision {eng['precision']}"
                 f"  micro_batch {eng['micro_batch']}  checkpointing {eng['gradient_checkpointing']}"
                 f"  rollout {eng['rollout']}")
    gpus = list(d["stages"][0]["memory_gib"])
    head = (f"  {'stage':14s} {'trains':16s} {'frozen scorer':14s} {'param/grad/adam/compute':24s} {'ckpt':>4s} "
            + " ".join(f"{'GiB/GPU@' + n:>11s}" for n in gpus) + " "
            + " ".join(f"{'roll mb@' + n:>9s} {'KV GiB':>8s}" for n in gpus))
    lines += ["", head]
    for s in d["stages"]:
        mem = " ".join(f"{s['memory_gib'][n]:>10.1f}{'' if s['fits_80gib'][n] else '!'}" for n in gpus)
        roll = " ".join(f"{s['rollout'][n]['micro_batch']:>9d} {s['rollout'][n]['kv_cache_gib']:>8.1f}" for n in gpus)
        trains = s["model"] if s["trainable"] else "(sampling only)"
        p = s["plan"]
        dtypes = ("/".join(_dt(p[k]) for k in ("param_dtype", "grad_dtype", "optimizer_state_dtype", "compute_dtype"))
                  if p else "-")
        ckpt = ("yes" if p["checkpointing"] else "no") if p else "-"
        lines.append(f"  {s['name']:14s} {trains:16s} {str(s['frozen'] or '-'):14s} {dtypes:24s} {ckpt:>4s} {mem} {roll}")
    if eng["sharded_states"]:
        lines.append("  GiB/GPU@n > 1: sharded (FSDP2): the trained model's weights, grads and AdamW moments / n;"
                     " the frozen scorer whole on every GPU")
    else:
        lines.append("  GiB/GPU@n > 1: replicated (DDP): every GPU holds the whole trained model and its AdamW moments")
    lines.append("  GiB/GPU: training micro-step peak (analytic estimate); ! = over 80 GiB: lower engine.micro_batch,")
    lines.append("  enable gradient checkpointing, use LoRA (engine.lora_rank) or shard over more GPUs.")
    lines.append("  roll mb: sequences in one sampler call per GPU; KV GiB: their KV cache (beside the resident state).")
    lines += ["", "launch:"]
    for n, cmd in d["stages"][0]["launch"].items():
        lines.append(f"  {n} GPU{'s' if n != '1' else ''}: {cmd}")
    return "\n".join(lines)


MARK_BEGIN = "<!-- dry-run tables: reference-pipeline run --config configs/paper-qwen3-math.toml --dry-run --markdown docs/scale.md -->"
MARK_END = "<!-- end of the dry-run tables -->"


def markdown_tables(d: dict) -> str:
    """The dry run as docs/scale.md shows it: per stage the plan and the peaks, then the 8-GPU breakdown.
    Generated (`--markdown`), never typed: tests/test_scale_dryrun.py checks the doc is current."""
    gpus = list(d["stages"][0]["memory_gib"])
    last = gpus[-1]
    eng = d["engine"]
    m = d["models"]
    cfg_path = Path(d["config"])
    root = Path(__file__).resolve().parents[1]
    shown = cfg_path.resolve().relative_to(root) if cfg_path.resolve().is_relative_to(root) else cfg_path
    out = [f"Generated from `{shown}` (arm `{d['arm']}`): {m['student']['name']} {m['student']['params_b']:.3f}B "
           f"({'tied' if m['student']['tied'] else 'untied'}), {m['teacher']['name']} {m['teacher']['params_b']:.3f}B "
           f"({'tied' if m['teacher']['tied'] else 'untied'}); precision `{eng['precision']}`, launch "
           f"`{eng['accelerate_config']}` ({'FSDP2, sharded' if eng['sharded_states'] else 'DDP, replicated'}), "
           f"`micro_batch` {eng['micro_batch']}, rollout `{eng['rollout']}`.", "",
           "| stage | trains | frozen scorer | params / grads / AdamW / compute | checkpointing | rows per chunk @"
           f"{last} | " + " | ".join(f"{n} GPU{'s' if n != '1' else ''}" for n in gpus)
           + f" | rollout micro-batch @{last} | its KV cache | rollout peak @{last} |",
           "|---|---|---|---|---|---:|" + "---:|" * len(gpus) + "---:|---:|---:|"]
    for s in d["stages"]:
        p = s["plan"]
        dtypes = " / ".join(_dt(p[k]) for k in ("param_dtype", "grad_dtype", "optimizer_state_dtype", "compute_dtype")) \
            if p else "–"
        scorer = (f"{s['frozen']} ({_dt(p['scorer_dtype'])}, {'sharded' if p['scorer_sharded'] else 'replicated'})"
                  if p and s["frozen"] else "–")
        mem = " | ".join(f"{s['memory_gib'][n]:.1f} GiB{'' if s['fits_80gib'][n] else ' (over)'}" for n in gpus)
        r = s["rollout"][last]
        out.append(f"| {s['name']} | {s['model'] if s['trainable'] else '– (sampling)'} | {scorer} | {dtypes} | "
                   f"{('on' if p['checkpointing'] else 'off') if p else '–'} | {s['rows_per_chunk'][last] if p else '–'} | "
                   f"{mem} | {r['micro_batch']} | {r['kv_cache_gib']:.1f} GiB | {r['peak_gib']:.1f} GiB"
                   f"{'' if r['fits_80gib'] else ' (over)'} |")
    keys = ["train_states", "compute_copy", "activations", "logits", "frozen_weights", "frozen_logits"]
    out += ["", f"Training peak on {last} GPUs by component (GiB per GPU):", "",
            "| stage | " + " | ".join(k.replace("_", " ") for k in keys) + " | total |",
            "|---|" + "---:|" * (len(keys) + 1)]
    for s in d["stages"]:
        if not s["plan"]:
            continue
        b = s["memory_breakdown_gib"][last]
        out.append(f"| {s['name']} | " + " | ".join(f"{b[k]:.2f}" if k in b else "–" for k in keys)
                   + f" | {b['total']:.2f} |")
    return "\n".join(out)


def replace_marked(text: str, table: str) -> str:
    """`text` with the block between MARK_BEGIN and MARK_END replaced by `table`."""
    if MARK_BEGIN not in text or MARK_END not in text:
        raise InputError(f"no dry-run block to replace: the document needs the lines {MARK_BEGIN} and {MARK_END}")
    head, rest = text.split(MARK_BEGIN, 1)
    _, tail = rest.split(MARK_END, 1)
    return f"{head}{MARK_BEGIN}\n{table}\n{MARK_END}{tail}"
