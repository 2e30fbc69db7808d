"""The paper's numbers vs the calibrated model: in-sample (fitted) and held out (never fitted).

    python scripts/paper_residuals.py [--scenario paper-qwen3-math]

Prints observed, predicted (MAP), the 95% predictive interval of a measurement and the residual for
every [[observations]] (in-sample) and [[holdout]] (out-of-sample) entry, the stage-3 lift vs the
replay control, and the AIME ordering check.
"""

import argparse
import sys

import pandas as pd

from budget_planner.presets import load_scenario
from theory.errors import InputError
from theory.fitting import fit_scenario, predict_observations
from theory.scenario import Observation


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", default="paper-qwen3-math")
    args = ap.parse_args(argv)
    try:
        scn = load_scenario(args.scenario)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    fit = fit_scenario(scn)
    pd.set_option("display.width", 160)
    cols = ["arm", "benchmark", "labels", "teacher_labels", "observed", "predicted", "lo", "hi", "residual"]
    fmt = lambda v: f"{v:.1f}"  # noqa: E731
    print(f"scenario {scn.name}: {len(fit.names)} fitted inputs, chi2 = {fit.chi2:.2f}, ESS = {fit.ess:.0f}")
    print("\nin-sample (fitted):")
    print(fit.residuals()[cols].to_string(index=False, float_format=fmt))
    hold = fit.residuals(holdout=True)
    if not len(hold):
        print("\nno [[holdout]] entries: the scenario fits every number it has; for out-of-sample residuals "
              "see the leave-one-out audit, python scripts/loo_audit.py")
    else:
        print("\nout-of-sample (never fitted):")
        print(hold[cols].to_string(index=False, float_format=fmt))
        print(f"mean |residual| {hold['residual'].abs().mean():.2f} points; "
              f"{int(((hold['lo'] <= hold['observed']) & (hold['observed'] <= hold['hi'])).sum())} of {len(hold)} "
              "observed values inside the 95% predictive interval")
        h = hold.set_index("arm")
        if {"rl_teacher_bridge_stage3", "replay_control"} <= set(h.index):
            s3, rc = h.loc["rl_teacher_bridge_stage3"], h.loc["replay_control"]
            print(f"stage 3 over replay control: observed {s3['observed'] - rc['observed']:+.1f}, "
                  f"predicted {s3['predicted'] - rc['predicted']:+.1f}")
    aime = [b for b in scn.benchmarks if b.upper().startswith("AIME")]
    if aime:
        b = aime[0]
        obs = [Observation(arm=a, benchmark=b, value=0.0, se=1.0, labels=None, teacher_labels=None, tag="measured",
                           note="") for a in ("raw_teacher_bridge", "direct_grpo", "rl_teacher_bridge")]
        p = predict_observations(scn, fit.z_map[None, :], obs)[0]
        d = predict_observations(scn, fit.z_draws, obs)
        order = (d[:, 0] < d[:, 1]) & (d[:, 1] < d[:, 2])
        print(f"\n{b} ordering raw bridge < direct GRPO < RL bridge (paper: ? < 19.8 < 25.2): predicted "
              f"{p[0]:.1f} < {p[1]:.1f} < {p[2]:.1f} -> {'holds' if p[0] < p[1] < p[2] else 'FAILS'} at the MAP; "
              f"in {order.mean():.0%} of posterior draws")
    return 0


if __name__ == "__main__":
    sys.exit(main())
