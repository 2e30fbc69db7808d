"""Helpers for tests of the harness and of user arms: a synthetic matched study in a few lines."""

from __future__ import annotations

from tuning.harness import create_or_check
from tuning.interface import ArmSource
from tuning.sources import load_arm_source
from tuning.protocol import Protocol, build_protocol
from tuning.storage import StorageHandle, open_storage


def synthetic_study(url: str, name: str, *, arms=("direct_grpo", "rl_teacher_bridge"), trials: int = 4,
                    options: dict | None = None, heartbeat_s: int = 1, grace_s: int = 3,
                    **rules) -> tuple[StorageHandle, Protocol, ArmSource]:
    """Create (or join) a matched study of synthetic arms; `rules` go to build_protocol."""
    options = dict(options or {})
    source = load_arm_source("synthetic", options)
    rules.setdefault("labels", 64)
    rules.setdefault("pruner", "none")
    protocol = build_protocol(source, list(arms), trials=trials, arm_options=options, **rules)
    handle = open_storage(url, heartbeat_s=heartbeat_s, grace_s=grace_s)
    create_or_check(handle, name, protocol)
    return handle, protocol, source
