"""`budget-planner`: plan | calibrate | scenarios | explain | crosscheck.

Bad input of any kind ends in one line `error: <what is wrong>` on stderr and exit status 2.
Plotting imports seaborn lazily so the table path stays fast.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from theory.cliutil import HelpFormatter, output_file, version_string
from theory.errors import InputError


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):  # subparsers are built by this class too: defaults in help
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # one line, exit 2, no usage dump
        raise InputError(message)


def _labels(text: str) -> int:
    from theory.arms import check_budget
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"--labels must be a non-negative integer, got {text!r}") from None
    if math.isfinite(value) and value == int(value):
        value = int(value)
    try:
        return check_budget(value)
    except InputError as e:
        raise InputError(f"--labels: {e}") from None


def _positive_int(text: str) -> int:
    from theory.costs import check_gpus
    try:
        return check_gpus(float(text), "--gpus")
    except (ValueError, InputError):
        raise InputError(f"--gpus must be a positive whole number, got {text!r}") from None


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise InputError(f"--gpu-hours must be a positive number, got {text!r}")
    return value


def _write_atomic(path: str, text: str) -> None:
    p = Path(path)
    if p.parent and not p.parent.exists():
        raise InputError(f"output directory {str(p.parent)!r} does not exist")
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, p)


def _tokens(n: int) -> str:
    for unit, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def _num(x: float, spec: str) -> str:
    """format(x, spec) without a negative zero ('-0.00' reads '0.00')."""
    from budget_planner.planner import fmt_num
    return fmt_num(x, spec)


def _sig(x: float, width: float | None = None) -> str:
    """A fitted value to the precision its 95% interval supports (about a tenth of the width), or 4
    significant digits; integers print as integers ('14000', not '1.4e+04')."""
    x = float(x)
    if width is None or not math.isfinite(width) or width <= 0:
        if x == int(x) and abs(x) < 1e15:
            return str(int(x))
        return f"{x:.4g}"
    d = max(0, -math.floor(math.log10(width / 10.0)))
    return _num(x, f".{d}f")


def _fmt_plan(pl) -> str:
    lines = [f"scenario {pl.scenario}: {pl.benchmark} accuracy (%) with N = {pl.labels} labels",
             f"{'arm':<26} {'accuracy':>8}  {'95% interval':>15}  {'p_best':>7}  {'teacher/student labels':>22}"
             f"  {'+acc per 1k labels':>18}  {'train tokens':>12}  {'GPU-hours':>9}"]
    for a in pl.arms:
        pb = "control" if a.control else "over" if not a.feasible else f"{a.p_best:7.2f}"
        lines.append(f"{a.arm:<26} {_num(a.accuracy, '8.1f')}  [{_num(a.lo, '5.1f')}, {_num(a.hi, '5.1f')}]  {pb:>7}  "
                     f"{a.teacher_labels:>10}/{a.student_labels:<11}  {_num(a.marginal_per_1k, '18.2f')}  "
                     f"{_tokens(a.compute_tokens):>12}  {_hours(a.gpu_hours):>9}"
                     + (f"  = {a.same_as} here" if a.same_as else ""))
    r = pl.recommendation
    lines.append(f"recommended: {r.arm} (p_best {r.p_best:.2f}) with {r.teacher_labels} teacher / "
                 f"{r.student_labels} student labels")
    if r.runner_up is not None:
        lines.append(f"runner-up: {r.runner_up}; gap (recommended - runner-up) {_num(r.gap_mean, '+.1f')} points, "
                     f"90% interval [{_num(r.gap_lo, '+.1f')}, {_num(r.gap_hi, '+.1f')}]")
        if r.separable:
            lines.append("separable: the gap interval excludes 0")
        else:
            tok = {a.arm: a.compute_tokens for a in pl.arms}
            if tok[r.arm] == tok[r.runner_up]:
                cost = f"both cost {_tokens(tok[r.arm])} training tokens"
            else:
                other = r.runner_up if r.cheaper == r.arm else r.arm
                a, b = _tokens(tok[r.cheaper]), _tokens(tok[other])
                if a == b:  # too close for the short form
                    a, b = f"{tok[r.cheaper]:,}", f"{tok[other]:,}"
                cost = f"the cheaper is {r.cheaper} ({a} vs {b} training tokens)"
            lines.append(f"toss-up: {r.arm} and {r.runner_up} cannot be told apart (the gap interval contains 0); "
                         f"{cost}")
    if pl.compute is not None:
        lines.append(_fmt_compute(pl))
    if pl.gpu_costs is not None:
        lines.append(_fmt_costs(pl.gpu_costs))
    if pl.ceiling is not None:
        c = pl.ceiling
        lines.append(f"ceiling: student on {pl.benchmark} {c['map']:.1f}% given compliance, 95% "
                     f"[{c['ci'][0]:.1f}, {c['ci'][1]:.1f}] ({c['tag']} {c['stated']:.0f})")
    u = pl.uncertainty
    lines.append(f"uncertainty: structural error sd {u['discrepancy_sd']:.1f} points, measurement sd "
                 f"{u['measurement_sd']:.1f} points, {u['effective_draws']:.0f} effective of {u['draws']} draws")
    by_tag = {t: sum(1 for i in pl.inputs if i["tag"] == t) for t in ("measured", "published", "assumed")}
    tags = ", ".join(f"{k} {t}" for t, k in by_tag.items())
    lines.append(f"inputs: {len(pl.inputs)} ({tags}); {pl.n_fitted} of them fitted to the observations; "
                 "`explain` lists them with sources")
    for w in pl.warnings:
        lines.append(f"warning: {w}")
    return "\n".join(lines)


_SHORT = {"teacher_grpo": "T", "fkl_warmup": "W", "opd": "O", "student_grpo": "S", "replay_opd": "R"}


def _lengths(lengths: dict) -> str:
    """'T120 W2 O2': teacher / student GRPO and replay in label passes, warmup / OPD in bridge units."""
    return " ".join(f"{_SHORT[s]}{_sig(v)}" for s, v in lengths.items())


def _fmt_compute(pl) -> str:
    c = pl.compute
    g = c["grid"]
    lines = [f"trained to plateau (the label x compute plane; rule: {c['rule']}; plateau = the cheapest length "
             f"within {c['plateau_points']} points of the arm's best; lengths: T/S = teacher/student GRPO label "
             f"passes (reference {_sig(g['reference_label_passes'])}), W/O = warmup/OPD bridge units, R = replay "
             "passes; validation included in the cost)",
             f"  {'arm':<26} {'plateau':>7}  {'95% interval':>15}  {'stage lengths':<20} {'train tokens':>12}  "
             f"{'GPU-hours':>9}"]
    for a in pl.arms:
        ac = c["arms"][a.arm]
        p = ac.plateau
        lines.append(f"  {a.arm:<26} {_num(p.accuracy, '7.1f')}  [{_num(p.lo, '5.1f')}, {_num(p.hi, '5.1f')}]  "
                     f"{_lengths(p.lengths):<20} {_tokens(p.tokens):>12}  {_hours(p.gpu_hours):>9}")
    r = c["arms"][c["recommended_at_plateau"]].plateau
    lines.append(f"recommended at plateau: {c['recommended_at_plateau']} ({_lengths(r.lengths)}, "
                 f"{_num(r.accuracy, '.1f')}%, {_hours(r.gpu_hours)} GPU-hours)")
    if c["recommended_within_budget"] is not None:
        b = c["arms"][c["recommended_within_budget"]].at_budget
        lines.append(f"within {c['budget_gpu_hours']:g} GPU-hours (less {c['pilot_gpu_hours']:g} for the pilot): "
                     f"{c['recommended_within_budget']} ({_lengths(b.lengths)}) -> {_num(b.accuracy, '.1f')}% "
                     f"[{_num(b.lo, '.1f')}, {_num(b.hi, '.1f')}] for {_hours(b.gpu_hours)} GPU-hours")
    x = c["exchange_rate"]
    saved = "never reached" if x["gpu_hours_saved"] is None else f"{_num(x['gpu_hours_saved'], '+.3g')} GPU-hours"
    gained = "n/a" if x["points_gained"] is None else f"{_num(x['points_gained'], '+.2f')} points"
    lines.append(f"1,000 more labels at that point: {saved} saved at the same accuracy, {gained} at the same "
                 "GPU-hours")
    return "\n".join(lines)


def _hours(h: float) -> str:
    return f"{h:,.0f}" if h >= 100 else f"{h:.1f}" if h >= 1 else f"{h:.2f}"


def _fmt_costs(gc: dict) -> str:
    parts = []
    for phase in ("step", "rollout"):
        measured = [s for s, t in gc["tags"].items() if t[phase] == "measured"]
        if len(measured) == len(gc["tags"]):
            parts.append(f"{phase} rates measured")
        else:
            parts.append(f"{phase} rates " + (f"measured for {', '.join(measured)}, else assumed" if measured
                                              else "assumed"))
    eff = gc["parallel_efficiency"]
    scaling = "" if eff == 1.0 else f", parallel efficiency {eff:.2f} assumed"
    line = f"GPU-hours on {gc['gpus']} GPU(s) from {gc['table']}: {'; '.join(parts)}{scaling}"
    if not gc["models_match"]:
        line += f" (rates of {' / '.join(gc['table_models'])}, not this scenario's models)"
    if gc["budget_gpu_hours"] is not None:
        over = ", ".join(gc["infeasible"]) or "none"
        line += f"\nGPU-hour budget {gc['budget_gpu_hours']:g}: over budget (never recommended): {over}"
    return line


def _fmt_next(nx: dict) -> str:
    lines = [f"what to measure next: expected regret of deciding now {_num(nx['expected_regret'], '.2f')} points "
             "(expected reduction per pilot measurement; tokens generated + trained)",
             f"  {'measurement':<26} {'pilot tokens':>12} {'regret reduction':>16} {'per 1e9 tokens':>14}  what"]
    for r in nx["rows"]:
        lines.append(f"  {r['measurement']:<26} {_tokens(r['cost_tokens']):>12} "
                     f"{_num(r['regret_reduction'], '16.3f')} {_num(r['per_1e9_tokens'], '14.3f')}  {r['description']}")
    if nx["best"] is None:
        lines.append("measure next: nothing listed is expected to change the decision")
    else:
        lines.append(f"measure next: {nx['best']}")
    return "\n".join(lines)


def cmd_plan(args) -> int:
    from budget_planner import fitcache
    from budget_planner.planner import plan
    from budget_planner.presets import load_scenario

    scn = load_scenario(args.scenario)
    fitcache.warm(scn)
    gpus = None if args.gpus is None else _positive_int(args.gpus)
    budget = None if args.gpu_hours is None else _positive_float(args.gpu_hours)
    pl = plan(scn, labels=args.labels, benchmark=args.benchmark, gpus=gpus, gpu_hours=budget, costs=args.costs,
              pilot_gpu_hours=args.pilot_gpu_hours)
    fitcache.store(scn)
    # `--json` alone (or `--json -`): the JSON is the only thing on stdout, the table goes to stderr
    to_stdout = args.json == "-"
    say = (lambda text: print(text, file=sys.stderr)) if to_stdout else print
    say(_fmt_plan(pl))
    out = pl.to_dict()
    if args.next:
        from budget_planner.nextstep import next_measurement
        nx = next_measurement(scn, pl.labels, benchmark=args.benchmark)
        say(_fmt_next(nx))
        out["next"] = nx
    if args.plot:
        if Path(args.plot).parent and not Path(args.plot).parent.exists():
            raise InputError(f"output directory {str(Path(args.plot).parent)!r} does not exist")
        pl.plot(args.plot)
        say(f"wrote {args.plot}")
    if to_stdout:
        print(json.dumps(out, indent=2))
    elif args.json:
        _write_atomic(args.json, json.dumps(out, indent=2))
        print(f"wrote {args.json}")
    return 0


def _clean(text: str) -> str:
    """A description without empty fields: 'a; ; b;' -> 'a; b'."""
    parts = [p.strip() for p in text.split(";")]
    return "; ".join(p for p in parts if p).replace("''s ", "'s ")


def cmd_scenarios(args) -> int:
    from budget_planner.presets import load_scenario, preset_names

    for name in preset_names():
        scn = load_scenario(name)
        print(f"{name:<24} {_clean(scn.description) or '(no description)'}")
    return 0


def cmd_explain(args) -> int:
    from budget_planner.planner import plan
    from theory.fitting import fit_scenario
    from budget_planner.presets import load_scenario

    scn = load_scenario(args.scenario)
    pl = plan(scn, labels=args.labels, benchmark=args.benchmark)
    print(f"scenario {scn.name}: {scn.description}")
    print(f"\ninformativeness on {pl.benchmark} (group size G = {scn.group_size}, N = {pl.labels}; "
          f"bits/label <= log2(G+1) = {math.log2(scn.group_size + 1):.2f}):")
    print(f"{'model':<40} {'acc%':>6} {'compl.':>6} {'signal frac':>11} {'signal size':>11} {'bits/label':>10}"
          f" {'KL_0 nats/tok':>13} {'dense nats/prompt':>17}")
    for r in pl.informativeness:
        print(f"{r['model']:<40} {_num(r['accuracy'], '6.1f')} {_num(r['compliance'], '6.3f')} "
              f"{_num(r['signal_fraction'], '11.3f')} {_num(r['signal_size'], '11.3f')} "
              f"{_num(r['bits_per_label'], '10.2f')} {_num(r['kl0_nats_per_token'], '13.3f')} "
              f"{_num(r['dense_nats_per_prompt'], '17.1f')}")
    print("\nconditions (arXiv 2605.12483):")
    for c in pl.conditions:
        print("  " + c.explain())
    fit = fit_scenario(scn)
    print("\ninputs (assumed inputs are fitted: prior -> MAP [95%], to the precision the interval supports):")
    rows = []
    for _, row in fit.parameters().iterrows():
        if row["fitted"]:
            w = float(row["hi"]) - float(row["lo"])
            rows.append((row["input"], "assumed", _sig(row["prior"]), _sig(row["map"], w),
                         f"[{_sig(row['lo'], w)}, {_sig(row['hi'], w)}]", row["note"]))
        else:
            rows.append((row["input"], row["tag"], _sig(row["prior"]), "", "", row["note"]))
    wid = [max(len(r[i]) for r in rows) for i in range(5)]
    print(f"  {'input':<{wid[0]}}  {'tag':<9}  {'prior':>{wid[2]}}    {'MAP':>{wid[3]}}  {'95%':<{wid[4]}}  source")
    for name, tag, prior, mp, ci, note in rows:
        arrow = "->" if mp else "  "
        print(f"  {name:<{wid[0]}}  {tag:<9}  {prior:>{wid[2]}} {arrow} {mp:>{wid[3]}}  {ci:<{wid[4]}}  ({note})")
    print(f"  {'compute':<{wid[0]}}  {scn.compute_tag:<9}  {scn.compute}  ({scn.compute_note})")
    from budget_planner.planner import split_sensitivity
    sens = split_sensitivity(scn, pl.labels, benchmark=args.benchmark)
    share = lambda k: f"{sens[k]['teacher_labels']} teacher labels ({100 * sens[k]['teacher_share']:.0f}%)"  # noqa: E731
    print(f"\nsplit sensitivity (rl_teacher_bridge_stage3, N = {pl.labels}): best split {share('as_fitted')}; "
          f"if teacher/student GRPO efficiency kappa_T/kappa_S doubles: {share('ratio_x2')}; "
          f"if it halves: {share('ratio_x0.5')}")
    print("\nin-sample fit:")
    print(fit.residuals()[["arm", "benchmark", "labels", "observed", "predicted", "lo", "hi"]]
          .to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    for w in pl.warnings:
        print(f"warning: {w}")
    return 0


def cmd_calibrate(args) -> int:
    import pandas as pd

    if args.curves is not None:
        return _calibrate_curves(args)
    for flag in ("runs", "problems"):
        if getattr(args, flag) is None:
            raise InputError(f"calibrate needs --{flag} (or --curves DIR with --scenario)")

    from theory.calibrate import calibrate
    from theory.scenario import scenario_to_toml
    from theory.tables import read_table

    runs = pd.concat([read_table(p, "runs") for p in args.runs], ignore_index=True)  # e.g. trained runs + pilot's
    problems = read_table(args.problems, "problems")
    scn = calibrate(runs, problems, student=args.student, teacher=args.teacher,
                    benchmark=args.benchmark, name=args.name, split=args.split)
    _write_atomic(args.out, scenario_to_toml(scn))
    print(f"wrote {args.out}: {scn.description}; {len(scn.fitted_inputs())} fitted inputs")
    from theory.fitting import fit_scenario
    for w in fit_scenario(scn).warnings:
        print(f"warning: {w}")
    return 0


def _calibrate_curves(args) -> int:
    from budget_planner.presets import load_scenario
    from theory.pilotfit import calibrated_scenario, fit_lengths, read_pilot
    from theory.scenario import scenario_to_toml

    if args.scenario is None:
        raise InputError("calibrate --curves needs --scenario (the scenario whose inputs the curves calibrate)")
    scn = load_scenario(args.scenario)
    curves, meta, config = read_pilot(args.curves)
    lf = fit_lengths(scn, curves, meta, config, source=f"pilot curves {args.curves}")
    cal = calibrated_scenario(scn, lf)
    _write_atomic(args.out, scenario_to_toml(cal))
    fitted = ", ".join(f"{p} {lf.value[p]:.4g} (sd {lf.sd_z[p]:.2f} on its scale)" for p in lf.paths)
    print(f"wrote {args.out}: {fitted}; {len(lf.rows)} curve points, rmse {lf.rmse:.1f} points")
    return 0


def cmd_crosscheck(args) -> int:
    from theory.crosscheck import SETS, crosscheck, format_crosscheck, read_predictions, read_runs

    if args.set not in SETS:
        raise InputError(f"--set must be one of {', '.join(SETS)}, got {args.set!r}")
    if args.json and Path(args.json).parent and not Path(args.json).parent.exists():
        raise InputError(f"output directory {str(Path(args.json).parent)!r} does not exist")
    runs = read_runs(args.runs)  # keeps the optional compute column
    preds = read_predictions(args.predictions)
    cc = crosscheck(runs, preds, set_name=args.set)
    print(format_crosscheck(cc))
    if args.json:
        _write_atomic(args.json, json.dumps(cc.to_dict(), indent=2, allow_nan=False, default=_json_default))
        print(f"wrote {args.json}")
    return 0


def _json_default(v):
    import numpy as np
    if isinstance(v, np.generic):
        return v.item()
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="budget-planner", description="Where should scarce verifiable labels go?",
                epilog="example:\n  budget-planner plan --scenario paper-qwen3-math --labels 5000\n"
                       "run `budget-planner COMMAND -h` for a command's flags")
    p.add_argument("--version", action="version", version=version_string("budget-planner"))
    sub = p.add_subparsers(dest="cmd", parser_class=_Parser, metavar="COMMAND")
    sp = sub.add_parser("plan", help="predict every arm and recommend an allocation",
                        description="Predict every arm's accuracy with a 95% interval and recommend where\n"
                                    "the labels go.",
                        epilog="example:\n  budget-planner plan --scenario paper-qwen3-math --labels 5000 "
                               "--json plan.json --plot plan.png")
    sp.add_argument("--scenario", required=True, help="preset name (see `scenarios`) or path to a scenario TOML")
    sp.add_argument("--labels", type=str, default=None, help="label budget N (default: the scenario's)")
    sp.add_argument("--benchmark", default=None, help="benchmark to plan for (default: the scenario's target)")
    sp.add_argument("--json", default=None, nargs="?", const="-", metavar="PATH",
                    type=lambda text: text if text == "-" else output_file(text),
                    help="write the plan as JSON here; without PATH (or '-') print it to stdout, the table to stderr")
    sp.add_argument("--plot", default=None, type=output_file, metavar="PATH",
                    help="write a PNG with accuracy vs split and vs N")
    sp.add_argument("--gpus", type=str, default=None, metavar="G",
                    help="GPUs the GPU-hours are priced on (default: 8, one node)")
    sp.add_argument("--gpu-hours", type=str, default=None, metavar="H",
                    help="GPU-hour budget: recommends the arm and stage lengths with the highest predicted accuracy "
                         "within H less the pilot's hours (validation counted); the table at the reference lengths "
                         "marks arms costing more as over budget")
    sp.add_argument("--pilot-gpu-hours", type=str, default="0", metavar="P",
                    help="GPU-hours the pilot spent (or will spend), taken out of --gpu-hours (default 0)")
    sp.add_argument("--costs", default=None, metavar="CSV",
                    help="GPU cost table (default: docs/results/gpu_costs.csv, else built-in defaults)")
    sp.add_argument("--next", action="store_true",
                    help="rank the pilot measurements by expected reduction in decision regret per pilot token")
    sp.set_defaults(func=cmd_plan)
    sc = sub.add_parser("scenarios", help="list the preset scenarios", description="List the preset scenarios.",
                        epilog="example:\n  budget-planner scenarios")
    sc.set_defaults(func=cmd_scenarios)
    se = sub.add_parser("explain", help="informativeness, C1/C2 checks and every input with its tag",
                        description="Informativeness per model, the C1/C2 conditions, and every input\n"
                                    "with its tag (measured/published/assumed) and source.",
                        epilog="example:\n  budget-planner explain --scenario weak-teacher")
    se.add_argument("--scenario", required=True, help="preset name (see `scenarios`) or path to a scenario TOML")
    se.add_argument("--labels", type=str, default=None, help="label budget N (default: the scenario's)")
    se.add_argument("--benchmark", default=None, help="benchmark to explain (default: the scenario's target)")
    se.set_defaults(func=cmd_explain)
    ca = sub.add_parser("calibrate", help="build a scenario from a pilot's run and problem tables",
                        description="Fit a scenario TOML from run tables (trained runs' accuracy: `reference-pipeline\n"
                                    "run --out`; KL_0: the pilot's pilot_runs.csv) and the pilot's problems.csv.",
                        epilog="example:\n  budget-planner calibrate --runs docs/examples/pilot_runs.csv "
                               "--problems docs/examples/pilot_problems.csv --out my.toml\n"
                               "  budget-planner plan --scenario my.toml\n"
                               "  budget-planner calibrate --scenario modes-k15 --curves docs/results/plateau_pilots/k15 "
                               "--out k15.toml")
    ca.add_argument("--runs", nargs="+", metavar="CSV",
                    help="run table CSV(s) (theory.tables schema): trained runs and the pilot's pilot_runs.csv")
    ca.add_argument("--problems", help="problem table CSV (theory.tables schema)")
    ca.add_argument("--curves", metavar="DIR",
                    help="instead of --runs/--problems: a `reference-pipeline pilot-curves` output; fits kappa and "
                         "the training-length inputs of --scenario to its curves (theory.pilotfit)")
    ca.add_argument("--scenario", help="with --curves: the scenario (preset name or TOML) to calibrate")
    ca.add_argument("--out", required=True, type=output_file, metavar="PATH", help="scenario TOML to write")
    ca.add_argument("--student", default="student", help="student's name in the problem table")
    ca.add_argument("--teacher", default="teacher", help="teacher's name in the problem table")
    ca.add_argument("--benchmark", default="pilot", help="name of the probe benchmark")
    ca.add_argument("--name", default="pilot", help="scenario name")
    ca.add_argument("--split", default="test", help="run-table split to calibrate on")
    ca.set_defaults(func=cmd_calibrate)
    cc = sub.add_parser("crosscheck", help="committed predictions vs measured runs: MAE, coverage, tau, regret",
                        description="Score committed predictions against measured runs: MAE, interval\n"
                                    "coverage, Kendall tau, split regret, decision regret, crossovers in N\n"
                                    "and compute, and the issue-23 aims (met / missed / not evaluable).",
                        epilog="example:\n  budget-planner crosscheck --runs docs/results/crosscheck_runs.csv "
                               "--predictions docs/results/crosscheck_predictions.csv --json cc.json")
    cc.add_argument("--runs", required=True,
                    help="run table CSV (rows metric accuracy, split test; optional column compute)")
    cc.add_argument("--predictions", required=True, help="predictions CSV (theory.crosscheck.PRED_COLUMNS)")
    cc.add_argument("--set", default="heldout",
                    help="which predictions to score: heldout, calibration or seen (outcomes known when predicting)")
    cc.add_argument("--json", default=None, type=output_file, metavar="PATH", help="write every figure as JSON here")
    cc.set_defaults(func=cmd_crosscheck)
    return p


def main(argv: list[str] | None = None) -> int:
    from theory.errors import cli_exit

    def body() -> int:
        args = build_parser().parse_args(argv)
        if args.cmd is None:
            raise InputError("give a command: plan, calibrate, scenarios, explain or crosscheck")
        if getattr(args, "labels", None) is not None:
            args.labels = _labels(args.labels)
        return args.func(args)
    try:
        return cli_exit(body)
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
