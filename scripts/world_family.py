"""The world family of issue 11: one knob K (the share of step-mode documents in the student's
pre-training mix) times the label budget N, the paper-like world's ablation, and the planner asked to
predict all of it before any held-out run. Design and predicted directions: docs/log.md (2026-11-30,
third session); the planner's frozen predictions: docs/results/world_family_predictions.csv and
world_family_preregistration.json (committed before the held-out runs).

    python scripts/world_family.py assets        # pre-train the missing base models (one student per K)
    python scripts/world_family.py gate          # the stability gate of every world (recorded)
    python scripts/world_family.py pilots        # base-model pilot (+ self-distillation) per world
    python scripts/world_family.py calibration   # calibration runs: K = 0.15, N = 128 and 512, direct + RL bridge
    python scripts/world_family.py predict       # the planner -> predictions (then COMMIT them)
    python scripts/world_family.py runs          # held-out grid, seed by seed
    python scripts/world_family.py ablation      # the paper-like world: every arm, 10 seeds
    python scripts/world_family.py report        # crosscheck per world and pooled, summary, figure
    python scripts/world_family.py all           # every step in this order

Every step resumes: finished stages are cached under --workdir and finished runs kept in per-job CSVs,
so a killed step redoes only what did not finish; `predict` never overwrites committed predictions
(a rerun writes <name>.rerun.csv), and `runs`/`ablation` refuse to start without them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from crosscheck_toy import PRED_COLS, _write_predictions, run_configs  # noqa: E402  (the same runner)

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "results"
DEFAULT_WORK = Path(".s2d_runs") / "family"

# ---- the design (pre-registered; docs/log.md 2026-11-30 third session) ----------------------------
K_VALUES = ("05", "15", "30")
WORLDS = {f"modes-k{k}": ROOT / "configs" / "family" / f"modes_k{k}.toml" for k in K_VALUES}
CAL_WORLD, CAL_N, CAL_SEEDS = "modes-k15", (128, 512), (0, 1, 2)  # budgets off the held-out grid
HEADLINE = ("direct_grpo", "rl_teacher_bridge")
HELD_N = (64, 256, 1024)
HELD_SEEDS = tuple(range(10, 15))
SPLIT_N = 256  # the label split: rl_teacher_bridge_stage3 at half, in every world
CURVE_N = (32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048)  # the planner's dense curve
ABLATION_SEEDS = tuple(range(10, 20))
LEVEL = 0.9
PRED_CSV = OUT / "world_family_predictions.csv"
PREREG_JSON = OUT / "world_family_preregistration.json"
RUNS_CSV = OUT / "world_family_runs.csv"
CAL_CSV = OUT / "world_family_calibration_runs.csv"
ABLATION_CSV = OUT / "paper_world_ablation.csv"


def pilot_dir(world: str) -> Path:
    return OUT / f"world_family_pilot_{world}"


def _seeds(text: str | None, default: tuple[int, ...]) -> tuple[int, ...]:
    if not text:
        return default
    try:
        if "-" in text:
            a, b = (int(x) for x in text.split("-"))
            return tuple(range(a, b + 1))
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        sys.exit(f"--seeds must look like 10-14 or 10,11,12, got {text!r}")


def _cli(*args: str) -> int:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT).returncode


# ---- assets, gate, pilots -------------------------------------------------------------------------
def cmd_assets(a) -> int:
    from reference.config import load_config
    for world, path in WORLDS.items():
        cfg = load_config(path)
        for role in ("student", "teacher"):
            asset = ROOT / "reference" / "assets" / getattr(cfg, role).asset
            if (asset / "model.safetensors").is_file():
                print(f"{world} {role}: {asset.name} present")
                continue
            print(f"{world} {role}: pre-training {asset.name}", flush=True)
            rc = subprocess.run([sys.executable, str(ROOT / "scripts" / "pretrain_base.py"), "--config", str(path),
                                 "--role", role, "--threads", str(a.threads)], cwd=ROOT).returncode
            if rc:
                return rc
    return 0


def gate_recorded(path: Path) -> bool | None:
    """The recorded gate result of a config at its current hash (None: not recorded)."""
    from reference.config import load_config
    from reference.gate import RECORD
    if not RECORD.is_file():
        return None
    t = pd.read_csv(RECORD)
    rows = t[(t["config_hash"] == load_config(path).hash()) & (t["backend"] == "reference")]
    return None if rows.empty else bool(rows["passed"].astype(bool).all())


def cmd_gate(a) -> int:
    for world, path in WORLDS.items():
        done = gate_recorded(path)
        if done is not None:
            print(f"{world}: gate recorded ({'passed' if done else 'FAILED'})")
            continue
        _cli("reference.cli", "gate", "--config", str(path), "--seeds", "3", "--jobs", str(a.jobs), "--record",
             "--workdir", str(a.workdir), "--json", str(a.workdir / f"gate_{world}.json"))
    return 0


def cmd_pilots(a) -> int:
    for world, path in WORLDS.items():
        rc = _cli("reference.cli", "pilot", "--config", str(path), "--k", "8", "--problems", "200", "--split", "val",
                  "--self-distill", "--out", str(pilot_dir(world)), "--workdir", str(a.workdir / f"pilot_{world}"))
        if rc:
            return rc
    return 0


# ---- calibration and predictions -------------------------------------------------------------------
def cmd_calibration(a) -> int:
    cfgs = [(CAL_WORLD, arm, n, None) for n in CAL_N for arm in HEADLINE]
    run_configs(cfgs, CAL_SEEDS, CAL_CSV, a.jobs, a.workdir, config_of=WORLDS)
    return 0


def pilot_tables(world: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    from theory.tables import read_table
    d = pilot_dir(world)
    return read_table(d / "problems.csv", "problems"), read_table(d / "pilot_runs.csv", "runs")


def calibration_fit():
    """The one calibration world: its runs at the CAL_N budgets plus its own pilot (with self-distillation)."""
    from theory.calibrate import calibrate
    from theory.fitting import fit_scenario
    from theory.tables import read_table
    cal = read_table(CAL_CSV, "runs")
    probs, kl = pilot_tables(CAL_WORLD)
    scn = calibrate(pd.concat([cal, kl], ignore_index=True), probs, benchmark="toy_test",
                    name=f"{CAL_WORLD}-calibration", group_size=8, seed=0)
    return cal, fit_scenario(scn)


def world_scenario(world: str, fit):
    """A world from its own pilot: the start states of its models and KL_0 measured; the rates from
    the calibration world's posterior. The teacher is the same checkpoint in every world."""
    from theory.calibrate import calibrate
    probs, kl = pilot_tables(world)
    same = {"student": "student", "teacher": "teacher"} if world == CAL_WORLD else {"teacher": "teacher"}
    return calibrate(kl, probs, benchmark="toy_test", name=world, group_size=8, seed=0, rates_from=fit,
                     same_models=same)


def _git_head() -> tuple[str, bool]:
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    clean = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "theory", "budget_planner"], cwd=ROOT).returncode == 0
    return head, clean


def cmd_predict(a) -> int:
    from budget_planner.planner import plan, predict_configs
    from theory.arms import ARMS
    from theory.crosscheck import naive_predictions, sign_crossovers
    from theory.scenario import scenario_to_toml
    head, clean = _git_head()
    if not clean and not a.force:
        sys.exit("theory/ or budget_planner/ has uncommitted changes: the pre-registration names a commit; "
                 "commit first (or --force)")
    cal, fit = calibration_fit()
    print(fit.parameters()[["input", "prior", "map", "lo", "hi", "shrink"]].round(3).to_string())
    print("fit warnings:", *fit.warnings, sep="\n  ")
    scenarios = {w: world_scenario(w, fit) for w in WORLDS}
    sc_dir = ROOT / "budget_planner" / "scenarios"
    for w, scn in scenarios.items():
        target = sc_dir / f"{w}.toml"
        if target.exists() and not a.force:
            target = target.with_suffix(".rerun.toml")
        target.write_text(f"# Calibrated by scripts/world_family.py predict (issue 11 pre-registration).\n"
                          f"# Regenerate, do not edit by hand.\n" + scenario_to_toml(scn))
    prereg: dict = {"planner_commit": head, "level": LEVEL, "calibration": {
        "world": CAL_WORLD, "labels": list(CAL_N), "arms": list(HEADLINE), "seeds": list(CAL_SEEDS)},
        "held_out": {"labels": list(HELD_N), "seeds": list(HELD_SEEDS)}, "worlds": {}}
    # the dense curve and the recommendation at every measured budget
    margins = {}
    for w, scn in scenarios.items():
        curve = predict_configs(scn, [(arm, n, None) for n in CURVE_N for arm in HEADLINE], n_seeds=len(HELD_SEEDS),
                                level=LEVEL)
        piv = curve.pivot(index="labels", columns="arm", values="pred_mean").loc[list(CURVE_N)]
        d = (piv["rl_teacher_bridge"] - piv["direct_grpo"]).to_numpy()
        recs = {}
        for n in HELD_N:
            p = plan(scn, labels=n)
            r = p.recommendation
            recs[str(n)] = {"arm": r.arm, "teacher_labels": r.teacher_labels, "student_labels": r.student_labels,
                            "p_best": round(r.p_best, 3), "runner_up": r.runner_up, "gap": round(r.gap_mean, 2),
                            "gap_interval": [round(r.gap_lo, 2), round(r.gap_hi, 2)], "separable": r.separable}
            margins[(w, n)] = float(piv.loc[n, "rl_teacher_bridge"] - piv.loc[n, "direct_grpo"])
        prereg["worlds"][w] = {
            "config": str(WORLDS[w].relative_to(ROOT)),
            "curve": {"labels": list(CURVE_N), "direct_grpo": piv["direct_grpo"].round(2).tolist(),
                      "rl_teacher_bridge": piv["rl_teacher_bridge"].round(2).tolist()},
            "predicted_crossovers": sign_crossovers(list(CURVE_N), d),
            "recommendation": recs}
    # the paper-like world: the (K, N) of the grid with the largest predicted bridge advantage
    (pw, pn) = max(margins, key=margins.get)
    prereg["paper_world"] = {"world": pw, "labels": pn, "seeds": list(ABLATION_SEEDS),
                             "predicted_margin": round(margins[(pw, pn)], 2),
                             "rule": "argmax over the held-out grid of predicted rl_teacher_bridge - direct_grpo"}
    frames = []
    for w, scn in scenarios.items():
        cfgs = sorted(set(heldout_configs(w, prereg)), key=lambda c: (c[2], c[1], c[3] or 0))
        df = predict_configs(scn, [(arm, n, tl) for _, arm, n, tl in cfgs], n_seeds=len(HELD_SEEDS), level=LEVEL)
        df.insert(0, "world", w)
        df["set"] = "heldout"
        df["naive_mean"] = naive_predictions(cal, cfgs)
        recommended = {(int(n), r["arm"], r["teacher_labels"]) for n, r in prereg["worlds"][w]["recommendation"].items()}
        df["recommended"] = [int((n, arm, t) in recommended) for n, arm, t in zip(df["labels"], df["arm"], df["teacher_labels"])]
        frames.append(df[[*PRED_COLS, "recommended"]])
        if w == pw:  # the ablation's every arm at its own seed count
            abl = [(w, arm, pn, pn // 2 if ARMS[arm].splits_labels else None) for arm in ARMS]
            dfa = predict_configs(scn, [(arm, n, tl) for _, arm, n, tl in abl], n_seeds=len(ABLATION_SEEDS), level=LEVEL)
            dfa.insert(0, "world", w)
            dfa["set"] = "heldout"
            dfa["naive_mean"] = naive_predictions(cal, abl)
            prereg["paper_world"]["predictions"] = dfa[["arm", "teacher_labels", "pred_mean", "pred_lo", "pred_hi"]].round(2).to_dict("records")
    pred = pd.concat(frames, ignore_index=True)
    _write_predictions(pred, PRED_CSV, a.force)
    target = PREREG_JSON if (not PREREG_JSON.exists() or a.force) else PREREG_JSON.with_suffix(".rerun.json")
    target.write_text(json.dumps(prereg, indent=1) + "\n")
    print("wrote", target)
    print(pred.round(2).to_string())
    print(json.dumps({w: {"crossovers": v["predicted_crossovers"], "rec": {n: (r["arm"], r["teacher_labels"]) for n, r in v["recommendation"].items()}}
                      for w, v in prereg["worlds"].items()}, indent=1))
    print("paper world:", prereg["paper_world"]["world"], prereg["paper_world"]["labels"])
    return 0


def heldout_configs(world: str, prereg: dict) -> list[tuple[str, str, int, int | None]]:
    """(world, arm, N, teacher_labels) of the held-out grid: the headline pair at every budget, the
    planner's recommendation there (when it is another configuration), stage 3 at half at SPLIT_N."""
    out = [(world, arm, n, None) for n in HELD_N for arm in HEADLINE]
    out.append((world, "rl_teacher_bridge_stage3", SPLIT_N, SPLIT_N // 2))
    for n, r in prereg["worlds"][world]["recommendation"].items():
        tl = r["teacher_labels"] if r["arm"] == "rl_teacher_bridge_stage3" or r["arm"] == "replay_control" else None
        out.append((world, r["arm"], int(n), tl))
    return list(dict.fromkeys(out))


def _prereg() -> dict:
    if not PREREG_JSON.is_file() or not PRED_CSV.is_file():
        sys.exit("no committed predictions: run `predict` and commit them before any held-out run")
    return json.loads(PREREG_JSON.read_text())


def cmd_runs(a) -> int:
    prereg = _prereg()
    cfgs = [c for w in WORLDS for c in heldout_configs(w, prereg)]
    for seed in _seeds(a.seeds, HELD_SEEDS):  # seed by seed: a partial run is balanced over the grid
        t0 = time.perf_counter()
        run_configs(cfgs, (seed,), RUNS_CSV, a.jobs, a.workdir, config_of=WORLDS)
        print(f"seed {seed}: {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


def cmd_ablation(a) -> int:
    from theory.arms import ARMS
    pw = _prereg()["paper_world"]
    w, n = pw["world"], int(pw["labels"])
    cfgs = [(w, arm, n, n // 2 if ARMS[arm].splits_labels else None) for arm in ARMS]
    for seed in _seeds(a.seeds, ABLATION_SEEDS):
        run_configs(cfgs, (seed,), ABLATION_CSV, a.jobs, a.workdir, config_of=WORLDS)
    return 0


def cmd_report(a) -> int:
    runs = [p for p in (RUNS_CSV, ABLATION_CSV) if p.is_file()]
    if not runs:
        sys.exit(f"no runs yet ({RUNS_CSV.name})")
    both = a.workdir / "world_family_all_runs.csv"
    a.workdir.mkdir(parents=True, exist_ok=True)
    pd.concat([pd.read_csv(p) for p in runs], ignore_index=True).drop_duplicates(
        subset=["world", "arm", "teacher_labels", "student_labels", "seed", "metric", "split"]).to_csv(both, index=False)
    return _cli("budget_planner.cli", "crosscheck", "--runs", str(both), "--predictions", str(PRED_CSV),
                "--json", str(OUT / "world_family_report.json"))


STEPS = {"assets": cmd_assets, "gate": cmd_gate, "pilots": cmd_pilots, "calibration": cmd_calibration,
         "predict": cmd_predict, "runs": cmd_runs, "ablation": cmd_ablation, "report": cmd_report}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=[*STEPS, "all"])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="pre-training threads (assets)")
    ap.add_argument("--seeds", help="runs/ablation: seeds to run, e.g. 10-12 (default: the pre-registered ones)")
    ap.add_argument("--workdir", type=Path, default=DEFAULT_WORK, help=f"stage checkpoints and resume state (default {DEFAULT_WORK})")
    ap.add_argument("--force", action="store_true", help="predict: overwrite the committed pre-registration")
    a = ap.parse_args(argv)
    a.workdir.mkdir(parents=True, exist_ok=True)
    if a.step != "all":
        return STEPS[a.step](a) or 0
    for name, fn in STEPS.items():
        if name == "predict" and PRED_CSV.is_file():
            continue  # committed: never re-predicted by `all`
        print(f"== {name}", flush=True)
        rc = fn(a)
        if rc:
            return rc
    return 0


if __name__ == "__main__":
    sys.exit(main())
