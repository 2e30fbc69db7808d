"""plan(scenario, labels=N) -> Plan: where the labels go, what accuracy to expect, how sure we are.

Every arm comes from `theory.arms.ARMS` (the registry); the forward model is `theory.dynamics`, the
uncertainty is the calibration's (`theory.calibrate.fit_scenario`, cached per scenario).

Point predictions are the MAP model's; intervals are 2.5-97.5% of the posterior draws plus the
benchmark's evaluation noise (they cover a *measured* accuracy); decisions use the draws: p_best is
the fraction of draws (noise-free) in which an arm is the best, the recommended arm maximises
p_best, and the recommended split maximises the draw-mean accuracy of rl_teacher_bridge_stage3.
replay_control is evaluated at that same split (its matched control).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from theory import irt
from theory.arms import ARMS, Arm, check_budget
from theory.calibrate import Fit, build_world, fit_scenario, measured_interval, values_from_z
from theory.dynamics import grpo, predict_arm
from theory.errors import InputError
from theory.informativeness import (
    ConditionCheck, bits_per_label_avg, check_conditions, dense_nats_per_prompt, signal_fraction_avg,
    signal_size_avg,
)
from theory.scenario import Scenario, load_scenario

SPLIT_STEP = 0.01
STAGE3 = "rl_teacher_bridge_stage3"


@dataclass(frozen=True)
class ArmPrediction:
    arm: str
    accuracy: float  # percent, MAP model
    lo: float  # 95% predictive interval of a measured accuracy
    hi: float
    p_best: float
    teacher_labels: int
    student_labels: int
    marginal_per_1k: float  # d accuracy / d label x 1000 (percent points per 1000 more labels)


@dataclass(frozen=True)
class Recommendation:
    arm: str
    p_best: float
    teacher_labels: int
    student_labels: int


@dataclass(frozen=True)
class Plan:
    scenario: str
    benchmark: str
    labels: int
    arms: tuple[ArmPrediction, ...]
    recommendation: Recommendation
    split_fractions: tuple[float, ...]  # teacher share of the labels, 0..1 step 0.01
    split_curves: tuple[tuple[str, tuple[float, ...], tuple[float, ...], tuple[float, ...]], ...]  # arm, acc, lo, hi
    informativeness: tuple[dict, ...]
    conditions: tuple[ConditionCheck, ...]
    inputs: tuple[dict, ...]  # every input: path, value, tag, fitted, note
    warnings: tuple[str, ...]
    n_fitted: int = 0
    chi2: float = 0.0
    _scenario_obj: Scenario | None = field(default=None, repr=False, compare=False)

    def arm(self, name: str) -> ArmPrediction:
        for a in self.arms:
            if a.arm == name:
                return a
        raise KeyError(name)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame([a.__dict__ for a in self.arms])

    def split_frame(self) -> pd.DataFrame:
        rows = []
        for name, acc, lo, hi in self.split_curves:
            for f, a, l_, h in zip(self.split_fractions, acc, lo, hi):
                rows.append({"arm": name, "teacher_fraction": f, "teacher_labels": int(round(f * self.labels)),
                             "accuracy": a, "lo": l_, "hi": h})
        return pd.DataFrame(rows)

    def informativeness_frame(self) -> pd.DataFrame:
        return pd.DataFrame(list(self.informativeness))

    def to_dict(self) -> dict:
        return {
            "scenario": self.scenario,
            "benchmark": self.benchmark,
            "labels": self.labels,
            "arms": {a.arm: {"accuracy": a.accuracy, "ci": [a.lo, a.hi], "p_best": a.p_best,
                             "teacher_labels": a.teacher_labels, "student_labels": a.student_labels,
                             "marginal_per_1k_labels": a.marginal_per_1k} for a in self.arms},
            "recommendation": {"arm": self.recommendation.arm, "p_best": self.recommendation.p_best,
                               "teacher_labels": self.recommendation.teacher_labels,
                               "student_labels": self.recommendation.student_labels},
            "split_curves": {name: {"teacher_fraction": list(self.split_fractions), "accuracy": list(acc),
                                    "lo": list(lo), "hi": list(hi)} for name, acc, lo, hi in self.split_curves},
            "informativeness": list(self.informativeness),
            "conditions": [c.to_dict() for c in self.conditions],
            "inputs": list(self.inputs),
            "n_fitted": self.n_fitted,
            "warnings": list(self.warnings),
        }

    def plot(self, path: str | Path | None = None, *, labels_grid=None):
        """Two panels: accuracy vs teacher share of labels (with bands), accuracy vs budget N."""
        import matplotlib
        if path is not None:
            matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import seaborn as sns

        sns.set_theme(style="whitegrid")
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
        pal = dict(zip(ARMS, sns.color_palette("tab10", len(ARMS))))
        for name, acc, lo, hi in self.split_curves:
            ax1.plot(self.split_fractions, acc, label=name, color=pal[name])
            ax1.fill_between(self.split_fractions, lo, hi, alpha=0.15, color=pal[name])
        for a in self.arms:
            if not ARMS[a.arm].splits_labels:
                ax1.axhline(a.accuracy, ls="--", lw=1, color=pal[a.arm], label=a.arm)
        ax1.set(xlabel="teacher share of labels", ylabel=f"{self.benchmark} accuracy (%)",
                title=f"{self.scenario}: N = {self.labels} labels")
        ax1.legend(fontsize=7)
        if self._scenario_obj is not None:
            grid = labels_grid if labels_grid is not None else budget_grid(self.labels)
            frac = self.recommendation.teacher_labels / self.labels if self.labels else 0.5
            curve = budget_curve(self._scenario_obj, grid, teacher_fraction=frac, benchmark=self.benchmark)
            sns.lineplot(data=curve, x="labels", y="accuracy", hue="arm", palette=pal, ax=ax2)
            for name, g in curve.groupby("arm"):
                ax2.fill_between(g["labels"], g["lo"], g["hi"], alpha=0.1, color=pal[name])
            ax2.set(xlabel="label budget N", ylabel=f"{self.benchmark} accuracy (%)",
                    title=f"accuracy vs N (split arms at teacher share {frac:.2f})")
            ax2.legend(fontsize=7)
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=120)
            plt.close(fig)
        return fig


def budget_grid(n: int) -> list[int]:
    top = max(2 * n, 1000)
    return sorted({int(round(top * f)) for f in np.linspace(0, 1, 9)})


def _draws_world(fit: Fit, bench: str):
    """World with R = (1 + D,): row 0 is the MAP, rows 1.. the posterior draws."""
    scn = fit.scenario
    z = np.vstack([fit.z_map[None, :], fit.z_draws])
    vals = values_from_z(scn, z)
    return build_world(scn, vals, (bench,)), vals


def _noise(fit: Fit, vals, bench: str) -> np.ndarray:
    rng = np.random.default_rng(fit.scenario.seed + 7)
    se_D = vals[f"benchmarks.{bench}.eval_se"][1:]
    return rng.standard_normal(se_D.shape) * se_D


def _setup(scn: Scenario, benchmark: str | None):
    """(fit, benchmark, draws world, benchmark index, evaluation noise per draw) for one scenario."""
    bench = benchmark or scn.target_benchmark
    if bench not in scn.benchmarks:
        raise InputError(f"benchmark {bench!r} is not in scenario {scn.name} ({', '.join(scn.benchmarks)})")
    fit = fit_scenario(scn)
    world, vals = _draws_world(fit, bench)
    return fit, bench, world, world.benchmarks.index(bench), _noise(fit, vals, bench)


def _split_labels(n: int) -> tuple[np.ndarray, np.ndarray]:
    frac = np.round(np.arange(0, 1 + 1e-9, SPLIT_STEP), 2)
    return frac, np.round(frac * n).astype(int)


def plan(scenario: Scenario | str, labels: int | None = None, *, benchmark: str | None = None) -> Plan:
    """Per-arm predictions at a budget of `labels` (default: the scenario's budget). Pure."""
    scn = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
    n = scn.budget if labels is None else check_budget(labels)
    fit, bench, world, b, noise_D = _setup(scn, benchmark)
    wide = world.expand()
    frac_S, tl_S = _split_labels(n)

    curves: dict[str, np.ndarray] = {}  # arm -> (1 + D, S) for split arms
    point: dict[str, np.ndarray] = {}  # arm -> (1 + D,)
    for name, arm in ARMS.items():
        if arm.splits_labels:
            curves[name] = predict_arm(wide, arm, n, tl_S)[..., b]
    s_best = int(np.argmax(curves[STAGE3][1:].mean(0)))
    t_best = int(tl_S[s_best])
    for name, arm in ARMS.items():
        point[name] = curves[name][:, s_best] if arm.splits_labels else predict_arm(world, arm, n)[..., b]

    names = list(ARMS)
    acc_DA = np.stack([point[a][1:] for a in names], -1)
    # ties (e.g. every bridge arm is the same arm at labels=0) share the credit equally
    is_best_DA = acc_DA >= acc_DA.max(-1, keepdims=True) - 1e-9
    p_best = (is_best_DA / is_best_DA.sum(-1, keepdims=True)).mean(0)

    # marginal value of more labels at the same teacher share, MAP model
    h = max(1, int(round(0.01 * n)))
    map_world, map_vals = _map_world(fit, bench)
    preds = []
    for i, (name, arm) in enumerate(ARMS.items()):
        tl = t_best if arm.splits_labels else None
        acct = arm.labels(n, tl)
        tl_h = int(round((t_best / n if n else frac_S[s_best]) * (n + h))) if arm.splits_labels else None
        a_h = predict_arm(map_world, arm, n + h, tl_h)[..., b][0]
        lo, hi = measured_interval(point[name][1:] + noise_D)
        preds.append(ArmPrediction(
            arm=name, accuracy=float(point[name][0]), lo=float(lo), hi=float(hi), p_best=float(p_best[i]),
            teacher_labels=acct.teacher, student_labels=acct.student,
            marginal_per_1k=float((a_h - point[name][0]) / h * 1000.0)))
    rec_i = int(np.lexsort((-acc_DA.mean(0), -p_best))[0])
    rec_arm = ARMS[names[rec_i]]
    rec = Recommendation(arm=names[rec_i], p_best=float(p_best[rec_i]), teacher_labels=preds[rec_i].teacher_labels,
                         student_labels=preds[rec_i].student_labels)

    split_curves = []
    for name, c in curves.items():
        lo, hi = measured_interval(c[1:] + noise_D[:, None])
        split_curves.append((name, tuple(map(float, c[0])), tuple(map(float, lo)), tuple(map(float, hi))))

    info, conds = informativeness(fit, n, bench, map_world, map_vals)
    warnings = list(fit.warnings)
    if fit.labels_range is not None:
        lo_n, hi_n = fit.labels_range
        if not lo_n <= n <= hi_n:
            warnings.append(f"labels={n} is outside the calibrated range [{lo_n}, {hi_n}] of observed budgets: "
                            "the GRPO curve is extrapolated")
    if rec_arm.splits_labels and rec.teacher_labels == 0:
        warnings.append(f"the recommended {rec.arm} gives the teacher 0 labels: that is the raw-teacher bridge "
                        "followed by student GRPO, which the paper did not run; stage-3 predictions are the "
                        "model's least tested part (docs/theory.md, docs/log.md)")
    inputs = tuple({"input": t.path, "value": t.value, "tag": t.tag, "fitted": t.fitted, "note": t.note}
                   for t in scn.inputs) + (
        {"input": "compute", "value": None, "tag": scn.compute_tag, "fitted": False,
         "note": scn.compute_note + " (fixed: enters only replay_control's compute ratio)"},)
    return Plan(scenario=scn.name, benchmark=bench, labels=n, arms=tuple(preds), recommendation=rec,
                split_fractions=tuple(map(float, frac_S)), split_curves=tuple(split_curves),
                informativeness=tuple(info), conditions=tuple(conds), inputs=inputs,
                warnings=tuple(warnings), n_fitted=len(fit.names), chi2=fit.chi2, _scenario_obj=scn)


def predict_configs(scenario: Scenario | str, configs, *, n_seeds: int = 1, level: float = 0.9,
                    benchmark: str | None = None) -> pd.DataFrame:
    """Predicted accuracy of given run configurations, for comparing with runs not yet made.

    `configs`: iterable of (arm, labels, teacher_labels or None). One row each: the registry's label
    account (teacher_labels/student_labels as a run table records them), `pred_mean` = the MAP
    prediction (what `plan` prints), and a central `level` predictive interval for the MEAN of
    `n_seeds` runs: posterior draws plus evaluation noise of sd eval_se / sqrt(n_seeds).
    """
    scn = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
    if not 0.0 < level < 1.0:
        raise InputError(f"level must lie in (0, 1), got {level!r}")
    if int(n_seeds) < 1:
        raise InputError(f"n_seeds must be >= 1, got {n_seeds!r}")
    fit, bench, world, b, noise_D = _setup(scn, benchmark)
    noise_D = noise_D / np.sqrt(int(n_seeds))
    q = 100.0 * np.array([(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    rows = []
    for arm_name, n, tl in configs:
        arm = ARMS.get(arm_name)
        if arm is None:
            raise InputError(f"unknown arm {arm_name!r}; arms are {', '.join(ARMS)}")
        n = check_budget(n)
        tl = None if tl is None or not arm.splits_labels else int(tl)
        acct = arm.labels(n, tl)
        acc_R = predict_arm(world, arm, n, tl)[..., b]
        lo, hi = np.clip(np.percentile(acc_R[1:] + noise_D, q), 0.0, 100.0)
        rows.append({"arm": arm.name, "labels": n, "teacher_labels": acct.teacher, "student_labels": acct.student,
                     "pred_mean": float(acc_R[0]), "pred_lo": float(lo), "pred_hi": float(hi), "level": level,
                     "n_seeds": int(n_seeds)})
    return pd.DataFrame(rows)


def _map_world(fit: Fit, bench: str):
    vals = values_from_z(fit.scenario, fit.z_map[None, :])
    return build_world(fit.scenario, vals, (bench,)), vals


def informativeness(fit: Fit, n: int, bench: str, world, vals) -> tuple[list[dict], list[ConditionCheck]]:
    """Per model state of the MAP `world` (from `_map_world`): sparse informativeness of a label and
    dense informativeness of a prompt."""
    scn = fit.scenario
    b = world.benchmarks.index(bench)
    G = scn.group_size
    kl0 = float(vals["inputs.kl0"][0])
    tokens = scn.compute.response_tokens
    states = {
        f"{scn.student} (student, start)": world.student,
        f"{scn.teacher} (raw teacher)": world.teacher,
        f"{scn.teacher} (RL teacher, {n} labels)": grpo(world, world.teacher, n),
    }
    rows = []
    for label, pol in states.items():
        th, c, sd = pol.theta_B[..., b], pol.c_B[..., b], world.s_d_B[..., b]
        rows.append({
            "model": label,
            "accuracy": float(irt.accuracy(th, c, sd)[0]),
            "compliance": float(c[0]),
            "signal_fraction": float(signal_fraction_avg(th, c, sd, G)[0]),
            "signal_size": float(signal_size_avg(th, c, sd, G)[0]),
            "bits_per_label": float(bits_per_label_avg(th, c, sd, G)[0]),
            "bits_max": float(np.log2(G + 1)),
            "kl0_nats_per_token": kl0 if "teacher" in label else 0.0,
            "dense_nats_per_prompt": float(dense_nats_per_prompt(kl0, tokens)) if "teacher" in label else 0.0,
        })
    s = rows[0]
    conds = [check_conditions(teacher=r["model"], teacher_accuracy=r["accuracy"], student_accuracy=s["accuracy"],
                              teacher_compliance=r["compliance"], student_compliance=s["compliance"], kl0=kl0,
                              kl_c=float(vals["rates.kl_c"][0]), phi_w=float(vals["rates.phi_w"][0]))
             for r in rows[1:]]
    for r, c in zip(rows[1:], conds):
        r["C1"], r["C2"] = c.c1, c.c2
    return rows, conds


def budget_curve(scenario: Scenario | str, labels_grid, *, teacher_fraction: float = 0.5,
                 benchmark: str | None = None) -> pd.DataFrame:
    """Accuracy vs label budget N per arm (MAP point, 95% predictive band); split arms at a fixed share."""
    scn = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
    _, _, world, b, noise_D = _setup(scn, benchmark)
    rows = []
    for n in labels_grid:
        n = check_budget(n)
        for name, arm in ARMS.items():
            tl = int(round(teacher_fraction * n)) if arm.splits_labels else None
            acc = predict_arm(world, arm, n, tl)[..., b]
            lo, hi = measured_interval(acc[1:] + noise_D)
            rows.append({"labels": n, "arm": name, "accuracy": float(acc[0]), "lo": float(lo), "hi": float(hi)})
    return pd.DataFrame(rows)


def arms_used() -> dict[str, Arm]:
    """The registry the planner evaluates (a test checks it is `theory.arms.ARMS` itself)."""
    return ARMS
