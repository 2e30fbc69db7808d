"""plan(scenario, labels=N) -> Plan: where the labels go, what accuracy to expect, how sure we are.

Every arm comes from `theory.arms.ARMS` (the registry); the forward model is `theory.dynamics`, the
parameter uncertainty is the calibration's (`theory.fitting.fit_scenario`, cached per scenario).

Point predictions are the MAP model's. Everything else comes from one predictive distribution of a
*measured* accuracy (docs/theory.md section 9): posterior draws of the model, plus a structural error
delta (sd learned from leave-one-out residuals; shared by arms that run the same experiment), plus the
measurement noise of the user's benchmark. Intervals are its 2.5-97.5% quantiles; p_best is the share of
its draws in which a candidate arm measures best, estimated from the draws the posterior effectively
rests on (`_p_best`); the recommendation states the runner-up, the gap (90% interval) and whether the
two are separable. Control arms (`Arm.control`, e.g. replay_control) are predicted and shown, never
recommended. The recommended split maximises the draw-mean accuracy of rl_teacher_bridge_stage3;
replay_control is evaluated at that same split (its matched control).

GPU-hours per arm come from `theory.costs` (each stage's `Arm.compute_tokens` over the throughput of its
work, on `gpus` GPUs). With a GPU-hour budget, arms that cost more are infeasible: they are predicted and
shown, and the recommendation (and p_best) is taken among the feasible candidates only.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from budget_planner.compute import compute_plan
from budget_planner.presets import load_scenario
from theory._lazy import LazyModule
from theory.arms import ARMS, MAX_LABELS, STAGES, TEACHER, Arm, Teacher, candidate_arms, check_budget
from theory.costs import DEFAULT_GPUS, PARALLEL_EFFICIENCY_NOTE, CostTable, arm_cost, check_gpus, parallel_efficiency
from theory.discrepancy import config_key, discrepancy_sd, measurement_sd
from theory.dynamics import (
    Policy,
    accuracy_parts,
    predict_arm,
    predict_arms,
    predict_states,
    predict_teacher,
    without_displacement,
)
from theory.errors import InputError
from theory.fitting import Fit, build_setting, fit_scenario, from_z, to_z, values_from_z
from theory.informativeness import (
    ConditionCheck,
    StepEffect,
    bits_per_label_avg,
    check_conditions,
    dense_nats_per_prompt,
    signal_fraction_avg,
    signal_size_avg,
)
from theory.scenario import Scenario

pd = LazyModule("pandas")

SCHEMA_VERSION = 4  # 2: control arms, recommendation runner_up/gap/separable, ceiling, extrapolation;
# 3: gpu_hours and feasible per arm, gpu_costs; 4: informativeness on the whole benchmark (the start is
# the arm given no labels), conditions carry the predicted bridge/OPD effects and c1_agrees/c2_agrees
SPLIT_STEP = 0.01
STAGE3 = "rl_teacher_bridge_stage3"
GAP_LEVEL = 0.9
MIN_ESS = 50  # below this many effective posterior draws the plan warns (p_best is shrunk accordingly)
COVER_FACTOR = 4  # an observation covers label counts within this factor (and the same zero pattern)


@dataclass(frozen=True)
class ArmPrediction:
    arm: str
    accuracy: float  # percent, MAP model
    lo: float  # 95% predictive interval of a measured accuracy
    hi: float
    p_best: float | None  # None for a control arm (never a candidate)
    teacher_labels: int
    student_labels: int
    marginal_per_1k: float  # d accuracy / d label x 1000 (percent points per 1000 more labels)
    control: bool = False
    compute_tokens: int = 0  # training tokens (rollouts + training + teacher scoring), theory.arms.ComputeModel
    same_as: str | None = None  # at this budget the arm runs the same experiment as this earlier arm
    gpu_hours: float = 0.0  # GPU-hours on Plan.gpu_costs["gpus"] GPUs (theory.costs)
    feasible: bool = True  # within the GPU-hour budget (always True without one)


@dataclass(frozen=True)
class Recommendation:
    arm: str
    p_best: float
    teacher_labels: int
    student_labels: int
    runner_up: str | None = None
    gap_mean: float = 0.0  # recommended minus runner-up, measured accuracy (points)
    gap_lo: float = 0.0  # GAP_LEVEL predictive interval
    gap_hi: float = 0.0
    separable: bool = False  # the gap interval excludes 0
    cheaper: str | None = None  # of recommended and runner-up, the one with fewer training tokens
    extrapolation: bool = False  # no observation covers the recommended configuration


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
    ceiling: dict | None = None  # student's accuracy ceiling on the benchmark: map, ci (95%), stated
    uncertainty: dict | None = None  # discrepancy sd and source, measurement sd, effective draws
    gpu_costs: dict | None = None  # gpus, cost table, parallel efficiency, budget, per-stage hours and tags
    # the label x compute plane (budget_planner.compute.compute_plan): per arm frontier and plateau, the
    # recommendation at plateau and within a GPU-hour budget, the exchange rate labels <-> GPU-hours
    compute: dict | None = None
    _scenario_obj: Scenario | None = field(default=None, repr=False, compare=False)

    def __repr__(self) -> str:  # the dataclass repr prints every split curve: thousands of numbers
        r = self.recommendation
        return (f"Plan(scenario={self.scenario!r}, benchmark={self.benchmark!r}, labels={self.labels}, "
                f"recommended={r.arm!r} (p_best {r.p_best:.2f}, {r.teacher_labels} teacher / {r.student_labels} "
                f"student labels), arms={len(self.arms)}, warnings={len(self.warnings)})")

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
        """JSON-ready; floats rounded to what they mean (accuracy points to 0.01, probabilities, shares
        and KLs to 0.001); the inputs are kept as stated."""
        r = self.recommendation
        return _rounded({
            "schema_version": SCHEMA_VERSION,
            "scenario": self.scenario,
            "benchmark": self.benchmark,
            "labels": self.labels,
            "arms": {a.arm: {"accuracy": a.accuracy, "ci": [a.lo, a.hi], "p_best": a.p_best, "control": a.control,
                             "teacher_labels": a.teacher_labels, "student_labels": a.student_labels,
                             "compute_tokens": a.compute_tokens, "same_as": a.same_as,
                             "marginal_per_1k_labels": a.marginal_per_1k, "gpu_hours": a.gpu_hours,
                             "feasible": a.feasible,
                             **(self.compute["arms"][a.arm].to_dict() if self.compute else {})} for a in self.arms},
            "recommendation": {"arm": r.arm, "p_best": r.p_best, "teacher_labels": r.teacher_labels,
                               "student_labels": r.student_labels, "runner_up": r.runner_up,
                               "gap": {"mean": r.gap_mean, "ci": [r.gap_lo, r.gap_hi], "level": GAP_LEVEL},
                               "separable": r.separable, "cheaper_arm": r.cheaper,
                               "extrapolation": r.extrapolation},
            "ceiling": self.ceiling,
            "uncertainty": self.uncertainty,
            "gpu_costs": self.gpu_costs,
            "compute": None if self.compute is None else {k: v for k, v in self.compute.items() if k != "arms"},
            "split_curves": {name: {"teacher_fraction": list(self.split_fractions), "accuracy": list(acc),
                                    "lo": list(lo), "hi": list(hi)} for name, acc, lo, hi in self.split_curves},
            "informativeness": list(self.informativeness),
            "conditions": [c.to_dict() for c in self.conditions],
            "inputs": list(self.inputs),
            "n_fitted": self.n_fitted,
            "warnings": list(self.warnings),
        })

    def _repr_html_(self) -> str:
        """The plan's table for a notebook: every arm with its 95% interval, and the recommendation."""
        from html import escape

        r = self.recommendation
        head = ("arm", "accuracy (%)", "95% interval", "p_best", "teacher / student labels", "train tokens",
                "GPU-hours")
        rows = []
        for a in self.arms:
            pb = "control" if a.control else "over budget" if not a.feasible else f"{a.p_best:.2f}"
            style = ' style="font-weight:bold"' if a.arm == r.arm else ""
            cells = (a.arm + (f" (= {a.same_as} here)" if a.same_as else ""), fmt_num(a.accuracy, ".1f"),
                     f"[{fmt_num(a.lo, '.1f')}, {fmt_num(a.hi, '.1f')}]", pb,
                     f"{a.teacher_labels} / {a.student_labels}", f"{a.compute_tokens / 1e6:,.1f}M",
                     f"{a.gpu_hours:,.1f}")
            rows.append(f"<tr{style}>" + "".join(f"<td>{escape(c)}</td>" for c in cells) + "</tr>")
        verdict = (f"recommended: <b>{escape(r.arm)}</b> (p_best {r.p_best:.2f}) with {r.teacher_labels} teacher / "
                   f"{r.student_labels} student labels")
        if r.runner_up is not None:
            verdict += (f"; runner-up {escape(r.runner_up)}, gap {fmt_num(r.gap_mean, '+.1f')} points "
                        f"({GAP_LEVEL:.0%} interval [{fmt_num(r.gap_lo, '+.1f')}, {fmt_num(r.gap_hi, '+.1f')}]"
                        f"{', separable' if r.separable else ', a toss-up'})")
        return (f"<table><caption>{escape(self.scenario)}: {escape(self.benchmark)} accuracy with N = "
                f"{self.labels} labels (MAP; 95% predictive interval of a measured accuracy)</caption>"
                "<thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr></thead><tbody>"
                + "".join(rows) + f"</tbody></table><p>{verdict}</p>" + self._compute_html())

    def _compute_html(self) -> str:
        """The label x compute plane as the CLI prints it: each arm trained to its plateau."""
        from html import escape

        if self.compute is None:
            return ""
        c = self.compute
        head = ("arm", "plateau (%)", "95% interval", "stage lengths", "train tokens", "GPU-hours")
        rows = []
        for name, ac in c["arms"].items():
            p = ac.plateau
            style = ' style="font-weight:bold"' if name == c["recommended_at_plateau"] else ""
            lengths = ", ".join(f"{s} {v:g}" for s, v in p.lengths.items())
            cells = (name, fmt_num(p.accuracy, ".1f"), f"[{fmt_num(p.lo, '.1f')}, {fmt_num(p.hi, '.1f')}]", lengths,
                     f"{p.tokens / 1e6:,.1f}M", f"{p.gpu_hours:,.2f}")
            rows.append(f"<tr{style}>" + "".join(f"<td>{escape(x)}</td>" for x in cells) + "</tr>")
        text = f"recommended at plateau: <b>{escape(c['recommended_at_plateau'])}</b>"
        if c["within_budget"] is not None:
            w = c["within_budget"]
            text += (f"; within {c['budget_gpu_hours']:g} GPU-hours: <b>{escape(w['arm'])}</b> at "
                     f"{escape(', '.join(f'{s} {v:g}' for s, v in w['lengths'].items()))} "
                     f"({fmt_num(w['accuracy'], '.1f')}%)")
        return (f"<table><caption>trained to plateau (rule: {escape(c['rule'])}; GRPO lengths in label passes, "
                "bridge lengths in units)</caption><thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in head)
                + "</tr></thead><tbody>" + "".join(rows) + f"</tbody></table><p>{text}</p>")

    def plot(self, path: str | Path | None = None, *, labels_grid=None):
        """Three panels: accuracy vs teacher share of labels at the planned N, accuracy vs budget N (both at
        the reference lengths), and each arm's frontier on the label x compute plane (`_plot_frontiers`).
        Lines are MAP predictions of every arm; bands (95% predictive intervals of a measured accuracy) are
        drawn for the two arms the decision is between only, the recommended arm and its runner-up. The
        star marks the recommendation at its own split (an arm that does not split its labels sits at its
        teacher share, 100% or 0%), the plus the runner-up; the suptitle states the gap and whether it is
        a toss-up, by the same rule as the CLI's table (`Recommendation.separable`)."""
        import matplotlib
        if path is not None:
            matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import seaborn as sns
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch

        sns.set_theme(style="whitegrid")
        fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(19, 6.2))
        pal = dict(zip(ARMS, sns.color_palette("tab10", len(ARMS))))
        # arms that ignore the split are flat on the left panel and may sit at the same value: each gets
        # its own dash pattern and marker, used on both panels
        flat = [a.arm for a in self.arms if not ARMS[a.arm].splits_labels]
        dashes = ["--", ":", "-.", (0, (5, 1.5, 1, 1.5, 1, 1.5)), (0, (8, 2))]
        markers = ["o", "s", "^", "D", "v"]
        style = {name: {"ls": "-", "marker": None} for name in ARMS}
        for i, name in enumerate(flat):
            style[name] = {"ls": dashes[i % len(dashes)], "marker": markers[i % len(markers)]}
        label = {name: name for name in ARMS}
        for name, arm in ARMS.items():
            if arm.control:
                label[name] = f"{name} (control: stage 3's teacher labels, its student labels unused)"

        r = self.recommendation
        # seven overlapping bands cannot be told apart: only the two arms the decision is between get one
        banded = [n for n in (r.arm, r.runner_up) if n is not None]

        def share(a: ArmPrediction) -> float:  # an arm's own teacher share of the labels
            return a.teacher_labels / self.labels if self.labels else 0.0

        x = np.asarray(self.split_fractions)
        for name, acc, lo, hi in self.split_curves:
            ax1.plot(x, acc, color=pal[name], lw=2)
            if name in banded:
                ax1.fill_between(x, lo, hi, alpha=0.18, color=pal[name], lw=0)
        for i, name in enumerate(flat):
            a = self.arm(name)
            ax1.plot(x, np.full_like(x, a.accuracy), color=pal[name], ls=style[name]["ls"], lw=1.3,
                     marker=style[name]["marker"], markevery=(4 + 9 * i, 25), ms=5)
            if name in banded:
                ax1.fill_between(x, a.lo, a.hi, alpha=0.18, color=pal[name], lw=0)
        rec = self.arm(r.arm)
        rx = share(rec)
        ax1.axvline(rx, color="0.3", ls=":", lw=1)
        left = rx > 0.2  # the note sits on the side of the line with room
        ax1.annotate(f"recommended split\n{rx:.0%} teacher ({r.arm})", (rx, 0.98),
                     xycoords=("data", "axes fraction"), xytext=(-4 if left else 4, 0), textcoords="offset points",
                     ha="right" if left else "left", va="top", fontsize=8, color="0.3",
                     bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.8})
        # on the budget panel both sit at the planned N: the runner-up is dodged right so its bar shows
        dodge = 0.015 * max(labels_grid if labels_grid is not None else budget_grid(self.labels))
        marks = [(rec, "*", 16, pal[r.arm], 0.0)]
        if r.runner_up is not None:
            marks.append((self.arm(r.runner_up), "P", 11, pal[r.runner_up], dodge))
        for a, m, ms, c, dx in marks:
            for ax, xa in ((ax1, share(a)), (ax2, self.labels + dx)):
                ax.errorbar([xa], [a.accuracy], yerr=[[a.accuracy - a.lo], [a.hi - a.accuracy]], fmt=m, ms=ms,
                            color=c, mec="black", mew=1, ecolor=c if m != "*" else "black", capsize=4,
                            zorder=5 if m == "*" else 4)
        ax1.set(xlabel="teacher share of the labels (split arms only)", ylabel=f"{self.benchmark} accuracy (%)",
                title=f"accuracy vs teacher share at N = {self.labels}")
        if self._scenario_obj is not None:
            grid = labels_grid if labels_grid is not None else budget_grid(self.labels)
            curve = budget_curve(self._scenario_obj, grid, benchmark=self.benchmark)
            for name, g in curve.groupby("arm", sort=False):
                ax2.plot(g["labels"], g["accuracy"], color=pal[name], lw=2 if ARMS[name].splits_labels else 1.3,
                         ls=style[name]["ls"], marker=style[name]["marker"] or ".", ms=5)
                if name in banded:
                    ax2.fill_between(g["labels"], g["lo"], g["hi"], alpha=0.15, color=pal[name], lw=0)
        ax2.axvline(self.labels, color="0.3", ls=":", lw=1)
        ax2.annotate(f"planned N = {self.labels}", (self.labels, 0.02), xycoords=("data", "axes fraction"),
                     xytext=(-4, 0), textcoords="offset points", ha="right", va="bottom", fontsize=8, color="0.3")
        ax2.set(xlabel="label budget N", ylabel=f"{self.benchmark} accuracy (%)",
                title="accuracy vs label budget N (split arms at the best split for each N)")

        if self.compute is not None:
            self._plot_frontiers(ax3, pal, style)

        # the decision in the words and rule of the CLI's table (`Recommendation.separable`)
        verdict = f"recommended: {r.arm} (p_best {r.p_best:.2f})"
        if r.runner_up is not None:
            verdict += (f"; runner-up: {r.runner_up}, gap {fmt_num(r.gap_mean, '+.1f')} points, "
                        f"{GAP_LEVEL:.0%} interval [{fmt_num(r.gap_lo, '+.1f')}, {fmt_num(r.gap_hi, '+.1f')}]: "
                        + ("separable" if r.separable else "toss-up (the interval contains 0)"))
        fig.suptitle(f"{self.scenario}: {self.benchmark} with N = {self.labels} labels\n{verdict}", fontsize=11)
        handles = [Line2D([], [], color=pal[n], lw=2 if ARMS[n].splits_labels else 1.3, ls=style[n]["ls"],
                          marker=style[n]["marker"], ms=5, label=label[n]) for n in ARMS]
        handles += [Patch(color="0.6", alpha=0.4,
                          label="95% predictive interval (bands: recommended and runner-up only)"),
                    Line2D([], [], ls="", marker="*", ms=14, color=pal[r.arm], mec="black",
                           label=f"recommended: {r.arm}, {r.teacher_labels} teacher / {r.student_labels} student")]
        if r.runner_up is not None:
            ru = self.arm(r.runner_up)
            handles.append(Line2D([], [], ls="", marker="P", ms=10, color=pal[r.runner_up], mec="black",
                                  label=f"runner-up: {r.runner_up}, {ru.teacher_labels} teacher / "
                                        f"{ru.student_labels} student"))
        fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False, bbox_to_anchor=(0.5, 0.0))
        fig.tight_layout(rect=(0, 0.13, 1, 1))
        if path is not None:
            fig.savefig(path, dpi=120)
            plt.close(fig)
        return fig


    def _plot_frontiers(self, ax, pal, style) -> None:
        """Accuracy against GPU-hours (log; training tokens when the cost table's models are not the
        scenario's, e.g. a toy world): each arm's frontier, bands for the arm recommended at plateau and the
        one within the budget, the star at the recommendation (within the budget when there is one)."""
        c = self.compute
        by_hours = bool(self.gpu_costs and self.gpu_costs.get("models_match"))
        xof = (lambda q: q.gpu_hours) if by_hours else (lambda q: q.tokens)  # noqa: E731
        rec = c["recommended_within_budget"] or c["recommended_at_plateau"]
        banded = {c["recommended_at_plateau"], rec}
        for name, ac in c["arms"].items():
            xs = [xof(q) for q in ac.frontier]
            ax.plot(xs, [q.accuracy for q in ac.frontier], color=pal[name], ls=style[name]["ls"], lw=1.6,
                    drawstyle="steps-post")
            if name in banded:
                ax.fill_between(xs, [q.lo for q in ac.frontier], [q.hi for q in ac.frontier], step="post",
                                alpha=0.15, color=pal[name], lw=0)
            p = ac.plateau
            ax.plot([xof(p)], [p.accuracy], marker="o", ms=5, color=pal[name], mec="black", mew=0.6)
        point = c["arms"][rec].at_budget if c["recommended_within_budget"] else c["arms"][rec].plateau
        ax.errorbar([xof(point)], [point.accuracy], yerr=[[point.accuracy - point.lo], [point.hi - point.accuracy]],
                    fmt="*", ms=16, color=pal[rec], mec="black", ecolor="black", capsize=4, zorder=5)
        if c["budget_gpu_hours"] is not None and by_hours:
            ax.axvline(c["budget_gpu_hours"] - c["pilot_gpu_hours"], color="0.3", ls=":", lw=1)
        where = "within the budget" if c["recommended_within_budget"] else "at plateau"
        ax.set(xscale="log", xlabel=("GPU-hours on %d GPU(s), validation included" % c["gpus"]) if by_hours
               else "training tokens (the cost table's models are not this scenario's)",
               ylabel=f"{self.benchmark} accuracy (%)",
               title=f"each arm's frontier (dots: plateaus)\nstar: {rec} {where}")


def fmt_num(x: float, spec: str) -> str:
    """format(x, spec) without a negative zero: -0.004 at '.2f' reads '0.00', not '-0.00'."""
    s = format(x, spec)
    return format(0.0, spec) if float(s) == 0.0 else s


# decimals a JSON number keeps, by what it measures: accuracy points (and their sds) to 0.01, shares,
# probabilities, KLs and bits to 0.001
_POINTS = {"accuracy", "ci", "lo", "hi", "mean", "map", "teacher_accuracy", "student_accuracy", "discrepancy_sd",
           "measurement_sd", "dense_nats_per_prompt", "before", "after", "from_compliance", "from_transfer",
           "from_displacement"}


def _rounded(obj, key: str | None = None):
    if isinstance(obj, dict):
        return {k: (v if k == "inputs" else _rounded(v, k)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_rounded(v, key) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return round(float(obj), 2 if key in _POINTS else 3) + 0.0  # + 0.0 turns -0.0 into 0.0
    return obj


def budget_grid(n: int) -> list[int]:
    top = max(2 * n, 1000)
    return sorted({int(round(top * f)) for f in np.linspace(0, 1, 9)})


def _draws_setting(fit: Fit, bench: str):
    """Setting with R = (1 + D,): row 0 is the MAP, rows 1.. the posterior draws."""
    scn = fit.scenario
    z = np.vstack([fit.z_map[None, :], fit.z_draws])
    vals = values_from_z(scn, z)
    vals.update(length_draws(scn, len(fit.z_draws)))
    return build_setting(scn, vals, (bench,)), vals


def length_draws(scn: Scenario, draws: int) -> dict:
    """The [lengths] inputs over R = (1 + D,): row 0 their stated value, rows 1.. draws from their prior
    (assumed) or stated error (measured with sd); the observation fit never informs them (the
    observations ran at the reference lengths). One generator per input (common random numbers)."""
    out = {}
    for t in scn.inputs:
        if not t.path.startswith("lengths."):
            continue
        if t.tag == "assumed" or t.has_se:
            eps = np.random.default_rng([int(scn.seed), zlib.crc32(t.path.encode())]).standard_normal(draws)
            out[t.path] = np.concatenate([[t.value], from_z(t, to_z(t) + t.sd * eps)])
        else:
            out[t.path] = np.full(draws + 1, t.value)
    return out


@dataclass(frozen=True)
class PlanSetup:
    fit: Fit
    bench: str
    setting: object  # theory.dynamics.Setting, R = (1 + D,)
    b: int  # benchmark index in setting
    vals: dict
    sd_delta: float
    sd_note: str
    n_eff: float  # posterior draws the plan effectively rests on: min(D, ESS)

    @property
    def draws(self) -> int:
        return len(self.fit.z_draws)

    def _rng(self, *tags) -> np.random.Generator:
        words = [int(self.fit.scenario.seed)] + [zlib.crc32(repr(t).encode()) for t in tags]
        return np.random.default_rng(words)

    def delta(self, key: tuple) -> np.ndarray:
        """Structural error of one effective configuration, per draw (D,): common to every arm and split
        with this key, stable whatever else the plan evaluates."""
        if key == ():
            return np.zeros(self.draws)
        return self._rng("delta", key).standard_normal(self.draws) * self.sd_delta

    def _measurement_sd(self, acc_D: np.ndarray) -> np.ndarray:
        """sd of one measured accuracy per draw (shape of acc_D, first axis D)."""
        scn = self.fit.scenario
        se_D = self.vals[f"benchmarks.{self.bench}.eval_se"][1:1 + acc_D.shape[0]]  # the first draws of acc_D
        n_p = scn.get(f"benchmarks.{self.bench}.n_problems").value if scn.has(
            f"benchmarks.{self.bench}.n_problems") else None
        k = scn.get(f"benchmarks.{self.bench}.samples").value if scn.has(f"benchmarks.{self.bench}.samples") else None
        return measurement_sd(se_D.reshape(se_D.shape + (1,) * (acc_D.ndim - 1)), acc_D, n_p, k)

    def eps(self, name, acc_D: np.ndarray) -> np.ndarray:
        """Measurement noise of one evaluation (shape of acc_D, first axis D); `name` identifies the run:
        in a plan, the effective configuration (two arms that are the same experiment are one run)."""
        z = self._rng("eps", name).standard_normal(acc_D.shape[0])
        return z.reshape(z.shape + (1,) * (acc_D.ndim - 1)) * self._measurement_sd(acc_D)

    def predictive(self, key: tuple, acc_D: np.ndarray) -> np.ndarray:
        """Draws of a measured accuracy of the experiment `key`: model draw + structural error +
        measurement noise."""
        d = self.delta(key)
        return acc_D + d.reshape(d.shape + (1,) * (acc_D.ndim - 1)) + self.eps(key, acc_D)

    def mean_of_seeds(self, key: tuple, name, acc_D: np.ndarray, n_seeds: int = 1) -> np.ndarray:
        """Draws of the mean of `n_seeds` measured runs of the experiment `key`: model draw + structural
        error + measurement noise / sqrt(n_seeds), the noise drawn for the run `name` (a separate run per
        configuration asked for)."""
        return acc_D + self.delta(key) + self.eps(name, acc_D) / np.sqrt(n_seeds)

    def predictive_columns(self, keys, acc_DS: np.ndarray) -> np.ndarray:
        """`predictive` of one experiment per column of acc_DS (keys[j] is column j's), e.g. a split sweep,
        whose splits are a few experiments (a key names the stages run, not the label counts). acc_DS may
        hold the first D' <= D draws only (the compute plane's grid): the same draws' errors are used."""
        distinct = list(dict.fromkeys(keys))
        col = [distinct.index(k) for k in keys]
        d = acc_DS.shape[0]
        delta_DS = np.stack([self.delta(k)[:d] for k in distinct], -1)[:, col]
        z_DS = np.stack([self._rng("eps", k).standard_normal(self.draws)[:d] for k in distinct], -1)[:, col]
        return acc_DS + delta_DS + z_DS * self._measurement_sd(acc_DS)


def plan_setup(scn: Scenario, benchmark: str | None) -> PlanSetup:
    bench = benchmark or scn.target_benchmark
    if bench not in scn.benchmarks:
        raise InputError(f"benchmark {bench!r} is not in scenario {scn.name} ({', '.join(scn.benchmarks)})")
    fit = fit_scenario(scn)
    setting, vals = _draws_setting(fit, bench)
    sd, note = discrepancy_sd(scn)
    D = len(fit.z_draws)
    n_eff = float(D) if not np.isfinite(fit.ess) else float(min(D, fit.ess))
    return PlanSetup(fit=fit, bench=bench, setting=setting, b=setting.benchmarks.index(bench), vals=vals, sd_delta=sd,
                  sd_note=note, n_eff=n_eff)


def _split_labels(n: int) -> tuple[np.ndarray, np.ndarray]:
    frac = np.round(np.arange(0, 1 + 1e-9, SPLIT_STEP), 2)
    return frac, np.round(frac * n).astype(int)


def _interval(pred_D, level: float = 0.95):
    """Central interval over the draw axis (0) of a measured accuracy, kept inside [0, 100]."""
    q = 100.0 * np.array([(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    lo, hi = np.percentile(pred_D, q, axis=0)
    return np.clip(lo, 0.0, 100.0), np.clip(hi, 0.0, 100.0)


def _p_best(pred_DA: np.ndarray, n_eff: float) -> np.ndarray:
    """P(each column measures best). Ties share the credit. The share of draws is an estimate from
    the n_eff draws the posterior effectively rests on: report its posterior mean under a uniform
    Dirichlet prior over the K candidates, (count + 1) / (n_eff + K) -- with few effective draws no
    arm can look certain (with 49 draws and 6 candidates at most 0.91)."""
    is_best = pred_DA >= pred_DA.max(-1, keepdims=True) - 1e-9
    share = (is_best / is_best.sum(-1, keepdims=True)).mean(0)
    K = pred_DA.shape[-1]
    return (share * n_eff + 1.0) / (n_eff + K)


def _covered(scn: Scenario, arm: Arm, acct) -> bool:
    """Is the configuration (arm's effective experiment at these label counts) within the data? An
    observation covers it when it runs the same experiment (`config_key`) with each label count within
    a factor COVER_FACTOR (zero where it is zero)."""
    key = config_key(arm, acct)
    for o in scn.observations:
        n_o = scn.budget if o.labels is None else o.labels
        oa = ARMS[o.arm]
        acct_o = oa.labels(n_o, o.teacher_labels if oa.splits_labels else None)
        if config_key(oa, acct_o) != key:
            continue
        ok = True
        for x, y in ((acct.teacher, acct_o.teacher), (acct.student, acct_o.student)):
            if (x == 0) != (y == 0) or (x and not 1 / COVER_FACTOR <= x / y <= COVER_FACTOR):
                ok = False
        if ok:
            return True
    return False


def _ceiling(setup: PlanSetup) -> dict | None:
    """The student's accuracy ceiling on the benchmark (percent, given full compliance): MAP and 95%."""
    scn = setup.fit.scenario
    path = f"student.benchmarks.{setup.bench}.ceiling"
    if not scn.has(path):
        return None
    u = np.asarray(setup.setting.student.u_B, dtype=float)[..., setup.b] * 100.0
    lo, hi = np.percentile(u[1:], [2.5, 97.5])
    return {"map": float(u[0]), "ci": [float(lo), float(hi)], "stated": scn.get(path).value,
            "tag": scn.get(path).tag}


def best_split(setup: PlanSetup, n: int, kappa_ratio_factor: float = 1.0) -> int:
    """Teacher labels of the split maximising the draw-mean accuracy of rl_teacher_bridge_stage3;
    `kappa_ratio_factor` scales teacher/student GRPO efficiency (for `explain`'s sensitivity line)."""
    wide = setup.setting.expand()
    if kappa_ratio_factor != 1.0:
        r = wide.rates
        wide = replace(wide, rates=replace(r, kappa_ratio=np.asarray(r.kappa_ratio, dtype=float) * kappa_ratio_factor))
    frac_S, tl_S = _split_labels(n)
    curve = predict_arm(wide, ARMS[STAGE3], n, tl_S)[..., setup.b]
    return int(tl_S[int(np.argmax(curve[1:].mean(0)))])


def split_sensitivity(scenario: Scenario | str, labels: int | None = None, *, benchmark: str | None = None) -> dict:
    """Recommended teacher share of rl_teacher_bridge_stage3 as stated, and if the teacher/student GRPO
    efficiency ratio kappa_T/kappa_S were doubled or halved (every draw scaled)."""
    scn = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
    n = scn.budget if labels is None else check_budget(labels)
    setup = plan_setup(scn, benchmark)
    out = {}
    for name, f in (("as_fitted", 1.0), ("ratio_x2", 2.0), ("ratio_x0.5", 0.5)):
        t = best_split(setup, n, f)
        out[name] = {"teacher_labels": t, "teacher_share": (t / n) if n else 0.0}
    return out


def plan(scenario: Scenario | str, labels: int | None = None, *, benchmark: str | None = None,
         gpus: int | None = None, gpu_hours: float | None = None, costs: CostTable | str | Path | None = None,
         pilot_gpu_hours: float = 0.0) -> Plan:
    """Per-arm predictions at a budget of `labels` (default: the scenario's budget). Pure.

    Every arm's GPU-hours on `gpus` GPUs (default `theory.costs.DEFAULT_GPUS`) come from `costs` (a
    `CostTable`, a CSV path, or None: the committed docs/results/gpu_costs.csv, else built-in defaults).
    The table is at the reference lengths (what the observations ran); `Plan.compute` is the label x
    compute plane (`budget_planner.compute`): each arm's frontier and plateau, the arm and stage lengths
    to train to plateau and, with `gpu_hours`, the arm and lengths that maximise the predicted accuracy
    within it less `pilot_gpu_hours` (validation included). With `gpu_hours`, the table marks arms whose
    reference lengths cost more as infeasible and recommends the best feasible one; when none is, it
    recommends as without a budget and warns. An `InputError` says so when no arm fits at any length."""
    scn = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
    n = scn.budget if labels is None else check_budget(labels)
    gpus = DEFAULT_GPUS if gpus is None else check_gpus(gpus, "gpus")
    budget_h = None if gpu_hours is None else _check_gpu_hours(gpu_hours)
    table = (costs if isinstance(costs, CostTable) else CostTable.default() if costs is None
             else CostTable.from_csv(costs))
    setup = plan_setup(scn, benchmark)
    fit, bench, b = setup.fit, setup.bench, setup.b
    frac_S, tl_S = _split_labels(n)

    # the dynamics of every arm at once: the arms that split the labels over the split sweep, the
    # split chosen on rl_teacher_bridge_stage3, the others at the budget; the marginal value of more
    # labels at the same teacher share from the MAP model (a backward step at the maximum)
    splitting = [arm for arm in ARMS.values() if arm.splits_labels]
    sweep = dict(zip([a.name for a in splitting], predict_arms(setup.setting.expand(), splitting, n, tl_S)[..., b]))
    s_best = int(np.argmax(sweep[STAGE3][1:].mean(0)))
    t_best = int(tl_S[s_best])
    fixed = [arm for arm in ARMS.values() if not arm.splits_labels]
    at_budget = dict(zip([a.name for a in fixed], predict_arms(setup.setting, fixed, n)[..., b]))
    h = max(1, int(round(0.01 * n)))
    if n + h > MAX_LABELS:
        h = -h
    map_setting, map_vals = _map_setting(fit, bench)
    more = predict_arms(map_setting, ARMS.values(), n + h,
                        int(round((t_best / n if n else frac_S[s_best]) * (n + h))))[:, 0, b]

    preds: list[ArmPrediction] = []
    points, accts, keys, draws, costs_of, split_curves = {}, {}, {}, {}, {}, []
    for i, (name, arm) in enumerate(ARMS.items()):  # one pass over the arms
        tl = t_best if arm.splits_labels else None
        points[name] = point = sweep[name][:, s_best] if arm.splits_labels else at_budget[name]
        accts[name] = acct = arm.labels(n, tl)
        keys[name] = config_key(arm, acct)
        draws[name] = setup.predictive(keys[name], point[1:])
        costs_of[name] = cost = arm_cost(arm, n, scn.compute, table, gpus=gpus, teacher_labels=tl)
        lo, hi = _interval(draws[name])
        preds.append(ArmPrediction(
            arm=name, accuracy=float(point[0]), lo=float(lo), hi=float(hi), p_best=None,
            teacher_labels=acct.teacher, student_labels=acct.student,
            marginal_per_1k=float((more[i] - point[0]) / h * 1000.0), control=arm.control,
            compute_tokens=int(sum(cost.stage_tokens.values())), gpu_hours=cost.gpu_hours,
            feasible=budget_h is None or cost.gpu_hours <= budget_h))
        if arm.splits_labels:
            c = sweep[name]
            lo, hi = _interval(setup.predictive_columns([config_key(arm, arm.labels(n, int(t))) for t in tl_S], c[1:]))
            split_curves.append((name, tuple(map(float, c[0])), tuple(map(float, lo)), tuple(map(float, hi))))

    # decisions are between experiments: arms that run the same stages on the same labels (e.g. the
    # RL-teacher bridge with 0 labels is the raw-teacher bridge) are one choice, named by the first of
    # them in the registry; controls are never candidates
    feasible = {p.arm: p.feasible for p in preds}
    cands = list(candidate_arms())
    compute = compute_plan(setup, n, t_best, table, gpus, budget_h, pilot_gpu_hours)  # raises if nothing fits
    none_fit = budget_h is not None and not any(feasible[a] for a in cands)
    if budget_h is not None and not none_fit:
        cands = [a for a in cands if feasible[a]]
    exps: list[str] = []  # representative arm of each distinct experiment, registry order
    for a in cands:
        if all(keys[e] != keys[a] for e in exps):
            exps.append(a)
    rep = {a: next(e for e in exps if keys[e] == keys[a]) for a in ARMS if keys[a] in {keys[e] for e in exps}}
    pred_DE = np.stack([draws[e] for e in exps], -1)
    p_best_E = _p_best(pred_DE, setup.n_eff)
    order = list(np.lexsort((-pred_DE.mean(0), -p_best_E)))
    rec_name = exps[order[0]]
    ru_name = exps[order[1]] if len(exps) > 1 else None
    p_of = {e: float(p_best_E[i]) for i, e in enumerate(exps)}
    preds = [replace(p, p_best=p_of[rep[p.arm]] if p.arm in cands else None,
                     same_as=rep.get(p.arm) if rep.get(p.arm, p.arm) != p.arm else None) for p in preds]
    by = {p.arm: p for p in preds}

    gap_lo = gap_hi = gap_mean = 0.0
    cheaper = None
    if ru_name is not None:
        gap_D = draws[rec_name] - draws[ru_name]
        gap_mean = float(gap_D.mean())
        gap_lo, gap_hi = (float(x) for x in np.percentile(gap_D, [50 * (1 - GAP_LEVEL), 50 * (1 + GAP_LEVEL)]))
        cheaper = min((rec_name, ru_name), key=lambda a: (by[a].compute_tokens, a != rec_name))
    separable = ru_name is not None and (gap_lo > 0.0 or gap_hi < 0.0)
    rec_arm = ARMS[rec_name]
    extrapolation = not _covered(scn, rec_arm, accts[rec_name])
    rec = Recommendation(arm=rec_name, p_best=by[rec_name].p_best, teacher_labels=by[rec_name].teacher_labels,
                         student_labels=by[rec_name].student_labels, runner_up=ru_name, gap_mean=gap_mean,
                         gap_lo=gap_lo, gap_hi=gap_hi, separable=bool(separable), cheaper=cheaper,
                         extrapolation=bool(extrapolation))

    info, conds = informativeness(fit, n, bench, map_setting, map_vals)
    ceiling = _ceiling(setup)
    warnings = list(fit.warnings)
    if none_fit:
        warnings.append(f"no arm fits {budget_h:g} GPU-hours at its reference lengths: the table recommends as "
                        f"without a budget; within the budget, shorter stages: {compute['recommended_within_budget']}")
    if setup.n_eff < MIN_ESS:
        warnings.append(f"the posterior rests on an effective {setup.n_eff:.0f} draws (< {MIN_ESS}): p_best is "
                        f"estimated from {setup.n_eff:.0f} draws (at most "
                        f"{(setup.n_eff + 1) / (setup.n_eff + len(cands)):.2f}) and intervals are approximate")
    ds = scn.get("inputs.dataset_size").value if scn.has("inputs.dataset_size") else None
    if ds is not None and n > ds:
        warnings.append(f"labels={n} exceeds the dataset's {int(ds)} distinct problems: labels would repeat, "
                        "which the model does not represent (it counts every label as new)")
    if fit.labels_range is not None:
        lo_n, hi_n = fit.labels_range
        if n > COVER_FACTOR * hi_n:
            warnings.append(f"labels={n} is more than {COVER_FACTOR}x the largest calibrated budget ({hi_n}): "
                            "far extrapolation of the GRPO curve; the accuracy ceiling bounds it, nothing else does")
        elif not lo_n <= n <= hi_n:
            warnings.append(f"labels={n} is outside the calibrated range [{lo_n}, {hi_n}] of observed budgets: "
                            "the GRPO curve is extrapolated")
    if ceiling is None:
        warnings.append(f"no accuracy ceiling stated for the student on {bench}: at large N predictions may "
                        "approach 100% (add student.benchmarks.<B>.ceiling)")
    if extrapolation:
        what = f"{rec_name} with {rec.teacher_labels} teacher / {rec.student_labels} student labels"
        extra = ""
        if rec_arm.splits_labels and rec.teacher_labels == 0:
            extra = " (0 teacher labels: the raw-teacher bridge followed by student GRPO, which the paper did not run)"
        warnings.append(f"extrapolation: no observation covers {what}{extra}; the advice rests on the model's "
                        "structure, not on data")
    sd_m = float(np.median(measurement_sd(setup.vals[f"benchmarks.{bench}.eval_se"][1:], points[rec_name][1:],
                                          *(scn.get(f"benchmarks.{bench}.{k}").value
                                            if scn.has(f"benchmarks.{bench}.{k}") else None
                                            for k in ("n_problems", "samples")))))
    uncertainty = {"discrepancy_sd": setup.sd_delta, "discrepancy_source": setup.sd_note, "measurement_sd": sd_m,
                   "effective_draws": setup.n_eff, "draws": setup.draws}
    gpu_costs = _gpu_costs(table, gpus, budget_h, costs_of, feasible, scn)
    inputs = tuple({"input": t.path, "value": t.value, "tag": t.tag, "fitted": t.fitted, "note": t.note}
                   for t in scn.inputs) + (
        {"input": "compute", "value": None, "tag": scn.compute_tag, "fitted": False,
         "note": scn.compute_note + " (fixed: enters replay_control's compute ratio and the token counts)"},)
    return Plan(scenario=scn.name, benchmark=bench, labels=n, arms=tuple(preds), recommendation=rec,
                split_fractions=tuple(map(float, frac_S)), split_curves=tuple(split_curves),
                informativeness=tuple(info), conditions=tuple(conds), inputs=inputs,
                warnings=tuple(warnings), n_fitted=len(fit.names), chi2=fit.chi2, ceiling=ceiling,
                uncertainty=uncertainty, gpu_costs=gpu_costs, compute=compute, _scenario_obj=scn)


def _check_gpu_hours(h) -> float:
    try:
        f = float(h)
    except (TypeError, ValueError):
        raise InputError(f"gpu_hours must be a positive number, got {h!r}") from None
    if isinstance(h, bool) or not (np.isfinite(f) and f > 0):
        raise InputError(f"gpu_hours must be a positive number, got {h!r}")
    return f


def _gpu_costs(table: CostTable, gpus: int, budget_h, costs_of, feasible, scn: Scenario) -> dict:
    """The cost side of a plan: what was assumed, what measured, and each arm's hours per stage."""
    stages = sorted({s for c in costs_of.values() for s in c.stage_tokens})
    compute = scn.compute
    models = table.models()
    return {
        "gpus": gpus, "table": table.origin, "budget_gpu_hours": budget_h,
        # rates taken on other models than the scenario's price its tokens as if they were these models
        "table_models": list(models), "models_match": scn.student in models and scn.teacher in models,
        "parallel_efficiency": parallel_efficiency(gpus), "parallel_efficiency_tag": "assumed",
        "parallel_efficiency_note": PARALLEL_EFFICIENCY_NOTE,
        "aggregate_tokens_per_s": {s: table.tokens_per_s(s, compute, gpus) for s in stages},  # all GPUs together
        "tags": {s: table.tags(s, gpus) for s in stages},
        "infeasible": [a for a, ok in feasible.items() if not ok],
        "stage_gpu_hours": {a: dict(c.stage_gpu_hours) for a, c in costs_of.items()},
    }


def _config_pred(setup: PlanSetup, arm_name: str, n: int, tl, n_seeds: int = 1):
    arm = ARMS.get(arm_name)
    if arm is None:
        raise InputError(f"unknown arm {arm_name!r}; arms are {', '.join(ARMS)}")
    n = check_budget(n)
    tl = None if tl is None or not arm.splits_labels else int(tl)
    acct = arm.labels(n, tl)
    acc_R = predict_arm(setup.setting, arm, n, tl)[..., setup.b]
    key = config_key(arm, acct)
    pred_D = setup.mean_of_seeds(key, (key, arm_name, n, tl), acc_R[1:], n_seeds)
    return arm, n, acct, acc_R, pred_D


def predict_gap(scenario: Scenario | str, a, b, *, level: float = GAP_LEVEL, benchmark: str | None = None):
    """(lo, mean, hi): predictive interval of measured(a) - measured(b), each an (arm, labels,
    teacher_labels or None) configuration."""
    scn = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
    setup = plan_setup(scn, benchmark)
    pa, pb = _config_pred(setup, *a)[-1], _config_pred(setup, *b)[-1]
    g = pa - pb
    lo, hi = np.percentile(g, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(g.mean()), float(hi)


def predict_configs(scenario: Scenario | str, configs, *, n_seeds: int = 1, level: float = 0.9,
                    benchmark: str | None = None) -> pd.DataFrame:
    """Predicted accuracy of given run configurations, for comparing with runs not yet made.

    `configs`: iterable of (arm, labels, teacher_labels or None). One row each: the registry's label
    account (teacher_labels/student_labels as a run table records them), `pred_mean` = the MAP
    prediction (what `plan` prints), and a central `level` predictive interval for the MEAN of
    `n_seeds` runs: posterior draws plus structural error plus measurement noise / sqrt(n_seeds).
    """
    scn = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
    if not 0.0 < level < 1.0:
        raise InputError(f"level must lie in (0, 1), got {level!r}")
    if int(n_seeds) < 1:
        raise InputError(f"n_seeds must be >= 1, got {n_seeds!r}")
    setup = plan_setup(scn, benchmark)
    rows = []
    for arm_name, n, tl in configs:
        arm, n, acct, acc_R, pred_D = _config_pred(setup, arm_name, n, tl, int(n_seeds))
        lo, hi = _interval(pred_D, level)
        rows.append({"arm": arm.name, "labels": n, "teacher_labels": acct.teacher, "student_labels": acct.student,
                     "pred_mean": float(acc_R[0]), "pred_lo": float(lo), "pred_hi": float(hi), "level": level,
                     "n_seeds": int(n_seeds)})
    return pd.DataFrame(rows)


def _map_setting(fit: Fit, bench: str):
    vals = values_from_z(fit.scenario, fit.z_map[None, :])
    return build_setting(fit.scenario, vals, (bench,)), vals


def _bridge_probe() -> list[Arm]:
    """The registry arms that train the RL teacher and then run the whole bridge (warmup + OPD), OPD
    alone, and the warmup alone: the stages C1 and C2 govern, found by the update rules of their
    teacher-scored stages. With 0 teacher labels they run on the raw teacher (stage-1 GRPO with no
    labels leaves it as it is)."""
    by_updates: dict[tuple[str, ...], Arm] = {}
    for arm in ARMS.values():
        if arm.teacher is Teacher.RL and not arm.splits_labels and not arm.control:
            key = tuple(STAGES[s].update for s in arm.stages if STAGES[s].scorer == TEACHER)
            by_updates.setdefault(key, arm)
    return [by_updates[k] for k in (("fkl", "opd"), ("opd",), ("fkl",))]


def informativeness(fit: Fit, n: int, bench: str, setting, vals) -> tuple[list[dict], list[ConditionCheck]]:
    """Per model state of the MAP `setting` (from `_map_setting`): sparse informativeness of a label and
    dense informativeness of a prompt, and the C1/C2 checks beside what the dynamics predict for the
    bridge stages they govern.

    Every accuracy here is `Setting.accuracy`, the one the arms are predicted with: the start row is
    the student of an arm given no labels (docs/theory.md, "One start accuracy"), and the signal columns
    count the items out of reach (share 1 - u) as GRPO's rate does, as groups with no signal."""
    scn = fit.scenario
    b = setting.benchmarks.index(bench)
    G = scn.group_size
    kl0 = float(vals["inputs.kl0"][0])
    tokens = scn.compute.response_tokens
    states = {
        f"{scn.student} (student, start)": setting.student,
        f"{scn.teacher} (raw teacher)": setting.teacher,
        f"{scn.teacher} (RL teacher, {n} labels)": predict_teacher(setting, n),
    }
    rows = []
    for label, pol in states.items():
        th, c, sd = pol.theta_B[..., b], pol.c_B[..., b], setting.s_d_B[..., b]
        u = np.broadcast_to(np.asarray(pol.u_B, dtype=float), np.shape(pol.theta_B))[..., b]
        rows.append({
            "model": label,
            "accuracy": float(setting.accuracy(pol)[0, b]),
            "compliance": float(c[0]),
            "signal_fraction": float(signal_fraction_avg(th, c, sd, G, u)[0]),
            "signal_size": float(signal_size_avg(th, c, sd, G, u)[0]),
            "bits_per_label": float(bits_per_label_avg(th, c, sd, G, u)[0]),
            "bits_max": float(np.log2(G + 1)),
            "kl0_nats_per_token": kl0 if "teacher" in label else 0.0,
            "dense_nats_per_prompt": float(dense_nats_per_prompt(kl0, tokens)) if "teacher" in label else 0.0,
        })
    s = rows[0]
    conds = [check_conditions(teacher=r["model"], teacher_accuracy=r["accuracy"], student_accuracy=s["accuracy"],
                              teacher_compliance=r["compliance"], student_compliance=s["compliance"], kl0=kl0,
                              kl_c=float(vals["rates.kl_c"][0]), phi_w=float(vals["rates.phi_w"][0]),
                              **_bridge_effects(setting, labels, b))
             for r, labels in zip(rows[1:], (0, n))]
    for r, c in zip(rows[1:], conds):
        r["C1"], r["C2"] = c.c1, c.c2
    return rows, conds


def _bridge_effects(setting, labels: int, b: int) -> dict:
    """What the MAP dynamics predict for the stages C1 and C2 govern, from the teacher trained on
    `labels` (0: the raw teacher): the bridge from the start (C1), OPD from the start and OPD after the
    warmup (C2), each split into compliance, ability transfer and displacement/cost (`StepEffect`)."""
    probe = _bridge_probe()
    moved = predict_states(setting, probe, labels)
    r = setting.rates
    displaced = any(np.any(np.asarray(x) != 0.0) for x in (r.gamma, r.cost_fkl, r.cost_opd))
    plain_setting = without_displacement(setting) if displaced else setting
    plain = predict_states(plain_setting, probe, labels) if displaced else moved
    row = lambda pol, i: Policy(pol.theta_B[i], pol.c_B[i], pol.u_B)  # noqa: E731  (arm i of a walk)
    start = setting.student

    def step(before, after, before_plain, after_plain) -> StepEffect:
        a0, a1 = (float(setting.accuracy(p)[0, b]) for p in (before, after))
        comp, ability = (float(x[0, b]) for x in accuracy_parts(setting, before, after))
        transfer = float(accuracy_parts(setting, before_plain, after_plain)[1][0, b])
        return StepEffect(before=a0, after=a1, from_compliance=comp, from_transfer=transfer,
                          from_displacement=ability - transfer)

    return {"bridge": step(start, row(moved, 0), start, row(plain, 0)),
            "opd": step(start, row(moved, 1), start, row(plain, 1)),
            "opd_after_warmup": step(row(moved, 2), row(moved, 0), row(plain, 2), row(plain, 0))}


def budget_curve(scenario: Scenario | str, labels_grid, *, teacher_fraction: float | None = None,
                 benchmark: str | None = None) -> pd.DataFrame:
    """Accuracy vs label budget N per arm (MAP point, 95% predictive band). Split arms run at
    `teacher_fraction` of the labels, or by default at the split `plan` would choose at each N (the one
    maximising rl_teacher_bridge_stage3; replay_control is evaluated at the same split), as the plan's
    figure shows them. Columns: labels, arm, teacher_labels, accuracy, lo, hi."""
    scn = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
    setup = plan_setup(scn, benchmark)
    if teacher_fraction is not None and not (0.0 <= teacher_fraction <= 1.0):
        raise InputError(f"teacher_fraction must be in [0, 1], got {teacher_fraction!r}")
    rows = []
    for n in labels_grid:
        n = check_budget(n)
        t_split = best_split(setup, n) if teacher_fraction is None else int(round(teacher_fraction * n))
        for name, arm in ARMS.items():
            tl = t_split if arm.splits_labels else None
            acc = predict_arm(setup.setting, arm, n, tl)[..., setup.b]
            acct = arm.labels(n, tl)
            pred = setup.predictive(config_key(arm, acct), acc[1:])
            lo, hi = _interval(pred)
            rows.append({"labels": n, "arm": name, "teacher_labels": int(acct.teacher), "accuracy": float(acc[0]),
                         "lo": float(lo), "hi": float(hi)})
    return pd.DataFrame(rows)
