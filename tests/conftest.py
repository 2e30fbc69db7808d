"""Helpers shared by the reference's tests (pytest puts tests/ on sys.path; the scripts that the
multi-process tests launch put it there themselves and import from here too)."""

from __future__ import annotations

import json
from pathlib import Path

from reference.config import load_config

# every stage a couple of steps: each arm runs in about a second on one core
TINY = {"world.labels": 16, "world.val": 24, "world.test": 24, "world.unlabeled": 64,
        "grpo.prompts_per_step": 4, "grpo.group_size": 4, "grpo.epochs": 0.5, "grpo.max_new_tokens": 32,
        "fkl.steps": 2, "fkl.prompts_per_step": 4, "fkl.max_new_tokens": 32,
        "opd.steps": 2, "opd.prompts_per_step": 4, "opd.max_new_tokens": 32,
        "eval.k": 2, "eval.curve_problems": 8, "eval.max_new_tokens": 32, "eval.batch": 64}


def tiny_config(**extra):
    """toy_short shrunk by TINY (and `extra` overrides, dotted field names)."""
    return load_config("toy_short").override({**TINY, **extra})


def write_config(cfg, path: Path) -> Path:
    """`cfg` as a TOML file (JSON scalars are valid TOML values), for tests that go through the CLI."""
    lines = []
    for section, values in cfg.to_dict().items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def stage_checkpoints(workdir: Path) -> dict[str, tuple[dict, dict]]:
    """stage name -> (weights, meta) of every finished stage checkpoint under `workdir` (mid-stage
    `.partial` and temporary directories left out)."""
    from safetensors.torch import load_file
    out = {}
    for d in (Path(workdir) / "stages").iterdir():
        if not d.name.startswith(".") and (d / "meta.json").is_file():
            meta = json.loads((d / "meta.json").read_text())
            out[meta["stage"]] = (load_file(str(d / "model.safetensors")), meta)
    return out
