"""The fairness report: assembled from a matched study's trials and final evaluations, rendered, and
read back.

`build_report` refuses unless the study is matched (tuning.harness.check_matched), then assembles frames
(the final evaluations are `tuning.evaluation`'s); `write_report` writes the CSV, Markdown and figures
(`tuning.figures`); `load_report` reads a written report back, `fairness_checks` checks the matching
rules on it and `verdict` states the outcome in one line.

Scores used by the tuning curves: a complete trial's validation accuracy; a pruned trial's last
reported value (what the tuner saw); a failed trial 0% (it produced no usable model).
"""

from __future__ import annotations

from dataclasses import dataclass
import json
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState

from theory.errors import InputError
from tuning import stats
from tuning.evaluation import EVAL_PREFIX, EVALC_PLAN, EVALC_PREFIX, best_trial
from tuning.figures import plot_report
from tuning.harness import REASON_ATTR, SEED_ATTR, SLOT_ATTR, arm_study_name, check_matched, load_study, slot_trials
from tuning.protocol import Protocol
from tuning.storage import StorageHandle

CSV_COLUMNS = ["arm", "trials", "pruned", "failed", "compute", "best_score", "eval_mean", "eval_ci_low",
               "eval_ci_high"]


def _fail_reason(t: optuna.trial.FrozenTrial, retried_from: dict[int, int]) -> str | None:
    if t.state != TrialState.FAIL:
        return None
    if REASON_ATTR in t.user_attrs:
        return t.user_attrs[REASON_ATTR]
    if t.number in retried_from:
        return f"worker lost (no heartbeat); retried as #{retried_from[t.number]}"
    return "worker lost (no heartbeat); retries exhausted"


def trials_frame(handle: StorageHandle, name: str, protocol: Protocol) -> pd.DataFrame:
    rows = []
    for arm in protocol.arms:
        study = load_study(handle, arm_study_name(name, arm))
        trials = study.get_trials(deepcopy=False)
        latest, _, _ = slot_trials(study)
        latest_ids = {t.number for t in latest.values()}
        retried_from: dict[int, int] = {}  # attempt number -> the retry that replaced it
        for t in trials:
            hist = t.system_attrs.get("retry_history") or []
            if hist:
                retried_from[hist[-1]] = t.number
        for t in trials:
            if SLOT_ATTR not in t.user_attrs:
                continue
            last = t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else np.nan
            rows.append({
                "arm": arm, "number": t.number, "slot": t.user_attrs[SLOT_ATTR],
                "tuning_seed": t.user_attrs.get(SEED_ATTR), "state": t.state.name,
                "counted": t.number in latest_ids, "value": t.value if t.value is not None else np.nan,
                "last_intermediate": last, "compute_tokens": t.user_attrs.get("compute_tokens", np.nan),
                "elapsed_s": t.user_attrs.get("elapsed_s", np.nan), "split": t.user_attrs.get("split"),
                "fail_reason": _fail_reason(t, retried_from), "params": json.dumps(t.params, sort_keys=True),
            })
    return pd.DataFrame(rows)


def trial_score(row) -> float:
    if row["state"] == "COMPLETE":
        return float(row["value"])
    if row["state"] == "PRUNED":
        return float(row["last_intermediate"]) if np.isfinite(row["last_intermediate"]) else 0.0
    return 0.0


@dataclass(frozen=True)
class FairnessReport:
    name: str
    protocol: Protocol
    summary: pd.DataFrame  # one row per arm
    trials: pd.DataFrame  # one row per attempt
    evals: pd.DataFrame  # arm, seed, accuracy, compute_tokens
    curves: pd.DataFrame  # arm, n_trials, expected_best, std, best_so_far
    comparisons: pd.DataFrame  # label-matched: paired differences vs the first arm
    compute_matched: pd.DataFrame  # equal *tuning* compute (validation, expected best)
    evals_compute: pd.DataFrame = None  # arm, seed, accuracy, compute_tokens, factor (equal per-run training tokens)
    comparisons_compute: pd.DataFrame = None  # compute-matched: paired differences vs the first arm

    def to_frame(self) -> pd.DataFrame:
        return self.summary

    def to_dict(self) -> dict:
        return {"name": self.name, "protocol": self.protocol.to_dict(),
                "summary": self.summary.to_dict(orient="records"),
                "comparisons": self.comparisons.to_dict(orient="records"),
                "compute_matched": self.compute_matched.to_dict(orient="records"),
                "comparisons_compute_matched": ([] if self.comparisons_compute is None
                                                else self.comparisons_compute.to_dict(orient="records"))}


def build_report(handle: StorageHandle, name: str, *, seed: int = 0) -> FairnessReport:
    protocol = check_matched(handle, name)
    rng = np.random.default_rng(seed)
    trials = trials_frame(handle, name, protocol)
    counted = trials[trials["counted"]].copy()
    counted["score"] = counted.apply(trial_score, axis=1)
    rows, curve_rows, eval_rows = [], [], []
    for arm in protocol.arms:
        study = load_study(handle, arm_study_name(name, arm))
        t = counted[counted["arm"] == arm].sort_values("number")
        best = best_trial(study)
        ev = []
        for s in protocol.eval_seeds:
            e = study.user_attrs.get(f"{EVAL_PREFIX}{s}")
            if e is not None and best is not None and e.get("trial") == best.number:
                ev.append(e["accuracy"])
                eval_rows.append({"arm": arm, "seed": s, "accuracy": e["accuracy"],
                                  "compute_tokens": e["compute_tokens"]})
        ci = stats.mean_ci(ev, rng) if ev else None
        curve = stats.expected_max_curve(t["score"].to_numpy())
        best_so_far = np.maximum.accumulate(t["score"].to_numpy())
        for n, m, sd, b in zip(curve.n_trials, curve.mean, curve.std, best_so_far):
            curve_rows.append({"arm": arm, "n_trials": int(n), "expected_best": m, "std": sd, "best_so_far": b})
        acct = protocol.label_accounts[arm]
        rows.append({
            "arm": arm, "trials": int(len(t)), "complete": int((t["state"] == "COMPLETE").sum()),
            "pruned": int((t["state"] == "PRUNED").sum()), "failed": int((t["state"] == "FAIL").sum()),
            "retried": int((~trials[trials["arm"] == arm]["counted"]).sum()),
            "compute": int(np.nansum(t["compute_tokens"].to_numpy(dtype=float))),
            "compute_per_trial": float(np.nanmean(t["compute_tokens"].to_numpy(dtype=float)))
            if t["compute_tokens"].notna().any() else np.nan,
            "best_score": best.value if best else np.nan, "best_trial": best.number if best else -1,
            "best_params": json.dumps(best.params, sort_keys=True) if best else "",
            "still_improving": stats.still_improving(t["score"].to_numpy()),
            "eval_n": len(ev), "eval_mean": ci.estimate if ci else np.nan,
            "eval_ci_low": ci.low if ci else np.nan, "eval_ci_high": ci.high if ci else np.nan,
            "eval_iqm": stats.iqm(ev) if ev else np.nan,
            "eval_compute_tokens": float(np.mean([r["compute_tokens"] for r in eval_rows if r["arm"] == arm]))
            if ev else np.nan,
            "teacher_labels": acct["teacher"], "student_labels": acct["student"], "unused_labels": acct["unused"],
        })
    summary = pd.DataFrame(rows)
    summary["dims"] = [len(protocol.search_space[a]) for a in summary["arm"]]
    positions = [range_positions(protocol.search_space[a], json.loads(bp) if bp else {})
                 for a, bp in zip(summary["arm"], summary["best_params"])]
    summary["range_position"] = ["; ".join(f"{k}={v:.2f}" for k, v in pos.items()) for pos in positions]
    summary["at_edge"] = ["; ".join(f"{k}={v:.2f}" for k, v in pos.items() if at_edge(v)) for pos in positions]
    evals = pd.DataFrame(eval_rows, columns=["arm", "seed", "accuracy", "compute_tokens"])
    comparisons = _comparisons(protocol, evals, rng)
    evals_c = _compute_matched_evals(handle, name, protocol, evals)
    comp_c = paired_comparisons(evals_c, protocol.arms, rng) if len(evals_c) else None
    return FairnessReport(name, protocol, summary, trials, evals, pd.DataFrame(curve_rows), comparisons,
                          _compute_matched(summary, counted), evals_c, comp_c)


EDGE = 0.1  # a best value in the outer 10% of its range (either end) may be cut off by the range


def range_positions(space: dict, params: dict) -> dict[str, float]:
    """Each searched number's place in its range, 0 = low end, 1 = high end (on the log scale for a log
    range): the learning rates and the lengths (GRPO epochs, FKL/OPD steps) alike."""
    out = {}
    for name, spec in sorted(space.items()):
        if name not in params or spec.get("kind") not in ("float", "int") or spec["high"] <= spec["low"]:
            continue
        f = np.log if spec.get("log") else (lambda x: x)
        lo, hi = f(spec["low"]), f(spec["high"])
        out[name] = float((f(params[name]) - lo) / (hi - lo))
    return out


def at_edge(position: float) -> bool:
    """A best value in the outer EDGE of its range, at either end."""
    return position < EDGE or position > 1 - EDGE


def _compute_matched_evals(handle: StorageHandle, name: str, protocol: Protocol, evals: pd.DataFrame) -> pd.DataFrame:
    """Per arm and evaluation seed at equal per-run training tokens: the stretched runs where one was
    made (`evalc:<seed>`), the label-matched run for the dearest arm. Empty when none was made."""
    cols = ["arm", "seed", "accuracy", "compute_tokens", "factor"]
    rows = []
    any_stretched = False
    for arm in protocol.arms:
        study = load_study(handle, arm_study_name(name, arm))
        best = best_trial(study)
        plan = study.user_attrs.get(EVALC_PLAN)
        stretched = plan is not None and best is not None and plan.get("trial") == best.number
        for s in protocol.eval_seeds:
            e = study.user_attrs.get(f"{EVALC_PREFIX}{s}") if stretched else None
            if e is not None and e.get("factor") == plan["factor"]:
                any_stretched = True
                rows.append({"arm": arm, "seed": s, "accuracy": e["accuracy"], "compute_tokens": e["compute_tokens"],
                             "factor": e["factor"]})
            elif not stretched:
                ev = evals[(evals["arm"] == arm) & (evals["seed"] == s)]
                if len(ev):
                    rows.append({"arm": arm, "seed": s, "accuracy": float(ev["accuracy"].iloc[0]),
                                 "compute_tokens": float(ev["compute_tokens"].iloc[0]), "factor": 1.0})
    return pd.DataFrame(rows if any_stretched else [], columns=cols)


def _comparisons(protocol: Protocol, evals: pd.DataFrame, rng) -> pd.DataFrame:
    """Label-matched: every arm at the same N labels, paired by evaluation seed against the first arm."""
    return paired_comparisons(evals, protocol.arms, rng)


def paired_comparisons(evals: pd.DataFrame, arms, rng: np.random.Generator) -> pd.DataFrame:
    """Every arm after the first against the first, paired by evaluation seed: mean difference with
    a bootstrap 95% interval, and P(improvement) with its interval (an `evals` frame: arm, seed, accuracy)."""
    base = arms[0]
    rows = []
    a = evals[evals["arm"] == base].set_index("seed")["accuracy"]
    for arm in arms[1:]:
        b = evals[evals["arm"] == arm].set_index("seed")["accuracy"]
        seeds = sorted(set(a.index) & set(b.index))
        if not seeds:
            continue
        xa, xb = a.loc[seeds].to_numpy(), b.loc[seeds].to_numpy()
        diff = stats.paired_difference(xa, xb, rng)
        poi = stats.probability_of_improvement_ci(xb, xa, rng)
        rows.append({"baseline": base, "arm": arm, "seeds": len(seeds), "mean_diff": diff.estimate,
                     "diff_ci_low": diff.low, "diff_ci_high": diff.high, "p_improvement": poi.estimate,
                     "p_ci_low": poi.low, "p_ci_high": poi.high})
    return pd.DataFrame(rows, columns=["baseline", "arm", "seeds", "mean_diff", "diff_ci_low", "diff_ci_high",
                                       "p_improvement", "p_ci_low", "p_ci_high"])


def _compute_matched(summary: pd.DataFrame, counted: pd.DataFrame) -> pd.DataFrame:
    """Compute-matched: each arm's expected best validation score when its tuning may spend only what
    the cheapest arm's whole tuning spent (trials it can afford at its mean cost per trial)."""
    cols = ["arm", "tokens_per_trial", "matched_tokens", "trials_affordable", "expected_best_at_matched"]
    if summary["compute"].le(0).any() or summary["compute_per_trial"].isna().any():
        return pd.DataFrame(columns=cols)
    budget = float(summary["compute"].min())
    rows = []
    for _, r in summary.iterrows():
        n = int(budget // r["compute_per_trial"])
        scores = counted[counted["arm"] == r["arm"]]["score"].to_numpy()
        exp = float(stats.expected_max_curve(scores, n).mean[-1]) if n >= 1 else np.nan
        rows.append({"arm": r["arm"], "tokens_per_trial": r["compute_per_trial"], "matched_tokens": budget,
                     "trials_affordable": n, "expected_best_at_matched": exp})
    return pd.DataFrame(rows, columns=cols)


def _fmt(x, digits: int = 2) -> str:
    if isinstance(x, (float, np.floating)):
        return "—" if not np.isfinite(x) else f"{x:.{digits}f}"
    return str(x)


def _table(df: pd.DataFrame, cols: list[str]) -> str:
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(_fmt(r[c]) for c in cols) + " |")
    return "\n".join(lines)


def to_markdown(rep: FairnessReport, command: str | None = None, figures: list[str] | None = None) -> str:
    p = rep.protocol
    s = p.sampler
    startup = int(s["n_startup_trials"])
    guided = max(0, p.trials_per_arm - startup)
    defaults_first = p.enqueue_defaults and all(
        all(spec.get("default") is not None for spec in sp.values()) for sp in p.search_space.values())
    cap = "none (uncapped)" if p.compute_cap_tokens is None else f"{p.compute_cap_tokens:,} tokens"
    out = [f"# Fairness report: study `{rep.name}`", ""]
    if command:
        out += ["Regenerate:", "", "```bash", command, "```", ""]
    out += [
        "## Matching rules (stored in the study, checked before this comparison)", "",
        f"- Arms: {', '.join(p.arms)}; arm source `{p.arm_source}`.",
        f"- Finished trials per arm (complete + pruned + failed): {p.trials_per_arm}, enforced by "
        f"{p.trials_per_arm} pre-created slots per arm claimed atomically.",
        f"- Label budget N = {p.labels} as the registry accounts it: "
        + "; ".join(f"{a}: teacher {v['teacher']}, student {v['student']}, unused {v['unused']}"
                    for a, v in p.label_accounts.items()) + ".",
        f"- Per-trial compute cap: {cap}; per-trial time limit {p.time_limit_s:g} s.",
        f"- Shared hyperparameters (identical ranges): {', '.join(p.shared_params) or 'none'}; "
        "arm-specific: " + "; ".join(f"{a}: {', '.join(sorted(set(sp) - set(p.shared_params))) or '—'}"
                                     for a, sp in p.search_space.items()) + ".",
        f"- Sampler: TPE (optuna {p.optuna_version}), seed {s['seed']} (per slot: {s['per_trial_seed']}), "
        f"multivariate, constant liar; n_startup_trials = {startup}: the first {min(startup, p.trials_per_arm)} "
        f"trials of each arm precede the model"
        + (f" (slot 0's enqueued defaults count as one of them, so {max(min(startup, p.trials_per_arm) - 1, 0)} "
           "are random search)" if defaults_first else " (random search)")
        + f", {guided} are model-guided"
        + (" — with this budget TPE is pure random search." if guided == 0 else "."),
        f"- Pruner: {p.pruner['name']}" + (f" (n_startup_trials {p.pruner['n_startup_trials']}, "
                                           f"n_warmup_steps {p.pruner['n_warmup_steps']})"
                                           if p.pruner["name"] == "MedianPruner" else "") + ".",
        f"- Tuning seeds {list(p.tuning_seeds)} (slot k of every arm uses seed k); evaluation seeds "
        f"{list(p.eval_seeds)} — disjoint. Tuning objective: {p.objective['metric']} in percent on the "
        f"`{p.objective['split']}` split; the final evaluation alone reads `test`.",
        "- Slot 0 of each arm: " + ("the arm's declared defaults (enqueued; one of its budgeted trials)."
                                     if defaults_first
                                     else "sampled like the others (the arms declare no complete defaults)."), "",
        "## Per arm", "",
        _table(rep.summary, ["arm", "dims", "trials", "complete", "pruned", "failed", "retried", "compute",
                             "compute_per_trial", "best_score", "still_improving", "eval_n", "eval_mean",
                             "eval_ci_low", "eval_ci_high", "eval_iqm"]), "",
        "`dims` = the number of hyperparameters the arm searched (its search space's dimension).", "",
        "Accuracy in percent; compute in tokens (rollout + training + teacher scoring). `compute` is the "
        "whole tuning spend of the arm; `retried` counts attempts lost with a killed worker and re-run "
        "(not trials). `still_improving`: the best-so-far rose in the last quarter of the trials.", "",
        "Best parameters:", "",
    ]
    for _, r in rep.summary.iterrows():
        pos = f" — place in its range (0 low end, 1 high end): {r['range_position']}" if r.get("range_position") else ""
        if r.get("at_edge"):
            pos += f"; **at the edge of its range: {r['at_edge']}** (widen or move the range)"
        out.append(f"- {r['arm']} (trial #{r['best_trial']}): `{r['best_params']}`{pos}")
    out += ["", "## Label-matched comparison (same N labels; test split, evaluation seeds)", ""]
    if len(rep.comparisons):
        out.append(_table(rep.comparisons, ["baseline", "arm", "seeds", "mean_diff", "diff_ci_low",
                                            "diff_ci_high", "p_improvement", "p_ci_low", "p_ci_high"]))
        out += ["", "mean_diff = arm − baseline, paired by evaluation seed, percentile-bootstrap 95% interval; "
                "p_improvement = P(a run of arm beats a run of baseline) (rliable), bootstrap 95% interval. "
                "Per-run compute of each arm's final configuration: "
                + ", ".join(f"{r['arm']} {_fmt(r['eval_compute_tokens'], 0)}" for _, r in rep.summary.iterrows())
                + " tokens."]
    else:
        out.append("No evaluations yet (run `matched-tuning report`, which evaluates before reporting).")
    out += ["", "## Compute-matched comparison (same per-run training tokens ±5%; test split, evaluation seeds)", ""]
    if rep.comparisons_compute is not None and len(rep.comparisons_compute):
        ev = rep.evals_compute
        per = ev.groupby("arm", sort=False).agg(tokens=("compute_tokens", "mean"), factor=("factor", "first"),
                                                 mean=("accuracy", "mean")).reset_index()
        out.append(_table(rep.comparisons_compute, ["baseline", "arm", "seeds", "mean_diff", "diff_ci_low",
                                                    "diff_ci_high", "p_improvement", "p_ci_low", "p_ci_high"]))
        out += ["", "Each cheaper arm's best configuration re-run with its stage lengths (GRPO epochs, FKL/OPD "
                "steps) stretched until its per-run tokens match the dearest arm's: "
                + "; ".join(f"{r['arm']} ×{r['factor']:.2f} → {r['tokens']:,.0f} tokens, {r['mean']:.2f}%"
                            for _, r in per.iterrows()) + "."]
    else:
        out.append("Not available (the arm source cannot scale compute, its stages stop at their validation plateau "
                   "(then equal compute is read off the evaluation runs' curves), or `report` ran with --no-eval).")
    out += ["", "## Equal tuning compute (validation, expected best)", ""]
    if len(rep.compute_matched):
        out.append(_table(rep.compute_matched, ["arm", "tokens_per_trial", "matched_tokens",
                                                "trials_affordable", "expected_best_at_matched"]))
        out += ["", "Each arm may spend the tuning compute of the cheapest arm; `expected_best_at_matched` is "
                "the expected-max estimate (Dodge et al. 2019) at the number of trials that buys."]
    else:
        out.append("Not available: some trials did not report compute.")
    fails = rep.trials[rep.trials["fail_reason"].notna()]
    out += ["", "## Failed attempts", ""]
    if len(fails):
        for _, r in fails.iterrows():
            out.append(f"- {r['arm']} trial #{r['number']} (slot {r['slot']}): {r['fail_reason']}")
    else:
        out.append("None.")
    if figures:
        out += ["", "## Figures", ""] + [f"![{Path(f).stem}]({Path(f).name})" for f in figures]
    return "\n".join(out) + "\n"


def write_report(rep: FairnessReport, out_dir: str | Path, command: str | None = None,
                 figures: bool = True) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    csv = out / "fairness_report.csv"
    tmp = csv.with_suffix(".csv.tmp")
    cols = CSV_COLUMNS + [c for c in rep.summary.columns if c not in CSV_COLUMNS]
    rep.summary[cols].to_csv(tmp, index=False)
    tmp.replace(csv)
    written["csv"] = csv
    figs = plot_report(rep, out) if figures else []
    for i, f in enumerate(figs):
        written[f"figure{i}"] = f
    md = out / "fairness_report.md"
    md.write_text(to_markdown(rep, command, [str(f) for f in figs]))
    written["md"] = md
    rep.trials.to_csv(out / "fairness_report_trials.csv", index=False)
    written["trials"] = out / "fairness_report_trials.csv"
    # the per-seed test accuracies: what the paired comparison and P(improvement) are computed from,
    # so a reader of the committed files (load_report, notebook 02) can recompute them
    rep.evals.to_csv(out / "fairness_report_evals.csv", index=False)
    written["evals"] = out / "fairness_report_evals.csv"
    if rep.evals_compute is not None and len(rep.evals_compute):
        rep.evals_compute.to_csv(out / "fairness_report_evals_compute.csv", index=False)
        written["evals_compute"] = out / "fairness_report_evals_compute.csv"
    return written


# ---- reading a written report back and the fairness checks (notebooks/02_fair_tuning_study) ----

def tuning_curves(trials: pd.DataFrame) -> pd.DataFrame:
    """Per arm, from a trials frame (`trials_frame` or fairness_report_trials.csv): the expected best
    validation score after n trials (Dodge et al. 2019) with its sd, and the best so far in trial
    order. Counted trials only, scored as `trial_score` does: the curves `build_report` computes."""
    counted = trials[trials["counted"].astype(bool)].copy()
    counted["score"] = counted.apply(trial_score, axis=1)
    rows = []
    for arm, t in counted.groupby("arm", sort=False):
        scores = t.sort_values("number")["score"].to_numpy()
        curve = stats.expected_max_curve(scores)
        for n, m, sd, b in zip(curve.n_trials, curve.mean, curve.std, np.maximum.accumulate(scores)):
            rows.append({"arm": arm, "n_trials": int(n), "expected_best": m, "std": sd, "best_so_far": b})
    return pd.DataFrame(rows, columns=["arm", "n_trials", "expected_best", "std", "best_so_far"])


@dataclass(frozen=True)
class LoadedReport:
    """A fairness report read back from its files (the fields `plot_fairness` and `fairness_checks`
    use, as in FairnessReport). `evals`/`comparisons` are empty when the per-seed file is absent
    (reports written before fairness_report_evals.csv existed)."""

    name: str
    summary: pd.DataFrame
    trials: pd.DataFrame
    curves: pd.DataFrame
    evals: pd.DataFrame
    comparisons: pd.DataFrame

    def to_frame(self) -> pd.DataFrame:
        return self.summary

    def to_dict(self) -> dict:
        return {"name": self.name, "summary": self.summary.to_dict(orient="records"),
                "comparisons": self.comparisons.to_dict(orient="records")}


def load_report(out_dir: str | Path, *, seed: int = 0) -> LoadedReport:
    """Read fairness_report.csv, fairness_report_trials.csv and (if present) fairness_report_evals.csv
    from a report directory (e.g. docs/results) and recompute the tuning curves and paired comparisons."""
    out = Path(out_dir)
    frames = {}
    for key in ("", "_trials", "_evals"):
        p = out / f"fairness_report{key}.csv"
        if not p.is_file():
            if key == "_evals":
                frames[key] = pd.DataFrame(columns=["arm", "seed", "accuracy", "compute_tokens"])
                continue
            raise InputError(f"report directory {str(out)!r}: no {p.name} (write one with `matched-tuning report`)")
        try:
            frames[key] = pd.read_csv(p)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
            raise InputError(f"{str(p)!r}: malformed CSV ({str(e).splitlines()[0]})") from None
    summary, trials, evals = frames[""], frames["_trials"], frames["_evals"]
    for name, df, cols in (("fairness_report.csv", summary, ["arm", "trials", "eval_mean", "eval_ci_low",
                                                              "eval_ci_high"]),
                           ("fairness_report_trials.csv", trials, ["arm", "number", "slot", "tuning_seed",
                                                                   "state", "counted", "value",
                                                                   "last_intermediate"])):
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise InputError(f"{name}: missing column {missing[0]!r}")
    comparisons = paired_comparisons(evals, list(summary["arm"]), np.random.default_rng(seed))
    md = out / "fairness_report.md"
    name = out.name
    if md.is_file():  # the study name is the Markdown's title: "# Fairness report: study `toy`"
        first = md.read_text().splitlines()[0]
        name = first.split("`")[1] if first.count("`") >= 2 else name
    return LoadedReport(name, summary, trials, tuning_curves(trials), evals, comparisons)


def fairness_checks(rep, protocol: Protocol | None = None) -> pd.DataFrame:
    """The matching rules, each checked on what was actually run (one row: check, ok, detail).
    From the tables alone: equal finished trials per arm, the same tuning seed in each slot of every
    arm, the same label budget N, the same evaluation seeds. With the stored protocol (a live study;
    `check_matched` has already compared every arm study's copy with the header) also: identical
    ranges of the shared hyperparameters and disjoint tuning / evaluation seeds."""
    rows = []

    def add(check: str, ok: bool, detail: str) -> None:
        rows.append({"check": check, "ok": bool(ok), "detail": detail})

    counted = rep.trials[rep.trials["counted"].astype(bool)]
    per_arm = counted.groupby("arm", sort=False).size()
    add("same number of finished trials per arm", per_arm.nunique() == 1,
        ", ".join(f"{a}: {n}" for a, n in per_arm.items()))
    seeds = counted.pivot_table(index="slot", columns="arm", values="tuning_seed", aggfunc="first")
    add("same tuning seed in each slot of every arm", bool(seeds.notna().all().all() and (seeds.nunique(axis=1) == 1).all()),
        f"slots {len(seeds)}, seeds {sorted(int(v) for v in seeds.iloc[:, 0].dropna())}")
    s = rep.summary
    if {"teacher_labels", "student_labels", "unused_labels"} <= set(s.columns):
        n = s["teacher_labels"] + s["student_labels"] + s["unused_labels"]
        add("same label budget N (teacher + student + unused)", n.nunique() == 1,
            "; ".join(f"{a}: {t}+{st}+{u}" for a, t, st, u in
                      zip(s["arm"], s["teacher_labels"], s["student_labels"], s["unused_labels"])))
    if len(rep.evals):
        by_arm = rep.evals.groupby("arm")["seed"].apply(lambda x: tuple(sorted(x)))
        add("same evaluation seeds for every arm", by_arm.nunique() == 1,
            f"{len(by_arm.iloc[0])} seeds per arm" + ("" if by_arm.nunique() == 1 else " (they differ)"))
        tuning_seeds = set(counted["tuning_seed"].dropna().astype(int))
        overlap = tuning_seeds & set(rep.evals["seed"].astype(int))
        add("tuning and evaluation seeds disjoint", not overlap,
            f"tuning {sorted(tuning_seeds)[:3]}..., evaluation {sorted(set(rep.evals['seed']))[:3]}...")
    elif "eval_n" in s.columns:
        add("same number of evaluation seeds per arm", s["eval_n"].nunique() == 1,
            ", ".join(f"{a}: {n}" for a, n in zip(s["arm"], s["eval_n"])))
    if protocol is not None:
        spaces = protocol.search_space
        bad = [p for p in protocol.shared_params
               if len({json.dumps(spaces[a][p], sort_keys=True) for a in protocol.arms if p in spaces[a]}) != 1]
        add("shared hyperparameters have identical ranges", not bad,
            f"shared: {', '.join(protocol.shared_params) or 'none'}" + (f"; differ: {bad}" if bad else ""))
        add("finished trials per arm = the protocol's budget",
            bool((per_arm == protocol.trials_per_arm).all()) and set(per_arm.index) == set(protocol.arms),
            f"{protocol.trials_per_arm} per arm, TPE seed {protocol.sampler['seed']}, N = {protocol.labels}")
        done = counted[counted["state"] == "COMPLETE"]
        cap = protocol.compute_cap_tokens
        over = done[(done["elapsed_s"] > protocol.time_limit_s)
                    | ((done["compute_tokens"] > cap) if cap is not None else False)]
        add("every completed trial within the compute cap and time limit", over.empty,
            f"cap {cap if cap is not None else 'none'} tokens, limit {protocol.time_limit_s:g} s"
            + (f"; over: trials {list(over['number'])}" if len(over) else ""))
    return pd.DataFrame(rows, columns=["check", "ok", "detail"])


def verdict(rep, *, seed: int = 0) -> str:
    """One line a reader can act on: the two best arms on the fresh evaluation seeds, their paired
    difference with a bootstrap 95% interval, whether that interval excludes 0, and which arms were
    still improving when their tuning budget ran out (a larger budget could change the answer)."""
    s = rep.summary.dropna(subset=["eval_mean"]).sort_values("eval_mean", ascending=False)
    if s.empty:
        return "verdict: no evaluation on fresh seeds yet (run `report` without --no-eval)"
    lead = s.iloc[0]
    lead_txt = f"{lead['arm']} {lead['eval_mean']:.1f}% [{lead['eval_ci_low']:.1f}, {lead['eval_ci_high']:.1f}]"
    improving = [a for a, v in zip(rep.summary["arm"], rep.summary["still_improving"]) if bool(v)]
    tail = (f"; still improving at the end of the budget: {', '.join(improving)} (more trials could change this)"
            if improving else "; no arm was still improving")
    edges = [f"{a} {e}" for a, e in zip(rep.summary["arm"], rep.summary.get("at_edge", [""] * len(rep.summary))) if e]
    tail += (f"; best value at the edge of its range: {', '.join(edges)} (the range may cut off the optimum)"
             if edges else "; no best value at the edge of its range")
    if len(s) == 1:
        return f"verdict: only {lead_txt} was evaluated" + tail
    second = s.iloc[1]
    cmp = rep.comparisons
    same = cmp[(cmp["baseline"] == second["arm"]) & (cmp["arm"] == lead["arm"])] if len(cmp) else cmp
    flip = cmp[(cmp["baseline"] == lead["arm"]) & (cmp["arm"] == second["arm"])] if len(cmp) else cmp
    if len(same) or len(flip):  # the report's own interval, so the two never disagree
        c = (same if len(same) else flip).iloc[0]
        sign = 1 if len(same) else -1
        lo, hi = sorted((sign * c["diff_ci_low"], sign * c["diff_ci_high"]))
        d, n_seeds = stats.Interval(sign * c["mean_diff"], lo, hi), int(c["seeds"])
    else:
        ev = rep.evals
        a = ev[ev["arm"] == second["arm"]].set_index("seed")["accuracy"]
        b = ev[ev["arm"] == lead["arm"]].set_index("seed")["accuracy"]
        seeds = sorted(set(a.index) & set(b.index))
        if not seeds:
            return f"verdict: {lead_txt} leads {second['arm']} {second['eval_mean']:.1f}%, but no shared seeds" + tail
        d = stats.paired_difference(a.loc[seeds].to_numpy(), b.loc[seeds].to_numpy(), np.random.default_rng(seed))
        n_seeds = len(seeds)
    diff = f"{d.estimate:+.1f} points [{d.low:+.1f}, {d.high:+.1f}] over {n_seeds} paired seeds"
    if d.low > 0:
        head = f"verdict: {lead_txt} beats {second['arm']} {second['eval_mean']:.1f}% by {diff}"
    else:
        head = (f"verdict: no clear winner: {lead_txt} vs {second['arm']} {second['eval_mean']:.1f}%, "
                f"difference {diff} includes 0")
    return head + tail
