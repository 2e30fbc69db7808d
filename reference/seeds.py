"""Seeds from names: every seed the reference derives (a stage's, a validation point's, a pilot part's,
the gate's) hashes a path-like name, so a number depends on what ran, never on what ran before it."""

from __future__ import annotations

from contextlib import contextmanager
import hashlib


def seed_from(*parts) -> int:
    """A 32-bit seed: the first 8 hex digits of the sha256 of `parts` joined with "/"."""
    return int(hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:8], 16)


@contextmanager
def seeded(device: str, seed: int):
    """A forked torch RNG seeded with `seed` (the CPU's, and this process's GPU's when `device` is CUDA):
    the caller's RNG state is left as it was."""
    import torch

    devices = [torch.cuda.current_device()] if device.startswith("cuda") and torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _cuda() -> bool:
    """Whether this process draws on a CUDA device (a hook the CPU tests replace)."""
    import torch
    return torch.cuda.is_available()


def rng_state():
    """This process's torch RNG: (the CPU generator's state, the current CUDA device's or None)."""
    import torch
    return torch.get_rng_state(), (torch.cuda.get_rng_state() if _cuda() else None)


def set_rng_state(state) -> None:
    """Put back what `rng_state` returned (a bare CPU state, as older checkpoints hold, is accepted)."""
    import torch
    cpu, cuda = state if isinstance(state, tuple) else (state, None)
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state(cuda)
