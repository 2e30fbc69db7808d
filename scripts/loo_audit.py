"""Leave-one-out audit of a preset: each published number predicted by a fit on all the others.

    python scripts/loo_audit.py [--scenario paper-qwen3-math] [--rounds 3] [--markdown]

Learns the structural-error sd sigma_delta as the fixed point of "maximum likelihood of the LOO
residuals, with fits that themselves use sigma_delta" (theory.audit.audit), then prints the LOO
table (MAP prediction, 90% predictive interval of a measurement, residual, z), the learned sigma_delta,
the coverage of the 90% intervals, and the shipped preset's predictive interval for
(stage-3 half split - RL bridge) next to the paper's -0.8. docs/theory.md section 9 holds its output.
"""

import argparse
import sys

import numpy as np

from budget_planner.presets import load_scenario
from theory.audit import audit
from theory.discrepancy import discrepancy_sd, learn_sd, sd_upper
from theory.errors import InputError


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", default="paper-qwen3-math")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown (docs/theory.md)")
    args = ap.parse_args(argv)
    try:
        scn = load_scenario(args.scenario)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    stated = discrepancy_sd(scn)[0]
    sd, table = audit(scn, rounds=args.rounds)
    inside = (table["lo90"] <= table["observed"]) & (table["observed"] <= table["hi90"])
    print(f"scenario {scn.name}: {len(table)} published numbers; sigma_delta stated {stated:.2f}, "
          f"learned {sd:.2f} points (LOO fixed point)")
    cols = ["arm", "benchmark", "labels", "teacher_labels", "observed", "predicted", "lo90", "hi90", "residual", "z"]
    t = table[cols].copy()
    t["teacher_labels"] = t["teacher_labels"].map(lambda v: "" if v is None or v != v else str(int(v)))
    if args.markdown:
        print("| arm | benchmark | N | teacher labels | observed | LOO predicted | 90% interval | residual | z |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in t.itertuples():
            print(f"| {r.arm} | {r.benchmark} | {r.labels} | {r.teacher_labels or '—'} | {r.observed:.1f} | "
                  f"{r.predicted:.1f} | [{r.lo90:.1f}, {r.hi90:.1f}] | {r.residual:+.1f} | {r.z:+.2f} |")
    else:
        print(t.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    v = table["se"] ** 2 + table["var"]
    print(f"sigma_delta from these residuals: ML {learn_sd(table['residual'], v, estimate='ml'):.2f}, posterior mean "
          f"{learn_sd(table['residual'], v):.2f}, 90% upper {sd_upper(table['residual'], v):.2f} points")
    print(f"mean |residual| {table['residual'].abs().mean():.2f} points, RMS {np.sqrt((table['residual']**2).mean()):.2f}; "
          f"{int(inside.sum())} of {len(table)} inside their 90% LOO interval; mean z^2 {np.mean(table['z']**2):.2f}")

    from budget_planner.planner import predict_gap
    lo, mean, hi = predict_gap(scn, ("rl_teacher_bridge_stage3", 14000, 7000), ("rl_teacher_bridge", 14000, None),
                               level=0.9)
    print(f"shipped preset (all numbers fitted, sigma_delta {stated:.2f}): stage-3 half split - RL bridge = "
          f"{mean:+.2f}, 90% predictive interval [{lo:+.2f}, {hi:+.2f}]; paper -0.8 "
          f"{'inside' if lo <= -0.8 <= hi else 'OUTSIDE'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
