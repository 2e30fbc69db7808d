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

Several processes (`accelerate launch`, DDP or FSDP2, `engine`): the weights and the AdamW state go through
torch.distributed.checkpoint (`get_state_dict` / `dcp.save` / `dcp.load` / `set_state_dict`: each rank
writes and reads its own shards), each rank's RNG states, step, tokens and log into `rank<r>.pt`, all in
the temporary directory rank 0 opened, which rank 0 renames into place after a barrier. The directory must
be on a file system every rank sees. A resumed 2-process stage ends as an uninterrupted 2-process one
(tests/test_midstage.py). On TRL's trainers (one process) the directory holds the Trainer's own
checkpoints (`save_steps` = checkpoint_every, the last two kept; `resume_from_checkpoint`) with the stage's
sampling stream, token count and log beside them (reference.trl_backend.train_built): a SIGKILLed GRPO,
FKL or OPD stage resumes bit-identical too. Not wired yet, refused in one line by
reference.stage_runner.stage_watch: TRL under an engine, and the plateau protocol under an engine with
`checkpoint_every` > 0 (its best weights would need the same path; untested).
"""

from __future__ import annotations

from dataclasses import dataclass
import json
from pathlib import Path
import shutil
from typing import Any

import torch

from reference.seeds import rng_state, set_rng_state


@dataclass
class MidStage:
    """A stage's mid-stage checkpoint. Also the stage's watch when the plateau protocol is off: it never
    validates, never stops a stage early, and leaves the weights the stage ended with."""

    directory: Path
    every: int = 0
    engine: Any = None  # reference.engines.Engine: several processes write and read the checkpoint together
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

    def _ranks(self) -> bool:
        return self.engine is not None and self.engine.world_size > 1

    def save(self, step: int, tokens: int, model, opt, log: list[dict], extra: dict | None = None) -> None:
        from reference.checkpoint import atomic_directory
        if self._ranks():
            return self._save_ranks(step, tokens, model, opt, log, extra or {})
        with atomic_directory(self.directory) as tmp:
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "rng": rng_state(),
                        "step": step, "tokens": tokens, "log": list(log), "extra": extra or {}}, tmp / "state.pt")
            (tmp / "meta.json").write_text(json.dumps({"step": step, "every": self.every}))

    def load(self, model, opt) -> dict | None:
        """Restore the weights, optimizer and RNG states of the last checkpoint into `model` and `opt`: the
        checkpoint's dict (step, tokens, log, extra), or None when there is none."""
        if self._ranks():
            return self._load_ranks(model, opt)
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

    def _save_ranks(self, step: int, tokens: int, model, opt, log: list[dict], extra: dict) -> None:
        import contextlib
        import torch.distributed as dist
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict
        from reference.checkpoint import atomic_directory

        main = self.engine.is_main
        with atomic_directory(self.directory) if main else contextlib.nullcontext() as tmp:
            where = [str(tmp) if main else None]
            dist.broadcast_object_list(where, src=0)  # every rank writes into rank 0's temporary directory
            tmp = Path(where[0])
            msd, osd = get_state_dict(model, opt)
            dcp.save({"model": msd, "optimizer": osd}, checkpoint_id=str(tmp))
            torch.save({"rng": rng_state(), "step": step, "tokens": tokens, "log": list(log), "extra": extra},
                       tmp / f"rank{self.engine.rank}.pt")
            if main:
                (tmp / "meta.json").write_text(json.dumps({"step": step, "every": self.every,
                                                           "ranks": self.engine.world_size}))
            dist.barrier()  # every rank's files are in before rank 0 renames the directory into place
        dist.barrier()

    def _load_ranks(self, model, opt) -> dict | None:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        path = self.directory / f"rank{self.engine.rank}.pt"
        if not path.is_file():  # every rank sees the same directory: all resume, or none does
            return None
        st = torch.load(path, weights_only=False)
        msd, osd = get_state_dict(model, opt)  # templates in this run's sharding (AdamW's state initialised)
        state = {"model": msd, "optimizer": osd}
        dcp.load(state, checkpoint_id=str(self.directory))
        set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
        set_rng_state(st["rng"])
        st["log"] = list(st["log"])
        return st

    def discard(self) -> None:
        """Remove the checkpoint once the stage's own checkpoint is written (rank 0 under an engine)."""
        if self.engine is None or self.engine.is_main:
            shutil.rmtree(self.directory, ignore_errors=True)
