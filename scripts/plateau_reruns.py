"""The plateau reruns (issue 22 item 4), scored against the pre-registration (issue 23 item 4).

    python scripts/plateau_reruns.py run [--worlds k15] [--labels 64] [--arms direct_grpo] [--seeds 3]
                                         [--workdir /work/reruns] [--max-runs K]
    python scripts/plateau_reruns.py table      # docs/results/plateau_crosscheck_runs.csv from the finished runs
    python scripts/plateau_reruns.py status     # what is finished and what remains
    python scripts/plateau_reruns.py summary    # docs/results/plateau_reruns_{summary,differences}.csv
    python scripts/plateau_reruns.py frontier   # docs/results/frontier_<world>.{csv,png} (+ _matched.csv)
    python scripts/plateau_reruns.py ablation [--seeds 1000-1009] [--jobs 2] [--workdir /work/reruns]
                                              # the paper-like world's seven arms (issue 22's first rerun)
    python scripts/plateau_reruns.py cap-check --arms direct_grpo --seeds 2000-2002 [--scale 4]
                                              # the paper-like world at 4x every cap, on seeds the ablation
                                              # never used: a true plateau gains < 3 points
    python scripts/plateau_reruns.py ablation-table   # docs/results/paper_world_ablation{.csv,_stages.csv,
                                              # _summary.{md,csv},.png} and frontier_paper_world.{csv,png}
    python scripts/plateau_reruns.py compare-rules    # the current rule (OPD to its cap) against the first
                                              # rule's runs, paired by seed
    python scripts/plateau_reruns.py rules-table      # docs/results/paper_world_opd_rules.csv: every OPD stop
                                              # rule's runs and 4x checks, side by side
    python scripts/plateau_reruns.py tuning [--trials 8] [--jobs 2] [--workdir /work/reruns]
                                              # matched tuning of the headline pair under the protocol:
                                              # docs/results/fairness_plateau_paper_world/

Every configuration of docs/results/plateau_crosscheck_predictions.csv (world, N, arm) runs under its
pre-registered config (configs/plateau/modes_k*.toml, `[world] labels` = N) at the seeds the
pre-registration names (seeds 1000 on: 3 per configuration, 10 in the `seen` paper-like world), with the
plateau protocol as committed (early stop on, best checkpoint, test read once at the selected
checkpoint). `run_pipeline` checkpoints every stage under the workdir, so a killed rerun resumes and a
finished one is read back: the study runs in pieces across sessions. Each finished run writes its result
(RunResult JSON) under docs/results/plateau_reruns/<world>/; `table` builds the runs table from those:

    compute = plateau   the run's test accuracy (its selected checkpoint)
    compute = low       the run's best validation score by the pre-registered low level's tokens
                        (reference.frontier.best_by on its student curve), the definition the
                        pre-registration states; NaN (left out) when the run had no student point by then

Nothing here refits anything: the predictions file is read, never written.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from theory.errors import InputError, cli_exit  # noqa: E402

PRED = ROOT / "docs/results/plateau_crosscheck_predictions.csv"
REG = ROOT / "docs/results/plateau_crosscheck_preregistration.json"
OUT = ROOT / "docs/results/plateau_reruns"
RUNS = ROOT / "docs/results/plateau_crosscheck_runs.csv"
SUMMARY = ROOT / "docs/results/plateau_reruns_summary.csv"
DIFFS = ROOT / "docs/results/plateau_reruns_differences.csv"
METRICS = {"accuracy": "avg@8", "accuracy_greedy": "greedy", "pass_at_k": "pass@8"}
SEED_BASE = 1000
# The paper-like world's ablation under the protocol: every arm at N = 64, its own config (the seen world's
# modes_k15 with the GRPO cap as 400 steps, so stage 3's 32-label halves get the same cap as the rest).
# Seeds are the seen set's (1000-1009): direct GRPO and the RL bridge there repeat the seen reruns'
# configurations, which the ablation's table checks are identical. Arms of one seed share their stages
# (one RL teacher for the bridge, no-FKL and no-OPD; one split teacher for stage 3 and the replay control).
ABLATION_CONFIG = "configs/plateau/paper_world.toml"
ABLATION_WORLD = "paper-world"  # the workdir's name: stages are keyed by hash, so both rules share it
# Results under docs/results/plateau_reruns/: the current rule's (OPD runs to its 9600-step cap: the config's
# amendment 2 of 2026-12-08), the first rule's (every stage stopped by the window test; configs/legacy/
# plateau_window/paper_world.toml; the committed paper_world_ablation*.csv until the current rule's ten seeds
# are in) and amendment 1's (OPD to a 600-step cap; paper-world-opd600, configs/legacy/plateau_opd600/).
ABLATION_RESULTS = "paper-world-opd-to-cap"
RULE1_RESULTS = "paper-world"
ABLATION_SEEDS = 10  # the issue's >= 10 seeds: `ablation-table` writes the committed tables from a whole study
ABLATION_ARMS = ("rl_teacher_bridge", "no_opd", "no_fkl", "rl_teacher_bridge_stage3", "replay_control",
                 "raw_teacher_bridge", "direct_grpo")


def configurations() -> list[dict]:
    """(world, N, arm, set, seeds, config) of every pre-registered configuration, in file order."""
    preds = pd.read_csv(PRED)
    reg = json.loads(REG.read_text())
    out, seen = [], set()
    for r in preds.itertuples():
        key = (r.world, int(r.labels), r.arm)
        if key in seen:
            continue
        seen.add(key)
        out.append({"world": r.world, "labels": int(r.labels), "arm": r.arm, "set": r.set,
                    "seeds": list(range(SEED_BASE, SEED_BASE + int(reg["seeds"][r.set]))),
                    "config": reg["configs"][r.world]})
    return out


def result_path(c: dict, seed: int) -> Path:
    return OUT / c["world"] / f"{c['arm']}_n{c['labels']}_s{seed}.json"


def cmd_run(args) -> int:
    from reference.config import load_config
    from reference.pipeline import run_pipeline
    from reference.runs import write_result

    todo = [(c, s) for c in configurations() for s in c["seeds"][:args.seeds or None]
            if (not args.worlds or c["world"].split("-")[-1] in args.worlds.split(","))
            and (not args.labels or str(c["labels"]) in args.labels.split(","))
            and (not args.arms or c["arm"] in args.arms.split(","))
            and not result_path(c, s).is_file()]
    if args.max_runs:
        todo = todo[:args.max_runs]
    print(f"plateau reruns: {len(todo)} to run", flush=True)
    for i, (c, seed) in enumerate(todo, 1):
        cfg = load_config(ROOT / c["config"]).override({"world.labels": c["labels"]})
        work = Path(args.workdir) / c["world"] / f"labels_{c['labels']}"
        res = run_pipeline(cfg, c["arm"], seed, workdir=work, split="test", progress=False)
        path = result_path(c, seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_result(res, path)
        print(f"  [{i} of {len(todo)}] {c['world']} N={c['labels']} {c['arm']} seed={seed}: test "
              f"{res.metrics['accuracy']:.1f}, {res.compute_tokens:,} tokens", flush=True)
    return 0


# the stages whose trajectory a cap field sets (the replay control's length is stage-3 GRPO's)
CAP_STAGES = {"grpo.epochs": {"teacher_grpo", "student_grpo", "replay_opd"},
              "grpo.max_steps": {"teacher_grpo", "student_grpo", "replay_opd"},
              "fkl.steps": {"fkl_warmup"}, "opd.steps": {"opd"}}


def link_unchanged_stages(old, new, stages_dir: Path) -> int:
    """Reuse the finished stages of config `old` under config `new`'s keys, where `new` differs from `old`
    only in stage caps: a stage whose prefix runs none of the stages those caps set trains the same
    trajectory and stops at the same step (seed keys leave every cap out, and a stage's stopping reads only
    its own curve and cap), but its checkpoint key hashes the whole config. Hard links, under the key `new`
    computes; returns how many. Refused in one line when the configs differ in anything but caps."""
    from reference.config import diff_fields
    from reference.stage_runner import CAP_FIELDS, stage_key

    assert set(CAP_STAGES) == set(CAP_FIELDS), "every cap field names the stages it sets"
    changed = diff_fields(old.to_dict(), new.to_dict())
    if not changed or set(changed) - set(CAP_STAGES):
        raise InputError("stage reuse needs configs that differ in stage caps only; these differ in "
                         + (", ".join(sorted(set(changed) - set(CAP_STAGES))) or "nothing"))
    moved = set().union(*(CAP_STAGES[f] for f in changed))
    n = 0
    # finished checkpoints only: "*" also matches the hidden mid-stage (.KEY.partial) and linking directories
    for meta in sorted(stages_dir.glob("[!.]*/meta.json")) if stages_dir.is_dir() else []:
        m = json.loads(meta.read_text())
        prefix = [tuple(p) for p in m["prefix"]]
        if moved & {name for name, _ in prefix} or stage_key(old, m["seed"], prefix) != meta.parent.name:
            continue  # a stage the changed caps set, or one `old` did not write
        target = stages_dir / stage_key(new, m["seed"], prefix)
        if not target.exists():  # linked under a temporary name, then renamed: never half a checkpoint
            tmp = target.with_name(f".{target.name}.linking")
            tmp.mkdir(exist_ok=True)
            for f in meta.parent.iterdir():
                if not (tmp / f.name).exists():
                    (tmp / f.name).hardlink_to(f)
            tmp.rename(target)
            n += 1
    return n


def set_aside_stale_runs(workdir: Path, cfg) -> int:
    """Move the run directories under `workdir`/runs whose manifest names another config than `cfg` to
    `workdir`/runs_set_aside/ (a run directory refuses a changed config; its stages stay shared, by key).
    Returns how many moved."""
    from reference.config import diff_fields
    n = 0
    for m in sorted((workdir / "runs").glob("*/manifest.json")):
        if diff_fields(json.loads(m.read_text()).get("config", {}), cfg.to_dict()):
            dest = workdir / "runs_set_aside" / m.parent.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.exists():
                dest = dest.with_name(f"{dest.name}.{len(list(dest.parent.glob(dest.name + '*')))}")
            m.parent.rename(dest)
            n += 1
    return n


def _ablation_seed(job: tuple[int, str, tuple[str, ...], str]) -> str:
    """The arms of one seed in one workdir (a process of its own), skipping arms already written; with
    `reuse` (a config path), that config's finished stages the caps' change leaves alone are linked in."""
    seed, workdir, arms, reuse = job
    from reference.config import load_config
    from reference.pipeline import run_pipeline
    from reference.runs import write_result

    cfg = load_config(ROOT / ABLATION_CONFIG)
    work = Path(workdir) / ABLATION_WORLD / f"seed_{seed}"
    if reuse:
        link_unchanged_stages(load_config(ROOT / reuse), cfg, work / "stages")
        set_aside_stale_runs(work, cfg)
    lines = []
    for arm in arms:
        path = OUT / ABLATION_RESULTS / f"{arm}_n{cfg.world.labels}_s{seed}.json"
        if path.is_file():
            continue
        res = run_pipeline(cfg, arm, seed, workdir=work, split="test", progress=False)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_result(res, path)
        lines.append(f"{arm} {res.metrics['accuracy']:.1f}")
        print(f"  seed {seed} {arm}: test {res.metrics['accuracy']:.1f}, {res.compute_tokens:,} tokens", flush=True)
    return f"seed {seed}: " + (", ".join(lines) or "already finished")


def cmd_ablation(args) -> int:
    import multiprocessing as mp

    seeds = _seed_range(args.seeds)
    arms = _arm_list(args.arms) if args.arms else ABLATION_ARMS
    with mp.get_context("spawn").Pool(args.jobs) as pool:
        for line in pool.imap_unordered(_ablation_seed, [(s, args.workdir, arms, args.reuse_stages_of) for s in seeds]):
            print(line, flush=True)
    return 0


def ablation_results(name: str = ABLATION_RESULTS) -> list:
    """RunResults of the finished ablation runs (under OUT / `name`), arm by arm in ABLATION_ARMS order, seeds
    ascending."""
    from reference.runs import load_result
    d = OUT / name
    paths = sorted(d.glob("*.json")) if d.is_dir() else []
    res = [load_result(p) for p in paths]
    return sorted(res, key=lambda r: (ABLATION_ARMS.index(r.arm), r.seed))


def stage_rows(res) -> list[dict]:
    """Per validated stage of one run: the protocol's record (plateau flag, steps and tokens to the best
    checkpoint, tokens spent with validation) and why a stage did not reach its plateau."""
    rows = []
    for s in res.stages:
        p = s.get("plateau") or {}
        if not p.get("validated"):
            continue
        why = "; ".join(w for w, bad in (("still improving when the cap stopped it", not p["reached"]),
                                         ("best in the cap's last 10%", p.get("cap_too_small"))) if bad)
        rows.append({"arm": res.arm, "seed": res.seed, "stage": s["name"], "model": s["model"], "cap": p["cap"],
                     "steps_run": p["steps_run"], "best_step": p["best_step"], "best_score": p["best_score"],
                     "reached": bool(p["reached"]), "cap_too_small": bool(p.get("cap_too_small")),
                     "stopped_early": bool(p["stopped_early"]), "tokens_to_best": p["best_tokens"],
                     "train_tokens": p["train_tokens"], "val_tokens": p["val_tokens"],
                     "tokens_spent": p["train_tokens"] + p["val_tokens"], "why_not": why})
    return rows


def cmd_ablation_table(args) -> int:
    """The paper-like world's ablation under the protocol: the run table (test split, every metric), the
    per-stage protocol table, the paired summary (scripts/run_toy_table.summarise: the fixed-length
    study's comparisons, avg@8 / compliance) with greedy and pass@8 beside it and the plateau count, and
    the label x compute frontier (validation, every arm)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from reference.frontier import compute_matched, draw_frontier, frontier, run_curve
    from run_toy_table import COMPARISONS, paired, summarise
    from theory.tables import write_table

    res = ablation_results()
    if not res:
        raise InputError(f"no finished ablation runs under {(OUT / ABLATION_RESULTS).relative_to(ROOT)} "
                         "(`python scripts/plateau_reruns.py ablation`)")
    have = _accuracy_by_arm(res)
    short = [f"{a} {len(have.get(a, []))}" for a in ABLATION_ARMS if len(have.get(a, [])) < ABLATION_SEEDS]
    if short:  # the committed tables are the first rule's until the current rule's study is whole
        raise InputError(f"the ablation under {ABLATION_CONFIG} is not whole (runs per arm: {', '.join(short)}; "
                         f"{ABLATION_SEEDS} each): the committed tables stay; `compare-rules` and `rules-table` "
                         "read partial studies")
    table = OUT.parent / "paper_world_ablation.csv"
    write_table(pd.concat([r.to_frame() for r in res], ignore_index=True), table, "runs")
    stages = pd.DataFrame([row for r in res for row in stage_rows(r)])
    stages.to_csv(OUT.parent / "paper_world_ablation_stages.csv", index=False)
    summarise("paper_world_ablation")
    runs = pd.read_csv(table)
    seeds = runs.groupby("arm")["seed"].nunique()
    lines = ["", "## Under the plateau protocol (issue 22)", "",
             f"`{ABLATION_CONFIG}`, N = 64 (+ V = 64 validation labels), seeds "
             f"{min(r.seed for r in res)}-{max(r.seed for r in res)}; every stage trained to its validation "
             "plateau and read on test once, at the selected checkpoint (`python scripts/plateau_reruns.py "
             "ablation`, then `ablation-table`). Runs per arm: "
             + ", ".join(f"{a} {int(seeds.get(a, 0))}" for a in ABLATION_ARMS) + ".", "",
             "Stages at their plateau (per-stage record: `paper_world_ablation_stages.csv`):", "",
             "| arm | stages | at plateau | best in the cap's last 10% | tokens to best (M, mean) | "
             "tokens spent with validation (M, mean) |", "|---|---|---|---|---|---|"]
    for arm in ABLATION_ARMS:
        g = stages[stages["arm"] == arm]
        if not len(g):
            continue
        per_run = g.groupby("seed")[["tokens_to_best", "tokens_spent"]].sum()
        lines.append(f"| {arm} | {len(g)} | {int(g['reached'].sum())} | {int(g['cap_too_small'].sum())} | "
                     f"{per_run['tokens_to_best'].mean() / 1e6:.2f} | {per_run['tokens_spent'].mean() / 1e6:.2f} |")
    missed = stages[stages["why_not"] != ""]
    lines += ["", f"Runs with a stage short of its plateau: {missed['seed'].astype(str).add(missed['arm']).nunique()}"
              + "".join(f"\n- {r.arm} seed {r.seed} {r.stage}: {r.why_not} (best at step {r.best_step} of "
                        f"{r.steps_run}, cap {r.cap})" for r in missed.itertuples()), "",
              "Greedy and pass@8 beside avg@8 (paired A - B, 95% bootstrap interval over seeds):", "",
              "| comparison | avg@8 | greedy | pass@8 |", "|---|---|---|---|"]
    for a, b, q, _ in COMPARISONS:
        cells = []
        for metric in ("accuracy", "accuracy_greedy", "pass_at_k"):
            r = paired(runs, a, b, metric)
            cells.append(f"{r['mean_diff']:+.1f} [{r['ci_low']:+.1f}, {r['ci_high']:+.1f}]" if r else "-")
        lines.append(f"| {q} | " + " | ".join(cells) + " |")
    lines += _cap_check_lines(res)
    md = OUT.parent / "paper_world_ablation_summary.md"
    md.write_text(md.read_text() + "\n".join(lines) + "\n")
    # the label x compute plane: the student's validation frontier of every arm, and two equal-compute levels
    curves = pd.concat([run_curve(r) for r in res], ignore_index=True)
    # 24 log-spaced budgets from the first trained point to the last: the bridge arms' students start after
    # their teacher's GRPO (~2M tokens), so a grid from 1 token would give them one or two points
    t = curves["tokens"].to_numpy(dtype=float)
    front = frontier(curves, np.unique(np.geomspace(t[t > 0].min(), t.max(), 24).round()))
    levels = sorted({float(np.median([r.compute_tokens for r in res if r.arm == arm])) for arm in ("direct_grpo",
                     "rl_teacher_bridge") if any(r.arm == arm for r in res)})
    matched = compute_matched(curves, levels)
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    draw_frontier(ax, front, ms=3, lw=1.5)
    ax.set(xscale="log", xlabel="training tokens (every stage)",
           ylabel="validation avg@8 of the best checkpoint by then (%)",
           title="paper-like world, N = 64: the label x compute plane (plateau protocol)")
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    stem = OUT.parent / "frontier_paper_world"
    fig.savefig(stem.with_suffix(".png"), dpi=110)
    plt.close(fig)
    cols = ["arm", "tokens", "accuracy", "lo", "hi", "seeds"]
    front[cols].round(4).to_csv(stem.with_suffix(".csv"), index=False)
    matched[cols].round(4).to_csv(stem.parent / f"{stem.name}_matched.csv", index=False)
    print(md.read_text())
    print(f"wrote {table.relative_to(ROOT)}, paper_world_ablation_stages.csv, _summary.{{md,csv}}, "
          f"{stem.relative_to(ROOT)}.{{csv,png}} and _matched.csv ({len(res)} runs)")
    return 0


def _accuracy_by_arm(res: list) -> dict[str, list[float]]:
    """Test avg@8 of each run, grouped by arm."""
    out: dict[str, list[float]] = {}
    for r in res:
        out.setdefault(r.arm, []).append(r.metrics["accuracy"])
    return out


CAP_LIMIT = 3.0  # points: an arm with 4x its caps must not beat its committed mean by more (issue 22)


def _cap_check_lines(res: list) -> list[str]:
    """The committed cap checks (`cap-check` results under docs/results/plateau_reruns/paper-world-cap*x/):
    per arm and scale, the mean test avg@8 of the runs with scaled caps against the ablation's committed
    mean; also written to paper_world_cap_check.csv."""
    from reference.runs import load_result
    committed = _accuracy_by_arm(res)
    rows = []
    for d in sorted(OUT.glob(f"{ABLATION_RESULTS}-cap*x")):
        scale = float(d.name.rsplit("-cap", 1)[1][:-1])
        by_arm: dict[str, list] = {}
        for path in sorted(d.glob("*.json")):
            r = load_result(path)
            by_arm.setdefault(r.arm, []).append(r)
        for arm in [a for a in ABLATION_ARMS if a in by_arm and a in committed]:  # both sides measured
            got = [r.metrics["accuracy"] for r in by_arm[arm]]
            gain = float(np.mean(got) - np.mean(committed[arm]))
            rows.append({"arm": arm, "scale": scale, "seeds": " ".join(str(r.seed) for r in by_arm[arm]),
                         "scaled_mean": round(float(np.mean(got)), 2), "committed_mean": round(float(np.mean(committed[arm])), 2),
                         "committed_seeds": len(committed[arm]), "gain": round(gain, 2), "limit": CAP_LIMIT,
                         "passed": gain <= CAP_LIMIT})
    if not rows:
        return []
    t = pd.DataFrame(rows)
    t.to_csv(OUT.parent / "paper_world_cap_check.csv", index=False)
    missing = [a for a in ABLATION_ARMS if a not in set(t["arm"])]
    return ["", "Cap check (`python scripts/plateau_reruns.py cap-check`; `paper_world_cap_check.csv`): each arm "
            f"with every cap scaled, on seeds the ablation never used, against its committed mean (limit: a "
            f"gain of at most {CAP_LIMIT:g} points, test avg@8):", "",
            "| arm | caps | seeds | scaled | committed | gain | within the limit |", "|---|---|---|---|---|---|---|",
            *[f"| {r.arm} | {r.scale:g}x | {r.seeds} | {r.scaled_mean:.1f} | {r.committed_mean:.1f} "
              f"({r.committed_seeds} seeds) | {r.gain:+.1f} | {'yes' if r.passed else '**no**'} |" for r in t.itertuples()],
            "", "Not checked yet: " + (", ".join(missing) if missing else "none") + "."]


def _opd_records(runs: list) -> list[dict]:
    """The plateau records of the validated OPD stages of `runs`, in order."""
    return [s["plateau"] for r in runs for s in r.stages if s["name"] == "opd" and s.get("plateau", {}).get("validated")]


def cmd_compare_rules(args) -> int:
    """One rule's ablation runs (`--new`, default the current rule's) against another's (`--old`, default the
    first rule's) on the seeds both finished: per arm, the paired test avg@8 difference and the OPD stages'
    steps run and best step (an amendment's effect)."""
    new, old = ablation_results(args.new), ablation_results(args.old)
    before = {(r.arm, r.seed): r for r in old}
    pairs = [(r, before[(r.arm, r.seed)]) for r in new if (r.arm, r.seed) in before]
    if not pairs:
        raise InputError(f"no seed finished under both rules ({OUT.name}/{args.new} against "
                         f"{OUT.name}/{args.old}); run `ablation` first")

    def opd(r) -> str:
        return ", ".join(f"{p['steps_run']}/{p['best_step']}" for p in _opd_records([r])) or "-"

    print(f"| arm | seeds | {args.old} | {args.new} | paired difference | OPD steps run / best, {args.old} -> "
          f"{args.new} |\n|---|---|---|---|---|---|")
    for arm in ABLATION_ARMS:
        got = [(a, b) for a, b in pairs if a.arm == arm]
        if not got:
            continue
        a = np.array([x.metrics["accuracy"] for x, _ in got])
        b = np.array([y.metrics["accuracy"] for _, y in got])
        print(f"| {arm} | {' '.join(str(x.seed) for x, _ in got)} | {b.mean():.2f} | {a.mean():.2f} | "
              f"{(a - b).mean():+.2f} | " + "; ".join(f"{opd(y)} -> {opd(x)}" for x, y in got) + " |")
    return 0


# The paper-like world's stop rules for OPD, in the order they were committed: results directory (its 4x
# check: the same name + "-cap4x"), config, and what the rule is
RULES = (("window", RULE1_RESULTS, "configs/legacy/plateau_window/paper_world.toml",
          "every stage stopped by the window test; OPD cap 600"),
         ("opd600", "paper-world-opd600", "configs/legacy/plateau_opd600/paper_world.toml",
          "amendment 1: OPD runs to its 600-step cap"),
         ("opd9600", ABLATION_RESULTS, ABLATION_CONFIG, "amendment 2: OPD runs to its 9600-step cap"))
RULES_TABLE = OUT.parent / "paper_world_opd_rules.csv"


def cmd_rules_table(args) -> int:
    """docs/results/paper_world_opd_rules.csv: per OPD stop rule, arm and scale (1x: the ablation's runs; 4x:
    its cap check), the seeds run and their mean test avg@8, greedy and pass@8, the mean OPD steps run and
    steps to OPD's best checkpoint, and the 4x gain over the same rule's 1x mean (the cap check: at most
    CAP_LIMIT). Every rule's runs are kept, so the table shows what each amendment changed and why the next
    one came."""
    rows = []
    for rule, name, config, what in RULES:
        ones = {}
        for scale, d in ((1.0, name), (4.0, f"{name}-cap4x")):
            by_arm: dict[str, list] = {}
            for r in ablation_results(d):
                by_arm.setdefault(r.arm, []).append(r)
            for arm, res in by_arm.items():
                opd = _opd_records(res)
                acc = float(np.mean([r.metrics["accuracy"] for r in res]))
                if scale == 1.0:
                    ones[arm] = acc
                rows.append({"rule": rule, "config": config, "what": what, "arm": arm, "scale": scale,
                             "seeds": " ".join(str(r.seed) for r in res), "runs": len(res),
                             "avg_at_8": round(acc, 2),
                             "greedy": round(float(np.mean([r.metrics["accuracy_greedy"] for r in res])), 2),
                             "pass_at_8": round(float(np.mean([r.metrics["pass_at_k"] for r in res])), 2),
                             "opd_steps_run": round(float(np.mean([p["steps_run"] for p in opd])), 0) if opd else "",
                             "opd_best_step": round(float(np.mean([p["best_step"] for p in opd])), 0) if opd else "",
                             "gain_over_1x": round(acc - ones[arm], 2) if scale != 1.0 and arm in ones else "",
                             "within_limit": (acc - ones[arm] <= CAP_LIMIT) if scale != 1.0 and arm in ones else ""})
    if not rows:
        raise InputError("no ablation runs under any rule (`python scripts/plateau_reruns.py ablation`)")
    t = pd.DataFrame(rows)
    t.to_csv(RULES_TABLE, index=False)
    print(t.drop(columns=["config", "what"]).to_string(index=False))
    print(f"wrote {RULES_TABLE.relative_to(ROOT)}")
    return 0


def scaled_caps(cfg, scale: float) -> dict:
    """Overrides that multiply every stage cap of `cfg` by `scale` (GRPO's passes and step cap, FKL and OPD
    steps); the stages' seed keys leave the caps out (stage_runner.seed_key), so the first steps replay."""
    return {"grpo.epochs": cfg.grpo.epochs * scale, "grpo.max_steps": int(cfg.grpo.max_steps * scale),
            "fkl.steps": int(cfg.fkl.steps * scale), "opd.steps": int(cfg.opd.steps * scale)}


def cmd_cap_check(args) -> int:
    """Issue 22's check that the committed numbers are true plateaus: each arm with `--scale` times every
    cap, on seeds the ablation never used, against the ablation's committed mean for that arm."""
    from reference.config import load_config
    from reference.pipeline import run_pipeline
    from reference.runs import load_result, write_result

    base = load_config(ROOT / ABLATION_CONFIG)
    cfg = base.override(scaled_caps(base, args.scale))
    out = OUT / f"{ABLATION_RESULTS}-cap{args.scale:g}x"
    arms = _arm_list(args.arms)
    committed = _accuracy_by_arm(ablation_results())  # every finished ablation run, read once
    old = None
    if args.reuse_stages_of:  # its finished stages at the same scale, linked in where the caps' change leaves them
        old = load_config(ROOT / args.reuse_stages_of)
        old = old.override(scaled_caps(old, args.scale))
    for arm in arms:
        got = []
        for seed in _seed_range(args.seeds):
            path = out / f"{arm}_n{cfg.world.labels}_s{seed}.json"
            if not path.is_file():
                work = Path(args.workdir) / f"{ABLATION_WORLD}-cap{args.scale:g}x" / f"seed_{seed}"
                if old is not None:
                    link_unchanged_stages(old, cfg, work / "stages")
                    set_aside_stale_runs(work, cfg)
                res = run_pipeline(cfg, arm, seed, workdir=work, split="test",
                                   progress=False)
                path.parent.mkdir(parents=True, exist_ok=True)
                write_result(res, path)
            got.append(load_result(path).metrics["accuracy"])
        ref = committed.get(arm) or [float("nan")]
        print(f"{arm}: {args.scale:g}x caps, seeds {args.seeds}: test avg@8 {np.mean(got):.1f} "
              f"({' '.join(f'{g:.1f}' for g in got)}); committed mean {np.mean(ref):.1f} over {len(ref)} seeds; "
              f"gain {np.mean(got) - np.mean(ref):+.1f} (limit +3)", flush=True)
    return 0


def _arm_list(text: str) -> tuple[str, ...]:
    """'--arms' text -> ablation arms; one line naming the unknown ones."""
    arms = tuple(text.split(","))
    unknown = sorted(set(arms) - set(ABLATION_ARMS))
    if unknown:
        raise InputError(f"--arms: unknown arm(s) {', '.join(unknown)}; choose from {', '.join(ABLATION_ARMS)}")
    return arms


def _seed_range(text: str) -> list[int]:
    """'1000-1009' or '1000,1003' -> seeds; one line naming the flag when it does not parse."""
    try:
        out = []
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            out += list(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise InputError(f"--seeds: expected e.g. 1000-1009 or 1000,1003, got {text!r}") from None
    if not out:
        raise InputError(f"--seeds: no seeds in {text!r}")
    return out


def run_rows(c: dict, seed: int, res, low_tokens: float | None) -> list[dict]:
    """The runs-table rows of one finished rerun: its test accuracy at compute "plateau" and, when the
    pre-registration has a low level for it, its best validation score by those tokens at "low" (none
    when it had no student point by then)."""
    from reference.frontier import best_by, run_curve

    base = {"arm": c["arm"], "seed": seed, "world": c["world"], "teacher_labels": res.label_account.teacher,
            "student_labels": res.label_account.student, "compute_tokens": res.compute_tokens, "split": "test",
            "metric": "accuracy"}
    rows = [{**base, "value": res.metrics["accuracy"], "compute": "plateau"}]
    if low_tokens is not None:
        v = best_by(run_curve(res), [low_tokens])[0]
        if v == v:  # a student point by then
            rows.append({**base, "compute_tokens": int(low_tokens), "value": float(v), "compute": "low"})
    return rows


def cmd_table(args) -> int:
    from reference.runs import load_result

    preds = pd.read_csv(PRED)
    low = {(r.world, int(r.labels), r.arm): float(r.tokens) for r in preds[preds["compute"] == "low"].itertuples()}
    rows, missing = [], 0
    for c in configurations():
        for seed in c["seeds"]:
            path = result_path(c, seed)
            if not path.is_file():
                missing += 1
                continue
            rows += run_rows(c, seed, load_result(path), low.get((c["world"], c["labels"], c["arm"])))
    if missing:
        raise InputError(f"{missing} pre-registered runs have not finished (`python scripts/plateau_reruns.py "
                         "status`); the runs table is written once, complete")
    pd.DataFrame(rows).to_csv(RUNS, index=False)
    print(f"wrote {RUNS} ({len(rows)} rows)")
    return 0


def finished() -> list[tuple[dict, object]]:
    """(configuration, RunResult) of every finished rerun, in file order."""
    from reference.runs import load_result
    return [(c, load_result(result_path(c, s))) for c in configurations() for s in c["seeds"]
            if result_path(c, s).is_file()]


def _stage_best(res, model: str) -> float:
    """The best validation score of a run's last validated stage on `model` (its selected checkpoint)."""
    best = [s["plateau"]["best_score"] for s in res.stages
            if s.get("model") == model and (s.get("plateau") or {}).get("validated")]
    return float(best[-1]) if best else float("nan")


def cmd_summary(args) -> int:
    """Per configuration: test avg@8 / greedy / pass@8 (mean, sd over seeds), tokens to the best checkpoint and
    spent, stages at plateau, and the teacher's and student's selected validation scores; per world and N:
    RL bridge - direct GRPO paired by seed on each metric (95% bootstrap interval), label-matched at plateau."""
    from theory.stats import paired_difference

    runs = finished()
    if not runs:
        raise InputError("no finished reruns under docs/results/plateau_reruns/")
    rows = []
    for c, r in runs:
        stages = [s for s in r.stages if (s.get("plateau") or {}).get("validated")]
        rows.append({"world": c["world"], "labels": c["labels"], "arm": c["arm"], "set": c["set"], "seed": r.seed,
                     **{k: r.metrics[k] for k in METRICS},
                     "tokens_to_best": r.metrics.get("tokens_to_best"), "train_tokens": r.compute_tokens,
                     "tokens_spent": r.metrics.get("tokens_spent"),
                     "stages": len(stages), "at_plateau": sum(bool(s["plateau"]["reached"]) for s in stages),
                     "cap_too_small": sum(bool(s["plateau"].get("cap_too_small")) for s in stages),
                     "teacher_val": _stage_best(r, "teacher"), "student_val": _stage_best(r, "student")})
    per_run = pd.DataFrame(rows)
    keys = ["world", "labels", "arm", "set"]
    g = per_run.groupby(keys, sort=False)
    summary = g.agg(seeds=("seed", "size"), **{f"{k}_mean": (k, "mean") for k in METRICS},
                    **{f"{k}_sd": (k, "std") for k in METRICS},
                    tokens_to_best=("tokens_to_best", "mean"), train_tokens=("train_tokens", "mean"),
                    tokens_spent=("tokens_spent", "mean"), stages=("stages", "sum"), at_plateau=("at_plateau", "sum"),
                    cap_too_small=("cap_too_small", "sum"), teacher_val=("teacher_val", "mean"),
                    student_val=("student_val", "mean")).reset_index()
    summary.round(4).to_csv(SUMMARY, index=False)
    rng = np.random.default_rng(0)
    diffs = []

    def contrast(world, name, n, a, b):
        """b - a on every metric, paired by the seeds both ran."""
        a, b = a.set_index("seed"), b.set_index("seed")
        seeds = sorted(set(a.index) & set(b.index))
        if not seeds:
            return
        row = {"world": world, "contrast": name, "labels": n, "seeds": len(seeds)}
        for k in METRICS:
            iv = paired_difference(a.loc[seeds, k], b.loc[seeds, k], rng)
            row.update({f"{k}_diff": iv.estimate, f"{k}_lo": iv.low, f"{k}_hi": iv.high})
        # the paper's regime: the RL teacher's plateau (validation) well above direct GRPO's on the student
        if b.loc[seeds, "teacher_val"].notna().all():
            row["teacher_val"] = float(b.loc[seeds, "teacher_val"].mean())
            row["direct_student_val"] = float(a.loc[seeds, "student_val"].mean())
        diffs.append(row)

    for (world, n), grp in per_run.groupby(["world", "labels"], sort=False):
        contrast(world, "rl_teacher_bridge - direct_grpo", n, grp[grp["arm"] == "direct_grpo"],
                 grp[grp["arm"] == "rl_teacher_bridge"])
    for world, grp in per_run[per_run["arm"] == "direct_grpo"].groupby("world", sort=False):
        ns = sorted(grp["labels"].unique())
        if len(ns) > 1:  # labels teach: direct GRPO at the largest N - at the smallest, each at its plateau
            contrast(world, f"direct_grpo N={ns[-1]} - N={ns[0]}", ns[-1], grp[grp["labels"] == ns[0]],
                     grp[grp["labels"] == ns[-1]])
    pd.DataFrame(diffs).round(4).to_csv(DIFFS, index=False)
    print(summary.round(2).to_string(index=False))
    print(pd.DataFrame(diffs).round(2).to_string(index=False))
    print(f"wrote {SUMMARY.relative_to(ROOT)} and {DIFFS.relative_to(ROOT)} ({len(per_run)} runs)")
    return 0


def cmd_frontier(args) -> int:
    """Per world: the student's validation frontier (best score by each training-token budget, mean over
    seeds, 95% interval) of each arm at each N, docs/results/frontier_<world>.{csv,png}, and the frontier
    read at two equal-compute levels per N (direct GRPO's and the RL bridge's median training tokens per
    run), frontier_<world>_matched.csv. Validation scores (V = 64), not test."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from reference.frontier import compute_matched, draw_frontier, frontier, run_curve

    runs = finished()
    for world in dict.fromkeys(c["world"] for c, _ in runs):
        fronts, matched = [], []
        ns = sorted({c["labels"] for c, _ in runs if c["world"] == world})
        fig, axes = plt.subplots(1, len(ns), figsize=(4.6 * len(ns), 4.2), sharey=True, squeeze=False)
        for ax, n in zip(axes[0], ns):
            res = [r for c, r in runs if c["world"] == world and c["labels"] == n]
            curves = pd.concat([run_curve(r) for r in res], ignore_index=True)
            front = frontier(curves)
            fronts.append(front.assign(world=world, labels=n))
            levels = sorted({float(np.median([r.compute_tokens for r in res if r.arm == arm]))
                             for arm in dict.fromkeys(r.arm for r in res)})
            matched.append(compute_matched(curves, levels).assign(world=world, labels=n))
            draw_frontier(ax, front, ms=3, lw=1.5)
            ax.set(xscale="log", title=f"N = {n}", xlabel="training tokens (every stage)")
        axes[0][0].set_ylabel("validation avg@8 of the best checkpoint by then (%)")
        axes[0][-1].legend(fontsize=8, frameon=False)
        fig.suptitle(f"{world}: the label x compute plane (plateau reruns, seeds 1000+)")
        fig.tight_layout()
        stem = OUT.parent / f"frontier_{world.replace('modes-', 'family_')}"
        fig.savefig(stem.with_suffix(".png"), dpi=110)
        plt.close(fig)
        cols = ["world", "labels", "arm", "tokens", "accuracy", "lo", "hi", "seeds"]
        pd.concat(fronts)[cols].round(4).to_csv(stem.with_suffix(".csv"), index=False)
        pd.concat(matched)[cols].round(4).to_csv(stem.parent / f"{stem.name}_matched.csv", index=False)
        print(f"wrote {stem.relative_to(ROOT)}.{{csv,png}} and {stem.name}_matched.csv")
    return 0


def cmd_status(args) -> int:
    done = total = 0
    for c in configurations():
        n = sum(result_path(c, s).is_file() for s in c["seeds"])
        done, total = done + n, total + len(c["seeds"])
        print(f"{c['world']:10} N={c['labels']:<5} {c['arm']:18} {n}/{len(c['seeds'])}")
    print(f"{done} of {total} runs finished")
    return 0


TUNING_OUT = ROOT / "docs/results/fairness_plateau_paper_world"
TUNING_ARMS = ("direct_grpo", "rl_teacher_bridge")


# the committed tuning study (docs/results/fairness_plateau_paper_world/) ran under the protocol's first rule;
# a study under the current rule needs its own name and storage (its bridge trials run OPD 9600 steps)
TUNING_CONFIG = RULES[0][2]


def _tuning_setup(workdir) -> tuple[str, str, dict]:
    """(storage URL, study name, arm-source options) of the plateau tuning study under `workdir`."""
    work = (Path(workdir) / "tuning-paper-world").resolve()
    work.mkdir(parents=True, exist_ok=True)
    return (f"journal:///{work / 'study.log'}", "paper_world_plateau",
            {"config": str(ROOT / TUNING_CONFIG), "workdir": str(work / "runs")})


def cmd_tuning(args) -> int:
    """Matched tuning of the headline pair in the paper-like world under the plateau protocol (issue 22
    item 3): the same search budget per arm over the learning rates, group size and temperature (the
    lengths are the protocol's: each stage stops at its validation plateau under the config's caps),
    5 fresh evaluation seeds, then the fairness report (label-matched at plateau) and the compute-matched
    view read off the evaluation runs' validation curves (`tuning-compute`)."""
    import subprocess
    storage, study, opts = _tuning_setup(args.workdir)
    common = ["--storage", storage, "--study", study]
    cli = [sys.executable, "-m", "tuning.cli"]
    if not args.report_only:
        rc = subprocess.run([*cli, "run", "--arms", ",".join(TUNING_ARMS), "--trials", str(args.trials),
                             "--labels", "64", "--time-limit", "3600", "--eval-seeds", "5", "--seed", "0",
                             "--arm-source", "reference", "--arm-options", json.dumps(opts),
                             "--workers", str(args.jobs), *common], cwd=ROOT).returncode
        if rc:
            return rc
    rc = subprocess.run([*cli, "report", *common, "--out", str(TUNING_OUT), "--jobs", str(args.jobs)],
                        cwd=ROOT).returncode
    return rc or cmd_tuning_compute(args)


def cmd_tuning_compute(args) -> int:
    """The tuned pair at equal compute: each arm's evaluation runs (its best configuration on the fresh
    evaluation seeds, test read once at the selected checkpoint) laid on their student validation curves
    (reference.frontier), read at each arm's median tokens to its selected checkpoints and its median
    training tokens per run.
    Writes compute_matched.csv beside the fairness report and appends its section to fairness_report.md."""
    from reference.frontier import compute_matched, run_curve
    from reference.runs import load_result
    from tuning.evaluation import best_trial
    from tuning.harness import arm_study_name, check_matched, load_study
    from tuning.reference_arms import ReferenceArms
    from tuning.storage import open_storage

    storage, study, opts = _tuning_setup(args.workdir)
    handle = open_storage(storage)
    protocol = check_matched(handle, study)
    source = ReferenceArms(**opts)
    res = []
    for arm in protocol.arms:
        trial = best_trial(load_study(handle, arm_study_name(study, arm)))
        if trial is None:
            raise InputError(f"tuning-compute: arm {arm} has no finished trial (run `plateau_reruns.py tuning`)")
        where = source.run_workdir(arm, dict(trial.params))
        got = [r for r in map(load_result, sorted(where.glob("runs/*/result_test.json")))
               if r.seed in protocol.eval_seeds]
        if len(got) != len(protocol.eval_seeds):
            raise InputError(f"tuning-compute: {arm} has {len(got)} of {len(protocol.eval_seeds)} evaluation runs "
                             f"under {where} (run the report first)")
        res += got
    curves = pd.concat([run_curve(r) for r in res], ignore_index=True)
    # four levels: each arm's median tokens to its selected checkpoints (the sum over its stages of the tokens
    # to each stage's best) and its median training tokens per run (patience steps included)
    levels = sorted({float(np.median([r.metrics[k] if k else r.compute_tokens for r in res if r.arm == arm]))
                     for arm in protocol.arms for k in ("tokens_to_best", None)})
    matched = compute_matched(curves, levels)
    test = {arm: float(np.mean([r.metrics["accuracy"] for r in res if r.arm == arm])) for arm in protocol.arms}
    cols = ["arm", "tokens", "accuracy", "lo", "hi", "seeds"]
    matched[cols].round(4).to_csv(TUNING_OUT / "compute_matched.csv", index=False)
    lines = ["", "## Equal compute under the plateau protocol (validation curves of the evaluation runs)", "",
             "Each arm's best configuration on the evaluation seeds, laid on its student validation curve "
             "against cumulative training tokens (every stage, the teacher's included); read at each arm's "
             "median tokens to its selected checkpoints and its median training tokens per run: the best "
             "checkpoint an arm had by then (validation avg@8, "
             "V = 64; mean over seeds, 95% bootstrap interval; `-` where a seed had no student point yet). "
             "Written by `python scripts/plateau_reruns.py tuning-compute`.", "",
             "| tokens (M) | " + " | ".join(protocol.arms) + " |", "|---|" + "---|" * len(protocol.arms)]
    for t in levels:
        cells = []
        for arm in protocol.arms:
            r = matched[(matched["arm"] == arm) & (matched["tokens"] == t)]
            ok = len(r) and np.isfinite(r["accuracy"].iloc[0])
            cells.append(f"{r['accuracy'].iloc[0]:.1f} [{r['lo'].iloc[0]:.1f}, {r['hi'].iloc[0]:.1f}]" if ok else "-")
        lines.append(f"| {t / 1e6:.2f} | " + " | ".join(cells) + " |")
    lines += ["", "Label-matched at plateau (test avg@8 at the selected checkpoint, mean of the evaluation seeds): "
              + ", ".join(f"{arm} {test[arm]:.1f}" for arm in protocol.arms) + "."]
    md = TUNING_OUT / "fairness_report.md"
    body = md.read_text()
    head = "\n## Equal compute under the plateau protocol"
    if head in body:  # rerun: replace the section, keep the report above it
        body = body[:body.index(head)]
    md.write_text(body.rstrip("\n") + "\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--worlds", default="", help="e.g. k15 or k05,k30 (default: all)")
    r.add_argument("--labels", default="", help="e.g. 64 (default: all)")
    r.add_argument("--arms", default="", help="e.g. direct_grpo (default: both)")
    r.add_argument("--seeds", type=int, default=0, help="the first K pre-registered seeds only (default: all)")
    r.add_argument("--workdir", default="/tmp/plateau_reruns")
    r.add_argument("--max-runs", type=int, default=0)
    r.set_defaults(func=cmd_run)
    ab = sub.add_parser("ablation")
    ab.add_argument("--seeds", default=f"{SEED_BASE}-{SEED_BASE + 9}")
    ab.add_argument("--jobs", type=int, default=1, help="seeds run in parallel, one process each")
    ab.add_argument("--arms", default="", help="e.g. rl_teacher_bridge (default: all seven, in table order)")
    ab.add_argument("--reuse-stages-of", default="", metavar="CONFIG",
                    help="link in the finished stages of CONFIG (same workdir) that a change of caps leaves alone")
    ab.add_argument("--workdir", default="/tmp/plateau_reruns")
    ab.set_defaults(func=cmd_ablation)
    cc = sub.add_parser("cap-check")
    cc.add_argument("--arms", default="direct_grpo")
    cc.add_argument("--seeds", default="2000-2002")
    cc.add_argument("--scale", type=float, default=4.0)
    cc.add_argument("--workdir", default="/tmp/plateau_reruns")
    cc.add_argument("--reuse-stages-of", default="", metavar="CONFIG",
                    help="link in the finished stages of CONFIG at the same scale that a change of caps leaves alone")
    cc.set_defaults(func=cmd_cap_check)
    sub.add_parser("ablation-table").set_defaults(func=cmd_ablation_table)
    sub.add_parser("rules-table").set_defaults(func=cmd_rules_table)
    cr = sub.add_parser("compare-rules")
    cr.add_argument("--new", default=ABLATION_RESULTS, help="results directory under docs/results/plateau_reruns/")
    cr.add_argument("--old", default=RULE1_RESULTS, help="the one it is paired with, seed by seed")
    cr.set_defaults(func=cmd_compare_rules)
    tu = sub.add_parser("tuning")
    tu.add_argument("--trials", type=int, default=8, help="finished trials per arm")
    tu.add_argument("--jobs", type=int, default=1, help="tuning workers and evaluation processes")
    tu.add_argument("--workdir", default="/tmp/plateau_reruns")
    tu.add_argument("--report-only", action="store_true", help="skip the trials: evaluate and report")
    tu.set_defaults(func=cmd_tuning)
    tc = sub.add_parser("tuning-compute")
    tc.add_argument("--workdir", default="/tmp/plateau_reruns")
    tc.set_defaults(func=cmd_tuning_compute)
    sub.add_parser("table").set_defaults(func=cmd_table)
    sub.add_parser("status").set_defaults(func=cmd_status)
    sub.add_parser("summary").set_defaults(func=cmd_summary)
    sub.add_parser("frontier").set_defaults(func=cmd_frontier)
    args = ap.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(cli_exit(main))
