"""Planner speed (printed numbers, not a timed test).

    python benchmarks/bench_planner.py [--repeats 20] [--baseline-tree PATH]

1. plan() on a loaded, already-calibrated scenario: every arm of theory.arms.ARMS, the 1%-step
   teacher/student split sweep (101 splits) for the split arms, 95% intervals over the posterior draws,
   marginal values, the informativeness table and (issue 23) the label x compute plane: every arm's
   frontier over its stage-length grid. Target: issue 26 asked <= 30 ms; issue 23 adds the compute plane
   within 2x of the plan before it. With `--baseline-tree` (a checkout of the commit to compare with,
   e.g. `git worktree add /tmp/parent HEAD`) the ratio to it is printed: both trees are timed in their
   own interpreter (PYTHONPATH=tree), round by round in turn, so a change of machine load hits both alike; the medians over all rounds and their ratio are
   printed.
2. The first plan() of a process, which also loads the TOML and calibrates (MAP + Laplace +
   importance resampling; cached afterwards).
3. `budget-planner plan --scenario paper-qwen3-math` end to end in a fresh interpreter, beside
   `python -c "import numpy, scipy.stats, pandas"` (the libraries a planner needs at least), in turn.
   Target (issue 26) <= 1.5x the imports, with the calibration cached on disk
   (budget_planner/fitcache.py, the usual case after the first call); the first call of a scenario
   (cold cache: calibrates) is printed too.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# run in a fresh interpreter on one tree: the import, the first plan() and `repeats` calibrated plans
TIME_PLAN = """
import json, sys, time
t0 = time.perf_counter()
from budget_planner import load_scenario, plan
t_import = time.perf_counter() - t0
scn = load_scenario(sys.argv[1])
t0 = time.perf_counter()
p = plan(scn)
t_first = time.perf_counter() - t0
times, cpu = [], []
for _ in range(int(sys.argv[2])):
    t0, c0 = time.perf_counter(), time.process_time()
    plan(scn)
    times.append(time.perf_counter() - t0)
    cpu.append(time.process_time() - c0)
print(json.dumps({"import": t_import, "first": t_first, "plans": times, "cpu": cpu, "arms": len(p.arms),
                  "splits": len(p.split_fractions), "draws": scn.draws}))
"""


def time_plans(tree: str, scenario: str, repeats: int) -> dict:
    r = subprocess.run([sys.executable, "-c", TIME_PLAN, scenario, str(repeats)], capture_output=True, text=True,
                       cwd=tree, env={**os.environ, "PYTHONPATH": tree})
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def wall(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    assert r.returncode == 0, r.stderr
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=20, help="calibrated plan() calls per round")
    ap.add_argument("--rounds", type=int, default=5, help="interpreters per tree, taken in turn")
    ap.add_argument("--scenario", default="paper-qwen3-math")
    ap.add_argument("--baseline-tree", help="a checkout of the commit to compare with (the parent commit)")
    args = ap.parse_args()

    trees = {"this tree": ROOT} | ({"baseline": os.path.abspath(args.baseline_tree)} if args.baseline_tree else {})
    runs = {name: [] for name in trees}
    for _ in range(args.rounds):
        for name, tree in trees.items():
            runs[name].append(time_plans(tree, args.scenario, args.repeats))

    cli_cmd = [sys.executable, "-m", "budget_planner.cli", "plan", "--scenario", args.scenario]
    imports_cmd = [sys.executable, "-c", "import numpy, scipy.stats, pandas"]
    with tempfile.TemporaryDirectory() as d:
        env = {**os.environ, "SPARSE2DENSE_CACHE": d, "PYTHONPATH": ROOT}
        cold = [wall(cli_cmd, env)]
        cli, imports = [], []
        for _ in range(7):
            cli.append(wall(cli_cmd, env))
            imports.append(wall(imports_cmd, env))
        for _ in range(2):  # cold again: a fresh cache directory each time
            with tempfile.TemporaryDirectory() as d2:
                cold.append(wall(cli_cmd, {**env, "SPARSE2DENSE_CACHE": d2}))

    first = runs["this tree"][0]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"python {platform.python_version()}; load average {os.getloadavg()[0]:.1f}")
    print(f"scenario {args.scenario}: {first['arms']} arms, {first['splits']} splits, {first['draws']} draws")
    median_ms, cpu_ms = {}, {}
    for name, rs in runs.items():
        plans = [t for r in rs for t in r["plans"]]
        median_ms[name] = statistics.median(plans) * 1e3
        cpu_ms[name] = statistics.median(t for r in rs for t in r["cpu"]) * 1e3
        print(f"[{name}] import theory+budget_planner: {statistics.median(r['import'] for r in rs) * 1e3:.0f} ms; "
              f"first plan() (load + calibrate + plan): {statistics.median(r['first'] for r in rs) * 1e3:.0f} ms")
        print(f"[{name}] plan() in-process, calibrated: median {median_ms[name]:.1f} ms, min {min(plans) * 1e3:.1f} ms "
              f"over {len(plans)} ({len(rs)} interpreters x {args.repeats}; target <= 30 ms); CPU time (user + "
              f"system, what a busy machine does not stretch) median {cpu_ms[name]:.1f} ms")
    if args.baseline_tree:
        new, base = median_ms["this tree"], median_ms["baseline"]
        new_cpu, base_cpu = cpu_ms["this tree"], cpu_ms["baseline"]
        print(f"plan() median, this tree / baseline: {new:.1f} / {base:.1f} ms = {new / base:.2f}x "
              "(target, issue 23: <= 2x the plan before the compute plane); "
              f"CPU time {new_cpu:.1f} / {base_cpu:.1f} ms = {new_cpu / base_cpu:.2f}x")
    c, i = statistics.median(cli), statistics.median(imports)
    print(f"CLI plan end to end (calibration cached): median {c:.2f} s, min {min(cli):.2f} s over {len(cli)}; "
          f"`import numpy, scipy.stats, pandas`: median {i:.2f} s; ratio {c / i:.2f}x (target <= 1.5x)")
    print(f"CLI plan end to end, first call of a scenario (calibrates): median {statistics.median(cold):.2f} s "
          f"over {len(cold)}")


if __name__ == "__main__":
    main()
