"""`matched-tuning`: matched Optuna tuning of arms, and the fairness report.

  matched-tuning run    --arms direct_grpo,rl_teacher_bridge --trials 8 --storage URL [--study NAME]
  matched-tuning resume --study NAME --storage URL          (refuses if any given rule differs)
  matched-tuning report --study NAME --storage URL --out DIR (final evaluation, then CSV/Markdown/figures)
  matched-tuning status --study NAME --storage URL

Several workers: start the same `run`/`resume` on as many processes or hosts as you like against one
storage (journal file on one machine, PostgreSQL across machines), or pass --workers N.
Bad input prints `error: <one line>` and exits 2; nothing already stored is lost.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import shlex
import sys
import time

from theory.cliutil import HelpFormatter, output_dir, require_extra, version_string
from theory.errors import InputError

DEFAULT_STORAGE = "sqlite:///matched_tuning.db"


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} {os.getpid()}] {msg}", file=sys.stderr, flush=True)


def _positive_int(name):
    def parse(v):
        try:
            x = int(v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {v!r}") from None
        if x < 1:
            raise argparse.ArgumentTypeError(f"{name} must be >= 1, got {v!r}")
        return x
    return parse


def _add_storage(p: argparse.ArgumentParser, study_required: bool) -> None:
    p.add_argument("--storage", default=DEFAULT_STORAGE,
                   help="sqlite:///f.db (default), journal:///f.log (several local processes), postgresql://...")
    p.add_argument("--study", required=study_required, default=None if study_required else "matched",
                   help="study name in the storage")


def _add_worker(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=_positive_int("--workers"), default=1, help="worker processes on this host")
    p.add_argument("--heartbeat", type=_positive_int("--heartbeat"), default=10, help="seconds between heartbeats")
    p.add_argument("--grace", type=_positive_int("--grace"), default=60,
                   help="seconds without a heartbeat before a running trial is failed and retried")
    p.add_argument("--max-retry", type=int, default=2, help="retries of a trial whose worker died")
    p.add_argument("--max-trials", type=_positive_int("--max-trials"), default=None,
                   help="stop this worker after this many trials (the study stays resumable)")


def _add_rules(p: argparse.ArgumentParser, resume: bool) -> None:
    # resume: every rule defaults to None = "as stored"; a flag that is given is compared with the store
    first = len(p._actions)
    p.add_argument("--arms", required=not resume, default=None,
                   help="comma-separated arm names from theory.arms")
    p.add_argument("--trials", type=_positive_int("--trials"), required=not resume, default=None,
                   help="finished trials per arm (complete + pruned + failed)")
    p.add_argument("--labels", type=int, default=None, help="label budget N (default: the arm source's)")
    p.add_argument("--teacher-labels", type=int, default=None,
                   help="labels for the teacher's GRPO in split arms (default: the arm source's split)")
    p.add_argument("--compute-cap", type=int, default=None, help="per-trial compute cap in tokens")
    p.add_argument("--time-limit", type=float, default=None if resume else 3600.0, help="per-trial seconds")
    p.add_argument("--seed", type=int, default=None if resume else 0, help="tuning seed base")
    p.add_argument("--eval-seeds", type=int, default=None if resume else 10,
                   help="fresh seeds for the final evaluation of each arm's best config (not used in tuning)")
    p.add_argument("--startup-trials", type=int, default=None, help="TPE random start-up trials")
    p.add_argument("--pruner", choices=["median", "none"], default=None if resume else "none",
                   help="none (default) or median; see docs/tuning.md on pruning and report schedules")
    p.add_argument("--arm-source", default=None if resume else "reference",
                   help="reference | synthetic | module:function")
    p.add_argument("--config", default=None, help="reference arms: config TOML")
    p.add_argument("--arm-options", default=None, help="JSON options for the arm source")
    if resume:  # the help says so, instead of run's defaults
        for action in p._actions[first:]:
            action.help = re.sub(r"\s*\(default[^)]*\)", "", action.help) + " (default: as stored)"


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):  # subparsers are built by this class too: defaults in help
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # one line, like every other bad input (argparse prints usage too)
        print(f"error: {message} (see {self.prog} -h)", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="matched-tuning", description=__doc__.split("\n\n")[0],
                 epilog="example:\n  matched-tuning run --arms direct_grpo,rl_teacher_bridge --trials 8 "
                        "--storage sqlite:///study.db --study toy\nrun `matched-tuning COMMAND -h` for a command's "
                        "flags")
    ap.add_argument("--version", action="version", version=version_string("matched-tuning"))
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="create (or join) a matched study and run trials",
                         description="Create (or join) a matched study and run its trials; start the same command\n"
                                     "on more processes or hosts against one storage to add workers.",
                         epilog="examples:\n  matched-tuning run --arms direct_grpo,rl_teacher_bridge --trials 8 "
                                "--storage sqlite:///study.db --study toy\n"
                                "  matched-tuning run --arms direct_grpo,rl_teacher_bridge --trials 4 "
                                "--arm-source synthetic --labels 64   # no torch needed")
    _add_storage(run, study_required=False)
    _add_rules(run, resume=False)
    _add_worker(run)
    res = sub.add_parser("resume", help="continue a study; refuses if a given rule differs from the stored one",
                         description="Continue a study with its stored rules; a rule given on the command line\n"
                                     "must equal the stored one (every rule defaults to the stored value).",
                         epilog="example:\n  matched-tuning resume --study toy --storage sqlite:///study.db "
                                "--workers 2")
    _add_storage(res, study_required=True)
    _add_rules(res, resume=True)
    _add_worker(res)
    rep = sub.add_parser("report", help="final evaluation on fresh seeds + fairness report",
                         description="Evaluate each arm's best config on the fresh evaluation seeds, then write\n"
                                     "the fairness report (CSV, Markdown, figures).",
                         epilog="example:\n  matched-tuning report --study toy --storage sqlite:///study.db "
                                "--out docs/results")
    _add_storage(rep, study_required=True)
    rep.add_argument("--out", required=True, type=output_dir, help="output directory (created if missing)")
    rep.add_argument("--jobs", type=_positive_int("--jobs"), default=1, help="parallel evaluation processes")
    rep.add_argument("--no-eval", action="store_true", help="report what is stored; run no evaluation")
    rep.add_argument("--command", default=None, help="the regenerating command to print in the report "
                     "(default: this command line)")
    st = sub.add_parser("status", help="per-arm trial counts", description="Per-arm trial counts of a study.",
                        epilog="example:\n  matched-tuning status --study toy --storage sqlite:///study.db")
    _add_storage(st, study_required=True)
    return ap


def _open(args):
    from tuning.storage import open_storage

    return open_storage(args.storage, heartbeat_s=getattr(args, "heartbeat", 10), grace_s=getattr(args, "grace", 60),
                        max_retry=getattr(args, "max_retry", 2))


def _options(args, stored: dict | None = None) -> dict:
    opts = dict(stored or {})
    if args.arm_options:
        try:
            given = json.loads(args.arm_options)
        except json.JSONDecodeError as e:
            raise InputError(f"--arm-options is not valid JSON ({e.msg})") from None
        if not isinstance(given, dict):
            raise InputError("--arm-options must be a JSON object")
        opts = given
    if getattr(args, "config", None):
        opts["config"] = args.config
    return opts


def _arm_names(spec: str) -> list[str]:
    """--arms as a list; an unknown name fails before anything is imported or created."""
    from theory.arms import get_arm

    arms = [a.strip() for a in spec.split(",") if a.strip()]
    for a in arms:
        try:
            get_arm(a)
        except InputError as e:
            raise InputError(f"--arms: {e}") from None
    return arms


def _protocol_from_args(args, stored=None):
    """run: from flags. resume: the stored protocol with given flags substituted (then compared)."""
    from tuning.sources import load_arm_source
    from tuning.protocol import build_protocol

    def pick(flag, stored_value):
        v = getattr(args, flag, None)
        return stored_value if v is None else v

    if stored is None:
        source_name, opts = args.arm_source, _options(args)
        arms = _arm_names(args.arms)
        kw = dict(trials=args.trials, labels=args.labels, teacher_labels=args.teacher_labels,
                  compute_cap_tokens=args.compute_cap, time_limit_s=args.time_limit, seed=args.seed,
                  eval_seeds=args.eval_seeds, n_startup_trials=args.startup_trials, pruner=args.pruner)
    else:
        source_name = pick("arm_source", stored.arm_source)
        opts = _options(args, stored.arm_options)
        arms = _arm_names(args.arms) if args.arms else list(stored.arms)
        kw = dict(trials=pick("trials", stored.trials_per_arm), labels=pick("labels", stored.labels),
                  teacher_labels=pick("teacher_labels", stored.teacher_labels),
                  compute_cap_tokens=pick("compute_cap", stored.compute_cap_tokens),
                  time_limit_s=pick("time_limit", stored.time_limit_s), seed=pick("seed", stored.sampler["seed"]),
                  eval_seeds=pick("eval_seeds", len(stored.eval_seeds)),
                  n_startup_trials=pick("startup_trials", stored.sampler["n_startup_trials"]),
                  pruner=pick("pruner", "median" if stored.pruner["name"] == "MedianPruner" else "none"),
                  enqueue_defaults=stored.enqueue_defaults)
    source = load_arm_source(source_name, opts)
    if kw["labels"] is None:
        default = getattr(source.fn, "default_labels", lambda: None)()
        if default is None:
            raise InputError("--labels: give the label budget N (the arm source declares no default)")
        kw["labels"] = default
    return build_protocol(source, arms, arm_options=opts, **kw), source


def _worker_main(url: str, name: str, heartbeat: int, grace: int, max_retry: int, max_trials) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from tuning.harness import load_protocol, run_worker
    from tuning.sources import load_arm_source
    from tuning.storage import open_storage

    handle = open_storage(url, heartbeat_s=heartbeat, grace_s=grace, max_retry=max_retry)
    protocol = load_protocol(handle, name)
    source = load_arm_source(protocol.arm_source, protocol.arm_options)
    run_worker(handle, name, source, max_trials=max_trials, log=_progress_log(handle, name))


_TRIAL_LINE = re.compile(r"^\S+ slot \d+ \(trial #\d+\): ")  # run_worker's line for a finished trial


def _progress_log(handle, name: str):
    """This process's log plus, after each trial it finishes, one line of study-wide progress (all
    workers): trials finished of the budget, an ETA from this process's pace, each arm's best so far."""
    import optuna

    from tuning.harness import load_study, arm_study_name, load_protocol, slot_trials

    protocol = load_protocol(handle, name)
    total = protocol.trials_per_arm * len(protocol.arms)

    def finished_and_best():
        done, best = 0, {}
        for arm in protocol.arms:
            latest, _, _ = slot_trials(load_study(handle, arm_study_name(name, arm)))
            states = [t.state for t in latest.values()]
            done += sum(st.is_finished() for st in states)
            vals = [t.value for t in latest.values() if t.state == optuna.trial.TrialState.COMPLETE]
            best[arm] = max(vals) if vals else None
        return done, best

    start_done, t0 = finished_and_best()[0], time.monotonic()

    def log(msg: str) -> None:
        _log(msg)
        if not _TRIAL_LINE.match(msg):
            return
        try:
            done, best = finished_and_best()
        except Exception:  # noqa: BLE001 -- progress is a courtesy; it must never stop a worker
            return
        eta = ""
        if 0 < done - start_done and done < total:
            left = (time.monotonic() - t0) / (done - start_done) * (total - done)
            eta = f", ETA {int(left // 60)}m{int(left % 60):02d}s"
        best_txt = ", ".join(f"{a} {v:.2f}%" if v is not None else f"{a} -" for a, v in best.items())
        _log(f"progress: {done}/{total} trials ({100 * done / total:.0f}%){eta}; best so far: {best_txt}")

    return log


def _run_workers(args, handle, source) -> None:
    from tuning.harness import run_worker

    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker_main, args=(args.storage, args.study, args.heartbeat, args.grace,
                                                    args.max_retry, args.max_trials), daemon=False)
             for _ in range(args.workers - 1)]
    for p in procs:
        p.start()
    try:
        run_worker(handle, args.study, source, max_trials=args.max_trials, log=_progress_log(handle, args.study))
    finally:
        for p in procs:
            p.join()
    bad = [p.exitcode for p in procs if p.exitcode]
    if bad:
        raise InputError(f"{len(bad)} worker process(es) exited with status {bad[0]}; run `resume` to finish")


def _print_status(handle, name) -> None:
    from tuning.harness import arm_status, load_protocol

    p = load_protocol(handle, name)
    print(f"study {name}: {p.trials_per_arm} trials per arm, arms {', '.join(p.arms)}")
    print(f"{'arm':28s} {'finished':>8s} {'complete':>8s} {'pruned':>6s} {'failed':>6s} {'running':>7s} "
          f"{'waiting':>7s} {'retried':>7s}")
    for arm in p.arms:
        s = arm_status(handle, name, arm)
        print(f"{arm:28s} {s.finished:8d} {s.complete:8d} {s.pruned:6d} {s.failed:6d} {s.running:7d} "
              f"{s.waiting:7d} {s.retried:7d}")


def main(argv: list[str] | None = None) -> int:
    from theory.errors import cli_exit

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # -h, or a flag error already printed as one line
        return int(e.code or 0)
    return cli_exit(lambda: _dispatch(args, argv), interrupted="interrupted: running slots were handed back; "
                    "`matched-tuning resume` continues", interrupted_code=130)


def _dispatch(args, argv) -> int:
    # every input is checked before a storage is opened: opening a missing SQLite or journal file creates it
    require_extra("matched-tuning", "tuning")
    if args.cmd == "run" and args.arm_source == "reference":
        require_extra("matched-tuning run --arm-source reference", "reference")
    from tuning.storage import require_existing

    if args.cmd == "run":
        protocol, source = _protocol_from_args(args)
    else:
        if getattr(args, "arms", None):  # resume: a given arm name is checked before the stored rules
            _arm_names(args.arms)
        require_existing(args.storage, args.study)
    if args.cmd == "status":
        _print_status(_open(args), args.study)
        return 0
    if args.cmd == "report":
        from tuning.evaluation import evaluate_compute_matched, evaluate_label_matched
        from tuning.report import build_report, verdict, write_report

        handle = _open(args)
        if not args.no_eval:
            evaluate_label_matched(handle, args.study, jobs=args.jobs, log=_log)
            evaluate_compute_matched(handle, args.study, jobs=args.jobs, log=_log)
        rep = build_report(handle, args.study)
        command = args.command or "matched-tuning " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
        paths = write_report(rep, args.out, command=command)
        cols = ["arm", "trials", "pruned", "failed", "compute", "best_score", "eval_mean", "eval_ci_low",
                "eval_ci_high"]
        print(rep.summary[cols].to_string(index=False, float_format=lambda x: f"{x:.2f}"))
        if len(rep.comparisons):
            print("label-matched:")
            print(rep.comparisons.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
        if rep.comparisons_compute is not None and len(rep.comparisons_compute):
            print("compute-matched (equal per-run training tokens):")
            print(rep.comparisons_compute.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
        print(f"wrote {', '.join(str(p) for p in paths.values())}")
        print(verdict(rep))
        return 0
    from tuning.harness import create_or_check, load_protocol

    handle = _open(args)
    if args.cmd == "resume":
        protocol, source = _protocol_from_args(args, load_protocol(handle, args.study))
    create_or_check(handle, args.study, protocol)
    _run_workers(args, handle, source)
    _print_status(handle, args.study)
    return 0


if __name__ == "__main__":
    sys.exit(main())
