"""`reference-pipeline`: demo | run | table | pilot | pilot-curves | gate | export.

  reference-pipeline demo [--workdir DIR]                      every arm, one seed, the paper-like world
  reference-pipeline run --arm A --seed S --config PATH [--teacher-labels T | --student-labels S]
                         [--split test|val] [--workdir DIR] [--out CSV] [--dry-run [--json]] [--export DIR]
  reference-pipeline table --seeds K --out DIR [--config PATH] [--arms all] [--jobs 2]
  reference-pipeline pilot --config PATH|name --out DIR [--k 8] [--problems 200] [--split val]
                           [--seed 0] [--models student,teacher] [--self-distill] [--workdir DIR]
  reference-pipeline pilot-curves --config PATH --out DIR [--arms direct_grpo,rl_teacher_bridge] [--labels 16,32,64]
                                  [--cap-fraction 0.2] [--seeds 2] [--seed-base 700] [--jobs 2] [--workdir DIR]
                           short capped plateau-protocol runs, their whole validation curves (no early stop)
  reference-pipeline gate --config PATH|name [--seeds 3] [--steps 50] [--problems 200] [--jobs 1]
                          [--json PATH] [--record [CSV]]      stability gate: exit 0 pass, 1 fail, 2 bad input
  reference-pipeline export --arm A --seed S --config PATH --out DIR [--workdir DIR]
                            the run's final student as a Hugging Face checkpoint (save_pretrained + tokenizer)

Errors print one line `error: <msg>` and exit 2. Work already done stays in --workdir (stage
checkpoints, per-run results), so rerunning the same command resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from theory.cliutil import HelpFormatter, output_dir, output_file, require_extra, version_string
from theory.errors import InputError

DEFAULT_WORKDIR = ".s2d_runs"


def int_at_least(lo: int):
    """argparse `type=` for an integer >= lo (a seed >= 0, a count >= 1): a bad value is refused while
    the command line is parsed, before any work or file (`error: argument --seed: ...`)."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {lo}, got {text!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"must be an integer >= {lo}, got {text!r}")
        return v
    return parse


SEED, COUNT = int_at_least(0), int_at_least(1)


def resolve_teacher_labels(arm_name: str, n: int, teacher_labels: int | None, student_labels: int | None):
    from theory.arms import get_arm
    arm = get_arm(arm_name)
    if teacher_labels is None and student_labels is None:
        return None
    if not arm.splits_labels:
        raise InputError(f"arm {arm_name} does not split labels; drop --teacher-labels/--student-labels")
    for flag, v in (("--teacher-labels", teacher_labels), ("--student-labels", student_labels)):
        if v is not None and not 0 <= v <= n:
            raise InputError(f"{flag}={v} must lie in [0, labels={n}]")
    if teacher_labels is not None and student_labels is not None and teacher_labels + student_labels != n:
        raise InputError(f"--teacher-labels {teacher_labels} + --student-labels {student_labels} must equal labels={n}")
    return teacher_labels if teacher_labels is not None else n - student_labels


def cmd_run(a) -> int:
    from reference.config import load_config
    from theory.arms import get_arm
    cfg = load_config(a.config)
    if not a.dry_run:  # bad input fails fast, before the heavy imports
        get_arm(a.arm)
        tl = resolve_teacher_labels(a.arm, cfg.world.labels, a.teacher_labels, a.student_labels)
    if a.markdown and not a.dry_run:
        raise InputError("--markdown goes with --dry-run")
    if a.dry_run:
        from reference.dryrun import dry_run, format_dry_run, markdown_tables, replace_marked
        out = dry_run(cfg, arm=get_arm(a.arm).name) if a.arm else dry_run(cfg)
        if a.markdown == "-":
            print(markdown_tables(out))
        elif a.markdown:  # the generated block of a document (docs/scale.md), rewritten in place
            doc = Path(a.markdown)
            if not doc.is_file():
                raise InputError(f"--markdown {a.markdown!r}: no such document")
            doc.write_text(replace_marked(doc.read_text(), markdown_tables(out)))
            print(f"wrote the dry-run tables into {doc}")
        else:
            print(json.dumps(out, indent=1, default=str) if a.json else format_dry_run(out))
        return 0
    from reference.gate import gate_status
    status = gate_status(cfg, a.workdir)
    print(f"stability gate for this config (hash {cfg.hash()}): {status}"
          + ("" if status == "passed" else f" - run `reference-pipeline gate --config {cfg.source}`"))
    from reference.models import quiet
    quiet()
    from reference.pipeline import run_pipeline
    res = run_pipeline(cfg, a.arm, a.seed, workdir=a.workdir, teacher_labels=tl, split=a.split, progress=True)
    _print_run(res)
    if a.out:
        from theory.tables import append_runs
        append_runs(res.to_frame(), a.out)
        print(f"appended to {a.out}")
    if a.export and int(os.environ.get("RANK", "0")) == 0:  # under accelerate launch: rank 0 exports
        from reference.export import export_student
        print(f"student exported to {export_student(cfg, a.arm, a.seed, workdir=a.workdir, out=a.export, teacher_labels=tl)}")
    return 0


def cmd_export(a) -> int:
    from reference.config import load_config
    from theory.arms import get_arm
    cfg = load_config(a.config)
    get_arm(a.arm)
    tl = resolve_teacher_labels(a.arm, cfg.world.labels, a.teacher_labels, a.student_labels)
    from reference.models import quiet
    quiet()
    from reference.export import export_student
    out = export_student(cfg, a.arm, a.seed, workdir=a.workdir, out=a.out, teacher_labels=tl)
    print(f"student exported to {out} (load with AutoModelForCausalLM.from_pretrained / AutoTokenizer.from_pretrained)")
    return 0


def _print_run(res) -> None:
    m = res.metrics
    acct = res.label_account
    print(f"{res.arm} seed={res.seed} [{res.split}] accuracy(avg@{int(m['k'])})={m['accuracy']:.1f}% "
          f"pass@k={m['pass_at_k']:.1f}% compliance={m['compliance']:.1f}% "
          f"acc|compliant={m['accuracy_given_compliance']:.1f}%"
          + (f" greedy={m['accuracy_greedy']:.1f}%" if "accuracy_greedy" in m else "")
          + f" labels(teacher={acct.teacher}, student={acct.student}, unused={acct.unused})"
          f" tokens={res.compute_tokens}")
    print("  stages: " + ", ".join(f"{s['name']} {s['seconds']:.1f}s" + (" (cached)" if s.get("cached") else "")
                                   for s in res.stages))


def _problem_interval(res) -> tuple[float, float, float]:
    """avg@k accuracy with a 95% normal interval over the evaluated problems (one seed: sampling error only)."""
    import numpy as np
    pr = res.problems
    if pr is None or not len(pr):
        return res.metrics["accuracy"], float("nan"), float("nan")
    x = 100.0 * pr["correct"].to_numpy(dtype=float) / pr["k"].to_numpy(dtype=float)
    se = float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else 0.0
    return float(x.mean()), float(x.mean() - 1.96 * se), float(x.mean() + 1.96 * se)


def _demo_figure(table, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 3.8))
    y = range(len(table))
    ax.barh(list(y), table["accuracy"], xerr=[table["accuracy"] - table["lo"], table["hi"] - table["accuracy"]],
            color="tab:blue", alpha=0.75, capsize=3)
    ax.set_yticks(list(y), table["arm"])
    ax.invert_yaxis()
    ax.set_xlabel("test accuracy, sampled avg@k (%), 95% interval over problems (one seed)")
    ax.set_title("demo: every arm, one seed (the machinery, not a result)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def demo_order(names: list[str], labels: int) -> list[str]:
    """Arms in the order two workers should take them: each next arm is the one that trains the most
    stages no earlier arm trains (a stage is its prefix with label counts, as in the stage key), so the
    shared trunks (the RL teacher, each bridge) start first and later arms find them cached."""
    from theory.arms import ARMS, stage_labels

    def prefixes(name: str) -> set[tuple]:
        arm = ARMS[name]
        acct = arm.labels(labels)
        steps = [(s.value, stage_labels(s, acct)) for s in arm.stages]
        return {tuple(steps[: i + 1]) for i in range(len(steps))}

    left, seen, out = list(names), set(), []
    while left:
        best = max(left, key=lambda n: len(prefixes(n) - seen))  # ties: registry order
        out.append(best)
        seen |= prefixes(best)
        left.remove(best)
    return out


def _demo_worker(job) -> tuple:
    config, arm, seed, workdir = job
    import torch
    torch.set_num_threads(1)
    from reference.config import load_config
    from reference.models import quiet
    from reference.pipeline import run_pipeline
    quiet()
    t0 = time.perf_counter()
    res = run_pipeline(load_config(config), arm, seed, workdir=workdir, split="test", progress=False)
    return res, time.perf_counter() - t0


def cmd_demo(a) -> int:
    import multiprocessing as mp

    import pandas as pd

    from reference.config import load_config
    from reference.gate import gate_status
    from theory.arms import ARMS
    cfg = load_config(a.config)
    out = Path(a.workdir)
    order = demo_order(list(ARMS), cfg.world.labels)
    print(f"demo: {len(ARMS)} arms, seed {a.seed}, {a.jobs} worker(s), config {cfg.source} (stability gate: "
          f"{gate_status(cfg, out)}); checkpoints and results go to {out.resolve()}", flush=True)
    t0 = time.perf_counter()
    done: dict[str, object] = {}
    jobs = [(cfg.source, name, a.seed, out) for name in order]
    # one spawned worker per core; stages two arms share are trained once (the stage lock), the other waits
    with mp.get_context("spawn").Pool(a.jobs) as pool:
        for res, secs in pool.imap_unordered(_demo_worker, jobs):
            done[res.arm] = res
            spent = time.perf_counter() - t0
            print(f"[{len(done)} of {len(ARMS)}] {res.arm}: {res.metrics['accuracy']:.1f}% in {secs:.0f} s "
                  f"({spent:.0f} s so far)", flush=True)
    rows = [done[name] for name in ARMS]
    frames = [r.to_frame() for r in rows]
    table = pd.DataFrame([{"arm": r.arm, **dict(zip(("accuracy", "lo", "hi"), _problem_interval(r))),
                           "compliance": r.metrics["compliance"],
                           "acc_given_compliance": r.metrics["accuracy_given_compliance"],
                           "greedy": r.metrics.get("accuracy_greedy", float("nan"))} for r in rows])
    print(f"\n{'arm':28s} {'acc':>6s} {'95% interval':>15s} {'compl':>6s} {'acc|c':>6s} {'greedy':>6s}")
    for _, r in table.iterrows():
        ci = f"[{r['lo']:5.1f}, {r['hi']:5.1f}]" if r["lo"] == r["lo"] else "(cached run)"
        print(f"{r['arm']:28s} {r['accuracy']:6.1f}  {ci:>15s} {r['compliance']:6.1f} "
              f"{r['acc_given_compliance']:6.1f} {r['greedy']:6.1f}")
    print("acc = sampled avg@k on the test split (%), interval over problems; compl = answers in the verifiable "
          "format; acc|c = accuracy among those; greedy = one greedy answer per problem")
    from theory.tables import write_table
    csv, png = out / "demo_results.csv", out / "demo.png"
    write_table(pd.concat(frames, ignore_index=True), csv, "runs")
    _demo_figure(table, png)
    best = table.sort_values("accuracy", ascending=False).iloc[0]
    by = table.set_index("arm")["accuracy"]
    print(f"reading: best arm {best['arm']} at {best['accuracy']:.1f}% [{best['lo']:.1f}, {best['hi']:.1f}]; "
          f"RL-teacher bridge - direct GRPO = {by['rl_teacher_bridge'] - by['direct_grpo']:+.1f} points on one seed "
          "(the multi-seed comparison: docs/results/legacy/fixed_length/paper_world_ablation_summary.md)")
    print(f"demo: {len(rows)} arms, {time.perf_counter() - t0:.0f} s wall; wrote {csv} and {png}")
    return 0


def _table_worker(job) -> list[dict]:
    """One process per seed group: all arms of a seed run in one process so stage prefixes are shared."""
    config, seeds, arms, workdir, split = job
    from reference.models import quiet
    quiet()
    import torch
    torch.set_num_threads(1)
    from reference.config import load_config
    from reference.pipeline import run_pipeline
    cfg = load_config(config)
    out = []
    for seed in seeds:
        for arm in arms:
            t0 = time.perf_counter()
            res = run_pipeline(cfg, arm, seed, workdir=workdir, split=split, progress=False)
            out.append({"rows": res.to_frame().to_dict("records"), "curves": res.curves_frame().to_dict("records"),
                        "stages": [dict(s, arm=arm, seed=seed) for s in res.stages],
                        "wall": time.perf_counter() - t0})
            print(f"  done {arm} seed={seed} acc={res.metrics['accuracy']:.1f}% ({time.perf_counter() - t0:.0f}s)",
                  flush=True)
    return out


def cmd_table(a) -> int:
    import multiprocessing as mp

    import pandas as pd

    from reference.config import load_config
    from theory.arms import parse_arms
    from theory.tables import write_table
    from tqdm.auto import tqdm
    cfg = load_config(a.config)
    arms = [x.name for x in parse_arms(a.arms)]
    seeds = list(range(a.first_seed, a.first_seed + a.seeds))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    workdir = a.workdir or str(out / "work")
    jobs = [(cfg.source, [s], arms, workdir, a.split) for s in seeds]
    t0 = time.perf_counter()
    results = []
    ctx = mp.get_context("spawn")
    with ctx.Pool(a.jobs) as pool, tqdm(total=len(jobs), desc="seeds", unit="seed") as bar:
        for res in pool.imap_unordered(_table_worker, jobs):
            results.extend(res)
            bar.update(1)
    wall = time.perf_counter() - t0
    rows = pd.DataFrame([r for x in results for r in x["rows"]])
    prefix = a.prefix
    write_table(rows.sort_values(["arm", "seed", "metric"]), out / f"{prefix}.csv", "runs")
    pd.DataFrame([r for x in results for r in x["curves"]]).to_csv(out / f"{prefix}_curves.csv", index=False)
    st = pd.DataFrame([s for x in results for s in x["stages"]])
    st = st[[c for c in ("arm", "seed", "name", "model", "seconds", "tokens", "steps", "cached") if c in st]]
    st.to_csv(out / f"{prefix}_stage_times.csv", index=False)
    fresh = st[~st["cached"].astype(bool)] if "cached" in st else st
    print(f"table: {len(arms)} arms x {len(seeds)} seeds, {a.jobs} processes, {wall:.0f} s wall")
    print("compute seconds by stage (fresh work only):")
    print(fresh.groupby("name")["seconds"].agg(["count", "sum", "mean"]).round(1).to_string())
    print(f"wrote {out / f'{prefix}.csv'}")
    return 0


def cmd_pilot(a) -> int:
    from reference.config import load_config
    from reference.pilot import PilotConfig, parse_models
    cfg = load_config(a.config)
    pc = PilotConfig(k=a.k, problems=a.problems, split=a.split, seed=a.seed, models=parse_models(a.models),
                     self_distill=a.self_distill)
    from reference.models import quiet
    quiet()
    from reference.pilot import format_pilot, run_pilot
    res = run_pilot(cfg, pc, a.out, workdir=a.workdir)
    print(format_pilot(res))
    out = Path(a.out)
    print(f"wrote {out / 'problems.csv'}, pass_at_k.csv, summary.csv"
          + (", pilot_runs.csv" if res.runs is not None else "") + ", pilot.json")
    if res.runs is not None:  # base models fit no rate: calibrate also needs trained runs (the README's sequence)
        print(f"next: reference-pipeline run --config {a.config} --arm direct_grpo --out runs.csv, the same with "
              f"--arm rl_teacher_bridge, then budget-planner calibrate --runs runs.csv {out / 'pilot_runs.csv'} "
              f"--problems {out / 'problems.csv'} --out my.toml")
    return 0


def cmd_pilot_curves(a) -> int:
    from reference.config import load_config
    from reference.pilot_curves import plan_pilot_curves
    # every input is checked here, before any file or run
    plan = plan_pilot_curves(load_config(a.config), arms=a.arms, labels=a.labels, cap_fraction=a.cap_fraction,
                             seeds=a.seeds, seed_base=a.seed_base)
    out = Path(a.out)
    workdir = Path(a.workdir) if a.workdir else out / "work"
    runs = plan.runs()
    print(f"pilot-curves: {len(runs)} runs ({', '.join(plan.arms)} at N = {', '.join(map(str, plan.labels))}, "
          f"seeds {plan.seeds[0]}..{plan.seeds[-1]}), caps x {plan.cap_fraction:g}, no early stop; config "
          f"{plan.cfg.source} (hash {plan.cfg.hash()}); checkpoints in {workdir}", flush=True)
    from reference.pilot_curves import run_pilot_curves, write_pilot_curves
    res = run_pilot_curves(plan, workdir, jobs=a.jobs, progress=lambda m: print("  " + m, flush=True))
    paths = write_pilot_curves(res, out)
    reused = sum(r.reused for r in res.runs)
    tok = res.tokens()
    print(f"pilot-curves: {len(res.runs)} runs, {reused} read back, {len(res.runs) - reused} trained; "
          f"{tok['spent']} tokens spent ({tok['train']} training, {tok['validation']} validation); "
          f"{res.seconds:.0f} s wall")
    print("wrote " + ", ".join(map(str, paths)))
    return 0


def cmd_gate(a) -> int:
    from reference.config import load_config
    cfg = load_config(a.config)
    if a.trainer:
        cfg = cfg.override({"engine.trainer": a.trainer})
    from reference.models import quiet
    quiet()
    from reference import gate
    res = gate.run_gate(cfg, seeds=a.seeds, steps=a.steps, problems=a.problems, jobs=a.jobs,
                        progress=lambda m: print("  " + m, flush=True))
    print(gate.format_gate(res))
    saved = gate.save(res, a.workdir)
    if a.json:
        tmp = Path(a.json).with_suffix(".tmp")
        tmp.write_text(json.dumps(res.to_dict(), indent=1))
        tmp.replace(a.json)
        print(f"wrote {a.json}")
    if a.record:
        gate.record(res, Path(a.record))
        print(f"recorded in {a.record}; curves in {gate.save_curves(res, gate.curves_path(res, Path(a.record)))}")
    print(f"saved {saved}")
    return 0 if res.passed else 1


class _OneLineParser(argparse.ArgumentParser):
    """A bad flag or value is one `error:` line (InputError), not a usage dump (subparsers inherit it,
    and with it help that shows each flag's default and keeps the examples as written)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        raise InputError(message)


def _pilot_args(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--config", required=True, help="config path or name in configs/")
    p.add_argument("--out", required=True, type=output_dir, help="directory for problems.csv, pass_at_k.csv, pilot_runs.csv")
    p.add_argument("--k", type=int, default=8, help="samples per problem")
    p.add_argument("--problems", type=int, default=200, help="probe problems (first of the split; 0 = all)")
    p.add_argument("--split", default="val", help="probe split: val (default), test or labeled")
    p.add_argument("--seed", type=SEED, default=0, help="sampling seed")
    p.add_argument("--models", default="student,teacher", help="student, teacher or both")
    p.add_argument("--self-distill", action="store_true",
                   help="also run FKL warmup then OPD with teacher = a copy of the base student, sampling after each")
    p.add_argument("--workdir", default=DEFAULT_WORKDIR + "/pilot", type=output_dir, help="finished parts, for resuming")
    return p


def build_parser() -> argparse.ArgumentParser:
    ap = _OneLineParser(prog="reference-pipeline", description="Sparse-to-dense reference pipeline.",
                        epilog="example:\n  reference-pipeline demo\nrun `reference-pipeline COMMAND -h` for a "
                               "command's flags")
    ap.add_argument("--version", action="version", version=version_string("reference-pipeline"))
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    d = sub.add_parser("demo", help="every arm, one seed, the paper-like world",
                       description="Every arm, one seed, in the paper-like world of the world family, "
                                   "every stage trained to its validation plateau by the protocol's first rule "
                                   "(configs/legacy/plateau_window/paper_world.toml, whose OPD stops early; about "
                                   "20 minutes of one core); prints one row per arm. The results' config, "
                                   "plateau/paper_world, runs OPD 9600 steps a stage: about 2.5 hours of one core.",
                       epilog="example:\n  reference-pipeline demo --seed 1 --workdir /tmp/s2d_demo")
    d.add_argument("--config", default="legacy/plateau_window/paper_world",
                   help="config path or name in configs/ (default: the world family's paper-like world under "
                        "the plateau protocol's first rule; plateau/paper_world is the results' config, hours "
                        "long; legacy/fixed_length/paper_world is its fixed, short length, toy_short the older, "
                        "faster toy world)")
    d.add_argument("--seed", type=SEED, default=0, help="seed of every arm")
    d.add_argument("--workdir", default=DEFAULT_WORKDIR + "/demo", type=output_dir,
                   help="stage checkpoints and per-run results; rerunning resumes from them")
    d.add_argument("--jobs", type=COUNT, default=2,
                   help="worker processes (one core each); arms sharing a stage wait for it, never train it twice")
    r = sub.add_parser("run", help="one arm, one seed",
                       description="One arm, one seed; or, with --dry-run, the real-scale plan without a GPU.",
                       epilog="examples:\n  reference-pipeline run --arm rl_teacher_bridge --seed 0 --config toy\n"
                              "  reference-pipeline run --config paper-qwen3-math --dry-run --json")
    r.add_argument("--arm", help="arm name from theory.arms (required unless --dry-run)")
    r.add_argument("--seed", type=SEED, default=0, help="run seed")
    r.add_argument("--config", default="toy", help="config path or name in configs/")
    r.add_argument("--teacher-labels", type=int,
                   help="labels for the teacher's GRPO, the rest go to student GRPO (split arms only; "
                        "default: the arm's split)")
    r.add_argument("--student-labels", type=int,
                   help="labels for student GRPO, the rest go to the teacher (split arms only)")
    r.add_argument("--split", default="test", choices=["test", "val"], help="evaluation split")
    r.add_argument("--workdir", default=DEFAULT_WORKDIR, type=output_dir,
                   help="stage checkpoints and per-run results; rerunning resumes from them")
    r.add_argument("--out", type=output_file, help="append the run's rows to this run-table CSV")
    r.add_argument("--dry-run", action="store_true", help="print the real-scale plan (reference.dryrun)")
    r.add_argument("--json", action="store_true", help="with --dry-run: print the plan as JSON")
    r.add_argument("--markdown", nargs="?", const="-", metavar="DOC",
                   help="with --dry-run: print the plan as docs/scale.md's tables, or rewrite them in DOC "
                        "(between its dry-run markers)")
    r.add_argument("--export", type=output_dir,
                   help="after the run, write the final student here as a Hugging Face checkpoint (save_pretrained)")
    x = sub.add_parser("export", help="a run's final student -> Hugging Face checkpoint (save_pretrained + tokenizer)",
                       description="Load the last student stage checkpoint of a run from --workdir and write it "
                                   "with save_pretrained and its tokenizer (reference.export).",
                       formatter_class=HelpFormatter,
                       epilog="example:\n  reference-pipeline export --arm rl_teacher_bridge --seed 0 --config toy "
                              "--out student_hf/")
    x.add_argument("--arm", required=True, help="arm name from theory.arms")
    x.add_argument("--seed", type=SEED, default=0, help="run seed")
    x.add_argument("--config", default="toy", help="config path or name in configs/ (the run's)")
    x.add_argument("--teacher-labels", type=int, help="as given to `run`")
    x.add_argument("--student-labels", type=int, help="as given to `run`")
    x.add_argument("--workdir", default=DEFAULT_WORKDIR, type=output_dir, help="the run's workdir")
    x.add_argument("--out", required=True, type=output_dir, help="directory to write the Hugging Face checkpoint")
    t = sub.add_parser("table", help="every arm over K seeds -> run table",
                       description="Every arm over K seeds, one process per seed -> run table CSV.",
                       epilog="example:\n  reference-pipeline table --seeds 10 --out docs/results --jobs 2")
    t.add_argument("--seeds", type=COUNT, required=True, help="number of seeds K")
    t.add_argument("--first-seed", type=SEED, default=0, help="seeds are FIRST_SEED .. FIRST_SEED+K-1")
    t.add_argument("--out", required=True, type=output_dir, help="directory for the run table, curves and stage times")
    t.add_argument("--config", default="toy", help="config path or name in configs/")
    t.add_argument("--arms", default="all", help="comma-separated arm names, or all")
    t.add_argument("--jobs", type=COUNT, default=2, help="worker processes (each runs whole seeds)")
    t.add_argument("--split", default="test", choices=["test", "val"], help="evaluation split")
    t.add_argument("--workdir", type=output_dir, help="stage checkpoints and per-run results (default: OUT/work)")
    t.add_argument("--prefix", default="toy_ablation", help="file-name prefix of the CSVs written to --out")
    _pilot_args(sub.add_parser(
        "pilot", help="base-model pilot: problem table, pass@k, KL_0 -> planner",
        description="Sample the base models on probe problems and write the tables\n"
                    "`budget-planner calibrate` reads.",
        epilog="example:\n  reference-pipeline pilot --config toy --k 8 --problems 200 --out pilot/\n"
               "then trained runs of two arms, and calibrate on both tables:\n"
               "  reference-pipeline run --config toy --arm direct_grpo --out runs.csv  (and --arm rl_teacher_bridge)\n"
               "  budget-planner calibrate --runs runs.csv pilot/pilot_runs.csv --problems pilot/problems.csv "
               "--out my.toml"))
    pc = sub.add_parser(
        "pilot-curves", help="short capped plateau-protocol runs at small N -> validation curves (calibrate)",
        description="Run each arm at each budget N and seed with every stage cap scaled by --cap-fraction and\n"
                    "the plateau protocol's early stop off; write the student's validation curves on\n"
                    "cumulative training tokens, the runs' table rows and the pilot's cost (reference.pilot_curves).\n"
                    "Finished runs are read back from --workdir, a killed pilot resumes mid-stage.",
        epilog="example:\n  reference-pipeline pilot-curves --config configs/plateau/paper_world.toml --out pilot_curves/")
    pc.add_argument("--config", required=True, help="a plateau-protocol config ([plateau] enabled = true)")
    pc.add_argument("--out", required=True, type=output_dir,
                    help="directory for pilot_curves.csv, pilot_curve_runs.csv, pilot_curves.json")
    pc.add_argument("--arms", default="direct_grpo,rl_teacher_bridge", help="comma-separated arm names, or all")
    pc.add_argument("--labels", default="16,32,64", help="comma-separated budgets N, each in [1, the config's world.labels]")
    pc.add_argument("--cap-fraction", type=float, default=0.2,
                    help="every stage cap (GRPO epochs and max_steps, FKL and OPD steps) times this, in (0, 1], "
                         "rounded up to a whole step")
    pc.add_argument("--seeds", type=COUNT, default=2, help="seeds per arm and N")
    pc.add_argument("--seed-base", type=SEED, default=700,
                    help="seeds are SEED_BASE .. SEED_BASE+SEEDS-1, all below 900 (900+: the protocol checks')")
    pc.add_argument("--jobs", type=COUNT, default=2, help="worker processes (one run each, one core each)")
    pc.add_argument("--workdir", type=output_dir, help="stage checkpoints and per-run results (default: OUT/work)")
    g = sub.add_parser("gate", help="stability gate: identical-teacher no-ops, the bridge moves, GRPO learns",
                       description="Stability gate of a config: FKL/OPD with an identical teacher do nothing, "
                                   "FKL/OPD toward the RL teacher move the student, student and teacher GRPO "
                                   "raise their training reward. Exit 0 all pass, 1 a check failed, 2 bad input.",
                       epilog="examples:\n  reference-pipeline gate --config configs/toy.toml --json gate.json\n"
                              "  reference-pipeline gate --config toy_short --seeds 3 --jobs 2 --record")
    g.add_argument("--config", required=True, help="config path or name in configs/")
    g.add_argument("--trainer", choices=["reference", "trl"],
                   help="the stages' trainer (overrides the config's engine.trainer; recorded as the backend)")
    g.add_argument("--seeds", type=int, default=3, help="seeds 0..K-1")
    g.add_argument("--steps", type=int, default=50,
                   help="first steps of each stage's schedule for the no-op and GRPO checks (>= 20)")
    g.add_argument("--problems", type=int, default=200, help="test problems for the no-op accuracy check (0 = all)")
    g.add_argument("--jobs", type=int, default=1, help="processes (one seed each)")
    g.add_argument("--json", type=output_file, help="write {config, passed, checks: [...]} here")
    g.add_argument("--record", nargs="?", const="docs/results/stability_gates.csv", type=output_file,
                   help="replace this config's rows in the gate table (docs/results/stability_gates.csv when "
                        "given without a path)")
    g.add_argument("--workdir", default=DEFAULT_WORKDIR, type=output_dir,
                   help="gate results keyed by config hash go to WORKDIR/gates/ (read by `run`)")
    return ap


def main(argv=None) -> int:
    from theory.errors import cli_exit

    def body() -> int:
        a = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
        require_extra("reference-pipeline", "reference")  # after parsing, so -h/--version work without it
        if a.cmd == "run":
            if not a.dry_run and not a.arm:
                raise InputError("--arm is required (one of theory.arms.ARMS)")
            return cmd_run(a)
        return {"demo": cmd_demo, "table": cmd_table, "pilot": cmd_pilot, "pilot-curves": cmd_pilot_curves,
                "gate": cmd_gate, "export": cmd_export}[a.cmd](a)
    code = cli_exit(body, interrupted="error: interrupted (finished stages and pilot parts are kept; rerun to resume)")
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():  # a launched rank: engines.exit_rank
        from reference.engines import exit_rank
        exit_rank(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
