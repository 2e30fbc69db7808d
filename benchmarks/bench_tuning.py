"""Harness overhead of matched tuning, as a share of trial time (target <= 2% on the toy study).

Two measurements, printed:
1. Per-trial harness cost with a zero-work synthetic arm (it only reports `--steps` intermediate values,
   as a toy run does), for each storage: everything a worker does that is not the arm (claiming a
   slot, stale-trial checks, TPE sampling, heartbeat start/stop, report/prune calls, tell, attrs).
   Worker wall time minus the arms' own time, divided by the trials run.
2. With --toy: a real two-arm study with the reference arms on configs/toy_short.toml (one trial per
   arm, SQLite), overhead = (worker wall - arm time) / arm time. Without --toy, the toy trial time is
   read from a committed report (docs/results/fairness_report_trials.csv, median elapsed_s) when present.

    python benchmarks/bench_tuning.py [--toy] [--trials 20] [--steps 10]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
import statistics
import sys
import tempfile
import time
import uuid

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tuning.harness import create_or_check, run_worker  # noqa: E402
from tuning.sources import load_arm_source  # noqa: E402
from tuning.protocol import build_protocol  # noqa: E402
from tuning.storage import open_storage  # noqa: E402

ARMS = ["direct_grpo", "rl_teacher_bridge"]
ROOT = Path(__file__).resolve().parent.parent


def measure(url: str, source_name: str, options: dict, trials: int, labels: int) -> dict:
    source = load_arm_source(source_name, options)
    protocol = build_protocol(source, ARMS, trials=trials, labels=labels, arm_options=options, pruner="median",
                              time_limit_s=3600)
    handle = open_storage(url)
    name = f"bench-{uuid.uuid4().hex[:6]}"
    create_or_check(handle, name, protocol)
    t0 = time.perf_counter()
    outs = run_worker(handle, name, source)
    wall = time.perf_counter() - t0
    arm_s = sum(o.elapsed_s for o in outs)
    return {"trials": len(outs), "wall_s": wall, "arm_s": arm_s, "overhead_s": wall - arm_s,
            "per_trial_ms": 1000 * (wall - arm_s) / len(outs),
            "in_trial_ms": 1000 * statistics.mean(o.harness_s for o in outs)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--toy", action="store_true", help="also run one real toy trial per arm (~1-2 min)")
    ap.add_argument("--trials", type=int, default=20, help="synthetic trials per arm per storage")
    ap.add_argument("--steps", type=int, default=10, help="intermediate reports per synthetic trial")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="s2d-bench-"))
    storages = {"sqlite": f"sqlite:///{tmp}/b.db", "journal": f"journal:///{tmp}/b.log"}
    if os.environ.get("S2D_PG_URL"):
        storages["postgres"] = os.environ["S2D_PG_URL"]
    print(f"harness cost per trial, zero-work synthetic arm ({args.trials} trials x {len(ARMS)} arms, "
          f"{args.steps} reports each):")
    per_trial = {}
    for kind, url in storages.items():
        r = measure(url, "synthetic", {"steps": args.steps}, args.trials, 64)
        per_trial[kind] = r["per_trial_ms"]
        print(f"  {kind:9s} {r['per_trial_ms']:7.1f} ms/trial (inside the trial {r['in_trial_ms']:.1f} ms; "
              f"the rest is claiming, stale checks, picking the arm)")
    trial_s = None
    if args.toy:
        r = measure(f"sqlite:///{tmp}/toy.db", "reference", {}, 1, 256)
        trial_s = r["arm_s"] / r["trials"]
        print(f"toy study (reference arms, configs/toy_short.toml, SQLite, {r['trials']} trials): "
              f"arm time {r['arm_s']:.1f} s, worker wall {r['wall_s']:.1f} s -> "
              f"overhead {100 * r['overhead_s'] / r['arm_s']:.2f}% of trial time (target <= 2%)")
    else:
        csv = ROOT / "docs/results/fairness_report_trials.csv"
        if csv.exists():
            import pandas as pd

            t = pd.read_csv(csv)
            t = t[t["state"] == "COMPLETE"]
            if len(t):
                trial_s = float(t["elapsed_s"].median())
                print(f"toy trial time (median of {len(t)} complete trials in {csv.relative_to(ROOT)}): {trial_s:.1f} s")
    if trial_s:
        for kind, ms in per_trial.items():
            print(f"  {kind:9s} harness overhead = {100 * ms / 1000 / trial_s:.2f}% of a toy trial (target <= 2%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
