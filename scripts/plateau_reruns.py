"""The plateau reruns (issue 22 item 4), scored against the pre-registration (issue 23 item 4).

    python scripts/plateau_reruns.py run [--worlds k15] [--labels 64] [--arms direct_grpo] [--seeds 3]
                                         [--workdir /work/reruns] [--max-runs K]
    python scripts/plateau_reruns.py table      # docs/results/plateau_crosscheck_runs.csv from the finished runs
    python scripts/plateau_reruns.py status     # what is finished and what remains

Every configuration of docs/results/plateau_crosscheck_predictions.csv (world, N, arm) runs under its
pre-registered config (configs/plateau/modes_k*.toml, `[world] labels` = N) at the seeds the
pre-registration names (seeds 1000 on: 3 per configuration, 10 in the `seen` paper-like world), with the
plateau protocol as committed (early stop on, best checkpoint, test read once at the selected
checkpoint). `run_pipeline` checkpoints every stage under the workdir, so a killed rerun resumes and a
finished one is read back: the study runs in pieces across sessions. Each finished run writes its result
(RunResult JSON) under docs/results/plateau_reruns/<world>/; `table` builds the runs table from those:

    compute = plateau   the run's test accuracy (its selected checkpoint)
    compute = low       the run's best validation score by the pre-registered low level's tokens
                        (reference.frontier.best_by on its student curve), the definition the
                        pre-registration states; NaN (left out) when the run had no student point by then

Nothing here refits anything: the predictions file is read, never written.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from theory.errors import InputError, cli_exit  # noqa: E402

PRED = ROOT / "docs/results/plateau_crosscheck_predictions.csv"
REG = ROOT / "docs/results/plateau_crosscheck_preregistration.json"
OUT = ROOT / "docs/results/plateau_reruns"
RUNS = ROOT / "docs/results/plateau_crosscheck_runs.csv"
SEED_BASE = 1000


def configurations() -> list[dict]:
    """(world, N, arm, set, seeds, config) of every pre-registered configuration, in file order."""
    preds = pd.read_csv(PRED)
    reg = json.loads(REG.read_text())
    out, seen = [], set()
    for r in preds.itertuples():
        key = (r.world, int(r.labels), r.arm)
        if key in seen:
            continue
        seen.add(key)
        out.append({"world": r.world, "labels": int(r.labels), "arm": r.arm, "set": r.set,
                    "seeds": list(range(SEED_BASE, SEED_BASE + int(reg["seeds"][r.set]))),
                    "config": reg["configs"][r.world]})
    return out


def result_path(c: dict, seed: int) -> Path:
    return OUT / c["world"] / f"{c['arm']}_n{c['labels']}_s{seed}.json"


def cmd_run(args) -> int:
    from reference.config import load_config
    from reference.pipeline import run_pipeline
    from reference.runs import write_result

    todo = [(c, s) for c in configurations() for s in c["seeds"][:args.seeds or None]
            if (not args.worlds or c["world"].split("-")[-1] in args.worlds.split(","))
            and (not args.labels or str(c["labels"]) in args.labels.split(","))
            and (not args.arms or c["arm"] in args.arms.split(","))
            and not result_path(c, s).is_file()]
    if args.max_runs:
        todo = todo[:args.max_runs]
    print(f"plateau reruns: {len(todo)} to run", flush=True)
    for i, (c, seed) in enumerate(todo, 1):
        cfg = load_config(ROOT / c["config"]).override({"world.labels": c["labels"]})
        work = Path(args.workdir) / c["world"] / f"labels_{c['labels']}"
        res = run_pipeline(cfg, c["arm"], seed, workdir=work, split="test", progress=False)
        path = result_path(c, seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_result(res, path)
        print(f"  [{i} of {len(todo)}] {c['world']} N={c['labels']} {c['arm']} seed={seed}: test "
              f"{res.metrics['accuracy']:.1f}, {res.compute_tokens:,} tokens", flush=True)
    return 0


def run_rows(c: dict, seed: int, res, low_tokens: float | None) -> list[dict]:
    """The runs-table rows of one finished rerun: its test accuracy at compute "plateau" and, when the
    pre-registration has a low level for it, its best validation score by those tokens at "low" (none
    when it had no student point by then)."""
    from reference.frontier import best_by, run_curve

    base = {"arm": c["arm"], "seed": seed, "world": c["world"], "teacher_labels": res.label_account.teacher,
            "student_labels": res.label_account.student, "compute_tokens": res.compute_tokens, "split": "test",
            "metric": "accuracy"}
    rows = [{**base, "value": res.metrics["accuracy"], "compute": "plateau"}]
    if low_tokens is not None:
        v = best_by(run_curve(res), [low_tokens])[0]
        if v == v:  # a student point by then
            rows.append({**base, "compute_tokens": int(low_tokens), "value": float(v), "compute": "low"})
    return rows


def cmd_table(args) -> int:
    from reference.runs import load_result

    preds = pd.read_csv(PRED)
    low = {(r.world, int(r.labels), r.arm): float(r.tokens) for r in preds[preds["compute"] == "low"].itertuples()}
    rows, missing = [], 0
    for c in configurations():
        for seed in c["seeds"]:
            path = result_path(c, seed)
            if not path.is_file():
                missing += 1
                continue
            rows += run_rows(c, seed, load_result(path), low.get((c["world"], c["labels"], c["arm"])))
    if missing:
        raise InputError(f"{missing} pre-registered runs have not finished (`python scripts/plateau_reruns.py "
                         "status`); the runs table is written once, complete")
    pd.DataFrame(rows).to_csv(RUNS, index=False)
    print(f"wrote {RUNS} ({len(rows)} rows)")
    return 0


def cmd_status(args) -> int:
    done = total = 0
    for c in configurations():
        n = sum(result_path(c, s).is_file() for s in c["seeds"])
        done, total = done + n, total + len(c["seeds"])
        print(f"{c['world']:10} N={c['labels']:<5} {c['arm']:18} {n}/{len(c['seeds'])}")
    print(f"{done} of {total} runs finished")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--worlds", default="", help="e.g. k15 or k05,k30 (default: all)")
    r.add_argument("--labels", default="", help="e.g. 64 (default: all)")
    r.add_argument("--arms", default="", help="e.g. direct_grpo (default: both)")
    r.add_argument("--seeds", type=int, default=0, help="the first K pre-registered seeds only (default: all)")
    r.add_argument("--workdir", default="/tmp/plateau_reruns")
    r.add_argument("--max-runs", type=int, default=0)
    r.set_defaults(func=cmd_run)
    sub.add_parser("table").set_defaults(func=cmd_table)
    sub.add_parser("status").set_defaults(func=cmd_status)
    args = ap.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(cli_exit(main))
