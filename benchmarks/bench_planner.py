"""Planner speed (printed numbers, not a timed test).

    python benchmarks/bench_planner.py [--repeats 20]

1. plan() in-process on a loaded, already-calibrated scenario: every arm of theory.arms.ARMS, the
   1%-step teacher/student split sweep (101 splits) for the split arms, 95% intervals over the
   posterior draws, marginal values and the informativeness table. Target <= 100 ms.
2. The first plan() of a process, which also loads the TOML and calibrates (MAP + Laplace +
   importance resampling; cached afterwards).
3. `budget-planner plan --scenario paper-qwen3-math` end to end in a fresh interpreter. Target <= 2 s.
"""

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--scenario", default="paper-qwen3-math")
    args = ap.parse_args()

    t0 = time.perf_counter()
    from budget_planner import load_scenario, plan
    from theory.calibrate import _CACHE
    t_import = time.perf_counter() - t0

    scn = load_scenario(args.scenario)
    _CACHE.clear()
    t0 = time.perf_counter()
    p = plan(scn)
    t_first = time.perf_counter() - t0
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        plan(scn)
        times.append(time.perf_counter() - t0)
    cli = []
    for _ in range(3):
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "budget_planner.cli", "plan", "--scenario", args.scenario],
                           capture_output=True, text=True, cwd=ROOT)
        cli.append(time.perf_counter() - t0)
        assert r.returncode == 0, r.stderr
    n_draws = scn.draws
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"python {platform.python_version()}; load average {os.getloadavg()[0]:.1f}")
    print(f"scenario {args.scenario}: {len(p.arms)} arms, {len(p.split_fractions)} splits, {n_draws} draws")
    print(f"import theory+budget_planner: {t_import * 1e3:.0f} ms")
    print(f"first plan() (load + calibrate + plan): {t_first * 1e3:.0f} ms")
    print(f"plan() in-process, calibrated: median {statistics.median(times) * 1e3:.1f} ms, "
          f"min {min(times) * 1e3:.1f} ms over {args.repeats} (target <= 100 ms)")
    print(f"CLI end to end: median {statistics.median(cli):.2f} s, min {min(cli):.2f} s over 3 (target <= 2 s)")


if __name__ == "__main__":
    main()
