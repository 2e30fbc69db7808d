"""Benchmark: wall seconds per stage for one seed of every arm (prints numbers; asserts nothing).

    flock /tmp/s2d_heavy.lock python benchmarks/bench_toy.py --config toy_short [--threads 1]

Fresh work directory each time, so shared prefixes are computed once (as in the table) and the
per-stage line shows how the seed's time splits across stages, the final evaluations included.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import pandas as pd
import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="toy_short")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    from reference.models import quiet
    quiet()
    torch.set_num_threads(args.threads)
    from reference.config import load_config
    from reference.pipeline import run_pipeline
    from theory.arms import ARMS
    cfg = load_config(args.config).override({"engine.threads": args.threads})
    rows = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        for arm in ARMS:
            t = time.perf_counter()
            res = run_pipeline(cfg, arm, args.seed, workdir=work, progress=False)
            for s in res.stages:
                if not s.get("cached"):
                    rows.append({"arm": arm, "stage": s["name"], "seconds": s["seconds"], "tokens": s["tokens"]})
            print(f"{arm:28s} {time.perf_counter() - t:6.1f} s", flush=True)
    df = pd.DataFrame(rows)
    print(df.groupby("stage")[["seconds", "tokens"]].agg(["count", "sum"]).round(1).to_string())
    print(f"total {time.perf_counter() - t0:.1f} s for one seed of {len(ARMS)} arms "
          f"({args.config}, {args.threads} thread(s))")


if __name__ == "__main__":
    main()
