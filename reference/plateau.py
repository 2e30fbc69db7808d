"""The plateau protocol (issue 22): every training stage trains until its validation score stops rising.

A stage under the protocol runs up to its configured length, now a *cap*, and validates the model it
trains before its first step (step 0: a stage that only makes the model worse returns its input, as the
optional stage-3 GRPO did on the first cost run) and every `plateau.every` of the cap: avg@k (`plateau.k`
samples per problem at [eval]'s sampling) on the first `plateau.problems` validation problems (V, the same set for every arm and stage, counted in
the label account: reports give N + V). Every stage selects on the validation score of the model it
trains: teacher GRPO on the teacher's, student GRPO, the FKL warmup, OPD and the replay control on the
student's. A validation pass samples on a forked RNG seeded from its stage and step, so it never moves
the training stream: a run's first t steps are the same whatever its cap and its validation schedule
(with `warmup_steps` and a constant schedule, the learning rate too).

Standard error. Two validation points score the same V problems, so their difference is paired: with
d_i the difference of problem i's k-sample means, SE = sd(d) / sqrt(V). It is the standard error of the
improvement, which is what a stopping rule compares (a level's SE over problems would include how hard
the problems are, which cancels in a difference, and would call plateaus far too early).

Plateau. At a validation point after t steps, the curve's level over the last `window` of the steps
(the mean, per problem, of the points after (1 - window) t) is compared with its level over the window
before it (the points in ((1 - 2 window) t, (1 - window) t]). The stage has reached its plateau when the
gain is at most `tolerance` paired SE (each window needs two points). It stops there once min_fraction of
the cap ran (unless `plateau.stop = false`, as a pilot's curves run: reference.pilot_curves, or the stage is
named in `plateau.run_to_cap`, for a curve that rises too slowly for the window test on V problems to see);
otherwise at the cap, reporting whether it got there. A best within the last 10% of the cap
means the cap was too small. The stage ends holding its best checkpoint's weights.
Why window levels and not "the best did not improve over the window" (the issue's first wording, the
first version here): the best of ~10 noisy points is biased upward (the same weights scored 25.4 as one
stage's best point and 18.8 as the next stage's start), so a best-vs-best test stopped the bridge's FKL and
OPD at their first allowed step while their whole-cap curves still rose (OPD 31.1 → 35.5); a window mean
averages several points. On the check seeds' whole-cap curves (docs/results/plateau_stopping.csv) the
window rule selects the whole-cap best on direct GRPO (two seeds), teacher GRPO and FKL, and OPD's
step 150 (34.0 vs its whole-cap 35.5); docs/log.md, 2026-12-07.

Mid-stage checkpoints (reference.midstage, the one mechanism the real-scale issue also uses): at every
validation point, and every `engine.checkpoint_every` steps, the watch writes `<stage dir>.partial/` with
its own state beside the weights, optimizer and RNG states: the best weights, the validation points, the
validation tokens and the stopping step. A killed stage resumes from there with the numbers of an
uninterrupted run; the directory goes once the stage's checkpoint is written. One process only for now.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import math
from typing import Callable

import numpy as np
import torch

from reference.config import PlateauConfig
from reference.midstage import MidStage

# (model, tag) -> per-problem accuracy in [0, 1] (k-sample means) and generated tokens
Score = Callable[[torch.nn.Module, str], tuple[np.ndarray, int]]


@dataclass
class Point:
    """One validation pass: after `step` optimizer steps and `tokens` training tokens."""

    step: int
    tokens: int
    per_problem: np.ndarray  # k-sample mean accuracy per validation problem, in [0, 1]

    @property
    def score(self) -> float:  # percent, as every accuracy of the project
        return 100.0 * float(self.per_problem.mean())


def paired_se(a: np.ndarray, b: np.ndarray) -> float:
    """Standard error (percent) of mean(a) - mean(b) for two scores of the same problems."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if len(d) < 2:
        return float("inf")
    return 100.0 * float(d.std(ddof=1)) / math.sqrt(len(d))


def best_index(points: list[Point]) -> int:
    """Index of the first highest-scoring point."""
    return max(range(len(points)), key=lambda i: (points[i].score, -i))


@dataclass(frozen=True)
class Status:
    """The plateau test at the last point: the curve's level over the last window against the window
    before it (means of their points' per-problem scores), and the paired SE of that gain."""

    reached: bool
    gain: float  # percent
    se: float  # paired SE of the gain, percent


def status(points: list[Point], cfg: PlateauConfig) -> Status:
    """Whether the curve's level over the last `window` of the steps run rose by no more than `tolerance`
    paired SE above its level over the `window` before (each level: the mean of the points in it, per
    problem; at least two points in each window, else not yet)."""
    t = points[-1].step
    last = [p for p in points if p.step > (1.0 - cfg.window) * t]
    before = [p for p in points if (1.0 - 2 * cfg.window) * t < p.step <= (1.0 - cfg.window) * t]
    if len(last) < 2 or len(before) < 2:  # too few points to tell
        return Status(False, float("nan"), float("nan"))
    a = np.mean([p.per_problem for p in last], axis=0)
    b = np.mean([p.per_problem for p in before], axis=0)
    gain = 100.0 * float(np.mean(a - b))
    se = paired_se(a, b)
    return Status(gain <= cfg.tolerance * se, gain, se)


def stops(points: list[Point], cfg: PlateauConfig, cap: int) -> bool:
    """Whether a stage with `cap` steps stops at its last point: before the cap, after `min_fraction` of
    it, at its plateau."""
    t = points[-1].step
    return cfg.min_fraction * cap <= t < cap and status(points, cfg).reached


def schedule(cap: int, every: float) -> list[int]:
    """The steps after which a stage with `cap` steps validates: every ceil(every * cap) steps, and the cap."""
    gap = max(1, math.ceil(every * cap))
    return sorted(set(range(gap, cap, gap)) | {cap}) if cap > 0 else []


@dataclass
class Watch:
    """What one stage's plateau protocol holds while it trains: the validation points, the best weights,
    and its mid-stage checkpoint (`partial`; None: none written)."""

    cfg: PlateauConfig
    cap: int
    score: Score
    tag: str
    partial: MidStage | None = None
    to_cap: bool = False  # plateau.run_to_cap names this stage: never stop early
    points: list[Point] = field(default_factory=list)
    val_tokens: int = 0
    best_state: dict | None = None
    stop_step: int | None = None
    _due: set = field(init=False)

    def __post_init__(self) -> None:
        self._due = set(schedule(self.cap, self.cfg.every))

    def due(self, step: int) -> bool:
        return step in self._due or (self.partial is not None and self.partial.due(step))

    def observe(self, step: int, tokens: int, model, opt, log: list[dict]) -> bool:
        """After `step` steps: validate when the schedule says so (and at step 0), keeping the best weights;
        write the mid-stage checkpoint. True: stop."""
        stop = False
        if step == 0 or step in self._due:
            per_problem, gen = self.score(model, f"{self.tag}/{step}")
            self.val_tokens += gen
            self.points.append(Point(step, tokens, np.asarray(per_problem, dtype=float)))
            if best_index(self.points) == len(self.points) - 1:
                self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            # stop = false, or a stage plateau.run_to_cap names: the whole capped curve
            stop = self.cfg.stop and not self.to_cap and stops(self.points, self.cfg, self.cap)
            if stop:
                self.stop_step = step
        if self.partial is not None:
            self.partial.save(step, tokens, model, opt, log, extra={
                "best": self.best_state, "val_tokens": self.val_tokens, "stop_step": self.stop_step,
                "points": [(p.step, p.tokens, p.per_problem.tolist()) for p in self.points]})
        return stop

    def finish(self, model) -> None:
        """Load the best checkpoint's weights into `model`."""
        if self.best_state is not None:
            model.load_state_dict(self.best_state)

    def record(self, tokens: int) -> dict:
        """The stage's plateau record: reached or not, steps and tokens to the best checkpoint, tokens spent
        (training `tokens` plus the validation passes' generated tokens), and the validation curve."""
        if not self.points:
            return {"protocol": "plateau", "cap": self.cap, "validated": False}
        b = best_index(self.points)
        st = status(self.points, self.cfg)
        best, last = self.points[b], self.points[-1]
        why = ("stopped: no gain beyond the tolerance over the window" if self.stop_step is not None
               else "ran to the cap and reached its plateau" if st.reached
               else "ran to the cap still improving (raise the cap)")
        return {"protocol": "plateau", "validated": True, "cap": self.cap, "steps_run": last.step, "reached": st.reached,
                "stopped_early": self.stop_step is not None, "why": why, "run_to_cap": self.to_cap,
                "best_step": best.step, "best_tokens": best.tokens, "best_score": best.score,
                "window_gain": st.gain, "window_se": st.se,
                "cap_too_small": best.step >= 0.9 * self.cap,
                "train_tokens": tokens, "val_tokens": self.val_tokens, "tokens_spent": tokens + self.val_tokens,
                "validation_problems": len(best.per_problem), "k": self.cfg.k,
                "curve": [{"step": p.step, "tokens": p.tokens, "accuracy": p.score} for p in self.points]}

    def resume(self, model, opt) -> tuple[int, int, list[dict]] | None:
        """Restore the mid-stage checkpoint, if any: (steps done, tokens, log); None to start fresh."""
        st = self.partial.load(model, opt) if self.partial is not None else None
        if st is None:
            return None
        x = st["extra"] or st  # a checkpoint written before reference.midstage kept the watch's state at the top
        self.best_state, self.val_tokens, self.stop_step = x["best"], x["val_tokens"], x["stop_step"]
        self.points = [Point(s, t, np.asarray(pp, dtype=float)) for s, t, pp in x["points"]]
        return st["step"], st["tokens"], st["log"]

    def discard(self) -> None:
        """Remove the mid-stage checkpoint once the stage's own checkpoint is written."""
        if self.partial is not None:
            self.partial.discard()
