"""Adapter: the reference pipeline's arms (reference.api.run_arm / PARAM_SPACE) behind tuning's interface.

reference.api imports torch, so it is imported only when an arm is run or its space is read: the rest
of tuning (reports, storages, the synthetic arm) works without torch installed.
"""

from __future__ import annotations

from collections.abc import Mapping
import importlib
import hashlib
import json
import os
from pathlib import Path

from theory.errors import InputError
from tuning.interface import ArmResult, Budget, Report


class ReferenceArms:
    def __init__(self, config: str | None = None, workdir: str | None = None, calls_log: str | None = None,
                 api_module: str = "reference.api"):
        self.config = config
        self.workdir = workdir
        self.calls_log = calls_log
        self.api_module = api_module
        self._api = None

    def api(self):
        if self._api is None:
            try:
                self._api = importlib.import_module(self.api_module)
            except ImportError as e:
                raise InputError(f"arm source 'reference' needs {self.api_module} (pip install -e '.[reference]'): {e}") from None
        return self._api

    def param_space(self) -> Mapping[str, Mapping]:
        # `param_space(config)` adds each name's default from the study's config (enqueued as slot 0)
        fn = getattr(self.api(), "param_space", None)
        space = fn(self.config) if callable(fn) else getattr(self.api(), "PARAM_SPACE", None)
        if not isinstance(space, Mapping):
            raise InputError(f"{self.api_module}.PARAM_SPACE is missing or not a mapping")
        return space

    def scale_compute(self, arm: str, params: dict, factor: float) -> dict:
        """The arm's stage lengths stretched by `factor` (reference.api.scale_compute)."""
        kwargs = {} if self.config is None else {"config": self.config}
        return self.api().scale_compute(arm, dict(params), factor, **kwargs)

    def stops_at_plateau(self) -> bool:
        """Whether the config runs the plateau protocol: every stage already stops at its validation
        plateau, so stretching its caps buys no compute and the compute-matched evaluation is skipped
        (equal compute is read off the evaluation runs' validation curves instead: reference.frontier)."""
        from reference.config import load_config

        return bool(load_config(self.config or self.api().DEFAULT_CONFIG).plateau.enabled)

    def run_workdir(self, arm: str, params: Mapping) -> Path | None:
        """Where a run of `arm` with `params` keeps its stages and results when the source has a workdir:
        one directory per (arm, params), so trials and evaluations that share a seed never meet in one run
        directory (a run directory is named by arm, seed and labels), and a rerun of the same configuration
        resumes or reads back its finished run (the plateau fairness study reads the evaluations' curves)."""
        if self.workdir is None:
            return None
        key = json.dumps(dict(params), sort_keys=True, default=str)
        return Path(self.workdir) / f"{arm}-{hashlib.sha1(key.encode()).hexdigest()[:12]}"

    def default_labels(self) -> int | None:
        fn = getattr(self.api(), "default_labels", None)
        return int(fn(self.config)) if callable(fn) else None

    def __call__(self, arm: str, *, params: dict, budget: Budget, seed: int, split: str,
                 report: Report | None = None) -> ArmResult:
        if self.calls_log:
            with open(self.calls_log, "a") as f:
                f.write(json.dumps({"arm": arm, "split": split, "seed": seed, "pid": os.getpid()}) + "\n")
        kwargs = dict(params=dict(params), labels=budget.labels, seed=seed, teacher_labels=budget.teacher_labels,
                      split=split, report=report)
        if self.config is not None:
            kwargs["config"] = self.config
        if self.workdir is not None:
            kwargs["workdir"] = self.run_workdir(arm, params)
        res = self.api().run_arm(arm, **kwargs)
        return ArmResult(accuracy=float(res.accuracy), compute_tokens=int(res.compute_tokens), split=split,
                         metrics={k: float(v) for k, v in dict(getattr(res, "metrics", {}) or {}).items()
                                  if isinstance(v, (int, float))})
