"""Models and checkpoints: tiny Qwen3 built from a config, committed base assets with a sha256 check,
and atomic per-stage checkpoints keyed by a hash of everything the stage depends on.

A stage checkpoint is a directory written under a temporary name and renamed into place, so a run
killed at any moment leaves either a whole checkpoint or none. `meta.json` records the sha256 of the
weights; a mismatch (corruption) is one clear `InputError` line.
"""

from __future__ import annotations

import contextlib

import hashlib
import json
import os
from pathlib import Path
import shutil
import uuid

import torch
from safetensors.torch import load_file, save_file

from reference.config import ModelConfig
from theory.errors import InputError

ASSETS = Path(__file__).resolve().parent / "assets"
WEIGHTS = "model.safetensors"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tiny_qwen3(mcfg: ModelConfig, vocab_size: int, *, pad_id: int, eos_id: int):
    """A Qwen3ForCausalLM from a tiny spec (no download). Seeded by mcfg.init_seed (local generator)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM
    qcfg = Qwen3Config(vocab_size=vocab_size, hidden_size=mcfg.hidden, num_hidden_layers=mcfg.layers,
                       num_attention_heads=mcfg.heads, num_key_value_heads=mcfg.kv_heads, head_dim=mcfg.head_dim,
                       intermediate_size=mcfg.intermediate, max_position_embeddings=mcfg.max_position,
                       tie_word_embeddings=mcfg.tie_embeddings, pad_token_id=pad_id, eos_token_id=eos_id,
                       bos_token_id=eos_id, use_cache=True)
    state = torch.random.get_rng_state()
    torch.manual_seed(mcfg.init_seed)  # weight init draws from the global RNG; restore it afterwards
    try:
        model = Qwen3ForCausalLM(qcfg)
    finally:
        torch.random.set_rng_state(state)
    model.generation_config.pad_token_id = pad_id
    model.generation_config.eos_token_id = eos_id
    model.generation_config.top_k = 0  # HF's default top_k=50 would silently truncate sampling
    model.generation_config.top_p = 1.0
    return model.to(getattr(torch, mcfg.dtype))


@contextlib.contextmanager
def atomic_directory(directory: Path):
    """Yield a fresh temporary directory beside `directory`; when the block ends without an error it
    replaces `directory` in one rename, otherwise it is removed. A reader sees the old directory or the
    complete new one, never a half-written one."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.with_name(f".{directory.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        yield tmp
        if directory.exists():
            shutil.rmtree(directory)
        tmp.rename(directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_weights(model, directory: Path, meta: dict, state: dict | None = None) -> None:
    """Write weights + meta atomically into `directory` (tmp dir, fsync, rename). `state`: the full
    state dict when the caller gathered it already (a sharded model: `engines.full_state_dict`)."""
    with atomic_directory(directory) as tmp:
        state = model.state_dict() if state is None else state
        state = {k: v.detach().contiguous().clone() for k, v in state.items()}
        save_file(state, str(tmp / WEIGHTS))
        meta = dict(meta, sha256=sha256_file(tmp / WEIGHTS))
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True, default=str))
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())


def read_meta(directory: Path) -> dict:
    p = Path(directory) / "meta.json"
    if not p.is_file():
        raise InputError(f"checkpoint {str(directory)!r} is missing (no meta.json)")
    try:
        return json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InputError(f"checkpoint {str(directory)!r} is corrupt (unreadable meta.json)") from None


def load_weights(model, directory: Path) -> dict:
    """Load weights saved by save_weights into `model`, after checking their sha256. A model sharded
    with FSDP2 loads the same file: every rank reads the full state dict and keeps its shard."""
    directory = Path(directory)
    meta = read_meta(directory)
    w = directory / WEIGHTS
    if not w.is_file():
        raise InputError(f"checkpoint {str(directory)!r} is missing its weights ({WEIGHTS})")
    if sha256_file(w) != meta.get("sha256"):
        raise InputError(f"checkpoint {str(directory)!r} is corrupt (sha256 of {WEIGHTS} does not match meta.json)")
    try:
        state = load_file(str(w))
        from reference.engines import load_full_state_dict
        load_full_state_dict(model, state)
    except Exception as e:  # safetensors / shape errors: one line, never a traceback
        raise InputError(f"checkpoint {str(directory)!r} does not fit the configured model "
                         f"({str(e).splitlines()[0][:160]})") from None
    return meta


def asset_dir(name: str) -> Path:
    return ASSETS / name


def load_asset(model, name: str, expected_spec: dict | None = None) -> dict:
    """Load a committed base checkpoint; refuse one built for a different spec."""
    d = asset_dir(name)
    if not d.is_dir():
        raise InputError(f"base checkpoint {name!r} not found under {ASSETS}; run scripts/pretrain_base.py")
    meta = read_meta(d)
    if expected_spec is not None and meta.get("spec") != expected_spec:
        changed = sorted(k for k in set(expected_spec) | set(meta.get("spec", {}))
                         if expected_spec.get(k) != meta.get("spec", {}).get(k))
        raise InputError(f"base checkpoint {name!r} was built for another spec (differs in: "
                         f"{', '.join(changed)}); rerun scripts/pretrain_base.py")
    return load_weights(model, d)


@contextlib.contextmanager
def claim(directory: Path, enabled: bool = True):
    """Hold an exclusive lock on the stage checkpoint `directory` while it is checked and written, so
    two processes that need the same stage (the parallel demo, a resumed worker) train it once: the
    second waits, then finds the checkpoint. The lock file is `<parent>.locks/<name>.lock` (so listing the
    checkpoints lists checkpoints only); POSIX only (elsewhere, and for ranks that do not write, a no-op)."""
    if not enabled:
        yield
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    directory = Path(directory)
    locks = directory.parent.with_name(directory.parent.name + ".locks")  # beside, not among, the checkpoints
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"{directory.name}.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
