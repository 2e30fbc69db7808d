"""Run the toy worlds' tables under the gated protocol (issue 10), then summarise them.

    python scripts/run_toy_table.py --world toy --seeds 10 --jobs 2      # the pre-registered world
    python scripts/run_toy_table.py --world counterfactual --seeds 5      # also: direct, compliant
    python scripts/run_toy_table.py --analyze-only                        # summaries + figures from the CSVs

Each world writes docs/results/<prefix>.csv (run-table schema), <prefix>_{curves,stage_times}.csv,
<prefix>_summary.md / .csv (paired per-seed differences, bootstrap 95% intervals, probability of
improvement, the reading against the prediction) and <prefix>.png. Work resumes from
/tmp/s2d_stable/<world> (kill it anywhere and rerun). The old protocol's tables are in
docs/results/legacy/ (configs/legacy/).
"""

from __future__ import annotations

import argparse
from pathlib import Path
import sys

import numpy as np
import pandas as pd

from theory.tables import read_table

OUT = Path(__file__).resolve().parent.parent / "docs" / "results"

# (A, B, question, predicted sign of A - B): pre-registered in docs/log.md
COMPARISONS = [
    ("raw_teacher_bridge", "direct_grpo", "raw-teacher bridge vs direct GRPO (C1)", -1),
    ("rl_teacher_bridge", "direct_grpo", "RL-teacher bridge vs direct GRPO (the claim)", +1),
    ("no_fkl", "rl_teacher_bridge", "no forward-KL warmup vs full bridge (C2)", -1),
    ("no_opd", "rl_teacher_bridge", "no OPD vs full bridge", -1),
    ("rl_teacher_bridge_stage3", "replay_control", "stage-3 GRPO vs matched replay control", +1),
]
# the counterfactual world predicts the claim's sign flips (RL bridge <= direct)
PREDICTED_OVERRIDE = {("toy_counterfactual", "rl_teacher_bridge", "direct_grpo"): -1}

# world -> (config, table prefix, arms): the counterfactual runs the three arms its prediction is about
WORLDS = {
    "toy": ("toy", "toy_ablation", "all"),
    "counterfactual": ("toy_counterfactual", "toy_counterfactual", "direct_grpo,raw_teacher_bridge,rl_teacher_bridge"),
    "direct": ("toy_direct_teacher", "toy_direct_teacher", "all"),
    "compliant": ("toy_compliant_teacher", "toy_compliant_teacher", "all"),
}


def reading(lo: float, hi: float, sign: int) -> str:
    if lo > 0 or hi < 0:
        return "reproduces" if (lo > 0) == (sign > 0) else "reversed"
    return "not resolved"


def paired(df: pd.DataFrame, a: str, b: str, metric: str = "accuracy", *, n_boot: int = 10_000,
           seed: int = 0) -> dict:
    """Paired per-seed difference a - b: mean, bootstrap 95% interval over seeds, P(a > b) per seed."""
    sub = df[(df.metric == metric) & (df.split == "test")]
    wide = sub.pivot_table(index="seed", columns="arm", values="value")
    if a not in wide or b not in wide:
        return {}
    d = (wide[a] - wide[b]).dropna().to_numpy()
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(axis=1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {"a": a, "b": b, "metric": metric, "seeds": len(d), "mean_a": float(wide[a].mean()),
            "mean_b": float(wide[b].mean()), "mean_diff": float(d.mean()), "ci_low": float(lo), "ci_high": float(hi),
            "p_improvement": float((d > 0).mean() + 0.5 * (d == 0).mean()), "wins": int((d > 0).sum()),
            "per_seed": " ".join(f"{x:+.1f}" for x in d)}


def summarise(prefix: str) -> str:
    df = read_table(OUT / f"{prefix}.csv", "runs")
    arms = df[df.split == "test"].pivot_table(index="arm", columns="metric", values="value", aggfunc=["mean", "std"])
    rows = []
    for a, b, q, sign in COMPARISONS:
        sign = PREDICTED_OVERRIDE.get((prefix, a, b), sign)
        for metric in ("accuracy", "compliance", "accuracy_given_compliance"):
            r = paired(df, a, b, metric)
            if r:
                rows.append(dict(r, question=q, predicted="A > B" if sign > 0 else "A < B",
                                 reading=reading(r["ci_low"], r["ci_high"], sign) if metric == "accuracy" else ""))
    comp = pd.DataFrame(rows)
    comp.to_csv(OUT / f"{prefix}_summary.csv", index=False)
    lines = [f"# {prefix}: paired per-seed differences (test split, percent)", ""]
    lines.append("Per-arm mean (std over seeds):")
    lines.append("")
    lines.append("| arm | accuracy avg@k | pass@k | compliance | acc given compliance | greedy | avg@k at T = 1 |")
    lines.append("|---|---|---|---|---|---|---|")
    for arm in arms.index:
        def cell(m):
            try:
                return f"{arms.loc[arm, ('mean', m)]:.1f} ({arms.loc[arm, ('std', m)]:.1f})"
            except KeyError:
                return "-"
        lines.append(f"| {arm} | {cell('accuracy')} | {cell('pass_at_k')} | {cell('compliance')} | "
                     f"{cell('accuracy_given_compliance')} | {cell('accuracy_greedy')} | {cell('accuracy_t1')} |")
    lines += ["", "Paired differences A - B (same seed); 95% bootstrap interval over seeds; "
              "P(improvement) = share of seeds with A > B (ties count half):", "",
              "| comparison | metric | seeds | mean A | mean B | A - B | 95% CI | P(A>B) | predicted | reading | per-seed A - B |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in comp.iterrows():
        lines.append(f"| {r.question} | {r.metric} | {r.seeds} | {r.mean_a:.1f} | {r.mean_b:.1f} | "
                     f"{r.mean_diff:+.1f} | [{r.ci_low:+.1f}, {r.ci_high:+.1f}] | {r.p_improvement:.2f} | {r.predicted} | "
                     f"{r.reading} | {r.per_seed} |")
    text = "\n".join(lines) + "\n"
    (OUT / f"{prefix}_summary.md").write_text(text)
    figure(df, comp, prefix)
    curves_figure(prefix)
    return text


def curves_figure(prefix: str) -> None:
    """Validation accuracy (curve set, sampled) after each stage of each arm, mean over seeds."""
    path = OUT / f"{prefix}_curves.csv"
    if not path.exists():
        return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    c = pd.read_csv(path)
    c = c[c.metric.isin(["accuracy", "compliance"])]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for ax, metric in zip(axes, ["accuracy", "compliance"]):
        for arm, g in c[c.metric == metric].groupby("arm"):
            m = g.groupby(["stage_index", "stage", "model"])["value"].mean().reset_index()
            ax.plot(m.stage_index, m.value, marker="o", label=arm)
            for r in m.itertuples():
                ax.annotate(f"{r.stage}" + (" (T)" if r.model == "teacher" else ""), (r.stage_index, r.value),
                            fontsize=6, alpha=0.6)
        ax.set_xlabel("stage index within the arm")
        ax.set_ylabel(f"val {metric} after the stage (%)")
        ax.set_title(f"{prefix}: per-stage {metric} (mean over seeds; (T) = teacher)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(OUT / f"{prefix}_curves.png", dpi=110)
    plt.close(fig)


def figure(df: pd.DataFrame, comp: pd.DataFrame, prefix: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    acc = df[(df.metric == "accuracy") & (df.split == "test")]
    order = [a for a in ("direct_grpo", "raw_teacher_bridge", "rl_teacher_bridge", "no_fkl", "no_opd",
                         "rl_teacher_bridge_stage3", "replay_control") if a in set(acc.arm)]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
    rng = np.random.default_rng(0)
    for i, arm in enumerate(order):
        v = acc[acc.arm == arm].value.to_numpy()
        ax1.scatter(i + rng.uniform(-0.12, 0.12, len(v)), v, s=12, alpha=0.6, color="tab:blue")
        ax1.errorbar(i, v.mean(), yerr=1.96 * v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else 0,
                     fmt="o", color="black", capsize=4)
    ax1.set_xticks(range(len(order)), order, rotation=30, ha="right")
    ax1.set_ylabel("test accuracy, sampled avg@k (%)")
    ax1.set_title(f"{prefix}: per-seed accuracy (mean ± 95% CI)")
    c = comp[comp.metric == "accuracy"].reset_index(drop=True)
    y = np.arange(len(c))
    ax2.errorbar(c.mean_diff, y, xerr=[c.mean_diff - c.ci_low, c.ci_high - c.mean_diff], fmt="o", capsize=4)
    ax2.axvline(0, color="grey", lw=1)
    ax2.set_yticks(y, [f"{r.a}\n - {r.b}" for r in c.itertuples()], fontsize=8)
    ax2.set_xlabel("paired difference in accuracy (points), bootstrap 95% CI")
    ax2.set_title("paired comparisons")
    fig.tight_layout()
    fig.savefig(OUT / f"{prefix}.png", dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", choices=sorted(WORLDS), action="append",
                    help="world(s) to run (repeatable; default: none, with --analyze-only all present)")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--analyze-only", action="store_true")
    args = ap.parse_args(argv)
    from reference.cli import main as cli
    if not args.analyze_only:
        for world in args.world or []:
            config, prefix, arms = WORLDS[world]
            rc = cli(["table", "--seeds", str(args.seeds), "--out", str(OUT), "--config", config,
                      "--jobs", str(args.jobs), "--arms", arms, "--workdir", f"/tmp/s2d_stable/{world}",
                      "--prefix", prefix])
            if rc:
                return rc
    todo = [WORLDS[w][1] for w in args.world] if args.world else [w[1] for w in WORLDS.values()]
    for prefix in todo:
        if (OUT / f"{prefix}.csv").exists():
            print(summarise(prefix))
    return 0


if __name__ == "__main__":
    sys.exit(main())
