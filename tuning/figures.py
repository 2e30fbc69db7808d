"""Figures of a fairness report (a `tuning.report.FairnessReport` or `LoadedReport`): the files
`write_report` saves (`plot_report`) and the one-figure summary of notebooks/02_fair_tuning_study
(`plot_fairness`). matplotlib and seaborn are imported only when a figure is drawn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_report(rep, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    paths = []
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    pal = dict(zip(rep.protocol.arms, sns.color_palette(n_colors=len(rep.protocol.arms))))
    for arm, g in rep.curves.groupby("arm", sort=False):
        ax.plot(g["n_trials"], g["expected_best"], color=pal[arm], label=f"{arm} (expected best)")
        ax.fill_between(g["n_trials"], g["expected_best"] - g["std"], g["expected_best"] + g["std"],
                        color=pal[arm], alpha=0.2)
        ax.plot(g["n_trials"], g["best_so_far"], color=pal[arm], ls="--", lw=1, label=f"{arm} (best so far)")
    ax.set_xlabel("trials")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("Tuning curves (Dodge et al. 2019 expected max, ±1 sd)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out / "fairness_report_curves.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    if len(rep.evals):
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        sns.stripplot(data=rep.evals, x="accuracy", y="arm", hue="arm", palette=pal, ax=ax, alpha=0.6,
                      legend=False)
        s = rep.summary.set_index("arm")
        for i, arm in enumerate(rep.protocol.arms):
            if np.isfinite(s.loc[arm, "eval_mean"]):
                ax.errorbar(s.loc[arm, "eval_mean"], i, xerr=[[s.loc[arm, "eval_mean"] - s.loc[arm, "eval_ci_low"]],
                                                              [s.loc[arm, "eval_ci_high"] - s.loc[arm, "eval_mean"]]],
                            fmt="o", color="black", capsize=4)
        ax.set_xlabel("test accuracy (%) per evaluation seed; mean and bootstrap 95% CI")
        ax.set_ylabel("")
        fig.tight_layout()
        paths.append(out / "fairness_report_eval.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    return paths


def plot_fairness(rep, title: str | None = None):
    """One figure of a matched study (a FairnessReport or LoadedReport): tuning curves (expected best
    ±1 sd, best so far dashed); test accuracy per evaluation seed with the mean's bootstrap 95% CI
    and the IQM; and, when per-seed results exist, each arm's paired difference from the first arm
    with its CI, annotated with P(improvement). Returns the figure (the caller shows or saves it)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    arms = list(rep.summary["arm"])
    pal = dict(zip(arms, sns.color_palette(n_colors=len(arms))))
    has_cmp = len(rep.comparisons) > 0
    fig, axes = plt.subplots(1, 3 if has_cmp else 2, figsize=(15.5 if has_cmp else 11, 3.9))
    ax = axes[0]
    for arm, g in rep.curves.groupby("arm", sort=False):
        ax.plot(g["n_trials"], g["expected_best"], color=pal[arm], label=arm)
        ax.fill_between(g["n_trials"], g["expected_best"] - g["std"], g["expected_best"] + g["std"],
                        color=pal[arm], alpha=0.2)
        ax.plot(g["n_trials"], g["best_so_far"], color=pal[arm], ls="--", lw=1)
    ax.plot([], [], color="grey", label="expected best ±1 sd")
    ax.plot([], [], color="grey", ls="--", lw=1, label="best so far (trial order)")
    ax.set_xlabel("tuning trials")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("tuning curves (Dodge et al. expected max)", fontsize=10)
    ax.legend(fontsize=7, loc="best")
    ax = axes[1]
    s = rep.summary.set_index("arm")
    for i, arm in enumerate(arms):
        e = rep.evals[rep.evals["arm"] == arm]
        if len(e):
            jitter = np.linspace(-0.15, 0.15, len(e))
            ax.scatter(e["accuracy"], i + jitter, color=pal[arm], alpha=0.5, s=18)
        m = s.loc[arm, "eval_mean"]
        ax.errorbar(m, i, xerr=[[m - s.loc[arm, "eval_ci_low"]], [s.loc[arm, "eval_ci_high"] - m]], fmt="o",
                    color="black", capsize=4, label="mean, bootstrap 95% CI" if i == 0 else None)
        if "eval_iqm" in s.columns:
            ax.plot(s.loc[arm, "eval_iqm"], i, "x", color="crimson", ms=9, mew=2, label="IQM" if i == 0 else None)
    ax.set_yticks(range(len(arms)), arms)
    ax.set_ylim(len(arms) - 0.5, -0.5)
    ax.set_xlabel("test accuracy (%) per evaluation seed")
    ax.set_title("final evaluation of each arm's best configuration", fontsize=10)
    ax.legend(fontsize=7)
    if has_cmp:
        ax = axes[2]
        c = rep.comparisons.reset_index(drop=True)
        for i, r in c.iterrows():
            ax.errorbar(r["mean_diff"], i, xerr=[[r["mean_diff"] - r["diff_ci_low"]], [r["diff_ci_high"] - r["mean_diff"]]],
                        fmt="o", color=pal[r["arm"]], capsize=4)
        ax.axvline(0, color="grey", lw=1)
        ax.set_yticks(range(len(c)), [f"{r['arm']} − {r['baseline']}\nP(improvement) {r['p_improvement']:.2f} "
                                      f"[{r['p_ci_low']:.2f}, {r['p_ci_high']:.2f}]" for _, r in c.iterrows()],
                      fontsize=8)
        ax.set_ylim(len(c) - 0.5, -0.5)
        ax.set_xlabel("paired difference in test accuracy (points)")
        ax.set_title("same evaluation seeds, bootstrap 95% CI", fontsize=10)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig
