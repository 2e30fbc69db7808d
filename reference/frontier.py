"""The label x compute plane (issue 22, item 2): accuracy against training tokens, read off the plateau
protocol's validation curves.

A run under the protocol records, per stage, its validation curve against the stage's training tokens
(reference.plateau). `run_curve` lays the student's points on the run's cumulative training tokens:
every stage before a point counts with the tokens it spent (patience steps included: they were paid),
the teacher's stages too, so an arm that trains a teacher first starts its student curve where the
teacher's spend ends. `frontier` gives, per arm and token budget C, the score of the best checkpoint
an arm had by C (what early stopping selects with budget C), averaged over seeds with a bootstrap 95%
interval: it never falls as C grows. `compute_matched` reads it at given budgets. These are validation
scores (V problems); the test split is read once per run, at the selected checkpoint, and reported
label-matched at plateau.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from reference.runs import RunResult
from theory.arms import STUDENT
from theory.stats import mean_ci

CURVE_COLUMNS = ["arm", "seed", "stage", "step", "tokens", "accuracy"]


def run_curve(res: RunResult) -> pd.DataFrame:
    """The student's validation points of one run against its cumulative training tokens."""
    rows, spent = [], 0
    for s in res.stages:
        p = s.get("plateau") or {}
        if not p.get("validated"):
            spent += int(s.get("tokens", 0))
            continue
        if s["model"] == STUDENT:
            rows += [{"arm": res.arm, "seed": res.seed, "stage": s["name"], "step": c["step"],
                      "tokens": spent + int(c["tokens"]), "accuracy": float(c["accuracy"])} for c in p["curve"]]
        spent += int(p["train_tokens"])
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


def best_by(curve: pd.DataFrame, budgets: Iterable[float]) -> np.ndarray:
    """One run's best validation score among its points at or below each budget (NaN before its first)."""
    t, a = curve["tokens"].to_numpy(dtype=float), curve["accuracy"].to_numpy(dtype=float)
    order = np.argsort(t, kind="stable")
    t, running = t[order], np.maximum.accumulate(a[order])
    out = []
    for b in budgets:
        i = np.searchsorted(t, b, side="right")
        out.append(running[i - 1] if i else np.nan)
    return np.asarray(out)


def frontier(curves: pd.DataFrame, budgets: Iterable[float] | None = None, *, seed: int = 0) -> pd.DataFrame:
    """Per arm and budget: mean over seeds of each run's best score by that budget, a bootstrap 95%
    interval, and how many seeds had a point by then. The mean is given only once every seed of the arm
    has a point (NaN before): a mean over the seeds that happen to have one by then (a bridge's student
    starts after its teacher's GRPO, whose length differs by seed) would fall as later seeds join, and a
    frontier never falls. `budgets` default: 12 log-spaced levels over the tokens the curves span."""
    if budgets is None:
        t = curves["tokens"].to_numpy(dtype=float)
        budgets = np.unique(np.geomspace(max(t.min(), 1.0), t.max(), 12).round())
    budgets = list(budgets)
    rng = np.random.default_rng(seed)
    rows = []
    for arm, per_arm in curves.groupby("arm", sort=False):
        by_seed = np.stack([best_by(c, budgets) for _, c in per_arm.groupby("seed")])
        for j, b in enumerate(budgets):
            x = by_seed[:, j][~np.isnan(by_seed[:, j])]  # the seeds with a point by this budget
            ci = mean_ci(x, rng) if len(x) == len(by_seed) else None
            rows.append({"arm": arm, "tokens": float(b), "accuracy": ci.estimate if ci else np.nan,
                         "lo": ci.low if ci else np.nan, "hi": ci.high if ci else np.nan, "seeds": int(len(x))})
    return pd.DataFrame(rows, columns=["arm", "tokens", "accuracy", "lo", "hi", "seeds"])


def compute_matched(curves: pd.DataFrame, levels: Iterable[float], *, seed: int = 0) -> pd.DataFrame:
    """The frontier read at the given token budgets (equal compute for every arm)."""
    return frontier(curves, levels, seed=seed)


def draw_frontier(ax, front: pd.DataFrame, *, ms: float = 4, lw: float = 1.6) -> None:
    """One line (mean) and band (95% interval) per arm of a `frontier` table, on a matplotlib axis."""
    for arm, g in front.groupby("arm", sort=False):
        g = g.dropna(subset=["accuracy"])
        (line,) = ax.plot(g["tokens"], g["accuracy"], marker="o", ms=ms, lw=lw, label=arm)
        ax.fill_between(g["tokens"], g["lo"], g["hi"], color=line.get_color(), alpha=0.15, lw=0)


def plot_frontier(front: pd.DataFrame, path: str | Path | None = None, *, title: str = ""):
    """Accuracy against training tokens (log scale), one line and band per arm."""
    import matplotlib
    if path is not None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    draw_frontier(ax, front)
    ax.set(xscale="log", xlabel="training tokens (cumulative, every stage)",
           ylabel="validation accuracy of the best checkpoint by then (%)", title=title)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
        plt.close(fig)
    return fig
