"""A run: one execution of an arm at a seed, stored under `workdir/runs/<name>/`.

`manifest.json` holds the config the run started with (a restart with another config refuses and names
the changed fields); `result_<split>.json` holds its `RunResult`. The run's stages are checkpointed
beside it, under `workdir/stages/<key>` (reference.stage_runner), where runs that share a stage prefix
share them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import json
from pathlib import Path

import pandas as pd

from reference.config import Config, diff_fields
from theory.arms import LabelAccount
from theory.errors import InputError


@dataclass(frozen=True)
class RunResult:
    """A finished run: its final metrics on its split, label account, compute and per-stage records."""

    arm: str
    seed: int
    world: str
    split: str
    label_account: LabelAccount
    compute_tokens: int
    metrics: dict[str, float]
    stages: tuple[dict, ...]  # per stage: name, seconds, tokens, steps, curve (val metrics after it), cached
    problems: pd.DataFrame = field(repr=False, compare=False, default=None)

    def to_frame(self) -> pd.DataFrame:
        """Rows in the theory.tables run-table schema (percent metrics in percent)."""
        rows = [{"arm": self.arm, "seed": self.seed, "world": self.world,
                 "teacher_labels": self.label_account.teacher, "student_labels": self.label_account.student,
                 "compute_tokens": self.compute_tokens, "split": self.split, "metric": m, "value": v}
                for m, v in self.metrics.items()]
        return pd.DataFrame(rows)

    def curves_frame(self) -> pd.DataFrame:
        rows = []
        for i, s in enumerate(self.stages):
            for m, v in (s.get("curve") or {}).items():
                rows.append({"arm": self.arm, "seed": self.seed, "world": self.world, "stage_index": i,
                             "stage": s["name"], "model": s["model"], "metric": m, "value": v})
        return pd.DataFrame(rows)

    def to_dict(self) -> dict:
        return {"arm": self.arm, "seed": self.seed, "world": self.world, "split": self.split,
                "label_account": vars(self.label_account), "compute_tokens": self.compute_tokens,
                "metrics": self.metrics, "stages": list(self.stages)}


def check_manifest(run_dir: Path, cfg: Config, ident: dict) -> None:
    """Refuse to resume a run directory that was started with another config; write the manifest of a
    new one."""
    m = run_dir / "manifest.json"
    if m.is_file():
        try:
            old = json.loads(m.read_text())
        except json.JSONDecodeError:
            raise InputError(f"run manifest {str(m)!r} is corrupt; delete the run directory to start over") from None
        changed = diff_fields(old.get("config", {}), cfg.to_dict())
        if changed:
            raise InputError(f"config changed since run {run_dir.name} started (field {changed[0]}"
                             + (f" and {len(changed) - 1} more" if len(changed) > 1 else "")
                             + "); use another --workdir or delete the run directory")
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = m.with_suffix(".tmp")
    tmp.write_text(json.dumps({"config": cfg.to_dict(), "run": ident}, indent=1, default=str))
    tmp.replace(m)


def write_result(res: RunResult, path: Path) -> None:
    """Write `res` to `path` atomically."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(res.to_dict(), indent=1, default=str))
    tmp.replace(path)


def load_result(path: Path) -> RunResult:
    """The result a finished run wrote (every stage marked cached)."""
    try:
        d = json.loads(path.read_text())
        return RunResult(d["arm"], int(d["seed"]), d["world"], d["split"], LabelAccount(**d["label_account"]),
                         int(d["compute_tokens"]), {k: float(v) for k, v in d["metrics"].items()},
                         tuple(dict(s, cached=True) for s in d["stages"]))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise InputError(f"run result {str(path)!r} is corrupt; delete it to re-evaluate") from None
