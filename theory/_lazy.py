"""A module imported on first attribute access: keeps pandas and scipy.optimize out of the planning
path (`budget-planner plan` with a cached fit needs neither; importing them costs ~0.5 s of a 1 s budget)."""

from __future__ import annotations

import importlib


class LazyModule:
    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr):
        return getattr(importlib.import_module(self._name), attr)
