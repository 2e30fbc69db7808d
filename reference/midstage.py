"""Mid-stage checkpoints (issue 24 item 6): one mechanism for a crash during a long stage and for the
plateau protocol's best checkpoint (reference.plateau.Watch keeps its state in the same files).

`MidStage(directory, every)` writes `directory` (`.<stage key>.partial` beside the stage's checkpoint)
after every `every` optimizer steps (`engine.checkpoint_every`; 0: only when the plateau protocol asks,
at its validation points): the weights, the optimizer state, the torch RNG states (the CPU's and, on a
GPU, the CUDA device's: the sampler's stream), the step, the tokens and the log so far, and whatever the
caller adds (`extra`: the plateau watch's best weights and validation points). The learning rate is a
function of the step (`stages.lr_factor`) and the data order is redrawn from its seed and skipped up to
the step, so nothing else holds state. The write is atomic (`checkpoint.atomic_directory`): a kill during
it leaves the previous checkpoint. A stage killed part-way resumes from the last one and ends with the
numbers of an uninterrupted run, bit for bit in one process (tests/test_midstage.py kills one with
SIGKILL). The directory goes once the stage's own checkpoint is written.

Scope: one process with the reference loop. Under an engine (several processes) a sharded optimizer
state needs torch.distributed.checkpoint, and TRL's trainers their own `save_steps` / resume: both are
refused in one line until they are wired (reference.stage_runner.stage_watch).
"""

from __future__ import annotations

from dataclasses import dataclass
import json
from pathlib import Path
import shutil

import torch

from reference.seeds import rng_state, set_rng_state


@dataclass
class MidStage:
    """A stage's mid-stage checkpoint. Also the stage's watch when the plateau protocol is off: it never
    validates, never stops a stage early, and leaves the weights the stage ended with."""

    directory: Path
    every: int = 0
    stop_step: int | None = None  # the watch interface: a plain checkpointer never stops a stage

    def due(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0

    def observe(self, step: int, tokens: int, model, opt, log: list[dict]) -> bool:
        """After `step` steps (train_loop calls it when `due`, and once at step 0): write the checkpoint."""
        if step > 0:
            self.save(step, tokens, model, opt, log)
        return False

    def resume(self, model, opt) -> tuple[int, int, list[dict]] | None:
        st = self.load(model, opt)
        return None if st is None else (st["step"], st["tokens"], st["log"])

    def finish(self, model) -> None:
        """Nothing to do: the stage hands on the weights it ended with."""

    def record(self, tokens: int) -> None:
        return None

    def save(self, step: int, tokens: int, model, opt, log: list[dict], extra: dict | None = None) -> None:
        from reference.checkpoint import atomic_directory
        with atomic_directory(self.directory) as tmp:
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "rng": rng_state(),
                        "step": step, "tokens": tokens, "log": list(log), "extra": extra or {}}, tmp / "state.pt")
            (tmp / "meta.json").write_text(json.dumps({"step": step, "every": self.every}))

    def load(self, model, opt) -> dict | None:
        """Restore the weights, optimizer and RNG states of the last checkpoint into `model` and `opt`: the
        checkpoint's dict (step, tokens, log, extra), or None when there is none."""
        path = self.directory / "state.pt"
        if not path.is_file():
            return None
        st = torch.load(path, weights_only=False)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        set_rng_state(st["rng"])
        st["log"] = list(st["log"])
        st.setdefault("extra", {})
        return st

    def discard(self) -> None:
        """Remove the checkpoint once the stage's own checkpoint is written."""
        shutil.rmtree(self.directory, ignore_errors=True)
