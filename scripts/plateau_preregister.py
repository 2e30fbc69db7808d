"""Pre-register the planner's predictions of the plateau reruns (issue 23 item 4, issue 22 item 4).

    python scripts/plateau_preregister.py [--pilots docs/results/plateau_pilots] [--out docs/results]

From pilots only (N <= 64, every stage at <= 20% of the caps of configs/plateau/modes_k*.toml; written by
`reference-pipeline pilot-curves`, one directory per world under --pilots), per world of the family:

  1. calibrate: kappa, the reuse scale e_r and the bridge reach r_b from the pilot curves
     (theory.pilotfit), the rest of the world's preset as it is; the calibrated scenario is written next
     to the pilot (calibrated.toml) with the fit's points (fit_points.csv);
  2. predict, for N in {64, 256, 1024} and the two headline arms, at two compute levels:
       plateau  the best checkpoint within the config's caps (GRPO min(100 passes, 400 steps), FKL and OPD
                600 steps each), what a plateau-protocol run keeps;
       low      the best student checkpoint a plateau-protocol run has by T_low training tokens (what
                reference.frontier reads, on the validation problems: the prediction carries the pilot's
                measured validation offset), the same T_low for both arms (compute-matched): halfway
                through the RL bridge's student stages, i.e. its predicted teacher tokens plus half the
                rest to its plateau (predict_schedule walks each arm's stages in order at its predicted
                plateau lengths and reads the best student by T_low; before a teacher finishes there is no
                student to read);
     with a 90% interval for the mean of the seeds the reruns will run (SEEDS);
  3. the theory-free naive predictor (theory.curvefit: a saturating fit per arm of the same pilot curves,
     extrapolated in N and tokens; at plateau it is read at the arm's tokens at the caps and moved by the
     measured validation offset, as the theory's fit is).

The paper-like world (modes-k15 at N = 64) is set "seen": its plateau numbers are in the issues' text.
Everything else is "heldout". Writes plateau_crosscheck_predictions.csv (the cross-check's prediction
schema plus compute, tokens, naive_lo, naive_hi, n_seeds) and plateau_crosscheck_preregistration.json
(the code commit the predictions come from, the caps, the rule for T_low, the fitted inputs, the pilots'
cost). Nothing here reads a rerun.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from budget_planner.compute import predict_capped, predict_schedule  # noqa: E402
from budget_planner.planner import plan_setup  # noqa: E402
from budget_planner.presets import load_scenario  # noqa: E402
from theory.arms import ARMS, BRIDGE_ARM, DIRECT_ARM, Stage  # noqa: E402
from theory.curvefit import naive_table  # noqa: E402
from theory.pilotfit import calibrated_scenario, fit_lengths, read_pilot  # noqa: E402
from theory.scenario import scenario_to_toml  # noqa: E402

WORLDS = {"k05": "modes-k05", "k15": "modes-k15", "k30": "modes-k30"}
LABELS = (64, 256, 1024)
ARMS_RUN = (DIRECT_ARM, BRIDGE_ARM)
SEEDS = {"heldout": 3, "seen": 10}  # seeds the reruns run per configuration (the paper world: >= 10)
SEEN = {("modes-k15", 64)}  # the paper-like world: its plateau numbers are in the issues' text
LEVEL = 0.9
LOW_SHARE = 0.5  # the low compute level: halfway through the RL bridge's student stages


def caps_of(config: dict, n: int, unit: float) -> dict:
    """Each stage's cap in its unit at budget n: GRPO min(epochs, max_steps x P / n) label passes, FKL and
    OPD steps x P / unit bridge units."""
    g = config["grpo"]
    passes = min(float(g["epochs"]), float(g.get("max_steps") or np.inf) * g["prompts_per_step"] / n)
    return {Stage.TEACHER_GRPO.value: passes, Stage.STUDENT_GRPO.value: passes,
            Stage.FKL_WARMUP.value: config["fkl"]["steps"] * config["fkl"]["prompts_per_step"] / unit,
            Stage.OPD.value: config["opd"]["steps"] * config["opd"]["prompts_per_step"] / unit}


def commit() -> dict:
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "theory", "budget_planner", "scripts"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    return {"head": head, "code_changed_since_head": bool(dirty)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pilots", default=str(ROOT / "docs/results/plateau_pilots"))
    ap.add_argument("--out", default=str(ROOT / "docs/results"))
    args = ap.parse_args(argv)
    pilots, out = Path(args.pilots), Path(args.out)
    rows, fits, fits_by_world, all_curves, pilot_cost = [], {}, {}, [], {}
    for key, preset in WORLDS.items():
        curves, meta, config = read_pilot(pilots / key)
        scn = load_scenario(preset)
        lf = fit_lengths(scn, curves, meta, config, source=f"pilot curves docs/results/plateau_pilots/{key}")
        cal = calibrated_scenario(scn, lf)
        (pilots / key / "calibrated.toml").write_text(scenario_to_toml(cal))
        lf.rows.assign(lengths=lf.rows["lengths"].map(json.dumps)).to_csv(pilots / key / "fit_points.csv",
                                                                             index=False)
        fits[preset] = {"value": lf.value, "sd_z": lf.sd_z, "rmse_points": lf.rmse, "chi2": lf.chi2,
                        "points": len(lf.rows), "validation_offset": lf.offset}
        pilot_cost[preset] = meta["tokens"]
        all_curves.append(curves)
        setup = plan_setup(cal, None)
        unit = float(cal.compute.bridge_prompts * cal.compute.bridge_samples)
        world = str(curves["world"].iloc[0])
        fits_by_world[world] = fits[preset]
        for n in LABELS:
            caps = caps_of(config, n, unit)
            set_ = "seen" if (world, n) in SEEN else "heldout"
            floor = float(config["plateau"]["min_fraction"])  # no stage stops before this share of its cap
            capped = {arm: predict_capped(setup, arm, n, caps, n_seeds=SEEDS[set_], level=LEVEL, floor=floor)
                      for arm in ARMS_RUN}
            # the low level, the same for both arms: midway through the RL bridge's student stages
            bridge = capped[BRIDGE_ARM]
            teacher = cal.compute.stage_tokens(Stage.TEACHER_GRPO, n, bridge["plateau_lengths"]["teacher_grpo"])
            t_low = teacher + LOW_SHARE * (bridge["plateau_tokens"] - teacher)
            for arm in ARMS_RUN:
                acct = ARMS[arm].labels(n)
                cap_tokens = ARMS[arm].total_compute_tokens(n, cal.compute, lengths=caps)
                for compute in ("plateau", "low"):
                    p = dict(capped[arm]) if compute == "plateau" else predict_schedule(
                        setup, arm, n, capped[arm]["plateau_lengths"], t_low, n_seeds=SEEDS[set_], level=LEVEL)
                    if compute == "low":  # read on the validation problems: their offset from the test set
                        p.update({k: float(np.clip(p[k] + lf.offset, 0, 100)) for k in ("accuracy", "lo", "hi")})
                    tokens = cap_tokens if compute == "plateau" else t_low
                    rows.append({"world": world, "arm": arm, "labels": n, "teacher_labels": acct.teacher,
                                 "student_labels": acct.student, "set": set_, "compute": compute,
                                 "tokens": int(tokens), "pred_mean": p["accuracy"], "pred_lo": p["lo"],
                                 "pred_hi": p["hi"], "level": LEVEL, "n_seeds": SEEDS[set_],
                                 "pred_lengths": json.dumps(p["lengths"]), "pred_tokens": p["tokens"]})
    preds = pd.DataFrame(rows)
    gone = preds[preds["pred_mean"].isna()]
    for r in gone.itertuples():  # a budget that ends before the student's first stage: nothing to measure
        print(f"note: no prediction for {r.world} N={r.labels} {r.arm} at {r.compute} ({r.tokens} tokens): the "
              "budget ends before the arm's first student checkpoint")
    preds = preds.drop(gone.index).reset_index(drop=True)
    naive_cfgs = [(r.world, r.arm, r.labels, float(r.tokens)) for r in preds.itertuples()]
    naive = naive_table(pd.concat(all_curves, ignore_index=True), naive_cfgs, level=LEVEL)
    preds["naive_mean"], preds["naive_lo"], preds["naive_hi"] = (naive[c].to_numpy() for c in
                                                                   ("naive_mean", "naive_lo", "naive_hi"))
    # the naive surface is fitted to validation curves: at plateau (read on the test set) it gets the same
    # measured validation offset the theory's fit removed, so neither is charged for the validation sample
    plateau = preds["compute"] == "plateau"
    shift = preds["world"].map({w: f["validation_offset"] for w, f in fits_by_world.items()})
    for c in ("naive_mean", "naive_lo", "naive_hi"):
        preds.loc[plateau, c] = (preds.loc[plateau, c] - shift[plateau]).clip(0, 100)
    # the planner's pick per (world, N, compute level): the arm with the higher predicted mean
    best = preds.groupby(["world", "labels", "compute"])["pred_mean"].transform("max")
    preds["recommended"] = (preds["pred_mean"] == best).astype(int)
    dup = preds[preds["recommended"] == 1].duplicated(["world", "labels", "compute"], keep="first")
    preds.loc[dup[dup].index, "recommended"] = 0
    num = ["pred_mean", "pred_lo", "pred_hi", "naive_mean", "naive_lo", "naive_hi"]
    preds[num] = preds[num].round(2)
    preds.to_csv(out / "plateau_crosscheck_predictions.csv", index=False)
    reg = {"date": date.today().isoformat(), "code": commit(), "predictions": "plateau_crosscheck_predictions.csv",
           "configs": {p: f"configs/plateau/modes_{k}.toml" for k, p in WORLDS.items()},
           "caps": "GRPO min(100 label passes, 400 steps); FKL 600 steps; OPD 600 steps (x 32 prompts)",
           "compute_levels": {"plateau": "the best checkpoint within the caps (test accuracy at the selected "
                                         "checkpoint, mean over the seeds)",
                              "low": "the best validation checkpoint a run has by T_low training tokens (the frontier "
                                     "of reference.frontier, on the validation problems, mean over the seeds); "
                                     "T_low = the RL bridge's predicted teacher tokens plus half its student "
                                     "stages' tokens to its plateau at that N, the same for both arms"},
           "seeds": SEEDS, "seed_rule": "reruns use seeds 1000+ (pilots used 700-701; 900+ are the protocol checks')",
           "level": LEVEL, "sets": {"seen": sorted(map(list, SEEN)), "heldout": "every other row"},
           "fitted_from_pilots": fits, "pilot_tokens": pilot_cost,
           "aims": {"mae": "<= 3 points and <= 0.5 x the naive predictor's", "coverage_90": "in [0.8, 0.95]",
                    "decision_regret": "mean <= 1, max <= 3", "crossover": "within 2x (in N or compute)"},
           "scorer": "budget-planner crosscheck --runs plateau_crosscheck_runs.csv --predictions "
                     "plateau_crosscheck_predictions.csv --set heldout (and --set seen)"}
    (out / "plateau_crosscheck_preregistration.json").write_text(json.dumps(reg, indent=1) + "\n")
    print(preds[["world", "labels", "arm", "compute", "set", "tokens", "pred_mean", "pred_lo", "pred_hi",
                 "naive_mean", "recommended"]].to_string(index=False))
    for p, f in fits.items():
        print(p, {k: round(v, 4) for k, v in f["value"].items()}, f"rmse {f['rmse_points']:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
