"""Optional experiment tracking of reference runs through accelerate's trackers; off by default.

    [engine]
    tracker = "tensorboard"     # an accelerate tracker (TRACKERS); "" (default) = off
    tracker_dir = "tb"          # where file-based trackers write; "" -> <workdir>/tracking

One tracker run per arm, seed and split of teacher labels (the run directory's name). Every stage's
per-step log entry (reward, zero-signal fraction, KLs, loss, lr, grad norm, ...) is logged as
`<stage>/<metric>` at the stage's own step; a stage resumed from its checkpoint replays its stored log;
the final evaluation is logged as `eval/<metric>`. Tracking never changes a number: both fields are
left out of every config hash and of the resume check (reference.config._LOGGING_ONLY).
"""

from __future__ import annotations

import math
from pathlib import Path

from theory.errors import InputError

# accelerate.tracking.LOGGER_TYPE_TO_CLASS names, with the package each needs
TRACKERS: dict[str, str] = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow",
                            "comet_ml": "comet-ml", "aim": "aim", "clearml": "clearml", "dvclive": "dvclive",
                            "swanlab": "swanlab", "trackio": "trackio"}


def check_available(name: str) -> None:
    """One-line InputError naming the install when the tracker's package is missing."""
    import accelerate.utils

    if name not in TRACKERS:
        raise InputError(f"engine.tracker must be one of {', '.join(TRACKERS)} or \"\" (off), got {name!r}")
    if not getattr(accelerate.utils, f"is_{name}_available")():
        raise InputError(f"engine.tracker = {name!r} needs the {TRACKERS[name]} package: "
                         f"pip install {TRACKERS[name]} (or set engine.tracker = \"\")")


def _numbers(entry: dict) -> dict[str, float]:
    out = {}
    for k, v in entry.items():
        if k == "step" or isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if math.isfinite(v):
            out[k] = float(v)
    return out


class RunTracker:
    """Logs a run's stage entries to one accelerate tracker (`tracker`: the GeneralTracker instance)."""

    def __init__(self, tracker):
        self.tracker = tracker

    def log_entry(self, stage: str, step: int, entry: dict) -> None:
        values = {f"{stage}/{k}": v for k, v in _numbers(entry).items()}
        if values:
            self.tracker.log(values, step=int(step))

    def log_stage(self, stage: str, log: list[dict]) -> None:
        for i, entry in enumerate(log):
            self.log_entry(stage, int(entry.get("step", i)) + 1, entry)

    def log_final(self, metrics: dict) -> None:
        values = {f"eval/{k}": v for k, v in _numbers(metrics).items()}
        if values:
            self.tracker.log(values, step=0)

    def finish(self) -> None:
        self.tracker.finish()


def _make(name: str, run_name: str, logging_dir: Path):
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    cls = LOGGER_TYPE_TO_CLASS[name]
    tracker = cls(run_name, logging_dir=str(logging_dir)) if cls.requires_logging_directory else cls(run_name)
    tracker.start()
    return tracker


def open_tracker(cfg, run_name: str, workdir: Path) -> RunTracker | None:
    """The run's tracker, or None when `engine.tracker` is off."""
    name = cfg.engine.tracker
    if not name:
        return None
    check_available(name)
    logging_dir = Path(cfg.engine.tracker_dir) if cfg.engine.tracker_dir else Path(workdir) / "tracking"
    logging_dir.mkdir(parents=True, exist_ok=True)
    return RunTracker(_make(name, run_name, logging_dir))
