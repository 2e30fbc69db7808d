"""Planner speed (printed numbers, not a timed test).

    python benchmarks/bench_planner.py [--repeats 20]

1. plan() in-process on a loaded, already-calibrated scenario: every arm of theory.arms.ARMS, the
   1%-step teacher/student split sweep (101 splits) for the split arms, 95% intervals over the
   posterior draws, marginal values and the informativeness table. Target <= 100 ms.
2. The first plan() of a process, which also loads the TOML and calibrates (MAP + Laplace +
   importance resampling; cached afterwards).
3. `budget-planner plan --scenario paper-qwen3-math` end to end in a fresh interpreter. Target <= 1.0 s
   (issue 12) with the calibration cached on disk (budget_planner/fitcache.py, the usual case after the
   first call); the first call of a scenario (cold cache: calibrates) is printed too.
"""

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--scenario", default="paper-qwen3-math")
    args = ap.parse_args()

    t0 = time.perf_counter()
    from budget_planner import load_scenario, plan
    from theory.fitting import _CACHE
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
    def cli_run(env):
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "budget_planner.cli", "plan", "--scenario", args.scenario],
                           capture_output=True, text=True, cwd=ROOT, env=env)
        assert r.returncode == 0, r.stderr
        return time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as d:
        env = {**os.environ, "SPARSE2DENSE_CACHE": d, "PYTHONPATH": ROOT}
        cold = [cli_run(env)]
        cli = [cli_run(env) for _ in range(5)]
        for _ in range(2):  # cold again: a fresh cache directory each time
            with tempfile.TemporaryDirectory() as d2:
                cold.append(cli_run({**env, "SPARSE2DENSE_CACHE": d2}))
    n_draws = scn.draws
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"python {platform.python_version()}; load average {os.getloadavg()[0]:.1f}")
    print(f"scenario {args.scenario}: {len(p.arms)} arms, {len(p.split_fractions)} splits, {n_draws} draws")
    print(f"import theory+budget_planner: {t_import * 1e3:.0f} ms")
    print(f"first plan() (load + calibrate + plan): {t_first * 1e3:.0f} ms")
    print(f"plan() in-process, calibrated: median {statistics.median(times) * 1e3:.1f} ms, "
          f"min {min(times) * 1e3:.1f} ms over {args.repeats} (target <= 100 ms)")
    print(f"CLI plan end to end (calibration cached): median {statistics.median(cli):.2f} s, min {min(cli):.2f} s "
          f"over {len(cli)} (target <= 1.0 s)")
    print(f"CLI plan end to end, first call of a scenario (calibrates): median {statistics.median(cold):.2f} s "
          f"over {len(cold)}")


if __name__ == "__main__":
    main()
