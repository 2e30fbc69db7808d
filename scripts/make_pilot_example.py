"""Write docs/examples/pilot_{runs,problems}.csv: a synthetic pilot drawn from the model itself.

The truth is docs/examples/pilot_truth.toml (its stated values are the true parameters). Then
    budget-planner calibrate --runs docs/examples/pilot_runs.csv --problems docs/examples/pilot_problems.csv \
        --out pilot.toml && budget-planner plan --scenario pilot.toml
should recover them (tests/test_theory_calibrate.py checks recovery on the same generator).
"""

from pathlib import Path

import numpy as np

from theory.calibrate import simulate_pilot
from theory.scenario import read_scenario
from theory.tables import write_table

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = [("direct_grpo", n, None) for n in (250, 500, 1000, 2000)] + \
          [("rl_teacher_bridge", n, None) for n in (250, 1000, 2000)] + \
          [("raw_teacher_bridge", 2000, None), ("no_fkl", 2000, None), ("no_opd", 2000, None),
           ("rl_teacher_bridge_stage3", 2000, 1000), ("replay_control", 2000, 1000)]


def main() -> None:
    truth = read_scenario(ROOT / "docs/examples/pilot_truth.toml")
    runs, problems = simulate_pilot(truth, CONFIGS, seeds=3, n_items=200, k=8, rng=np.random.default_rng(0))
    write_table(runs, ROOT / "docs/examples/pilot_runs.csv", "runs")
    write_table(problems, ROOT / "docs/examples/pilot_problems.csv", "problems")
    print(f"wrote {len(runs)} run rows and {len(problems)} problem rows to docs/examples/")


if __name__ == "__main__":
    main()
