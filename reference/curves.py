"""Training curves: the validation points a run records while it trains (`CurveRecorder`), per-step
curves of a finished run read back from its stage checkpoints, and the figures of
notebooks/03_ablation_demo.ipynb. Nothing here changes a number: every per-step value was logged by
`reference.stages` while the run trained and stored in `workdir/stages/<key>/meta.json` ("log"), and a
validation point samples on a forked RNG.

What each stage logs per step (one rollout batch each):
  teacher_grpo / student_grpo  reward (mean of the group rollouts' 0/1 rewards), zero_signal_fraction
                               (share of groups whose G rewards are all equal: no gradient), compliance
                               (share of rollouts in the verifiable `A:<int>` format)
  fkl_warmup                   forward_kl: KL(p_T || p_S) per token on teacher samples (the loss)
  opd, replay_opd              kl_to_teacher: KL(p_S || p_T) per token on student samples (the loss),
                               compliance of the student's samples
KL to the teacher is not measured inside GRPO stages (GRPO never runs the teacher).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from reference import checkpoint as ckpt
from reference.assemble import Models
from reference.config import Config
from reference.evaluate import evaluate
from reference.runs import RunResult
from reference.seeds import seed_from
from reference.stage_runner import Hooks, stage_key
from reference.world import World
from theory.arms import STAGES, STUDENT, Arm, Stage, get_arm, stage_labels
from theory.errors import InputError

# metric -> axis label; the order is the row order of `plot_stage_curves`
STEP_METRICS = {
    "reward": "rollout reward (mean)",
    "zero_signal_fraction": "zero-signal fraction\n(groups with all-equal rewards)",
    "kl": "KL to teacher (nats/token)",
    "compliance": "rollout compliance (share)",
}
# the two stages that measure the student-teacher KL measure different directions on different samples
KL_SOURCES = {"forward_kl": "forward KL(T||S), teacher samples", "kl_to_teacher": "reverse KL(S||T), student samples"}
STAGE_ORDER = [s.value for s in STAGES]  # the table's order: stage 3 and its replay control last


class CurveRecorder:
    """Validation points of a run: one after every stage (`eval.curve_problems` problems), and inside a
    student stage every `eval.curve_every` steps; `report(step, accuracy)` sees the student's against
    its training steps so far (monotone, for a pruner)."""

    def __init__(self, cfg: Config, world: World, models: Models, report: Callable[[int, float], None] | None):
        self.cfg, self.models, self.report = cfg, models, report
        self.problems = world.val[: cfg.eval.curve_problems]
        self.done_steps = 0

    def point(self, model, tag: str) -> dict:
        """The validation metrics of `model`, sampled on an RNG seeded from `tag`."""
        # forked RNG: a validation point never changes the training stream (eval is not in the stage key)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed_from(f"curve/{tag}"))
            return evaluate(model, self.problems, self.models.ctx, self.cfg.eval, extras=False).metrics

    def hooks(self, stage: Stage, key: str, **extra) -> Hooks:
        """The `run_stage` hooks of `stage` (`extra`: the bar and tracker hooks): the inner points of a
        student stage, and the stage's record."""
        trains, inner, every = STAGES[stage].trains, [], self.cfg.eval.curve_every

        def on_step(step: int, total: int) -> None:
            if every and trains == STUDENT and step % every == 0 and step < total:
                point = self.point(self.models.student, f"{key}/{step}")
                inner.append({"step": step, "accuracy": point["accuracy"], "compliance": point["compliance"]})
                if self.report is not None:
                    self.report(self.done_steps + step, float(point["accuracy"]))

        def describe(model, result) -> dict:
            return {"name": stage.value, "model": trains, "seconds": result.seconds, "tokens": result.tokens,
                    "steps": result.steps, "last": result.log[-1] if result.log else {},
                    "curve": self.point(model, key), "inner_curve": inner,
                    **({"plateau": result.plateau} if result.plateau is not None else {})}
        return Hooks(describe, on_step=on_step, **extra)

    def stage_done(self, stage: Stage, info: dict) -> None:
        """Count a finished student stage's steps and report its end point."""
        if STAGES[stage].trains == STUDENT:
            self.done_steps += int(info["steps"])
            if self.report is not None:
                self.report(self.done_steps, float(info["curve"]["accuracy"]))


def stage_logs(cfg: Config, arm: str | Arm, seed: int, workdir: str | Path,
               teacher_labels: int | None = None) -> pd.DataFrame:
    """The per-step log of every stage of one finished (or partly finished) run, long format:
    arm, seed, stage_index, stage, model, step, metric, value. The stage directories are found by the
    same keys `run_pipeline` wrote them under (config, seed, stage prefix with its label counts)."""
    arm = get_arm(arm) if isinstance(arm, str) else arm
    acct = arm.labels(cfg.world.labels, teacher_labels)
    prefix: list[tuple[str, int]] = []
    rows = []
    for i, stage in enumerate(arm.stages):
        prefix.append((stage.value, stage_labels(stage, acct)))
        sdir = Path(workdir) / "stages" / stage_key(cfg, seed, prefix)
        if not (sdir / "meta.json").is_file():
            break  # the run stopped before this stage finished: return what exists
        model = STAGES[stage].trains
        for entry in ckpt.read_meta(sdir).get("log", []):
            for metric, value in entry.items():
                if metric != "step":
                    rows.append({"arm": arm.name, "seed": seed, "stage_index": i, "stage": stage.value,
                                 "model": model, "step": int(entry["step"]), "metric": metric,
                                 "value": float(value)})
    if not rows:
        raise InputError(f"no finished stage of {arm.name} seed {seed} under {str(workdir)!r}: run it first")
    return pd.DataFrame(rows)


def final_table(results: list[RunResult], metrics=("accuracy", "pass_at_k", "compliance",
                                                   "accuracy_given_compliance", "accuracy_greedy")) -> pd.DataFrame:
    """One row per run: the final test metrics (percent), labels and compute."""
    rows = []
    for r in results:
        row = {"arm": r.arm, "seed": r.seed, "teacher_labels": r.label_account.teacher,
               "student_labels": r.label_account.student, "compute_tokens": r.compute_tokens}
        row.update({m: r.metrics.get(m, np.nan) for m in metrics})
        row["seconds"] = sum(float(s["seconds"]) for s in r.stages)
        rows.append(row)
    return pd.DataFrame(rows)


def committed_summary(runs: pd.DataFrame, metrics=("accuracy", "compliance"), *, seed: int = 0) -> pd.DataFrame:
    """Per arm and metric of a run table (e.g. docs/results/toy_ablation.csv): seeds, mean and a
    percentile-bootstrap 95% interval of the mean over seeds."""
    from theory.stats import mean_ci

    rng = np.random.default_rng(seed)
    rows = []
    for (arm, metric), g in runs[runs["metric"].isin(metrics)].groupby(["arm", "metric"], sort=False):
        ci = mean_ci(g["value"].to_numpy(), rng)
        rows.append({"arm": arm, "metric": metric, "seeds": g["seed"].nunique(), "mean": ci.estimate,
                     "ci_low": ci.low, "ci_high": ci.high})
    return pd.DataFrame(rows)


def _kl_frame(logs: pd.DataFrame) -> pd.DataFrame:
    """Both KL measurements under one metric name `kl`, the direction kept in `source`."""
    kl = logs[logs["metric"].isin(list(KL_SOURCES))].copy()
    kl["source"] = kl["metric"].map(KL_SOURCES)
    kl["metric"] = "kl"
    return kl


def _panels(logs: pd.DataFrame) -> list[list[str]]:
    """Per metric (one row of panels), the stages that recorded it in pipeline order: no empty panel."""
    data = pd.concat([logs, _kl_frame(logs)])
    have = set(zip(data["metric"], data["stage"]))
    rows = [[s for s in STAGE_ORDER if (m, s) in have] for m in STEP_METRICS]
    return [(m, stages) for m, stages in zip(STEP_METRICS, rows) if stages]


def plot_stage_curves(logs: pd.DataFrame, *, smooth: int = 1):
    """One row per metric (reward, zero-signal fraction, KL to the teacher, rollout compliance), one
    panel per stage that recorded it, against the step within the stage; one line per arm (the mean
    over seeds if there are several). `smooth`: centred rolling mean over that many steps (1 = raw)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    data = pd.concat([logs[logs["metric"].isin(["reward", "zero_signal_fraction", "compliance"])], _kl_frame(logs)])
    if smooth > 1:
        data = data.sort_values("step")
        data["value"] = data.groupby(["arm", "seed", "stage", "metric"])["value"].transform(
            lambda v: v.rolling(smooth, center=True, min_periods=1).mean())
    rows = _panels(logs)
    if not rows:
        raise InputError("plot_stage_curves: the logs hold none of reward, zero_signal_fraction, KL, compliance")
    arms = list(dict.fromkeys(logs["arm"]))
    pal = dict(zip(arms, sns.color_palette(n_colors=len(arms))))
    ncols = max(len(stages) for _, stages in rows)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(4.3 * ncols, 3.0 * len(rows)), squeeze=False)
    for r, (metric, stages) in enumerate(rows):
        for c in range(ncols):
            ax = axes[r, c]
            if c >= len(stages):
                ax.remove()
                continue
            stage = stages[c]
            d = data[(data["metric"] == metric) & (data["stage"] == stage)]
            for arm, g in d.groupby("arm", sort=False):
                g = g.groupby("step")["value"].mean()
                ax.plot(g.index, g.to_numpy(), "-o", ms=3, color=pal[arm], label=arm, lw=1.5)
            model = STAGES[Stage(stage)].trains
            title = f"{stage} ({model})"
            if metric == "kl":
                title += ": " + d["source"].iloc[0]
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("step within stage")
            ax.set_ylabel(STEP_METRICS[metric], fontsize=9)
            if metric in ("zero_signal_fraction", "compliance"):
                ax.set_ylim(-0.03, 1.03)
    handles = [plt.Line2D([], [], color=pal[a], lw=2) for a in arms]
    fig.legend(handles, arms, loc="upper center", ncol=len(arms), frameon=False, bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return fig


def plot_stage_points(results: list[RunResult], metrics=("accuracy", "compliance"),
                      committed: pd.DataFrame | None = None):
    """Validation accuracy and compliance measured after each stage (sampled, `eval.curve_problems`
    problems; the point after teacher_grpo is the teacher's), one line per arm through its stages.
    `committed`: a curves table of the same schema (e.g. docs/results/toy_ablation_curves.csv), drawn
    dashed as the mean over its seeds, for the same arms."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    frame = pd.concat([r.curves_frame() for r in results], ignore_index=True)
    frame = frame[frame["metric"].isin(metrics)]
    arms = list(dict.fromkeys(frame["arm"]))
    sources = [("solid", frame)]
    if committed is not None:
        sources.append(("dashed", committed[committed["metric"].isin(metrics) & committed["arm"].isin(arms)]))
    order = [s for s in STAGE_ORDER if any(s in set(f["stage"]) for _, f in sources)]
    xpos = {s: i for i, s in enumerate(order)}
    pal = dict(zip(arms, sns.color_palette(n_colors=len(arms))))
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.4 * len(metrics), 3.8), squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
        for ls, f in sources:
            d = f[f["metric"] == metric]
            for arm, g in d.groupby("arm", sort=False):
                g = g.groupby(["stage_index", "stage", "model"], as_index=False)["value"].mean().sort_values("stage_index")
                x = g["stage"].map(xpos)
                stu = g["model"] == STUDENT
                alpha = 1.0 if ls == "solid" else 0.6
                ax.plot(x[stu], g["value"][stu], marker="o", ls=ls, color=pal[arm], alpha=alpha)
                ax.plot(x[~stu], g["value"][~stu], "s", mfc="none", color=pal[arm], ms=8, alpha=alpha)
        ax.set_xticks(range(len(order)), [s.replace("_", "\n", 1) for s in order], fontsize=9)
        ax.set_xlabel("after stage (hollow square: the teacher)")
        ax.set_ylabel(f"validation {metric} (%)")
    handles = [plt.Line2D([], [], color=pal[a], marker="o") for a in arms]
    labels = list(arms)
    if committed is not None:
        handles += [plt.Line2D([], [], color="grey", ls="solid"), plt.Line2D([], [], color="grey", ls="dashed")]
        labels += ["this run", "committed (mean over seeds)"]
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), frameon=False, fontsize=8,
               bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    return fig


def plot_final(table: pd.DataFrame, committed: pd.DataFrame | None = None, metrics=("accuracy", "compliance"),
               *, label: str = "this notebook", committed_label: str = "committed study"):
    """Final test metrics per arm: this run's seeds as dots; beside them (optional) a committed
    study's mean with its bootstrap 95% interval (a `committed_summary` frame)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    arms = list(dict.fromkeys(table["arm"]))
    if committed is not None:
        arms += [a for a in dict.fromkeys(committed["arm"]) if a not in arms]
    pal = sns.color_palette(n_colors=2)
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.4 * len(metrics), 0.55 * len(arms) + 1.8), squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
        y = {a: i for i, a in enumerate(arms)}
        t = table[["arm", metric]].dropna()
        ax.scatter(t[metric], t["arm"].map(y) - 0.12, color=pal[0], label=label, zorder=3)
        if committed is not None:
            c = committed[committed["metric"] == metric]
            ax.errorbar(c["mean"], c["arm"].map(y) + 0.12,
                        xerr=[c["mean"] - c["ci_low"], c["ci_high"] - c["mean"]], fmt="D", color=pal[1],
                        capsize=3, label=committed_label)
        ax.set_yticks(range(len(arms)), arms)
        ax.set_ylim(len(arms) - 0.5, -0.5)
        ax.set_xlabel(f"test {metric} (%)")
    axes.flat[0].legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def plot_family(runs: pd.DataFrame, prereg: dict, report: dict | None = None,
                arms=("direct_grpo", "rl_teacher_bridge")):
    """The world family (issue 11): per world, the planner's committed prediction across the label
    budget (dashed; `prereg` = docs/results/world_family_preregistration.json) against the measured
    runs (`runs`, a run table; mean and 95% interval over seeds), with the predicted crossovers (grey
    dashed) and, from a cross-check `report` (world_family_report.json), the measured ones (black)."""
    import matplotlib.pyplot as plt

    acc = runs[(runs["split"] == "test") & (runs["metric"] == "accuracy")]
    worlds = list(prereg["worlds"])
    fig, axes = plt.subplots(1, len(worlds), figsize=(4.8 * len(worlds), 4.0), sharey=True, squeeze=False)
    colors = dict(zip(arms, ("tab:blue", "tab:red", "tab:green", "tab:purple")))
    for ax, w in zip(axes.flat, worlds):
        pw = prereg["worlds"][w]
        for arm in arms:
            ax.plot(pw["curve"]["labels"], pw["curve"][arm], color=colors[arm], lw=1.4, ls="--",
                    label=f"{arm} (predicted)")
            a = acc[(acc["world"] == w) & (acc["arm"] == arm)]
            m = a.assign(N=a["teacher_labels"] + a["student_labels"]).groupby("N")["value"].agg(["mean", "std", "count"])
            if len(m):
                ci = 1.96 * m["std"].fillna(0.0) / np.sqrt(m["count"])
                ax.errorbar(m.index, m["mean"], yerr=ci, fmt="o", color=colors[arm], capsize=3,
                            label=f"{arm} (measured)")
        for c in pw.get("predicted_crossovers", []):
            ax.axvline(c["budget"], color="grey", ls="--", lw=1)
        measured = ((report or {}).get("crossover", {}).get(w, {}).get("measured") or {}).get("crossovers", [])
        for c in measured:
            ax.axvline(c["budget"], color="black", lw=1.2)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("labels N")
        ax.set_title(w)
    axes.flat[0].set_ylabel("test accuracy, avg@8 (%)")
    axes.flat[0].legend(fontsize=7, loc="upper left")
    fig.suptitle("planner prediction (committed before the runs) vs measured; crossovers: grey dashed "
                 "predicted, black measured", fontsize=9)
    fig.tight_layout()
    return fig
