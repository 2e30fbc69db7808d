"""Result tables in long format, with one validator every writer and reader goes through.

Run table: one row per (run, split, metric). Per-problem table: one row per (model, problem).
Accuracy-like metrics are in percent (0-100) everywhere; a percent column whose values all sit in
[0, 1] is rejected as "looks like fractions" (the classic silent 100x error).

Only pandas/numpy here: `theory` never imports torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from theory.arms import ARM_NAMES
from theory.errors import InputError

RUN_COLUMNS: dict[str, str] = {
    "arm": "str",  # a name from theory.arms.ARMS
    "seed": "int",
    "world": "str",  # world / model pair, e.g. "toy-arith" or "qwen3-1.7b<-8b"
    "teacher_labels": "int",
    "student_labels": "int",
    "compute_tokens": "int",
    "split": "str",  # one of SPLITS
    "metric": "str",
    "value": "float",
}
SPLITS = ("train", "val", "test", "probe")
# Metrics reported in percent; any other metric name is free-form (e.g. "kl_to_teacher" in nats).
PERCENT_METRICS = frozenset({
    "accuracy", "accuracy_greedy", "accuracy_t1", "compliance", "accuracy_given_compliance", "pass_at_k",
    "reward", "pass_rate", "zero_signal_fraction",
})

PROBLEM_COLUMNS: dict[str, str] = {
    "model": "str",
    "problem_id": "str",
    "k": "int",  # samples drawn for this problem
    "correct": "int",  # samples that were correct (implies compliant)
    "compliant": "int",  # samples that followed the answer protocol
}


def _check_columns(df: pd.DataFrame, schema: dict[str, str], what: str) -> pd.DataFrame:
    if not isinstance(df, pd.DataFrame):
        raise InputError(f"{what}: expected a table, got {type(df).__name__}")
    missing = [c for c in schema if c not in df.columns]
    if missing:
        raise InputError(f"{what}: missing column {missing[0]!r} (needs {', '.join(schema)})")
    out = df[list(schema)].copy()
    for col, kind in schema.items():
        s = out[col]
        if kind == "str":
            if s.isna().any():
                raise InputError(f"{what}: column {col!r} has empty values")
            out[col] = s.astype(str)
            if (out[col].str.strip() == "").any():
                raise InputError(f"{what}: column {col!r} has empty values")
            continue
        num = pd.to_numeric(s, errors="coerce")
        if num.isna().any():
            bad = s[num.isna()].iloc[0]
            raise InputError(f"{what}: column {col!r} has a non-numeric or missing value {bad!r}")
        if not np.isfinite(num.to_numpy(dtype=float)).all():
            raise InputError(f"{what}: column {col!r} has a non-finite value")
        if kind == "int":
            if (num != np.round(num)).any():
                raise InputError(f"{what}: column {col!r} must hold whole numbers")
            out[col] = num.astype("int64")
        else:
            out[col] = num.astype(float)
    return out


def check_table(df: pd.DataFrame, schema: dict[str, str], what: str, *, choices: dict[str, tuple] | None = None,
                nonnegative: tuple[str, ...] = ()) -> pd.DataFrame:
    """The checks every table shares: schema columns and dtypes, at least one row, registry arm names
    in an 'arm' column, each column of `choices` within its values, `nonnegative` columns >= 0.
    Returns the normalised table; raises InputError (one line naming the column)."""
    out = _check_columns(df, schema, what)
    if out.empty:
        raise InputError(f"{what}: no rows")
    if "arm" in schema:
        unknown = sorted(set(out["arm"]) - set(ARM_NAMES))
        if unknown:
            raise InputError(f"{what}: column 'arm' has unknown arm {unknown[0]!r}")
    for col, allowed in (choices or {}).items():
        bad = sorted(set(out[col]) - set(allowed))
        if bad:
            raise InputError(f"{what}: column {col!r} has {bad[0]!r}; use one of {', '.join(allowed)}")
    for col in nonnegative:
        if (out[col] < 0).any():
            raise InputError(f"{what}: column {col!r} must be >= 0")
    return out


def check_percent(v: pd.Series, what: str, subject: str) -> None:
    """Accuracy-like values are percent: inside [0, 100], and not all fractions (a table written in
    [0, 1] by mistake). `subject` names them in the message, e.g. "column 'pred_mean'"."""
    if ((v < 0) | (v > 100)).any():
        raise InputError(f"{what}: {subject} has a value outside [0, 100] (accuracy is in percent)")
    if len(v) >= 2 and v.max() <= 1.0 and v.between(0, 1, inclusive="neither").any():
        raise InputError(f"{what}: {subject} looks like fractions (all <= 1); accuracy is in percent (0-100)")


def validate_runs(df: pd.DataFrame) -> pd.DataFrame:
    """Check a run table and return it normalised (schema columns, dtypes). Raises InputError."""
    what = "run table"
    out = check_table(df, RUN_COLUMNS, what, choices={"split": SPLITS},
                      nonnegative=("teacher_labels", "student_labels", "compute_tokens"))
    pct = out[out["metric"].isin(PERCENT_METRICS)]
    for metric, grp in pct.groupby("metric"):
        check_percent(grp["value"], what, f"column 'value' for percent metric {metric!r}")
    dup = out.duplicated(subset=["arm", "seed", "world", "teacher_labels", "student_labels", "split", "metric"])
    if dup.any():
        row = out[dup].iloc[0]
        raise InputError(
            f"{what}: duplicate row for arm={row.arm} seed={row.seed} world={row.world} "
            f"split={row.split} metric={row.metric}")
    return out.reset_index(drop=True)


def validate_problems(df: pd.DataFrame) -> pd.DataFrame:
    """Check a per-problem table and return it normalised. Raises InputError."""
    what = "problem table"
    out = check_table(df, PROBLEM_COLUMNS, what, nonnegative=("correct", "compliant"))
    if (out["k"] < 1).any():
        raise InputError(f"{what}: column 'k' must be >= 1")
    for col in ("correct", "compliant"):
        if (out[col] > out["k"]).any():
            raise InputError(f"{what}: column {col!r} exceeds k")
    if (out["correct"] > out["compliant"]).any():
        raise InputError(f"{what}: column 'correct' exceeds 'compliant' (a correct answer follows the protocol)")
    if out.duplicated(subset=["model", "problem_id"]).any():
        raise InputError(f"{what}: duplicate (model, problem_id) rows")
    return out.reset_index(drop=True)


VALIDATORS = {"runs": validate_runs, "problems": validate_problems}


def _validator(kind: str):
    if kind not in VALIDATORS:
        raise InputError(f"table kind must be 'runs' or 'problems', got {kind!r}")
    return VALIDATORS[kind]


def read_csv_checked(path: str | Path, what: str, validate) -> pd.DataFrame:
    """Read a CSV file through `validate`; a missing or malformed file is one InputError line naming it."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{what}: no such file {str(p)!r}")
    try:
        df = pd.read_csv(p)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as e:
        raise InputError(f"{what} {str(p)!r}: malformed CSV ({str(e).splitlines()[0]})") from None
    return validate(df)


def read_table(path: str | Path, kind: str) -> pd.DataFrame:
    """Read a CSV run ('runs') or problem ('problems') table through the validator."""
    return read_csv_checked(path, f"{kind} table", _validator(kind))


def write_table(df: pd.DataFrame, path: str | Path, kind: str) -> Path:
    """Validate, then write atomically (temp file + rename) so a crash never leaves half a table."""
    out = _validator(kind)(df)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    out.to_csv(tmp, index=False)
    tmp.replace(p)
    return p


def append_runs(rows: pd.DataFrame, path: str | Path) -> Path:
    """Append rows to a run table on disk (validating the union), atomically."""
    p = Path(path)
    merged = rows if not p.exists() else pd.concat([read_table(p, "runs"), rows], ignore_index=True)
    return write_table(merged, p, "runs")
