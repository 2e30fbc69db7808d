"""The pre-registered planner cross-check in the toy world (issue 6; design in
docs/results/crosscheck_preregistration.md).

    flock /tmp/s2d_heavy.lock python scripts/crosscheck_toy.py calibration-runs   # N=64 direct + RL bridge
    flock /tmp/s2d_heavy.lock python scripts/crosscheck_toy.py pilots             # base-model pilots, 2 worlds
    python scripts/crosscheck_toy.py predict          # calibrate -> toy-arith scenarios + predictions CSV
    # (commit the predictions before the next step)
    flock /tmp/s2d_heavy.lock python scripts/crosscheck_toy.py heldout            # the held-out runs
    python scripts/crosscheck_toy.py report           # budget-planner crosscheck + figure
    # worlds predicted from their pilot alone (predict-world, then commit, then runs-world, report-world):
    python scripts/crosscheck_toy.py predict-world --world toy-arith-direct     # (was: predict-direct)
    python scripts/crosscheck_toy.py posthoc-costs    # NOT pre-registered: re-prediction with stage costs

Every step resumes: finished runs are cached in the work directory (--workdir) and their rows kept in per-job
CSVs, so rerunning a killed step redoes only the unfinished runs.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "results"
DEFAULT_WORK = Path(".s2d_runs") / "crosscheck"  # --workdir: stage checkpoints (not committed; reruns resume)
# the old protocol configs: this cross-check ran under them (configs/legacy/)
CONFIGS = {"toy-arith": ROOT / "configs" / "legacy" / "toy.toml",
           "toy-arith-cf": ROOT / "configs" / "legacy" / "toy_counterfactual.toml"}
# worlds predicted from their pilot alone (docs/results/<stem>_preregistration.md): every arm at N = 256
# and stage 3 at the split the planner recommends, seeds 0-4
DIRECT, COMPLIANT = "toy-arith-direct", "toy-arith-compliant"
PILOT_WORLDS = {
    # costs=False: the planner as it was at the third world's pre-registration (no stage costs)
    DIRECT: {"config": ROOT / "configs" / "legacy" / "toy_direct_teacher.toml", "stem": "direct_teacher", "costs": False},
    # the fourth world: calibrated on the third world's measured runs + pilot + the self-distillation
    # pilot (stage costs), then predicted from its own pilot (another teacher, same student)
    COMPLIANT: {"config": ROOT / "configs" / "legacy" / "toy_compliant_teacher.toml", "stem": "compliant_teacher", "costs": True,
                "calibrate_on": DIRECT},
}
DIRECT_CONFIG = PILOT_WORLDS[DIRECT]["config"]
DIRECT_SEEDS = tuple(range(0, 5))
DIRECT_N = 256
SELF_DISTILL_PILOT = OUT / "crosscheck_pilot_selfdistill"  # the toy.toml schedule with teacher = student copy

# ---- the design (pre-registered; see docs/results/crosscheck_preregistration.md) -------------------
CAL_SEEDS = tuple(range(0, 5))  # new calibration runs at N = 64
CAL_COMMITTED_SEEDS = tuple(range(0, 10))  # the committed N = 256 table (docs/results/legacy/toy_ablation.csv)
HELD_SEEDS = tuple(range(10, 15))  # fresh seeds for every held-out run
CAL_ARMS = ("direct_grpo", "rl_teacher_bridge")
CAL_BUDGETS_NEW = (64,)
CAL_BUDGET_COMMITTED = 256
LEVEL = 0.9


def heldout_configs() -> list[tuple[str, str, int, int | None]]:
    """(world, arm, N, teacher_labels) of every held-out configuration."""
    out = []
    for n in (128, 512):
        for arm in ("direct_grpo", "rl_teacher_bridge", "no_fkl", "no_opd"):
            out.append(("toy-arith", arm, n, None))
        for frac in (0.25, 0.5, 0.75):
            out.append(("toy-arith", "rl_teacher_bridge_stage3", n, int(n * frac)))
        out.append(("toy-arith", "replay_control", n, n // 2))
    out.append(("toy-arith", "raw_teacher_bridge", 128, None))  # uses no labels: one config per world
    for n in (128, 512):
        for arm in ("direct_grpo", "rl_teacher_bridge"):
            out.append(("toy-arith-cf", arm, n, None))
    out.append(("toy-arith-cf", "raw_teacher_bridge", 128, None))
    return out


def calibration_configs() -> list[tuple[str, str, int, int | None]]:
    return [("toy-arith", arm, n, None) for n in CAL_BUDGETS_NEW for arm in CAL_ARMS]


def recommended_split(world: str) -> int | None:
    """Teacher labels of the stage-3 split the planner recommended (the committed recommendation file)."""
    import re
    path = OUT / f"{PILOT_WORLDS[world]['stem']}_recommendation.txt"
    if not path.exists():
        return None
    m = re.search(r"rl_teacher_bridge_stage3 \(p_best [0-9.]+\), (\d+) teacher", path.read_text())
    return int(m.group(1)) if m else None


def world_configs(world: str) -> list[tuple[str, str, int, int | None]]:
    from theory.arms import ARMS
    out = [(world, arm, DIRECT_N, DIRECT_N // 2 if ARMS[arm].splits_labels else None) for arm in ARMS]
    t = recommended_split(world)  # the split the planner recommends, run exactly
    if t is not None and t != DIRECT_N // 2:
        out.append((world, "rl_teacher_bridge_stage3", DIRECT_N, t))
    return out


# ---- running --------------------------------------------------------------------------------------
def _job(args) -> str:
    """One process: every config of one (world, N, seed), in order, sharing one work directory."""
    world, n, seed, items, part, work, config = args
    import os
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    import torch
    torch.set_num_threads(1)
    from reference.models import quiet
    quiet()
    from reference.config import load_config
    from reference.pipeline import run_pipeline
    from theory.tables import write_table
    cfg = load_config(config).override({"world.labels": n})
    part = Path(part)
    rows = [pd.read_csv(part)] if part.is_file() else []
    done = set() if not rows else set(zip(rows[0]["arm"], rows[0]["teacher_labels"]))
    for arm, tl in items:
        t0 = time.perf_counter()
        res = run_pipeline(cfg, arm, seed, workdir=Path(work) / f"{world}_N{n}", teacher_labels=tl, progress=False)
        key = (arm, res.label_account.teacher)
        if key not in done:
            rows.append(res.to_frame())
            done.add(key)
            write_table(pd.concat(rows, ignore_index=True), part, "runs")  # atomic: nothing finished is lost
        print(f"  {world} N={n} seed={seed} {arm} t={res.label_account.teacher}: "
              f"acc {res.metrics['accuracy']:.1f}% ({time.perf_counter() - t0:.0f}s)", flush=True)
    return str(part)


def run_configs(configs, seeds, out_csv: Path, jobs: int, work: Path, config_of: dict | None = None) -> pd.DataFrame:
    """Run (world, arm, N, teacher_labels) configurations over `seeds`, one process per (world, N, seed);
    `config_of` maps a world to its config file (default: this script's worlds). `out_csv` gets every
    finished row of its parts directory, so several calls with the same `out_csv` accumulate."""
    import multiprocessing as mp
    from theory.tables import write_table
    config_of = config_of or {**CONFIGS, **{w: v["config"] for w, v in PILOT_WORLDS.items()}}
    groups: dict[tuple, list] = {}
    for world, arm, n, tl in configs:
        for seed in seeds:
            groups.setdefault((world, n, seed), []).append((arm, tl))
    parts_dir = work / (out_csv.stem + "_parts")  # per-job CSVs: resume state, not results
    parts_dir.mkdir(parents=True, exist_ok=True)
    # biggest budgets first: the pool ends with short jobs
    todo = sorted(groups.items(), key=lambda kv: (-kv[0][1] * len(kv[1]), kv[0]))
    args = [(w, n, s, items, str(parts_dir / f"{w}_N{n}_s{s}.csv"), str(work), str(config_of[w]))
            for (w, n, s), items in todo]
    t0 = time.perf_counter()
    with mp.get_context("spawn").Pool(jobs) as pool:
        for i, p in enumerate(pool.imap_unordered(_job, args), 1):
            print(f"[{i}/{len(args)}] {Path(p).name} ({time.perf_counter() - t0:.0f}s)", flush=True)
    df = pd.concat([pd.read_csv(p) for p in sorted(parts_dir.glob("*.csv"))], ignore_index=True)
    write_table(df.sort_values(["world", "arm", "teacher_labels", "student_labels", "seed", "metric"]),
                out_csv, "runs")
    print(f"wrote {out_csv} ({len(df)} rows, {time.perf_counter() - t0:.0f}s wall)")
    return df


def calibration_table() -> pd.DataFrame:
    """The declared calibration subset: N=256 rows of the committed table + the new N=64 runs."""
    from theory.tables import read_table
    old = read_table(OUT / "legacy" / "toy_ablation.csv", "runs")
    old = old[old["arm"].isin(CAL_ARMS) & old["seed"].isin(CAL_COMMITTED_SEEDS) & (old["split"] == "test")]
    new = read_table(OUT / "crosscheck_calibration_runs.csv", "runs")
    return pd.concat([old, new], ignore_index=True)


# ---- predictions ----------------------------------------------------------------------------------
def _write_predictions(df: pd.DataFrame, path: Path, force: bool) -> None:
    """Committed predictions are the pre-registration: a rerun writes beside them (<name>.rerun.csv)
    unless --force, and says how far the rerun moved."""
    if path.exists() and not force:
        old = pd.read_csv(path)
        path = path.with_suffix(".rerun.csv")
        moved = (df[["pred_mean", "pred_lo", "pred_hi"]].to_numpy() - old[["pred_mean", "pred_lo", "pred_hi"]].to_numpy())
        print(f"{path.name}: the committed predictions are kept; this rerun differs by at most "
              f"{np.abs(moved).max():.3f} points (mean |change| {np.abs(moved).mean():.3f})")
    df.to_csv(path, index=False, float_format="%.3f")
    print("wrote", path)


def cmd_predict(a) -> int:
    from theory.scenario import scenario_to_toml
    cal, fit = main_fit(costs=False)
    scn, scn_cf = fit.scenario, cf_scenario(fit, "toy-arith-cf")
    sc_dir = ROOT / "budget_planner" / "scenarios"
    for s in (scn, scn_cf):
        (sc_dir / f"{s.name}.toml").write_text(
            "# Calibrated by scripts/crosscheck_toy.py predict (issue 6 cross-check; see\n"
            "# docs/results/crosscheck_preregistration.md). Regenerate, do not edit by hand.\n"
            + scenario_to_toml(s))
        print("wrote", sc_dir / f"{s.name}.toml")
    print("fit warnings:", *fit.warnings, sep="\n  ")
    print(fit.parameters()[["input", "prior", "map", "lo", "hi", "shrink"]].round(3).to_string())
    frames = []
    cal_cfgs = [("toy-arith", arm, n, None) for arm in CAL_ARMS for n in (*CAL_BUDGETS_NEW, CAL_BUDGET_COMMITTED)]
    for cfgs, kind in ((cal_cfgs, "calibration"), (heldout_configs(), "heldout")):
        for world, sc in (("toy-arith", scn), ("toy-arith-cf", scn_cf)):
            mine = [c for c in cfgs if c[0] == world]
            if mine:  # intervals for a 5-seed mean in both sets (as pre-registered)
                frames.append(predict_frame(sc, world, mine, cal, len(CAL_SEEDS), set_name=kind))
    pred = pd.concat(frames, ignore_index=True)
    _write_predictions(pred, OUT / "crosscheck_predictions.csv", a.force)
    print(pred.round(2).to_string())
    return 0


def pilot_tables(pilot_dir: Path, costs: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(problem table, pilot run rows) of a pilot; with `costs`, the problem table also holds the
    self-distillation pilot's rows, so calibrate measures the stage costs."""
    from theory.calibrate import SELF_DISTILL_MODELS
    from theory.tables import read_table
    probs, kl = read_table(pilot_dir / "problems.csv", "problems"), read_table(pilot_dir / "pilot_runs.csv", "runs")
    if costs:
        sd = read_table(SELF_DISTILL_PILOT / "problems.csv", "problems")
        probs = pd.concat([probs, sd[sd["model"].isin(SELF_DISTILL_MODELS)]], ignore_index=True)
    return probs, kl


def cf_scenario(fit, name: str):
    """The counterfactual world from its pilot; its models are toy-arith checkpoints (read from the
    configs' asset names), so they keep their calibrated start states."""
    from reference.config import load_config
    from theory.calibrate import calibrate
    cfg_main, cfg_cf = load_config(CONFIGS["toy-arith"]), load_config(CONFIGS["toy-arith-cf"])
    main_assets = {"student": cfg_main.student.asset, "teacher": cfg_main.teacher.asset}
    same = {role: src for role in ("student", "teacher") for src, asset in main_assets.items()
            if getattr(cfg_cf, role).asset == asset}
    print("counterfactual models that are toy-arith checkpoints:", same)
    probs, kl = pilot_tables(OUT / "crosscheck_pilot_toy-arith-cf", costs=False)
    return calibrate(kl, probs, benchmark="toy_test", name=name, group_size=8, seed=0, rates_from=fit,
                     same_models=same)


def main_fit(costs: bool):
    """The toy-arith calibration (the cross-check's calibration subset); with `costs`, its problem
    table also holds the self-distillation pilot's rows, so calibrate measures the stage costs."""
    from theory.calibrate import calibrate
    from theory.fitting import fit_scenario
    cal = calibration_table()
    probs, kl = pilot_tables(OUT / "crosscheck_pilot_toy-arith", costs)
    scn = calibrate(pd.concat([cal, kl], ignore_index=True), probs, benchmark="toy_test",
                    name="toy-arith-costs" if costs else "toy-arith", group_size=8, seed=0)
    return cal, fit_scenario(scn)


def world_fit(world: str, costs: bool):
    """Calibration on a pilot world's measured runs (all its configurations), its pilot and, with
    `costs`, the self-distillation pilot. The naive predictor's 'calibration' is then these runs."""
    from theory.calibrate import calibrate
    from theory.fitting import fit_scenario
    from theory.tables import read_table
    runs = read_table(OUT / f"{PILOT_WORLDS[world]['stem']}_runs.csv", "runs")
    probs, kl = pilot_tables(OUT / f"crosscheck_pilot_{world}", costs)
    scn = calibrate(pd.concat([runs, kl], ignore_index=True), probs, benchmark="toy_test",
                    name=f"{world}-calibrated", group_size=8, seed=0)
    return runs, fit_scenario(scn)


def world_scenario(world: str, fit):
    """A world from its pilot: teacher + KL_0 measured; rates, costs and the student (same checkpoint)
    from the toy-arith posterior."""
    from theory.calibrate import calibrate
    probs, kl = pilot_tables(OUT / f"crosscheck_pilot_{world}", costs=False)
    return calibrate(kl, probs, benchmark="toy_test", name=world, group_size=8, seed=0, rates_from=fit,
                     same_models={"student": "student"})


PRED_COLS = ["world", "arm", "labels", "teacher_labels", "student_labels", "set", "pred_mean", "pred_lo",
             "pred_hi", "level", "naive_mean"]


def predict_frame(scn, world: str, cfgs, cal, n_seeds: int, set_name: str = "heldout", naive=None) -> pd.DataFrame:
    from budget_planner.planner import predict_configs
    from theory.crosscheck import naive_predictions
    df = predict_configs(scn, [(arm, n, tl) for _, arm, n, tl in cfgs], n_seeds=n_seeds, level=LEVEL)
    df.insert(0, "world", world)
    df["set"] = set_name
    df["naive_mean"] = (naive or naive_predictions)(cal, cfgs)
    return df[PRED_COLS]


def cmd_predict_world(a) -> int:
    """A world predicted from its pilot alone: writes its scenario, the predictions for every arm at
    N = 256 (+ the recommended stage-3 split) and the planner's recommendation."""
    from budget_planner.planner import plan
    from theory.crosscheck import same_config_naive
    from theory.scenario import scenario_to_toml
    world = a.world
    spec = PILOT_WORLDS[world]
    if spec.get("calibrate_on"):
        cal, fit = world_fit(spec["calibrate_on"], costs=spec["costs"])
    else:
        cal, fit = main_fit(spec["costs"])
    print(fit.parameters()[["input", "prior", "map", "lo", "hi", "shrink"]].round(3).to_string())
    print("fit warnings:", *fit.warnings, sep="\n  ")
    scn = world_scenario(world, fit)
    (ROOT / "budget_planner" / "scenarios" / f"{world}.toml").write_text(
        f"# Calibrated by scripts/crosscheck_toy.py predict-world --world {world}\n"
        f"# (docs/results/{spec['stem']}_preregistration.md). Regenerate, do not edit by hand.\n"
        + scenario_to_toml(scn))
    p = plan(scn, labels=DIRECT_N)
    rec = p.recommendation
    text = (f"planner recommendation for {world} at N = {DIRECT_N}: {rec.arm} (p_best {rec.p_best:.2f}), "
            f"{rec.teacher_labels} teacher / {rec.student_labels} student labels\n")
    rec_file = OUT / f"{spec['stem']}_recommendation.txt"
    if rec_file.exists() and not a.force:
        rec_file = rec_file.with_suffix(".rerun.txt")
    rec_file.write_text(text + p.to_frame().round(2).to_string() + "\n")
    print(text + p.to_frame().round(2).to_string())
    cfgs = world_configs(world)
    df = predict_frame(scn, world, cfgs, cal, len(DIRECT_SEEDS),
                       naive=same_config_naive if spec.get("calibrate_on") else None)
    _write_predictions(df, OUT / f"{spec['stem']}_predictions.csv", a.force)
    print(df.round(2).to_string())
    return 0


def cmd_posthoc_costs(a) -> int:
    """NOT pre-registered: the amended planner (stage costs from the self-distillation pilot) re-predicts
    the configurations of the cross-check and of the third world, whose runs were already seen."""
    from theory.crosscheck import same_config_naive
    cal, fit = main_fit(costs=True)
    print(fit.parameters()[["input", "prior", "map", "lo", "hi"]].round(3).to_string())
    frames = []
    main, cf = fit.scenario, cf_scenario(fit, "toy-arith-cf-costs")
    held = heldout_configs()
    frames.append(predict_frame(main, "toy-arith", [c for c in held if c[0] == "toy-arith"], cal, len(HELD_SEEDS)))
    frames.append(predict_frame(cf, "toy-arith-cf", [c for c in held if c[0] == "toy-arith-cf"], cal, len(HELD_SEEDS)))
    frames.append(predict_frame(world_scenario(DIRECT, fit), DIRECT, world_configs(DIRECT), cal, len(DIRECT_SEEDS)))
    stems = ["crosscheck", "direct_teacher"]
    if a.step == "posthoc-style":  # + the fourth world from the third world's calibration
        cal3, fit3 = world_fit(DIRECT, costs=True)
        frames.append(predict_frame(world_scenario(COMPLIANT, fit3), COMPLIANT, world_configs(COMPLIANT), cal3,
                                    len(DIRECT_SEEDS), naive=same_config_naive))
        stems.append("compliant_teacher")
    name = "posthoc_costs" if a.step == "posthoc-costs" else "posthoc_style"
    pred = pd.concat(frames, ignore_index=True)
    pred.to_csv(OUT / f"{name}_predictions.csv", index=False, float_format="%.3f")
    runs = pd.concat([pd.read_csv(OUT / f"{st}_runs.csv") for st in stems], ignore_index=True)
    a.workdir.mkdir(parents=True, exist_ok=True)
    runs.to_csv(a.workdir / f"{name}_runs.csv", index=False)
    return _report(a.workdir / f"{name}_runs.csv", OUT / f"{name}_predictions.csv", name, figures=False)


def cmd_pilots(a) -> int:
    for world, cfg in {**CONFIGS, **{w: v["config"] for w, v in PILOT_WORLDS.items()}}.items():
        subprocess.run([sys.executable, "-m", "reference.cli", "pilot", "--config", str(cfg), "--k", "8",
                        "--problems", "200", "--split", "val", "--out", str(OUT / f"crosscheck_pilot_{world}"),
                        "--workdir", str(a.workdir / f"pilot_{world}")],
                       check=True)
    return 0


def _report(runs_csv: Path, pred_csv: Path, stem: str, *, figures: bool = True) -> int:
    """The committed tables through the user-facing command (prints the table, writes <stem>_report.json);
    with `figures`, also the predicted-vs-measured figure and the text report."""
    from theory.crosscheck import crosscheck, format_crosscheck, read_predictions
    from theory.tables import read_table
    subprocess.run([sys.executable, "-m", "budget_planner.cli", "crosscheck", "--runs", str(runs_csv),
                    "--predictions", str(pred_csv), "--json", str(OUT / f"{stem}_report.json")], check=True)
    if figures:
        cc = crosscheck(read_table(runs_csv, "runs"), read_predictions(pred_csv))
        png = OUT / ("crosscheck.png" if stem == "crosscheck" else f"{stem}_crosscheck.png")
        cc.plot(png)
        (OUT / f"{stem}_report.txt").write_text(format_crosscheck(cc) + "\n")
        print("wrote", png, OUT / f"{stem}_report.txt")
    return 0


def cmd_report(a) -> int:
    return _report(OUT / "crosscheck_runs.csv", OUT / "crosscheck_predictions.csv", "crosscheck")


def cmd_report_world(a) -> int:
    stem = PILOT_WORLDS[a.world]["stem"]
    return _report(OUT / f"{stem}_runs.csv", OUT / f"{stem}_predictions.csv", stem)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=["calibration-runs", "pilots", "predict", "heldout", "report",
                                     "predict-world", "runs-world", "report-world", "posthoc-costs",
                                     "posthoc-style"])
    ap.add_argument("--world", choices=sorted(PILOT_WORLDS), default=DIRECT,
                    help="for the *-world steps (toy-arith-direct was run as predict-direct/runs-direct/report-direct)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=DEFAULT_WORK,
                    help=f"stage checkpoints and resume state (default {DEFAULT_WORK}; the committed runs used /work/s2d_crosscheck)")
    ap.add_argument("--force", action="store_true", help="overwrite committed predictions (the pre-registration)")
    a = ap.parse_args(argv)
    if a.step == "calibration-runs":
        run_configs(calibration_configs(), CAL_SEEDS, OUT / "crosscheck_calibration_runs.csv", a.jobs, a.workdir)
        return 0
    if a.step == "heldout":
        run_configs(heldout_configs(), HELD_SEEDS, OUT / "crosscheck_runs.csv", a.jobs, a.workdir)
        return 0
    if a.step == "runs-world":
        run_configs(world_configs(a.world), DIRECT_SEEDS, OUT / f"{PILOT_WORLDS[a.world]['stem']}_runs.csv", a.jobs,
                    a.workdir)
        return 0
    return {"pilots": cmd_pilots, "predict": cmd_predict, "report": cmd_report, "predict-world": cmd_predict_world,
            "report-world": cmd_report_world, "posthoc-costs": cmd_posthoc_costs,
            "posthoc-style": cmd_posthoc_costs}[a.step](a)


if __name__ == "__main__":
    sys.exit(main())
