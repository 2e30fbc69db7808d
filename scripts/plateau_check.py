"""The plateau protocol's own checks (issue 22, items 1 and 4), on seeds outside every rerun (900+).

    python scripts/plateau_check.py stopping [--seeds 900 901] [--arm A]  # an arm run to its whole caps
    python scripts/plateau_check.py costs [--seed 900]           # one run of each main arm under the protocol
    python scripts/plateau_check.py frontier [--workdir W]       # docs/results/frontier_<world>.{csv,png}

`stopping`: an arm (default direct GRPO) on the paper-like world under configs/legacy/plateau_window/paper_world.toml (the first rule), with
early stopping off (min_fraction 1), so each stage's whole validation curve up to its cap is recorded (each
stage then starts from the previous one's best checkpoint of its whole cap). The stopping rule is then
replayed on each curve (the rule only reads points up to the step it decides at), and reports where it
would stop, to show whether V = 64 problems with k samples call the plateau too early (the issue: direct
GRPO must not stop before about 100 steps). Writes docs/results/plateau_stopping.csv (the curves) and
prints the replay. `costs`: one run per main arm with the protocol as configured; per stage its cap, steps
run, best step, plateau flag, training and validation tokens and seconds, to
docs/results/plateau_costs.csv. Both resume: stages are cached under --workdir, finished rows kept.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
import sys

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reference.config import load_config  # noqa: E402
from reference.pipeline import run_pipeline  # noqa: E402
from reference import plateau  # noqa: E402

# the protocol's first rule, which its committed checks ran (configs/plateau/paper_world.toml has since been
# amended: OPD runs to a 9600-step cap)
CONFIG = ROOT / "configs" / "legacy" / "plateau_window" / "paper_world.toml"
OUT = ROOT / "docs" / "results"
MAIN_ARMS = ("direct_grpo", "rl_teacher_bridge", "raw_teacher_bridge", "rl_teacher_bridge_stage3")


def _stage_rows(res, seed: int, extra: dict) -> list[dict]:
    rows = []
    for s in res.stages:
        p = s.get("plateau")
        if not p or not p.get("validated"):
            continue
        rows.append({**extra, "arm": res.arm, "seed": seed, "stage": s["name"], "cap": p["cap"],
                     "steps_run": p["steps_run"], "best_step": p["best_step"], "best_score": p["best_score"],
                     "reached": p["reached"], "stopped_early": p["stopped_early"], "cap_too_small": p["cap_too_small"],
                     "train_tokens": p["train_tokens"], "tokens_to_best": p["best_tokens"],
                     "val_tokens": p["val_tokens"], "seconds": s["seconds"]})
    return rows


def replay(curve: list[dict], per_problem: list[np.ndarray], cfg, cap: int) -> dict:
    """Where the stopping rule would have stopped on a full curve (points in step order)."""
    pts = []
    for c, pp in zip(curve, per_problem):
        pts.append(plateau.Point(c["step"], c["tokens"], pp))
        if plateau.stops(pts, cfg, cap):
            b = plateau.best_index(pts)
            return {"stop_step": pts[-1].step, "best_step": pts[b].step, "best_score": pts[b].score}
    b = plateau.best_index(pts)
    return {"stop_step": None, "best_step": pts[b].step, "best_score": pts[b].score}


def cmd_stopping(a) -> None:
    base = load_config(CONFIG)
    cfg = base.override({"plateau.min_fraction": 1.0})
    rows, replays = [], []
    for seed in a.seeds:
        # record every validation point's per-problem scores (the protocol keeps only their means)
        seen: list[np.ndarray] = []
        observe = plateau.Watch.observe

        def recording(self, step, tokens, model, opt, log):
            stop = observe(self, step, tokens, model, opt, log)
            seen.append(self.points[-1].per_problem)
            return stop
        plateau.Watch.observe = recording
        try:
            res = run_pipeline(cfg, a.arm, seed, workdir=a.workdir, split="test", progress=True)
        finally:
            plateau.Watch.observe = observe
        recs = [(s["name"], s["plateau"]) for s in res.stages if (s.get("plateau") or {}).get("validated")]
        if len(seen) != sum(len(r["curve"]) for _, r in recs):  # a stage came from the cache
            raise SystemExit(f"seed {seed}: a stage of {a.arm} was cached in {a.workdir}; use a fresh --workdir")
        i = 0
        for stage, rec in recs:
            points, i = seen[i:i + len(rec["curve"])], i + len(rec["curve"])
            for c, pp in zip(rec["curve"], points):
                rows.append({"arm": a.arm, "seed": seed, "stage": stage, "step": c["step"], "tokens": c["tokens"],
                             "accuracy": c["accuracy"], "per_problem": " ".join(f"{x:.3f}" for x in pp)})
            for tol in (0.5, 1.0, 2.0):
                pc = dataclasses.replace(base.plateau, tolerance=tol)
                r = replay(rec["curve"], points, pc, rec["cap"])
                replays.append({"arm": a.arm, "seed": seed, "stage": stage, "cap": rec["cap"], "tolerance": tol, **r,
                                "test_accuracy_at_cap_best": res.metrics["accuracy"]})
    path = OUT / "plateau_stopping.csv"
    old = pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=["arm", "seed"])
    if "arm" not in old:  # written before the arm column: direct GRPO's curves
        old.insert(0, "arm", "direct_grpo")
        old.insert(2, "stage", "student_grpo")
    keep = old[~(old["seed"].isin(a.seeds) & (old["arm"] == a.arm))]  # other runs' curves stay
    out = pd.concat([keep, pd.DataFrame(rows)], ignore_index=True)
    out = out.astype({"seed": int, "step": int, "tokens": int}).sort_values(["arm", "seed", "stage", "step"])
    out.to_csv(path, index=False)
    print(pd.DataFrame(replays).to_string(index=False))


def cmd_costs(a) -> None:
    cfg = load_config(CONFIG)
    path = OUT / "plateau_costs.csv"
    done = pd.read_csv(path) if path.is_file() else pd.DataFrame()
    for arm in a.arms:
        if not done.empty and ((done["arm"] == arm) & (done["seed"] == a.seed)).any():
            continue
        res = run_pipeline(cfg, arm, a.seed, workdir=a.workdir, split="test", progress=True)
        rows = pd.DataFrame(_stage_rows(res, a.seed, {"config": CONFIG.relative_to(ROOT).as_posix()}))
        rows["test_accuracy"] = res.metrics["accuracy"]
        done = pd.concat([done, rows], ignore_index=True)
        done.to_csv(path, index=False)  # after every arm: a killed run keeps what finished
        print(rows.to_string(index=False))


def cmd_frontier(a) -> None:
    """docs/results/frontier_<world>.{csv,png} from every finished run under --workdir (run results keep
    their stages' plateau records), plus the label-matched test accuracy at plateau per arm."""
    from reference.frontier import compute_matched, frontier, plot_frontier, run_curve
    from reference.runs import load_result
    results = [load_result(p) for p in sorted((a.workdir / "runs").glob(f"*/result_{a.split}.json"))]
    results = [r for r in results if r.world == a.world]
    if not results:
        raise SystemExit(f"no finished {a.split} runs of world {a.world!r} under {a.workdir}/runs")
    curves = pd.concat([run_curve(r) for r in results], ignore_index=True)
    front = frontier(curves)
    front.to_csv(OUT / f"frontier_{a.name}.csv", index=False)
    plot_frontier(front, OUT / f"frontier_{a.name}.png", title=f"{a.world}: validation accuracy vs training tokens")
    at_plateau = pd.DataFrame([{"arm": r.arm, "seed": r.seed, "test_accuracy": r.metrics["accuracy"],
                                "tokens_to_best": r.metrics.get("tokens_to_best"),
                                "train_tokens": r.compute_tokens} for r in results])
    print(at_plateau.groupby("arm").mean(numeric_only=True).round(2).to_string())
    print(front.round(2).to_string(index=False))
    # equal compute at two levels on the curves' axis (training tokens): the cheapest and the dearest arm's
    # median training tokens per run
    levels = sorted(at_plateau.groupby("arm")["train_tokens"].median().dropna().unique())
    if levels:
        matched = compute_matched(curves, [levels[0], levels[-1]])
        matched.to_csv(OUT / f"frontier_{a.name}_matched.csv", index=False)
        print(matched.round(2).to_string(index=False))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("stopping")
    s.add_argument("--seeds", type=int, nargs="+", default=[900, 901])
    s.add_argument("--arm", default="direct_grpo", choices=MAIN_ARMS)
    c = sub.add_parser("costs")
    c.add_argument("--seed", type=int, default=900)
    c.add_argument("--arms", nargs="+", default=list(MAIN_ARMS))
    f = sub.add_parser("frontier")
    f.add_argument("--world", default="modes-k15", help="the runs' world name")
    f.add_argument("--name", default="paper_world", help="writes docs/results/frontier_<name>.{csv,png}")
    f.add_argument("--split", default="test")
    for p in (s, c, f):
        p.add_argument("--workdir", type=Path, default=Path(".s2d_runs") / "plateau_check")
    a = ap.parse_args(argv)
    {"stopping": cmd_stopping, "costs": cmd_costs, "frontier": cmd_frontier}[a.cmd](a)


if __name__ == "__main__":
    main()
