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
    python scripts/world_family.py paper-config  # configs/legacy/fixed_length/paper_world{,_notebook}.toml from the chosen (K, N)
    python scripts/world_family.py runs          # held-out grid, seed by seed
    python scripts/world_family.py ablation      # the paper-like world: every arm, 10 seeds
    python scripts/world_family.py tuning        # matched tuning of the headline pair there (8 trials per arm)
    python scripts/world_family.py report        # crosscheck per world and pooled, summary, figure
    python scripts/world_family.py all           # every step in this order

Every step resumes: finished stages are cached under --workdir and finished runs kept in per-job CSVs,
so a killed step redoes only what did not finish; `predict` never overwrites committed predictions
(a rerun writes <name>.rerun.csv), and `runs`/`ablation` refuse to start without them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
import subprocess
import sys
import time

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
# the same runner, repository root and results directory as the toy cross-check
from crosscheck_toy import OUT, PRED_COLS, ROOT, _write_predictions, run_configs  # noqa: E402

DEFAULT_WORK = Path(".s2d_runs") / "family"

# ---- the design (pre-registered; docs/log.md 2026-11-30 third session) ----------------------------
K_VALUES = ("05", "15", "30")
FIXED = ROOT / "configs" / "legacy" / "fixed_length"  # the fixed-length configs (issue 22 moved them here)
WORLDS = {f"modes-k{k}": FIXED / "family" / f"modes_k{k}.toml" for k in K_VALUES}
CAL_WORLD, CAL_N, CAL_SEEDS = "modes-k15", (128, 512), (0, 1, 2)  # budgets off the held-out grid
HEADLINE = ("direct_grpo", "rl_teacher_bridge")
HELD_N = (64, 256, 1024)
HELD_SEEDS = tuple(range(10, 15))
SPLIT_N = 256  # the label split: rl_teacher_bridge_stage3 at half, in every world
CURVE_N = (32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048)  # the planner's dense curve
EXTRA_N = (128, 512)  # measured besides HELD_N only to straddle a predicted crossover (measured_budgets)
ABLATION_SEEDS = tuple(range(10, 20))
LEVEL = 0.9
PRED_CSV = OUT / "world_family_predictions.csv"
PREREG_JSON = OUT / "world_family_preregistration.json"
RUNS_CSV = OUT / "world_family_runs.csv"
CAL_CSV = OUT / "world_family_calibration_runs.csv"
ABLATION_CSV = OUT / "legacy" / "fixed_length" / "paper_world_ablation.csv"  # the fixed-length protocol's study
SCENARIO_DIR = ROOT / "budget_planner" / "scenarios"  # the calibrated worlds, loadable by name


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


def _arm_configs(n: int) -> list[tuple[str, int, int | None]]:
    """Every arm at budget n (the split arms at the half split)."""
    from theory.arms import ARMS
    return [(arm, n, n // 2 if ARMS[arm].splits_labels else None) for arm in ARMS]


def _recommended_config(r: dict, n: int) -> tuple[str, int, int | None]:
    """(arm, N, teacher_labels or None) of a recommendation at budget n (a split only for split arms)."""
    return r["arm"], n, r["teacher_labels"] if r["teacher_labels"] and r["student_labels"] else None


def measured_budgets(crossovers: list[dict]) -> list[int]:
    """The held-out budgets of a world: HELD_N, plus EXTRA_N budgets where needed so that a predicted
    crossover inside [min, max] of HELD_N has >= 2 measured budgets on each side (rule fixed before
    the predictions were made)."""
    out = set(HELD_N)
    for c in crossovers:
        x = c["budget"]
        if not min(HELD_N) < x < max(HELD_N):
            continue
        for side in (lambda n: n < x, lambda n: n > x):
            have = [n for n in out if side(n)]
            extra = sorted((n for n in EXTRA_N if side(n) and n not in out), key=lambda n: abs(np.log2(n / x)))
            while len(have) < 2 and extra:
                have.append(extra.pop(0))
                out.add(have[-1])
    return sorted(out)


def cmd_predict(a) -> int:
    from budget_planner.planner import plan, predict_configs
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
    for w, scn in scenarios.items():
        target = SCENARIO_DIR / f"{w}.toml"
        if target.exists() and not a.force:
            target = target.with_suffix(".rerun.toml")
        target.write_text(f"# Calibrated by scripts/world_family.py predict (issue 11 pre-registration).\n"
                          f"# Regenerate, do not edit by hand.\n" + scenario_to_toml(scn))
    prereg: dict = {"planner_commit": head, "level": LEVEL, "calibration": {
        "world": CAL_WORLD, "labels": list(CAL_N), "arms": list(HEADLINE), "seeds": list(CAL_SEEDS)},
        "held_out": {"seeds": list(HELD_SEEDS), "split_labels": SPLIT_N}, "worlds": {}}
    dense, margins = {}, {}
    for w, scn in scenarios.items():  # every arm on the dense grid; the recommendation at every budget
        df = predict_configs(scn, [c for n in CURVE_N for c in _arm_configs(n)], n_seeds=len(HELD_SEEDS), level=LEVEL)
        dense[w] = df
        piv = df.pivot_table(index="labels", columns="arm", values="pred_mean").loc[list(CURVE_N)]
        d = (piv["rl_teacher_bridge"] - piv["direct_grpo"]).to_numpy()
        crossovers = sign_crossovers(list(CURVE_N), d)
        recs = {}
        for n in CURVE_N:
            r = plan(scn, labels=n).recommendation
            recs[str(n)] = {"arm": r.arm, "teacher_labels": r.teacher_labels, "student_labels": r.student_labels,
                            "p_best": round(r.p_best, 3), "runner_up": r.runner_up, "gap": round(r.gap_mean, 2),
                            "gap_interval": [round(r.gap_lo, 2), round(r.gap_hi, 2)], "separable": r.separable}
        budgets = measured_budgets(crossovers)
        for n in budgets:
            margins[(w, n)] = float(piv.loc[n, "rl_teacher_bridge"] - piv.loc[n, "direct_grpo"])
        prereg["worlds"][w] = {
            "config": str(WORLDS[w].relative_to(ROOT)), "measured_budgets": budgets,
            "curve": {"labels": list(CURVE_N), **{arm: piv[arm].round(2).tolist() for arm in piv.columns}},
            "predicted_crossovers": crossovers, "recommendation": recs}
    (pw, pn) = max(margins, key=margins.get)  # the paper-like world: the largest predicted bridge advantage
    prereg["paper_world"] = {"world": pw, "labels": pn, "seeds": list(ABLATION_SEEDS),
                             "predicted_margin": round(margins[(pw, pn)], 2),
                             "rule": "argmax over the measured grid of predicted rl_teacher_bridge - direct_grpo"}
    frames = []
    for w, scn in scenarios.items():
        budgets = prereg["worlds"][w]["measured_budgets"]
        cfgs = [c for n in CURVE_N for c in _arm_configs(n)]
        for n in budgets:  # a recommended split off the half split is predicted too
            c = _recommended_config(prereg["worlds"][w]["recommendation"][str(n)], n)
            if c not in cfgs:
                cfgs.append(c)
        # intervals for the mean over the seeds each configuration will have: the paper-like world's
        # configurations at its budget get the ablation's seeds
        abl = [c for c in cfgs if w == pw and c[1] == pn]
        grid = [c for c in cfgs if c not in abl]
        df = predict_configs(scn, grid, n_seeds=len(HELD_SEEDS), level=LEVEL)
        if abl:
            df = pd.concat([df, predict_configs(scn, abl, n_seeds=len(ABLATION_SEEDS), level=LEVEL)], ignore_index=True)
        df.insert(0, "world", w)
        df["set"] = "heldout"
        df["naive_mean"] = naive_predictions(cal, [(w, arm, n, tl) for arm, n, tl in
                                                   zip(df["arm"], df["labels"], df["teacher_labels"])])
        rec = {(n, r["arm"], r["teacher_labels"]) for n, r in ((int(k), v) for k, v in prereg["worlds"][w]["recommendation"].items())
               if n in budgets}
        df["recommended"] = [int((n, arm, t) in rec) for n, arm, t in zip(df["labels"], df["arm"], df["teacher_labels"])]
        frames.append(df[[*PRED_COLS, "recommended"]])
    pred = pd.concat(frames, ignore_index=True).sort_values(["world", "labels", "arm", "teacher_labels"], kind="stable")
    _write_predictions(pred, PRED_CSV, a.force)
    target = PREREG_JSON if (not PREREG_JSON.exists() or a.force) else PREREG_JSON.with_suffix(".rerun.json")
    target.write_text(json.dumps(prereg, indent=1) + "\n")
    print("wrote", target)
    for w, v in prereg["worlds"].items():
        print(w, "measured budgets", v["measured_budgets"], "crossovers", v["predicted_crossovers"])
        for n in v["measured_budgets"]:
            r = v["recommendation"][str(n)]
            print(f"   N={n}: {r['arm']} {r['teacher_labels']}/{r['student_labels']} p_best {r['p_best']}")
    print("paper world:", prereg["paper_world"])
    show = pred[pred.apply(lambda r: r["labels"] in prereg["worlds"][r["world"]]["measured_budgets"], axis=1)]
    print(show.round(2).to_string())
    return 0


def heldout_configs(world: str, prereg: dict) -> list[tuple[str, str, int, int | None]]:
    """(world, arm, N, teacher_labels) of the held-out grid: the headline pair at every measured
    budget, the planner's recommendation there (when it is another configuration), stage 3 at half
    at SPLIT_N."""
    spec = prereg["worlds"][world]
    out = [(world, arm, n, None) for n in spec["measured_budgets"] for arm in HEADLINE]
    out.append((world, "rl_teacher_bridge_stage3", SPLIT_N, SPLIT_N // 2))
    for n in spec["measured_budgets"]:
        out.append((world, *_recommended_config(spec["recommendation"][str(n)], n)))
    return list(dict.fromkeys(out))


def _prereg() -> dict:
    if not PREREG_JSON.is_file() or not PRED_CSV.is_file():
        sys.exit("no committed predictions: run `predict` and commit them before any held-out run")
    return json.loads(PREREG_JSON.read_text())


def cmd_runs(a) -> int:
    prereg = _prereg()
    worlds = WORLDS if not a.worlds else a.worlds.split(",")
    unknown = sorted(set(worlds) - set(WORLDS))
    if unknown:
        sys.exit(f"--worlds: unknown world(s) {', '.join(unknown)}; choose from {', '.join(WORLDS)}")
    cfgs = [c for w in worlds for c in heldout_configs(w, prereg)]
    for seed in _seeds(a.seeds, HELD_SEEDS):  # seed by seed: a partial run is balanced over the grid
        t0 = time.perf_counter()
        run_configs(cfgs, (seed,), RUNS_CSV, a.jobs, a.workdir, config_of=WORLDS)
        print(f"seed {seed}: {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


def cmd_ablation(a) -> int:
    pw = _prereg()["paper_world"]
    w, n = pw["world"], int(pw["labels"])
    cfgs = [(w, *c) for c in _arm_configs(n)]
    # one job per seed (every arm of a seed shares its stages), so all seeds go to the pool at once
    run_configs(cfgs, _seeds(a.seeds, ABLATION_SEEDS), ABLATION_CSV, a.jobs, a.workdir, config_of=WORLDS)
    return 0


def cmd_tuning(a) -> int:
    """Matched tuning of the headline pair in the paper-like world (the stable search ranges, 8 trials
    per arm, 5 fresh evaluation seeds), then its fairness report (label- and compute-matched views)."""
    pw = _prereg()["paper_world"]
    storage = f"sqlite:///{(a.workdir / 'paper_world_tuning.db').resolve()}"
    common = ["--storage", storage, "--study", "paper_world"]
    rc = _cli("tuning.cli", "run", "--arms", ",".join(HEADLINE), "--trials", "8", "--labels", str(pw["labels"]),
              "--compute-cap", "8000000", "--time-limit", "2400", "--eval-seeds", "5", "--seed", "0",
              "--arm-source", "reference", "--config", str(FIXED / "paper_world.toml"),
              "--workers", str(a.jobs), *common)
    if rc:
        return rc
    return _cli("tuning.cli", "report", *common, "--out", str(OUT / "fairness_paper_world"), "--jobs", str(a.jobs))


def cmd_paper_config(a) -> int:
    """configs/legacy/fixed_length/paper_world.toml (and its notebook variant): the paper-like world the pre-registered rule
    chose, at its budget, for `reference-pipeline demo` and notebook 03."""
    import re
    pw = _prereg()["paper_world"]
    src = WORLDS[pw["world"]].read_text()
    body = re.sub(r"(?m)^labels = \d+", f"labels = {int(pw['labels'])}", src[src.index("[world]"):], count=1)
    head = (f"# THE PAPER-LIKE WORLD of the world family (issue 11): {WORLDS[pw['world']].relative_to(ROOT)} at "
            f"N = {pw['labels']}, chosen\n# before any held-out run by the pre-registered rule (the largest predicted "
            f"RL-bridge advantage; docs/results/\n# world_family_preregistration.json). Written by `python "
            f"scripts/world_family.py paper-config`; do not edit by hand.\n")
    (FIXED / "paper_world.toml").write_text(head + body)
    nb = re.sub(r"(?m)^curve_every = \d+", "curve_every = 50", body, count=1)
    nb = re.sub(r"(?m)^curve_problems = \d+", "curve_problems = 50", nb, count=1)
    (FIXED / "paper_world_notebook.toml").write_text(
        head.replace("THE PAPER-LIKE WORLD", "THE PAPER-LIKE WORLD, NOTEBOOK run (validation points inside the stages)")
        + nb)
    print(f"wrote {FIXED.relative_to(ROOT)}/paper_world.toml and paper_world_notebook.toml")
    return 0


def collect_curves(work: Path) -> pd.DataFrame:
    """Per-stage validation curves of every finished family run, read from the run directories (N: the
    budget of the run's work directory; raw_teacher_bridge uses no labels, so its label account cannot say)."""
    rows = []
    for path in sorted(work.glob("modes-k*_N*/runs/*/result_test.json")):
        n = int(path.parents[2].name.rsplit("_N", 1)[1])  # the budget N of the run's work directory
        r = json.loads(path.read_text())
        for i, stage in enumerate(r["stages"]):
            for metric, value in (stage.get("curve") or {}).items():
                rows.append({"world": r["world"], "N": n, "arm": r["arm"], "seed": r["seed"],
                             "teacher_labels": r["label_account"]["teacher"],
                             "student_labels": r["label_account"]["student"], "stage_index": i,
                             "stage": stage["name"], "model": stage["model"], "metric": metric, "value": value})
    return pd.DataFrame(rows)


def _slopes(curves: pd.DataFrame, world: str, arm: str, stage: str, labels_col: str) -> pd.Series:
    """Per seed: least-squares slope of the val accuracy after `stage` against log2 N (points per doubling)."""
    c = curves[(curves["world"] == world) & (curves["arm"] == arm) & (curves["stage"] == stage)
               & (curves["metric"] == "accuracy") & (curves[labels_col] > 0)]
    c = c[c[labels_col].isin(HELD_N)]
    out = {}
    for seed, g in c.groupby("seed"):
        if g[labels_col].nunique() == len(HELD_N):
            out[seed] = float(np.polyfit(np.log2(g[labels_col].to_numpy(float)), g["value"].to_numpy(float), 1)[0])
    return pd.Series(out, dtype=float)


def _paired(d: np.ndarray) -> dict:
    """Mean of per-seed differences with its 95% percentile bootstrap interval (theory.stats)."""
    from theory.stats import mean_ci
    if len(d) < 2:
        return {"n": int(len(d)), "mean": float(d.mean()) if len(d) else None, "lo": None, "hi": None, "excludes_zero": False}
    r = mean_ci(d, np.random.default_rng(0), n_resamples=10_000)
    return {"n": int(len(d)), "mean": r.estimate, "lo": r.low, "hi": r.high, "excludes_zero": bool(r.low > 0 or r.high < 0)}


def family_findings(runs: pd.DataFrame, curves: pd.DataFrame) -> dict:
    """Items 1, 2 and 4 of issue 11 from the held-out grid (paired by seed, 95% bootstrap)."""
    acc = runs[(runs["split"] == "test")]
    out: dict = {"labels_teach": {}, "teacher_vs_student_slope": {}, "crossover_in_K": {}}
    lo_n, hi_n = min(HELD_N), max(HELD_N)
    for w in WORLDS:
        d = acc[(acc["world"] == w) & (acc["arm"] == "direct_grpo") & (acc["teacher_labels"] == 0)]
        item = {}
        for metric in ("accuracy", "accuracy_given_compliance", "accuracy_given_steps", "steps_share"):
            wide = d[d["metric"] == metric].pivot_table(index="seed", columns="student_labels", values="value")
            if lo_n in wide and hi_n in wide:
                item[metric] = _paired((wide[hi_n] - wide[lo_n]).dropna().to_numpy())
        out["labels_teach"][w] = item
        t = _slopes(curves, w, "rl_teacher_bridge", "teacher_grpo", "teacher_labels")
        s = _slopes(curves, w, "direct_grpo", "student_grpo", "student_labels")
        both = t.index.intersection(s.index)
        out["teacher_vs_student_slope"][w] = {"teacher_slope": float(t.mean()) if len(t) else None,
                                              "student_slope": float(s.mean()) if len(s) else None,
                                              "difference": _paired((t[both] - s[both]).to_numpy())}
    for n in HELD_N:  # the bridge's advantage at each K, paired by seed
        row = {}
        for w in WORLDS:
            a = acc[(acc["world"] == w) & (acc["metric"] == "accuracy")
                    & (acc["teacher_labels"] + acc["student_labels"] == n)]
            wide = a[a["arm"].isin(HEADLINE)].pivot_table(index="seed", columns="arm", values="value")
            if set(HEADLINE) <= set(wide.columns):
                row[w] = _paired((wide["rl_teacher_bridge"] - wide["direct_grpo"]).dropna().to_numpy())
        out["crossover_in_K"][str(n)] = row
    return out


def cmd_report(a) -> int:
    from theory.crosscheck import KEY as key, _plain
    from theory.tables import read_table, write_table
    prereg = _prereg()
    if not RUNS_CSV.is_file():
        sys.exit(f"no runs yet ({RUNS_CSV.name})")
    ablation = read_table(ABLATION_CSV, "runs") if ABLATION_CSV.is_file() else None
    both = pd.concat([read_table(RUNS_CSV, "runs"), ablation], ignore_index=True).drop_duplicates(
        subset=[*key, "seed", "metric", "split"])
    a.workdir.mkdir(parents=True, exist_ok=True)
    # the cross-check needs >= 2 seeds per configuration (a standard error): the others wait for theirs
    acc = both[(both["metric"] == "accuracy") & (both["split"] == "test")]
    seeds = acc.groupby(key)["seed"].nunique()
    ready = set(seeds[seeds >= 2].index)
    scored = both[[k in ready for k in zip(*(both[c] for c in key))]]
    report: dict = {}
    if len(scored):
        write_table(scored, a.workdir / "world_family_scored_runs.csv", "runs")
        # an arm that uses no labels (raw_teacher_bridge) has one run key at every budget: score its
        # prediction once, at the budget where it was run (the paper-like world's), not 13 times
        pred = pd.read_csv(PRED_CSV)
        pw = prereg["paper_world"]
        labelless = (pred["teacher_labels"] + pred["student_labels"]) == 0
        keep = ~labelless | ((pred["world"] == pw["world"]) & (pred["labels"] == pw["labels"]))
        pred[keep].to_csv(a.workdir / "world_family_scored_predictions.csv", index=False)
        rc = _cli("budget_planner.cli", "crosscheck", "--runs", str(a.workdir / "world_family_scored_runs.csv"),
                  "--predictions", str(a.workdir / "world_family_scored_predictions.csv"),
                  "--json", str(OUT / "world_family_report.json"))
        if rc:
            return rc
        report = json.loads((OUT / "world_family_report.json").read_text())
    report["configurations_waiting_for_a_second_seed"] = [dict(zip(key, map(_plain, k))) for k in sorted(set(seeds.index) - ready)]
    curves = collect_curves(a.workdir)
    if len(curves):
        curves.to_csv(OUT / "world_family_curves.csv", index=False, float_format="%.3f")
    else:
        curves = pd.read_csv(OUT / "world_family_curves.csv")
    report["family"] = family_findings(both, curves)
    report["seeds_measured"] = sorted(int(s) for s in both["seed"].unique())
    (OUT / "world_family_report.json").write_text(json.dumps(report, indent=1) + "\n")
    import matplotlib
    matplotlib.use("Agg")
    from reference.curves import plot_family
    plot_family(both, prereg, report).savefig(OUT / "world_family.png", dpi=110)
    print(json.dumps(report["family"], indent=1))
    if ablation is not None:  # the paper-like world: its curves beside its table, then the paired summary
        from run_toy_table import summarise
        pw = prereg["paper_world"]
        # the ablation's own runs only (its work directory also holds grid runs at other label splits)
        c = curves[(curves["N"] == pw["labels"])].merge(ablation[[*key, "seed"]].drop_duplicates(), how="inner")
        c.drop(columns=["N", "teacher_labels", "student_labels"]).to_csv(
            ABLATION_CSV.with_name(f"{ABLATION_CSV.stem}_curves.csv"), index=False, float_format="%.3f")
        print(summarise(str(ABLATION_CSV.relative_to(OUT).with_suffix(""))))
    print("wrote", OUT / "world_family_report.json", OUT / "world_family.png")
    return 0


STEPS = {"assets": cmd_assets, "gate": cmd_gate, "pilots": cmd_pilots, "calibration": cmd_calibration,
         "predict": cmd_predict, "paper-config": cmd_paper_config, "runs": cmd_runs, "ablation": cmd_ablation,
         "tuning": cmd_tuning, "report": cmd_report}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=[*STEPS, "all"])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="pre-training threads (assets)")
    ap.add_argument("--seeds", help="runs/ablation: seeds to run, e.g. 10-12 (default: the pre-registered ones)")
    ap.add_argument("--worlds", help="runs: only these worlds, comma-separated (default: every world)")
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
