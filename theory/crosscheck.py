"""Cross-check: the planner's committed predictions against the reference's measured runs.

Inputs
  predictions  one row per configuration (PRED_COLUMNS): world, arm, labels (the budget N),
               teacher_labels, student_labels (the registry's LabelAccount, as the run table records
               it), set (one of SETS: "calibration", "heldout", or "seen" = configurations whose
               outcomes the predictor's authors knew before predicting, e.g. a world whose plateau
               numbers are quoted in the issues; each set is scored on its own), pred_mean, pred_lo,
               pred_hi (percent), level (the interval's nominal level, e.g. 0.9), naive_mean (a naive
               predictor, percent);
               optional recommended (0/1; absent = all 0): the planner's pick, at most one row per
               (set, world, compute, labels);
               optional compute (a name for the compute level, e.g. "low" or "plateau"; absent = "");
               optional tokens (a whole number > 0: the training-token budget of that compute level;
               informational, and the axis of the crossover in compute).
  runs         a run table (theory.tables); rows with metric "accuracy" and split "test", one per seed;
               optional compute, as above (absent = ""), each level validated as a run table of its own
               (read_runs / validate_compute_runs), so one configuration may be run at several levels.
Join key: (world, arm, teacher_labels, student_labels, compute). A file without the optional columns
scores exactly as before they existed, and the outputs name compute and tokens only when a file does.

Figures over the configurations of one set (all accuracy in points):
  per config   y = mean over seeds, se = std(ddof=1) / sqrt(n_seeds)  (needs >= 2 seeds)
  mae          mean |pred_mean - y|;  naive_mae the same with naive_mean
  mae_over_se  mean over configurations of |pred_mean - y| / se (the mean of per-config ratios, not
               a ratio of means)
  coverage     share of configurations with pred_lo <= y <= pred_hi, beside mean_interval_width =
               mean(pred_hi - pred_lo) and interval_score = mean Winkler score at alpha = 1 - level:
               (hi - lo) + (2/alpha)(lo - y) if y < lo, + (2/alpha)(y - hi) if y > hi (lower is better)
  kendall_tau  within each (world, compute, labels) group, over the pairs of configurations whose
               seed values differ significantly (Welch t-test, p < 0.05): (concordant - discordant) /
               pairs, where concordant = the predicted difference has the measured difference's sign;
               a predicted tie counts as neither. None without a significant pair.
  split_regret per (world, compute, labels) group with >= 2 label splits of rl_teacher_bridge_stage3:
               the best measured split's mean minus the measured mean at the split with the highest
               pred_mean (first such split by teacher_labels on a predicted tie); the mean over
               groups. None without such a group.
  decision_regret  per (world, compute, labels) group with a recommended row: the best measured mean
               over the group's measured configurations (predicted in this set and run; ties: first by
               arm, teacher_labels) minus the recommended configuration's measured mean (points, >= 0);
               mean and max over groups. A recommended configuration without runs is listed under
               `unmeasured`, never dropped. None when no row is recommended.
  crossover    per world and compute level (keyed "world", or "world@compute" when the level is
               named), d(N) = rl_teacher_bridge - direct_grpo (BRIDGE_ARM - DIRECT_ARM).
               predicted: d from pred_mean over every budget where both arms have a prediction in this
               set (runs or not); measured: d from the measured means over the budgets where both arms
               are measured (and predicted). A crossover lies between adjacent budgets (sorted) where d
               changes sign, at the zero of d linearly interpolated in log2 N, reported as N = 2**x
               (a d of exactly 0 between opposite signs: that budget); direction "bridge_wins_above" if
               d goes from - to + as N grows, else "direct_wins_above". ratio = predicted / measured N
               of the first crossovers when both exist, within_factor_2 = 1/2 <= ratio <= 2. Per
               measured budget also the paired d: seeds run by both arms, mean of bridge - direct with
               a 95% percentile bootstrap interval (theory.stats.paired_difference, 10000 resamples,
               rng seed 0; >= 2 pairs) and whether it excludes 0.
  crossover_compute  per (world, labels) with >= 2 compute levels whose tokens are known: d across
               the levels ordered by tokens, predicted (every level both arms are predicted at) and
               measured (every level both are measured at), crossovers by sign_crossovers on log2
               tokens ("budget" is then tokens), ratio and within_factor_2 as for N. A level where the
               two arms' tokens differ is left out, with a warning (the comparison is compute-matched).
  aims         the issue-23 aims (aims()): met / missed / not-evaluable with their numbers.
  by_world     per world: n_configs, mae, naive_mae, coverage, mean_interval_width, and the decision
               regret's mean / max / groups (`per_world` keeps its original four keys).
The naive predictor gets the same figures (naive_*), so the theory has something to beat; the
pre-registered naive predictors are `naive_predictions` and `same_config_naive` (end of this module).

numpy / scipy / pandas only (theory never imports torch).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
import warnings

import numpy as np
import pandas as pd
from scipy import stats

from theory.arms import ARMS, BRIDGE_ARM, DIRECT_ARM, SPLIT_ARM, Teacher
from theory.errors import InputError
from theory.tables import check_percent, check_table, read_csv_checked

PRED_COLUMNS: dict[str, str] = {
    "world": "str",
    "arm": "str",
    "labels": "int",  # the budget N of the configuration
    "teacher_labels": "int",
    "student_labels": "int",
    "set": "str",  # one of SETS
    "pred_mean": "float",  # percent
    "pred_lo": "float",
    "pred_hi": "float",
    "level": "float",  # nominal level of [pred_lo, pred_hi], in (0, 1)
    "naive_mean": "float",  # percent
}
SETS = ("calibration", "heldout", "seen")
KEY = ["world", "arm", "teacher_labels", "student_labels"]  # a run configuration (run tables have no compute)
JOIN_KEY = [*KEY, "compute"]  # predictions to runs: the configuration at one compute level
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
P_SIGNIFICANT = 0.05


def _at(compute) -> str:
    """" compute=<level>" where the files name compute levels; nothing for the legacy level ""."""
    return f" compute={compute}" if compute else ""


def _level(compute) -> dict:
    """{"compute": level} for a named compute level; {} for the legacy level "" (outputs unchanged)."""
    return {"compute": compute} if compute else {}


def _row_name(r) -> str:
    return (f"world={r['world']} arm={r['arm']} labels={r['labels']} "
            f"teacher_labels={r['teacher_labels']} student_labels={r['student_labels']}{_at(r.get('compute', ''))}")


def _with_levels(df: pd.DataFrame) -> pd.DataFrame:
    """The table with compute "" and tokens <NA> where it does not name them (a legacy file)."""
    if "compute" not in df.columns:
        df = df.assign(compute="")
    if "tokens" not in df.columns:
        df = df.assign(tokens=pd.array([pd.NA] * len(df), dtype="Int64"))
    return df


def _optional_levels(df: pd.DataFrame, out: pd.DataFrame, what: str, *, tokens: bool) -> pd.DataFrame:
    """Copy the optional columns compute (a non-empty name) and, with `tokens`, tokens (whole, > 0)
    from the raw table `df` onto its checked rows `out` (same index); absent columns stay absent."""
    out = out.copy()
    if "compute" in df.columns:
        out["compute"] = check_table(df, {"compute": "str"}, what)["compute"].str.strip()
    if tokens and "tokens" in df.columns:
        t = check_table(df, {"tokens": "int"}, what)["tokens"]
        if (t <= 0).any():
            raise InputError(f"{what}: column 'tokens' must be > 0 (the training tokens of the compute level), "
                             f"got {t[t <= 0].iloc[0]}")
        out["tokens"] = t.astype("Int64")
    return out


def validate_predictions(df: pd.DataFrame) -> pd.DataFrame:
    """Check a predictions table and return it normalised. Raises InputError (one line)."""
    what = "predictions"
    out = check_table(df, PRED_COLUMNS, what, choices={"set": SETS},
                      nonnegative=("labels", "teacher_labels", "student_labels"))
    out = _optional_levels(df, out, what, tokens=True)
    for col in ("pred_mean", "pred_lo", "pred_hi", "naive_mean"):
        check_percent(out[col], what, f"column {col!r}")
    bad = out[out["pred_lo"] > out["pred_hi"]]
    if len(bad):
        raise InputError(f"{what}: pred_lo > pred_hi for {_row_name(bad.iloc[0])}")
    bad = out[(out["level"] <= 0) | (out["level"] >= 1)]
    if len(bad):
        raise InputError(f"{what}: column 'level' must lie in (0, 1) (e.g. 0.9), got {bad['level'].iloc[0]!r}")
    for _, r in out.iterrows():
        # the join key is the registry's label account: a row that disagrees would silently match
        # another configuration's runs
        arm = ARMS[r["arm"]]
        try:
            acct = arm.labels(int(r["labels"]), int(r["teacher_labels"]) if arm.splits_labels else None)
        except InputError as e:
            raise InputError(f"{what}: {_row_name(r)}: {e}") from None
        if (acct.teacher, acct.student) != (r["teacher_labels"], r["student_labels"]):
            raise InputError(f"{what}: {_row_name(r)} disagrees with the registry's label account "
                             f"(teacher_labels={acct.teacher}, student_labels={acct.student})")
    dup = out.duplicated(subset=["set", "labels", *KEY, *(["compute"] if "compute" in out else [])])
    if dup.any():
        raise InputError(f"{what}: duplicate row for {_row_name(out[dup].iloc[0])} in set {out[dup].iloc[0]['set']!r}")
    out["recommended"] = _recommended_column(df, out, what)
    return out.reset_index(drop=True)


def _recommended_column(df: pd.DataFrame, out: pd.DataFrame, what: str) -> np.ndarray:
    """The optional 0/1 column `recommended` (absent: all 0); at most one 1 per (set, world, labels)."""
    if "recommended" not in df.columns:
        return np.zeros(len(out), dtype="int64")
    raw = pd.Series(df["recommended"].to_numpy(), index=out.index)
    num = pd.to_numeric(raw, errors="coerce")
    bad = ~num.isin([0, 1])
    if bad.any():
        i = bad[bad].index[0]
        v = raw[i].item() if isinstance(raw[i], np.generic) else raw[i]
        raise InputError(f"{what}: column 'recommended' must be 0 or 1, got {v!r} for {_row_name(out.loc[i])}")
    rec = num.astype("int64")
    many = _with_levels(out)[rec == 1].groupby(["set", "world", "compute", "labels"]).size()
    if (many > 1).any():
        (set_, world, compute, labels), n = next((k, v) for k, v in many.items() if v > 1)
        raise InputError(f"{what}: {n} rows with recommended=1 for set {set_!r} world={world}{_at(compute)} "
                         f"labels={labels} (at most one per set, world, compute level and labels)")
    return rec.to_numpy()


def read_predictions(path: str | Path) -> pd.DataFrame:
    return read_csv_checked(path, "predictions", validate_predictions)


def validate_compute_runs(df: pd.DataFrame) -> pd.DataFrame:
    """theory.tables.validate_runs, keeping the optional `compute` column (the level a run was trained
    at): each level is validated as a run table of its own, so the same configuration and seed may be
    run at several levels. Without the column: validate_runs, unchanged. Raises InputError (one line)."""
    from theory.tables import validate_runs

    if not isinstance(df, pd.DataFrame) or "compute" not in df.columns:
        return validate_runs(df)
    level = check_table(df, {"compute": "str"}, "run table")["compute"].str.strip().to_numpy()
    parts = []
    for c in sorted(set(level)):
        try:
            parts.append(validate_runs(df[level == c]).assign(compute=c))
        except InputError as e:
            raise InputError(f"{e} (compute level {c!r})") from None
    return pd.concat(parts, ignore_index=True)


def read_runs(path: str | Path) -> pd.DataFrame:
    """A run table CSV for the cross-check, its optional compute column kept (validate_compute_runs)."""
    return read_csv_checked(path, "runs table", validate_compute_runs)


# ------------------------------------------------------------------------------------------------
# Pure figures
# ------------------------------------------------------------------------------------------------

def winkler_score(lo, hi, y, alpha) -> np.ndarray:
    """Interval score of [lo, hi] at miss rate alpha for outcome y (Gneiting & Raftery 2007, eq. 43)."""
    lo, hi, y, alpha = (np.asarray(x, dtype=float) for x in (lo, hi, y, alpha))
    return (hi - lo) + (2.0 / alpha) * np.clip(lo - y, 0, None) + (2.0 / alpha) * np.clip(y - hi, 0, None)


def kendall_tau_significant(configs: pd.DataFrame, pred_col: str, seeds: list[np.ndarray], *,
                            p_max: float = P_SIGNIFICANT) -> tuple[float | None, int]:
    """(tau, n_significant_pairs) over pairs within each (world, compute, labels) group whose seed values
    differ by a Welch t-test at p < p_max. `seeds[i]` are the seed values of configs' row i."""
    conc = disc = n = 0
    for _, g in _with_levels(configs).groupby(["world", "compute", "labels"], sort=False):
        for i, j in combinations(g.index, 2):
            a, b = seeds[i], seeds[j]
            with warnings.catch_warnings():  # constant seed values: scipy warns, the p-value is still defined
                warnings.simplefilter("ignore", RuntimeWarning)
                p = stats.ttest_ind(a, b, equal_var=False).pvalue
            if not np.isfinite(p) or p >= p_max:  # nan: both seed sets constant (and equal) -> no evidence
                continue
            n += 1
            s_meas = np.sign(a.mean() - b.mean())
            s_pred = np.sign(configs.at[i, pred_col] - configs.at[j, pred_col])
            if s_pred == 0:
                continue
            if s_pred == s_meas:
                conc += 1
            else:
                disc += 1
    return ((conc - disc) / n if n else None), n


def split_regret(configs: pd.DataFrame, pred_col: str) -> tuple[float | None, list[dict]]:
    """(mean regret, per group) over (world, compute, labels) groups with >= 2 rl_teacher_bridge_stage3
    splits."""
    per = []
    s3 = _with_levels(configs)
    s3 = s3[s3["arm"] == SPLIT_ARM]
    for (world, compute, labels), g in s3.groupby(["world", "compute", "labels"], sort=True):
        if g["teacher_labels"].nunique() < 2:
            continue
        g = g.sort_values("teacher_labels", kind="stable")
        chosen = g.loc[g[pred_col].idxmax()]  # idxmax: the first maximum, i.e. the smallest teacher share
        best = g.loc[g["meas_mean"].idxmax()]
        per.append({"world": world, **_level(compute), "labels": int(labels), "n_splits": int(len(g)),
                    "chosen_teacher_labels": int(chosen["teacher_labels"]),
                    "best_teacher_labels": int(best["teacher_labels"]),
                    "regret": float(best["meas_mean"] - chosen["meas_mean"])})
    return (float(np.mean([p["regret"] for p in per])) if per else None), per


def decision_regret(preds: pd.DataFrame, configs: pd.DataFrame) -> dict | None:
    """The planner's pick against the measured best, per (world, compute, labels) group with a
    recommended row (module docstring). `preds`: one set's validated predictions; `configs`: its
    measured configurations (crosscheck's per-config frame). None when no row is recommended."""
    preds, configs = _with_levels(preds), _with_levels(configs)
    rec = preds[preds["recommended"] == 1]
    if rec.empty:
        return None
    groups, unmeasured = [], []
    for _, r in rec.sort_values(["world", "compute", "labels"], kind="stable").iterrows():
        g = configs[(configs["world"] == r["world"]) & (configs["compute"] == r["compute"])
                    & (configs["labels"] == r["labels"])]
        mine = g[(g["arm"] == r["arm"]) & (g["teacher_labels"] == r["teacher_labels"])
                 & (g["student_labels"] == r["student_labels"])]
        if mine.empty:
            unmeasured.append({"world": r["world"], **_level(r["compute"]), "labels": int(r["labels"]),
                               "arm": r["arm"], "teacher_labels": int(r["teacher_labels"])})
            continue
        g = g.sort_values(["arm", "teacher_labels"], kind="stable")
        best = g.loc[g["meas_mean"].idxmax()]
        got = float(mine["meas_mean"].iloc[0])
        groups.append({"world": r["world"], **_level(r["compute"]), "labels": int(r["labels"]),
                       "recommended_arm": r["arm"],
                       "recommended_teacher_labels": int(r["teacher_labels"]), "best_arm": best["arm"],
                       "best_teacher_labels": int(best["teacher_labels"]), "recommended_mean": got,
                       "best_mean": float(best["meas_mean"]), "regret": float(best["meas_mean"]) - got})
    vals = [x["regret"] for x in groups]
    return {"mean": float(np.mean(vals)) if vals else None, "max": float(np.max(vals)) if vals else None,
            "groups": groups, "unmeasured": unmeasured}


def sign_crossovers(budgets, d) -> list[dict]:
    """Where d changes sign between adjacent budgets (sorted ascending; label budgets N or token
    budgets): the zero of d linearly interpolated in log2 of the budget, as a budget; a d of exactly 0
    between opposite signs is a crossover at that budget (a run of zeros: its first budget).
    direction: "bridge_wins_above" for - to +, else "direct_wins_above"."""
    n = np.asarray(budgets, dtype=float)
    d = np.asarray(d, dtype=float)
    order = np.argsort(n, kind="stable")
    n, d = n[order], d[order]
    out, prev = [], None  # prev: index of the last non-zero d
    for i in range(len(d)):
        if d[i] == 0:
            continue
        if prev is not None and np.sign(d[i]) != np.sign(d[prev]):
            if i == prev + 1:
                x0, x1 = np.log2(n[prev]), np.log2(n[i])
                at = float(2.0 ** (x0 + (0.0 - d[prev]) * (x1 - x0) / (d[i] - d[prev])))
            else:
                at = float(n[prev + 1])  # the zeros in between: the first of them
            out.append({"budget": at, "between": [int(n[prev]), int(n[i])],
                        "direction": "bridge_wins_above" if d[i] > 0 else "direct_wins_above"})
        prev = i
    return out


def crossover(preds: pd.DataFrame, configs: pd.DataFrame, seed_values: dict, *,
              n_resamples: int = BOOTSTRAP_RESAMPLES) -> dict[str, dict]:
    """Per world and compute level: where rl_teacher_bridge and direct_grpo swap places as N grows
    (module docstring). `preds`: one set's validated predictions (every predicted budget); `configs`:
    its measured configurations; `seed_values`: JOIN_KEY tuple -> {seed: value}. Keyed by world
    ("world@compute" for a named level); worlds and levels without both arms predicted are left out."""
    from theory.stats import paired_difference

    preds, configs = _with_levels(preds), _with_levels(configs)
    out = {}
    for world, compute in sorted(set(zip(preds["world"], preds["compute"]))):
        def curve(frame, col):
            f = frame[(frame["world"] == world) & (frame["compute"] == compute)]
            a = f[f["arm"] == DIRECT_ARM].set_index("labels")[col]
            b = f[f["arm"] == BRIDGE_ARM].set_index("labels")[col]
            both = sorted(set(a.index) & set(b.index))
            return both, [float(b[n] - a[n]) for n in both]

        pn, pd_ = curve(preds, "pred_mean")
        if not pn:
            continue
        mn, md = curve(configs, "meas_mean")
        pc, mc = sign_crossovers(pn, pd_), sign_crossovers(mn, md)
        ratio = pc[0]["budget"] / mc[0]["budget"] if pc and mc else None
        paired = []
        w = configs[(configs["world"] == world) & (configs["compute"] == compute)]
        for n in mn:
            keys = [tuple(w[(w["arm"] == arm) & (w["labels"] == n)].iloc[0][c] for c in JOIN_KEY)
                    for arm in (DIRECT_ARM, BRIDGE_ARM)]
            sa, sb = seed_values[keys[0]], seed_values[keys[1]]
            common = sorted(set(sa) & set(sb))
            row = {"labels": int(n), "n_pairs": len(common), "d": None, "lo": None, "hi": None,
                   "excludes_zero": False, "winner": None}
            if len(common) >= 2:
                iv = paired_difference([sa[k] for k in common], [sb[k] for k in common],
                                       np.random.default_rng(BOOTSTRAP_SEED), n_resamples=n_resamples)
                excl = bool(iv.low > 0 or iv.high < 0)
                row.update(d=iv.estimate, lo=iv.low, hi=iv.high, excludes_zero=excl,
                           winner=(BRIDGE_ARM if iv.estimate > 0 else DIRECT_ARM) if excl else None)
            paired.append(row)
        out[f"{world}@{compute}" if compute else str(world)] = {
            **({"world": str(world), "compute": compute} if compute else {}),
            "predicted": {"budgets": [int(x) for x in pn], "d": pd_, "crossovers": pc},
            "measured": {"budgets": [int(x) for x in mn], "d": md, "crossovers": mc},
            "ratio": ratio, "within_factor_2": (0.5 <= ratio <= 2.0) if ratio is not None else None,
            "paired": paired,
            "direct_wins_at": [p["labels"] for p in paired if p["winner"] == DIRECT_ARM],
            "bridge_wins_at": [p["labels"] for p in paired if p["winner"] == BRIDGE_ARM]}
    return out


def compute_crossover(preds: pd.DataFrame, configs: pd.DataFrame) -> tuple[list[dict], list[str]]:
    """(crossovers, warnings): per (world, labels), where rl_teacher_bridge and direct_grpo swap places
    as the compute level's tokens grow (module docstring). `preds`: one set's validated predictions;
    `configs`: its measured configurations. Needs the tokens column; a group with fewer than two
    levels carrying both arms' tokens is left out."""
    preds, configs = _with_levels(preds), _with_levels(configs)
    out, notes = [], []
    two = preds[preds["arm"].isin((DIRECT_ARM, BRIDGE_ARM)) & preds["tokens"].notna()]
    for (world, labels), g in two.groupby(["world", "labels"], sort=True):
        tokens = {}  # compute level -> the tokens both arms were predicted at
        for compute, lv in g.groupby("compute", sort=True):
            t = lv.set_index("arm")["tokens"]
            if set(t.index) != {DIRECT_ARM, BRIDGE_ARM}:
                continue
            if t[DIRECT_ARM] != t[BRIDGE_ARM]:
                notes.append(f"compute crossover world={world} labels={labels}: level {compute!r} left out, "
                             f"{DIRECT_ARM} and {BRIDGE_ARM} have different tokens "
                             f"({t[DIRECT_ARM]} vs {t[BRIDGE_ARM]}; a compute level is one budget for both)")
                continue
            tokens[compute] = int(t[DIRECT_ARM])
        if len(tokens) < 2:
            continue

        def curve(frame, col):
            f = frame[(frame["world"] == world) & (frame["labels"] == labels) & frame["compute"].isin(tokens)]
            a = f[f["arm"] == DIRECT_ARM].set_index("compute")[col]
            b = f[f["arm"] == BRIDGE_ARM].set_index("compute")[col]
            both = sorted(set(a.index) & set(b.index), key=lambda c: (tokens[c], c))
            return {"compute": both, "tokens": [tokens[c] for c in both],
                    "d": [float(b[c] - a[c]) for c in both]}

        pred, meas = curve(preds, "pred_mean"), curve(configs, "meas_mean")
        pred["crossovers"] = sign_crossovers(pred["tokens"], pred["d"])
        meas["crossovers"] = sign_crossovers(meas["tokens"], meas["d"])
        pc, mc = pred["crossovers"], meas["crossovers"]
        ratio = pc[0]["budget"] / mc[0]["budget"] if pc and mc else None
        out.append({"world": str(world), "labels": int(labels), "predicted": pred, "measured": meas,
                    "ratio": ratio, "within_factor_2": (0.5 <= ratio <= 2.0) if ratio is not None else None})
    return out, notes


# ---- the issue-23 aims ---------------------------------------------------------------------------

MAE_AIM = 3.0  # points
MAE_OVER_NAIVE_AIM = 0.5
COVERAGE_LEVEL, COVERAGE_AIM = 0.9, (0.8, 0.95)
REGRET_MEAN_AIM, REGRET_MAX_AIM = 1.0, 3.0  # points
CROSSOVER_FACTOR_AIM = 2.0
MET, MISSED, NOT_EVALUABLE = "met", "missed", "not-evaluable"


def aims(cc: CrossCheck) -> dict[str, dict]:
    """The issue-23 aims on one set's cross-check, each {"aim", "verdict" (met | missed |
    not-evaluable), and its numbers}:
      mae         mae <= 3 points and <= 0.5 x naive_mae (the naive_mean column);
      coverage    coverage in [0.8, 0.95], only when every row's level is 0.9;
      regret      decision regret mean <= 1 and max <= 3 points (needs a measured recommended row);
      crossover   every measured crossover, in N (per world and level) and in compute (per world and
                  N), predicted within 2x: the first predicted over the first measured in [1/2, 2]. A
                  measured crossover the prediction lacks is missed; a predicted crossover the runs do
                  not show is not scored here (it is in the crossover figures)."""
    def verdict(ok: bool) -> str:
        return MET if ok else MISSED

    out = {"mae": {"aim": f"mae <= {MAE_AIM:g} points and <= {MAE_OVER_NAIVE_AIM:g} x naive mae",
                   "verdict": verdict(cc.mae <= MAE_AIM and cc.mae <= MAE_OVER_NAIVE_AIM * cc.naive_mae),
                   "mae": cc.mae, "naive_mae": cc.naive_mae}}
    lo, hi = COVERAGE_AIM
    at_level = isinstance(cc.level, float) and abs(cc.level - COVERAGE_LEVEL) < 1e-9
    out["coverage"] = {"aim": f"coverage of the {COVERAGE_LEVEL:g} interval in [{lo:g}, {hi:g}]",
                       "verdict": verdict(lo <= cc.coverage <= hi) if at_level else NOT_EVALUABLE,
                       "coverage": cc.coverage, "level": cc.level}
    dr = cc.decision_regret
    mean, mx = (dr["mean"], dr["max"]) if dr else (None, None)
    out["decision_regret"] = {
        "aim": f"decision regret mean <= {REGRET_MEAN_AIM:g} and max <= {REGRET_MAX_AIM:g} points",
        "verdict": NOT_EVALUABLE if mean is None else verdict(mean <= REGRET_MEAN_AIM and mx <= REGRET_MAX_AIM),
        "mean": mean, "max": mx, "groups": len(dr["groups"]) if dr else 0}
    scored = [{"axis": "N", "where": k, "ratio": c["ratio"]} for k, c in cc.crossover.items()
              if c["measured"]["crossovers"]]
    scored += [{"axis": "compute", "where": f"{c['world']} N={c['labels']}", "ratio": c["ratio"]}
               for c in cc.crossover_compute if c["measured"]["crossovers"]]
    for x in scored:
        x["within_factor_2"] = x["ratio"] is not None and 1 / CROSSOVER_FACTOR_AIM <= x["ratio"] <= CROSSOVER_FACTOR_AIM
    n_in = sum(x["within_factor_2"] for x in scored)
    out["crossover"] = {"aim": f"every measured crossover (in N or compute) predicted within {CROSSOVER_FACTOR_AIM:g}x",
                        "verdict": verdict(n_in == len(scored)) if scored else NOT_EVALUABLE,
                        "measured": len(scored), "within": n_in, "crossovers": scored}
    return out


def format_aims(a: dict[str, dict]) -> list[str]:
    """aims()'s verdicts as a short block of text lines."""
    def f(v):
        return "n/a" if v is None else f"{v:.2f}"

    m, cov, dr, x = a["mae"], a["coverage"], a["decision_regret"], a["crossover"]
    lv = f"{cov['level']:g}" if isinstance(cov["level"], float) else ", ".join(f"{v:g}" for v in cov["level"])
    return ["aims (issue 23):",
            f"  {m['aim']}: {m['verdict']} (mae {f(m['mae'])}, naive {f(m['naive_mae'])})",
            f"  {cov['aim']}: {cov['verdict']} (coverage {f(cov['coverage'])} at level {lv})",
            f"  {dr['aim']}: {dr['verdict']} (mean {f(dr['mean'])}, max {f(dr['max'])} over {dr['groups']} group(s))",
            f"  {x['aim']}: {x['verdict']} ({x['within']} of {x['measured']} within)"]


@dataclass(frozen=True)
class CrossCheck:
    set_name: str
    configs: pd.DataFrame = field(repr=False)  # one row per matched configuration (see per_config)
    mae: float
    mae_over_se: float
    coverage: float
    mean_interval_width: float
    interval_score: float
    level: float | list[float]
    kendall_tau: float | None
    n_significant_pairs: int
    split_regret: float | None
    split_regret_groups: tuple[dict, ...]
    naive_mae: float
    naive_mae_over_se: float
    naive_kendall_tau: float | None
    naive_split_regret: float | None
    per_world: dict[str, dict]
    unmatched_predictions: tuple[str, ...]
    unpredicted_runs: int  # run configurations (accuracy, test) without a prediction in this set
    warnings: tuple[str, ...]
    decision_regret: dict | None = None  # see decision_regret()
    crossover: dict[str, dict] = field(default_factory=dict)  # world (or world@compute) -> see crossover()
    by_world: dict[str, dict] = field(default_factory=dict)  # world -> per_world's figures and more
    crossover_compute: tuple[dict, ...] = ()  # per (world, labels): see compute_crossover()

    @property
    def n_configs(self) -> int:
        return len(self.configs)

    def to_frame(self) -> pd.DataFrame:
        return self.configs.copy()

    def plot(self, path: str | Path | None = None):
        """Predicted (point + interval) against measured (mean +- 1.96 se), one panel per world, the
        naive predictor as open circles; the diagonal is a perfect prediction. Returns the figure."""
        import matplotlib
        if path is not None:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
        worlds = sorted(self.configs["world"].unique())
        panels = [(w, False) for w in worlds]
        for w in worlds:  # a crowded low corner (e.g. every bridge arm near 0) gets its own zoomed panel
            m = self.configs.loc[self.configs["world"] == w, "meas_mean"]
            if (m < 10).sum() >= 3 and m.max() > 20:
                panels.append((w, True))
        fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 5.4), squeeze=False)
        arms = sorted(self.configs["arm"].unique())
        colors = dict(zip(arms, plt.get_cmap("tab10").colors))
        budgets = sorted(self.configs["labels"].unique())
        markers = dict(zip(budgets, "os^Dvp<>"))
        for ax, (world, zoom) in zip(axes[0], panels):
            g = self.configs[self.configs["world"] == world]
            if zoom:
                g = g[g["meas_mean"] < 10]
            lim = (min(g["pred_lo"].min(), (g["meas_mean"] - 2 * g["se"]).min(), g["naive_mean"].min()) - 1,
                   max(g["pred_hi"].max(), (g["meas_mean"] + 2 * g["se"]).max(), g["naive_mean"].max()) + 1)
            ax.plot(lim, lim, color="0.6", lw=1, ls="--", zorder=0)
            for arm, ga in g.groupby("arm"):
                for i, r in enumerate(ga.itertuples()):
                    ax.errorbar(r.meas_mean, r.pred_mean, xerr=1.96 * r.se,
                                yerr=[[r.pred_mean - r.pred_lo], [r.pred_hi - r.pred_mean]],
                                fmt=markers.get(r.labels, "o"), color=colors[arm], ms=6, capsize=2, lw=1,
                                label=arm if i == 0 else None)
                    ax.plot(r.meas_mean, r.naive_mean, marker="o", mfc="none", mec="0.35", ms=7, ls="none")
            ax.set_xlim(lim)
            ax.set_ylim(lim)
            ax.set_xlabel("measured accuracy, mean of seeds (%) ± 1.96 se")
            lv = f"{self.level:g} " if isinstance(self.level, float) else ""
            ax.set_ylabel(f"predicted accuracy (%), {lv}interval")
            w = self.per_world.get(str(world), {})
            ax.set_title(f"{world} (measured < 10%, zoom)" if zoom else
                         f"{world}: MAE {w.get('mae', float('nan')):.2f} (naive {w.get('naive_mae', float('nan')):.2f}), "
                         f"coverage {w.get('coverage', float('nan')):.0%}", fontsize=10)
            mk = ", ".join(f"{'○□△◇▽⬠'[i]} N={n}" for i, n in enumerate(budgets[:6]))
            ax.legend(fontsize=7, loc="best", title=f"arm ({mk})", title_fontsize=7)
        sep = "\n" if len(panels) == 1 else " "
        fig.suptitle(f"Planner cross-check, {self.set_name} set: {self.n_configs} configurations{sep}"
                     "(open grey circles: naive predictor)", fontsize=11)
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=120)
            plt.close(fig)
        return fig

    def to_dict(self) -> dict:
        return _plain({"set": self.set_name, "n_configs": self.n_configs, "mae": self.mae, "mae_over_se": self.mae_over_se,
                "coverage": self.coverage, "mean_interval_width": self.mean_interval_width,
                "interval_score": self.interval_score, "level": self.level,
                "kendall_tau": self.kendall_tau, "n_significant_pairs": self.n_significant_pairs,
                "split_regret": self.split_regret, "split_regret_groups": list(self.split_regret_groups),
                "naive_mae": self.naive_mae, "naive_mae_over_se": self.naive_mae_over_se,
                "naive_kendall_tau": self.naive_kendall_tau, "naive_split_regret": self.naive_split_regret,
                "per_world": self.per_world, "per_config": _records(self.configs),
                "unmatched_predictions": list(self.unmatched_predictions),
                "unpredicted_runs": self.unpredicted_runs, "warnings": list(self.warnings),
                "decision_regret": self.decision_regret, "crossover": self.crossover, "by_world": self.by_world,
                "crossover_compute": list(self.crossover_compute), "aims": aims(self)})


def _plain(v):
    """JSON-ready: numpy scalars to Python, a non-finite float (e.g. |err|/se at se = 0) to None."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not np.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def _records(df: pd.DataFrame) -> list[dict]:
    return [_plain(rec) for rec in df.to_dict("records")]


def crosscheck(runs: pd.DataFrame, predictions: pd.DataFrame, *, set_name: str = "heldout",
               metric: str = "accuracy", split: str = "test") -> CrossCheck:
    """Measured vs predicted over the configurations of `set_name` (see the module docstring). `runs`
    may carry the optional compute column (validate_compute_runs)."""
    if set_name not in SETS:
        raise InputError(f"set must be one of {', '.join(SETS)}, got {set_name!r}")
    runs = _with_levels(validate_compute_runs(runs))
    preds = validate_predictions(predictions)
    named = [c for c in ("compute", "tokens") if c in preds.columns]  # per-config columns the file names
    preds = _with_levels(preds)
    preds = preds[preds["set"] == set_name].reset_index(drop=True)
    if preds.empty:
        raise InputError(f"predictions: no rows in set {set_name!r}")
    acc = runs[(runs["metric"] == metric) & (runs["split"] == split)]
    seeds_by_key = {k: g.sort_values("seed")["value"].to_numpy(dtype=float) for k, g in acc.groupby(JOIN_KEY)}
    seed_values = {k: dict(zip(g["seed"].tolist(), g["value"].astype(float).tolist()))
                   for k, g in acc.groupby(JOIN_KEY)}

    rows, seeds, unmatched, notes = [], [], [], []
    scored: dict[tuple, int] = {}  # run key -> the budget whose prediction row scores its runs
    for _, r in preds.iterrows():
        key = tuple(r[c] for c in JOIN_KEY)
        if key not in seeds_by_key:
            unmatched.append(_row_name(r))
            continue
        if key in scored:  # e.g. a label-free arm predicted at several budgets: one set of runs, counted twice
            named_key = ", ".join(f"{c}={v}" for c, v in zip(KEY, key)) + _at(r["compute"])
            raise InputError(f"predictions: the rows at labels {scored[key]} and {r['labels']} of set {set_name!r} "
                             f"share the run key ({named_key}) and would score the same runs twice; "
                             "keep one row per run key (for an arm that uses no labels, the budget it was run at)")
        scored[key] = r["labels"]
        v = seeds_by_key[key]
        if len(v) < 2:
            raise InputError(f"runs: {_row_name(r)} has {len(v)} seed (need >= 2 for a standard error)")
        se = float(v.std(ddof=1) / np.sqrt(len(v)))
        rows.append({**{c: r[c] for c in ("world", "arm", "labels", "teacher_labels", "student_labels")},
                     **{c: (None if pd.isna(r[c]) else int(r[c])) if c == "tokens" else r[c] for c in named},
                     "n_seeds": len(v), "meas_mean": float(v.mean()), "se": se,
                     **{c: float(r[c]) for c in ("pred_mean", "pred_lo", "pred_hi", "level", "naive_mean")}})
        seeds.append(v)
    if unmatched:
        notes.append(f"{len(unmatched)} prediction(s) without matching runs were excluded, e.g. {unmatched[0]}")
    if not rows:
        hint = ""
        if (preds["compute"] != "").any() and (runs["compute"] == "").all():
            hint = "; the predictions name compute levels but the run table has no 'compute' column"
        elif (preds["compute"] == "").all() and (runs["compute"] != "").any():
            hint = "; the run table names compute levels but the predictions have no 'compute' column"
        raise InputError(f"no prediction in set {set_name!r} matches a run configuration (metric {metric!r}, "
                         f"split {split!r}); join key: {', '.join(JOIN_KEY)}{hint}")
    cfg = pd.DataFrame(rows)
    y = cfg["meas_mean"].to_numpy()
    se = cfg["se"].to_numpy()
    zero_se = se == 0
    if zero_se.any():
        notes.append(f"{int(zero_se.sum())} configuration(s) have identical seed values (se = 0): "
                        "left out of mae_over_se")
    safe_se = np.where(zero_se, np.nan, se)
    cfg["err"] = cfg["pred_mean"] - y
    cfg["abs_err_over_se"] = np.abs(cfg["err"]) / safe_se
    cfg["covered"] = (cfg["pred_lo"] <= y) & (y <= cfg["pred_hi"])
    cfg["interval_score"] = winkler_score(cfg["pred_lo"], cfg["pred_hi"], y, 1.0 - cfg["level"])
    cfg["naive_err"] = cfg["naive_mean"] - y

    def _nanmean(x) -> float:
        x = np.asarray(x, dtype=float)
        return float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")

    tau, n_sig = kendall_tau_significant(cfg, "pred_mean", seeds)
    naive_tau, _ = kendall_tau_significant(cfg, "naive_mean", seeds)
    regret, regret_groups = split_regret(cfg, "pred_mean")
    naive_regret, _ = split_regret(cfg, "naive_mean")
    levels = sorted(set(cfg["level"].round(6)))
    per_world = {}
    for world, g in cfg.groupby("world", sort=True):
        per_world[str(world)] = {"n_configs": int(len(g)), "mae": float(g["err"].abs().mean()),
                                 "naive_mae": float(g["naive_err"].abs().mean()),
                                 "coverage": float(g["covered"].mean())}
    dregret = decision_regret(preds, cfg)
    by_world = {}
    for world, g in cfg.groupby("world", sort=True):
        mine = [x["regret"] for x in (dregret or {}).get("groups", []) if x["world"] == world]
        by_world[str(world)] = {**per_world[str(world)],
                                "mean_interval_width": float((g["pred_hi"] - g["pred_lo"]).mean()),
                                "decision_regret_mean": float(np.mean(mine)) if mine else None,
                                "decision_regret_max": float(np.max(mine)) if mine else None,
                                "decision_regret_groups": len(mine),
                                "decision_regret_unmeasured": sum(
                                    1 for x in (dregret or {}).get("unmeasured", []) if x["world"] == world)}
    matched = set(map(tuple, _with_levels(cfg)[JOIN_KEY].to_numpy().tolist()))
    unpredicted = sum(1 for k in seeds_by_key if k not in matched)
    in_compute, compute_notes = compute_crossover(preds, cfg)
    notes += compute_notes
    return CrossCheck(
        set_name=set_name, configs=cfg, mae=float(np.abs(cfg["err"]).mean()),
        mae_over_se=_nanmean(cfg["abs_err_over_se"]), coverage=float(cfg["covered"].mean()),
        mean_interval_width=float((cfg["pred_hi"] - cfg["pred_lo"]).mean()),
        interval_score=float(cfg["interval_score"].mean()),
        level=float(levels[0]) if len(levels) == 1 else [float(x) for x in levels],
        kendall_tau=tau, n_significant_pairs=n_sig, split_regret=regret, split_regret_groups=tuple(regret_groups),
        naive_mae=float(np.abs(cfg["naive_err"]).mean()),
        naive_mae_over_se=_nanmean(np.abs(cfg["naive_err"]) / safe_se),
        naive_kendall_tau=naive_tau, naive_split_regret=naive_regret, per_world=per_world,
        unmatched_predictions=tuple(unmatched), unpredicted_runs=unpredicted, warnings=tuple(notes),
        decision_regret=dregret, crossover=crossover(preds, cfg, seed_values), by_world=by_world,
        crossover_compute=tuple(in_compute))


def format_crosscheck(cc: CrossCheck) -> str:
    def f(v, fmt=".2f"):
        return "n/a" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, fmt)

    levels = "compute" in cc.configs.columns  # a compute column only where the predictions name levels
    lines = [f"cross-check on the {cc.set_name} set: {cc.n_configs} configurations (accuracy %, mean over seeds)",
             f"{'world':<14} {'arm':<26} {'N':>5} " + (f"{'compute':<10} " if levels else "")
             + f"{'t/s':>9} {'seeds':>5} {'measured':>13} {'predicted':>9} "
             f"{'interval':>15} {'in':>3} {'naive':>6} {'|err|/se':>8}"]
    for r in cc.configs.itertuples():
        lines.append(f"{r.world:<14} {r.arm:<26} {r.labels:5d} " + (f"{r.compute:<10} " if levels else "")
                     + f"{f'{r.teacher_labels}/{r.student_labels}':>9} "
                     f"{r.n_seeds:5d} {r.meas_mean:6.1f} ± {r.se:4.1f} {r.pred_mean:9.1f} "
                     f"[{r.pred_lo:5.1f}, {r.pred_hi:5.1f}] {'yes' if r.covered else 'no':>3} {r.naive_mean:6.1f} "
                     f"{f(r.abs_err_over_se, '.1f'):>8}")
    lv = cc.level if isinstance(cc.level, float) else ", ".join(f"{x:g}" for x in cc.level)
    lines += [
        f"mae {f(cc.mae)} points (naive {f(cc.naive_mae)}); mae/se {f(cc.mae_over_se)} (naive {f(cc.naive_mae_over_se)})",
        f"coverage {f(cc.coverage)} at level {lv}; mean interval width {f(cc.mean_interval_width)}; "
        f"interval score {f(cc.interval_score)}",
        f"kendall tau {f(cc.kendall_tau)} over {cc.n_significant_pairs} significant pair(s) "
        f"(naive {f(cc.naive_kendall_tau)})",
        f"split regret {f(cc.split_regret)} points over {len(cc.split_regret_groups)} group(s) "
        f"(naive {f(cc.naive_split_regret)})",
    ]
    for w, d in cc.per_world.items():
        lines.append(f"  {w}: {d['n_configs']} configs, mae {d['mae']:.2f}, naive mae {d['naive_mae']:.2f}, "
                     f"coverage {d['coverage']:.2f}")
    dr = cc.decision_regret
    if dr is not None:
        lines.append(f"decision regret {f(dr['mean'])} mean, {f(dr['max'])} max points over {len(dr['groups'])} "
                     f"group(s); {len(dr['unmeasured'])} recommended configuration(s) unmeasured")
        for w, d in cc.by_world.items():
            if d["decision_regret_groups"] or d["decision_regret_unmeasured"]:
                lines.append(f"  {w}: decision regret {f(d['decision_regret_mean'])} mean, "
                             f"{f(d['decision_regret_max'])} max; interval width {d['mean_interval_width']:.2f}")
    for w, c in cc.crossover.items():
        def at(cs):
            return ", ".join(f"N={x['budget']:.0f} ({x['direction']})" for x in cs) or "none"
        lines.append(f"crossover {w} ({BRIDGE_ARM} - {DIRECT_ARM}): predicted {at(c['predicted']['crossovers'])}; "
                     f"measured {at(c['measured']['crossovers'])}; ratio {f(c['ratio'])}"
                     + ("" if c["ratio"] is None else f" ({'within' if c['within_factor_2'] else 'outside'} 2x)"))
        if c["paired"]:
            lines.append("  measured paired d: " + ", ".join(
                f"N={p['labels']} {f(p['d'], '+.1f')} [{f(p['lo'], '.1f')}, {f(p['hi'], '.1f')}]"
                + ("*" if p["excludes_zero"] else "") for p in c["paired"]) + "  (* excludes 0)")
    for c in cc.crossover_compute:
        def at_tokens(cs):
            return ", ".join(f"{x['budget']:.3g} tokens ({x['direction']})" for x in cs) or "none"
        lines.append(f"crossover in compute {c['world']} N={c['labels']} ({BRIDGE_ARM} - {DIRECT_ARM}): predicted "
                     f"{at_tokens(c['predicted']['crossovers'])}; measured {at_tokens(c['measured']['crossovers'])}; "
                     f"ratio {f(c['ratio'])}"
                     + ("" if c["ratio"] is None else f" ({'within' if c['within_factor_2'] else 'outside'} 2x)"))
    lines += format_aims(aims(cc))
    if cc.unpredicted_runs:
        lines.append(f"{cc.unpredicted_runs} run configuration(s) without a prediction in this set: ignored")
    for w in cc.warnings:
        lines.append(f"warning: {w}")
    return "\n".join(lines)


# ---- the naive predictors the theory has to beat (pre-registered; scripts/crosscheck_toy.py) ---------

def naive_predictions(cal: pd.DataFrame, configs) -> list[float]:
    """The naive predictor (pre-registered, docs/results/crosscheck_preregistration.md): the same arm's
    calibration means, linear in log2 N (interpolated between the two calibrated budgets, extrapolated
    beyond, clipped to [0, 100]); an arm without calibration runs takes the line of the calibrated arm
    that distils from a teacher if it does, of the one that does not otherwise (the pre-registration
    calibrates exactly one of each: rl_teacher_bridge and direct_grpo). It ignores the world (it has no
    pilot): the counterfactual gets the main world's lines. `cal`: a run table; `configs`: (world, arm,
    N, teacher_labels) tuples; returns one percent per configuration."""
    acc = cal[(cal["metric"] == "accuracy") & (cal["split"] == "test")]
    n_of = lambda r: r["teacher_labels"] + r["student_labels"]  # noqa: E731  (both calibration arms use all N)
    acc = acc.assign(N=n_of(acc))
    lines = {}
    for arm, g in acc.groupby("arm"):
        m = g.groupby("N")["value"].mean()
        x, y = np.log2(m.index.to_numpy(float)), m.to_numpy()
        slope = (y[-1] - y[0]) / (x[-1] - x[0]) if len(x) > 1 else 0.0
        lines[arm] = (x[0], y[0], slope)
    def distils(a: str) -> bool:
        return ARMS[a].teacher is not Teacher.NONE

    out = []
    for _world, arm, n, _tl in configs:
        src = [arm] if arm in lines else [a for a in lines if distils(a) == distils(arm)]
        if len(src) != 1:
            raise InputError(f"naive predictor: {arm} has no calibration runs and the calibration holds "
                             f"{len(src)} arms to borrow a line from ({', '.join(src) or 'none'}); it needs one")
        x0, y0, slope = lines[src[0]]
        out.append(float(np.clip(y0 + slope * (np.log2(n) - x0), 0.0, 100.0)))
    return out


def same_config_naive(runs: pd.DataFrame, cfgs) -> list[float]:
    """Naive predictor for a world calibrated on another world's runs: 'the teacher does not matter' —
    the other world's measured mean of the same arm at the same teacher share (nearest share)."""
    acc = runs[(runs["metric"] == "accuracy") & (runs["split"] == "test")]
    out = []
    for _w, arm, n, tl in cfgs:
        g = acc[acc["arm"] == arm]
        t = ARMS[arm].labels(n, tl).teacher
        shares = g["teacher_labels"].unique()
        best = min(shares, key=lambda x: abs(x - t))
        out.append(float(g[g["teacher_labels"] == best]["value"].mean()))
    return out
