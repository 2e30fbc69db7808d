"""Assembly: the models, the world and the engine a config describes, built the one way every entry
point builds them (the pipeline, the pilot, the gate, the export, scripts).

A tiny model spec builds the toy Qwen3 from its committed base asset (its spec checked by
`asset_spec`); a `path` loads a Hugging Face checkpoint (reference.models). The world is the toy
world, or a dataset world (reference.data) in the same shape. Under `engine.launcher = "accelerate"`
one accelerate engine serves every stage of the process.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from reference import checkpoint as ckpt
from reference.config import Config
from reference.rollout import HFRollout
from reference.stages import StageContext
from reference.world import World, make_world
from theory.arms import STUDENT, TEACHER
from theory.errors import InputError


@dataclass
class Models:
    """The models an arm works with, their tokenizer, and what the stages need to sample and score."""

    student: torch.nn.Module
    teacher: torch.nn.Module | None
    ctx: StageContext
    tokenizer: object

    def for_role(self, role: str) -> torch.nn.Module | None:
        """The model that plays `role` in the stage table (theory.arms.STAGES: "teacher" or "student")."""
        return {TEACHER: self.teacher, STUDENT: self.student}[role]


def build_world(cfg: Config, tokenizer=None) -> World:
    """The config's world: the toy world, or problems from the hub / JSONL / Parquet in its shape."""
    if cfg.world.kind == "toy":
        return make_world(cfg.world)
    from reference import data  # SCALE: hub / JSONL / Parquet problems in the same World shape
    return data.load_world(cfg.world, tokenizer)


def engine_for(cfg: Config):
    """The accelerate engine when `engine.launcher = "accelerate"` (its launch config picks DDP / FSDP2 /
    ZeRO-3), None for one plain process (the toy world; the stages then run exactly as before)."""
    if cfg.engine.launcher != "accelerate":
        return None
    from reference.engines import make_engine
    return make_engine(cpu=cfg.engine.device == "cpu")


def build_models(cfg: Config, *, need_teacher: bool, engine=None) -> Models:
    """The student (and the teacher when `need_teacher`) on this process's device, with the sampler and
    scorer the stages use; `engine` from `engine_for`."""
    from reference.rewards import is_compliant, score_batch
    device = cfg.engine.device if engine is None else engine.device  # under accelerate: this rank's GPU
    if cfg.student.is_tiny:
        from reference.tokenizer import toy_tokenizer
        tok = toy_tokenizer()

        def make(mcfg, role):
            m = ckpt.tiny_qwen3(mcfg, len(tok), pad_id=tok.pad_token_id, eos_id=tok.eos_token_id)
            if mcfg.asset:
                ckpt.load_asset(m, mcfg.asset, expected_spec=asset_spec(mcfg))
            return m.to(device)
        vocab = len(tok)
    else:
        from reference import models as hf
        tok = hf.load_tokenizer(cfg.student.path)
        if need_teacher:
            if cfg.teacher.is_tiny:
                raise InputError("teacher is a tiny spec but student has a path: give both a path (one tokenizer)")
            hf.check_same_tokenizer(hf.load_tokenizer(cfg.teacher.path), tok)

        def make(mcfg, role):
            # gradient checkpointing and the fp32 master copy are set when a stage trains the model, for either
            # role (reference.stage_plan)
            return hf.load_causal_lm(mcfg.path, dtype=mcfg.dtype, device=device)
        vocab = None
    student = make(cfg.student, STUDENT)
    teacher = make(cfg.teacher, TEACHER) if need_teacher else None
    if vocab is None:
        from reference import models as hf
        vocab = hf.logit_vocab_size(tok, student.config)
    if cfg.engine.rollout == "vllm":
        from reference.rollout_vllm import VLLMRollout  # SCALE, optional extra
        rollout = VLLMRollout(tok, cfg)
    else:
        rollout = HFRollout(tok, static_cache=cfg.engine.static_cache, micro_batch=cfg.engine.rollout_micro_batch,
                            kv_cache_gib=cfg.engine.kv_cache_gib, lean=cfg.engine.rollout == "lean")
    ctx = StageContext(rollout=rollout, vocab_size=vocab, eos_id=tok.eos_token_id,
                       score_batch=lambda c, g: score_batch(c, g), is_compliant=is_compliant,
                       engine=engine, micro_batch=cfg.engine.micro_batch)
    return Models(student, teacher, ctx, tok)


def asset_spec(mcfg) -> dict:
    """The ModelConfig fields a base checkpoint depends on (architecture + pre-training recipe)."""
    keys = ("hidden", "layers", "heads", "kv_heads", "head_dim", "intermediate", "max_position", "tie_embeddings",
            "style", "protocol_break", "pretrain_steps", "pretrain_lr", "pretrain_batch", "init_seed")
    spec = {k: getattr(mcfg, k) for k in keys}
    if mcfg.style == "mix":  # only mixed-style assets carry it: older assets' specs stay as committed
        spec["steps_share"] = mcfg.steps_share
    if mcfg.step_drills:
        spec["step_drills"] = mcfg.step_drills
    return spec
