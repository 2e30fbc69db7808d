#!/usr/bin/env python
"""Measured GPU costs per stage, appended row by row to a cost table (issue 13 item 5), <= 5 min on one H200.

    python scripts/gpu_costs.py                       # GPU: Qwen3-1.7B / 8B shapes, random init, bf16
    python scripts/gpu_costs.py --out docs/results/gpu_costs.csv   # only this way touches the committed table
    python scripts/gpu_costs.py --tiny --device cpu   # the same code path on a CPU, tiny shapes (a test runs it)
    python scripts/gpu_costs.py --rehearsal           # the real-scale rehearsal instead (scripts/gpu_rehearsal.py)

Default output: $OUT/gpu_costs.csv when $OUT is set, else /tmp/gpu_costs_<date>.csv (plus a .json sidecar
with every figure, the evaluation rate and the OPD 16x1024 peak, which have no row in the table schema).
Rows follow theory/costs.py (stage, phase, model, backend, engine, gpus, tokens_per_s, peak_gib, tag,
source) in the unit of theory.arms.ComputeModel: a GRPO step counts each sequence token once, an FKL/OPD
step twice (teacher scoring + student training), a rollout counts prompt + response tokens. Each row is
appended as soon as it is measured (a timeout keeps what finished). Shapes, model builders, fixed
rollouts and the bare anchors are scripts/gpu_check.py's, measured in this same run; every row's source
gives its ratio to its anchor.

Backends: "reference" (reference.stages) and "trl" (reference.trl_backend.UPDATE_RULES). TRL's
trainers generate inside the step (HF generate; no fixed rollouts), so a TRL step row's rate is the
step-phase tokens over the whole stage time (generation included): a lower bound on its step rate.
A part that would start past --budget-s is skipped with a printed reason (TRL runs last for that reason).
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
from pathlib import Path
import os
import sys
import time

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "scripts"), str(ROOT)]  # gpu_check, then the repo (reference, theory)

import gpu_check as gc  # noqa: E402  (also sets up tomllib on Python 3.10)
import torch  # noqa: E402

COLUMNS = ("stage", "phase", "model", "backend", "engine", "gpus", "tokens_per_s", "peak_gib", "tag", "source")
COMMITTED_GEN_TOK_S = 7642.0  # docs/scale.md 'Measured: one NVIDIA H200' (2026-11-26), 1.7B batch 64 static cache
COMMITTED_OPD_PEAK_GIB = 54.0  # docs/results/gpu_costs.csv opd step 8x1024
LORA_RANK = 16


class Costs:
    """The gpu_check run (`c`) plus the CSV appended to and the summary (`goals`, `extra`)."""

    def __init__(self, args):
        self.args = args
        ns = argparse.Namespace(tiny=args.tiny, device=args.device, out=str(Path(args.out).with_suffix(".json")),
                                skip=args.skip, budget_s=args.budget_s)
        self.c = gc.setup(ns)
        self.c.r["usable_vocab"] = None
        self.out = Path(args.out)
        self.date = _dt.date.today().isoformat()
        self.where = f"{self.c.r['device']}, torch {self.c.r['torch']}, transformers {self.c.r['transformers']}"
        self.goals: list[str] = []
        self.rows: list[dict] = []
        names = ("Qwen3-1.7B", "Qwen3-8B") if not args.tiny else ("tiny-student", "tiny-teacher")
        self.S, self.T = names

    def append(self, stage, phase, model, backend, engine, rate, peak, what, anchor_rate, anchor_name):
        ratio = rate / anchor_rate if anchor_rate else float("nan")
        src = (f"measured: scripts/gpu_costs.py{' --tiny' if self.args.tiny else ''} {self.date} on {self.where}; "
               f"{what}; random init; {ratio:.2f}x the bare anchor in the same run ({anchor_name}: "
               f"{anchor_rate:.0f} tok/s)")
        row = {"stage": stage, "phase": phase, "model": model, "backend": backend, "engine": engine, "gpus": 1,
               "tokens_per_s": f"{rate:.0f}" if rate >= 10 else f"{rate:.3g}",
               "peak_gib": "" if peak is None or peak != peak else f"{peak:.1f}", "tag": "measured", "source": src}
        new = not self.out.exists() or self.out.stat().st_size == 0
        self.out.parent.mkdir(parents=True, exist_ok=True)
        with self.out.open("a", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=COLUMNS)
            if new:
                w.writeheader()
            w.writerow(row)
        self.rows.append(row)
        self.c.log(f"row: {stage}/{phase} {backend} {engine}: {rate:.0f} tok/s ({ratio:.2f}x anchor) -> {self.out}")
        return ratio

    def goal(self, ok: bool, text: str) -> None:
        line = f"{'PASS' if ok else 'MISS'}: {text}" + (" [tiny: not a GPU figure]" if self.args.tiny else "")
        self.goals.append(line)
        print(line, flush=True)

    def part(self, name: str, fn) -> None:
        """gpu_check.section: budget, skip list, errors recorded (and printed) instead of ending the run."""
        before = time.perf_counter() - self.c.t_start
        if before > self.args.budget_s:
            print(f"SKIP {name}: past the {self.args.budget_s:.0f} s budget ({before:.0f} s used)", flush=True)
        gc.section(self.c, name, lambda c: fn())
        err = self.c.r.get(f"{name}_error")
        if err and not err.startswith("skipped"):
            print(f"SKIP/FAIL {name}: {err}", flush=True)


# --------------------------------------------------------------------------------------------------


def anchors_bridge(r) -> float:
    """Frozen teacher forward + student step, in counted tokens/s (2 passes per sequence token)."""
    return 2.0 / (1.0 / r["anchor_score_8b_tok_s"] + 1.0 / r["anchor_ft_1p7b_tok_s"])


def run(args) -> Costs:
    from reference import stages
    from reference.config import EvalConfig, FKLConfig, GRPOConfig, OPDConfig
    from reference.rollout import FixedRollout, HFRollout

    k = Costs(args)
    c, r = k.c, k.c.r
    backends = [b for b in args.backends.split(",") if b]
    train, ft8, gen = c.train, c.ft8, c.gen
    seq, seq8 = train["P"] + train["new"], ft8["T"]

    # 1. student anchors, rollouts, evaluation ------------------------------------------------------
    k.part("anchors_student", lambda: gc.measure_student_anchors(c))
    if "student" not in c.m:
        raise SystemExit("error: could not build the student: " + r.get("anchors_student_error", ""))
    k.part("anchor_gen", lambda: gc.measure_anchor_generate(c))

    def rollouts():
        gc.measure_rollouts(c)
        per = (gen["P"] + gen["N"]) / gen["N"]  # counted: prompt + response per generated token
        for stage in ("student_grpo", "opd"):
            engine = "hf_static_cache" if c.cuda else "hf"
            k.append(stage, "rollout", k.S, "reference", engine, r["rollout_tok_s"] * per,
                     None, f"HFRollout batch {gen['B']}, {gen['P']} prompt + {gen['N']} new, generated "
                     f"{r['rollout_tok_s']:.0f} tok/s x {per:.2f} (prompt + response counted)",
                     r["anchor_gen_plain_b64_tok_s"] * per, "plain HF generate, same shapes")
        k.goal(r["rollout_tok_s"] >= 2 * COMMITTED_GEN_TOK_S,
               f"rollouts batch {gen['B']}: {r['rollout_tok_s']:.0f} generated tok/s >= 2x committed "
               f"{COMMITTED_GEN_TOK_S:.0f} ({r['rollout_tok_s'] / COMMITTED_GEN_TOK_S:.2f}x)")
    k.part("rollouts", rollouts)

    def evaluation():
        ctx = gc.make_ctx(c.tok, r["usable_vocab"], HFRollout(c.tok, static_cache=c.cuda))
        probs = gc.problems(c.rng, gen["B"] // 4, c.n_tok, gen["P"])
        ecfg = EvalConfig(k=4, max_new_tokens=gen["N"], greedy=False, batch=gen["B"])
        from reference.evaluate import evaluate
        c.m["student"].eval()
        c.rng.manual_seed(1)
        t0 = time.perf_counter()
        evaluate(c.m["student"], probs, ctx, ecfg, extras=False)
        gc.sync(c.device)
        dt = time.perf_counter() - t0
        r["eval_tok_s"] = len(probs) * 4 * (gen["P"] + gen["N"]) / dt  # upper bound on lengths: counted as max
        k.extra_eval = (f"evaluation avg@4, {len(probs)} problems, {gen['P']}+{gen['N']}: {r['eval_tok_s']:.0f} tok/s "
                        "(first call, compile included; every sample counted at full length)")
        c.log(k.extra_eval)
    k.part("evaluation", evaluation)

    # 2. teacher: anchors, GRPO full and LoRA, FKL, OPD -------------------------------------------
    k.part("teacher", lambda: gc.measure_teacher_anchors(c))
    if "teacher" in c.m:
        k.part("anchor_ft_8b", lambda: gc.measure_teacher_ft(c))

        def teacher_grpo(lora: bool):
            def go():
                teacher = c.m["teacher"]
                if lora:
                    from reference.engines import apply_lora
                    teacher = apply_lora(teacher, rank=LORA_RANK)
                ctx = gc.make_ctx(c.tok, r["usable_vocab"], FixedRollout(c.tok, c.n_tok, c.tok.eos_token_id))
                try:
                    rate, peak, _ = gc.stage_grpo(teacher, ctx, gc.problems(c.rng, 3, c.n_tok, train["P"]),
                                                  group=ft8["B"], new=seq8 - train["P"], steps=2, lr=1e-6,
                                                  device=c.device, role="teacher")
                finally:
                    if lora:
                        c.m["teacher"] = teacher.merge_and_unload()
                k.append("teacher_grpo", "step", k.T, "reference", "single+lora" if lora else "single", rate, peak,
                         f"GRPO step {ft8['B']}x{seq8} (fixed rollouts){f', LoRA rank {LORA_RANK}' if lora else ''}",
                         r["anchor_ft_8b_tok_s"], f"8B full fine-tune {ft8['B']}x{ft8['T']}")
                if not lora:
                    k.goal(rate >= r["anchor_ft_8b_tok_s"], f"teacher GRPO {rate:.0f} >= 1.0x anchor "
                           f"({rate / r['anchor_ft_8b_tok_s']:.2f}x)")
            return go
        k.part("teacher_grpo", teacher_grpo(False))
        k.part("teacher_grpo_lora", teacher_grpo(True))
        from reference.models import freeze
        freeze(c.m["teacher"])
        if c.paper.engine.gradient_checkpointing:
            c.m["student"].gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

        def bridge(name, stage, fn, cfg_cls, B=None, row=True):
            def go():
                saved = dict(train)
                if B:
                    train["B"] = B
                try:
                    gc.measure_bridge(name, fn, cfg_cls)(c)
                finally:
                    train.update(saved)
                rate, peak = r[f"{name}_tok_s"], r[f"{name}_peak_gib"]
                anc = anchors_bridge(r)
                if row:
                    ratio = k.append(stage, "step", f"{k.S} + {k.T}", "reference", "single", rate, peak,
                                     f"{name} step {train['B']}x{seq} full-vocabulary KL, frozen teacher, "
                                     f"gradient checkpointing {c.paper.engine.gradient_checkpointing}",
                                     anc, "8B scoring + 1.7B fine-tune, 2 passes")
                    k.goal(ratio >= 1 / 1.1, f"{name} within 1.1x of teacher forward + student step ({ratio:.2f}x)")
            return go
        k.part("fkl", bridge("fkl", "fkl_warmup", stages.fkl_warmup, FKLConfig))
        k.part("opd", bridge("opd", "opd", stages.opd, OPDConfig))
        if "opd_peak_gib" in r and c.cuda:
            k.goal(r["opd_peak_gib"] <= COMMITTED_OPD_PEAK_GIB,
                   f"OPD {train['B']}x{seq} peak {r['opd_peak_gib']:.1f} <= {COMMITTED_OPD_PEAK_GIB} GiB")
        k.part("opd16", bridge("opd16", "opd", stages.opd, OPDConfig, B=2 * train["B"], row=False))
        if "opd16_peak_gib" in r and c.cuda:
            k.goal(r["opd16_peak_gib"] <= 80, f"OPD {2 * train['B']}x{seq} peak {r['opd16_peak_gib']:.1f} <= 80 GiB")
        if c.paper.engine.gradient_checkpointing:
            c.m["student"].gradient_checkpointing_disable()

    # 3. student GRPO (reference) ------------------------------------------------------------------
    def student_grpo_ref():
        ctx = gc.make_ctx(c.tok, r["usable_vocab"], FixedRollout(c.tok, c.n_tok, c.tok.eos_token_id))
        rate, peak, _ = gc.stage_grpo(c.m["student"], ctx, gc.problems(c.rng, 4, c.n_tok, train["P"]),
                                      group=train["B"], new=train["new"], steps=3, lr=1e-6, device=c.device,
                                      role="student")
        k.append("student_grpo", "step", k.S, "reference", "single", rate, peak,
                 f"GRPO step {train['B']}x{seq} (fixed rollouts)", r["anchor_ft_1p7b_tok_s"],
                 f"1.7B full fine-tune {c.ft['B']}x{c.ft['T']}")
        k.goal(rate >= r["anchor_ft_1p7b_tok_s"], f"student GRPO {rate:.0f} >= 1.0x anchor "
               f"({rate / r['anchor_ft_1p7b_tok_s']:.2f}x)")
    if "reference" in backends:
        k.part("student_grpo", student_grpo_ref)

    # 4. TRL: every stage, generation inside the trainer -------------------------------------------
    if "trl" in backends:
        try:
            from reference.trl_backend import UPDATE_RULES as trl
        except Exception as e:  # noqa: BLE001
            print(f"SKIP trl: cannot import the TRL backend ({type(e).__name__}: {e})", flush=True)
            trl = None
        if trl is not None:
            new_trl = args.trl_new or train["new"]

            def estimate_s(layers: int) -> float:
                """Two TRL steps, dominated by HF generate of `new_trl` tokens: per decode step, plain generate's
                latency at the anchor (batch-independent at these sizes: launch-bound), x layers, x 1.5 for
                the training passes and trainer overhead."""
                plain = r.get("anchor_gen_plain_b64_tok_s")
                if not plain:
                    return 0.0
                return 2 * new_trl * (gen["B"] / plain) * (layers / c.s_cfg.layers) * 1.5

            def trl_stage(name, stage, model_name, call, tokens, anchor, anchor_name, what, layers=None):
                def go():
                    est = estimate_s(layers or c.s_cfg.layers)
                    left = args.budget_s - (time.perf_counter() - c.t_start)
                    if est > left:
                        raise RuntimeError(f"skipped: TRL at these shapes needs ~{est:.0f} s (HF generate of "
                                           f"{new_trl} tokens inside each step), {left:.0f} s of the budget left "
                                           "(--budget-s, --trl-new, or --backends trl to run it alone)")
                    gc.reset_peak(c.device)
                    gc.sync(c.device)
                    t0 = time.perf_counter()
                    call()
                    gc.sync(c.device)
                    rate = tokens / (time.perf_counter() - t0)
                    k.append(stage, "step", model_name, "trl", "single", rate, gc.peak_gib(c.device),
                             what + "; generation inside the trainer (HF generate) included in the time",
                             anchor, anchor_name)
                return go

            def ctx_hf():
                return gc.make_ctx(c.tok, r["usable_vocab"], HFRollout(c.tok, static_cache=False))
            G = train["B"]
            gcfg = lambda g, role_new: GRPOConfig(lr=1e-6, group_size=g, prompts_per_step=1, epochs=1.0,  # noqa: E731
                                                  max_new_tokens=role_new, temperature=1.0)
            if "teacher" in c.m:
                tp = gc.problems(c.rng, 2, c.n_tok, train["P"])
                def trl_teacher():  # the bridge froze the teacher; its GRPO trains it
                    c.m["teacher"].requires_grad_(True)
                    c.m["teacher"].train()
                    try:
                        trl["grpo"](c.m["teacher"], tp, gcfg(ft8["B"], new_trl), ctx_hf(), role="teacher", seed=0)
                    finally:
                        freeze(c.m["teacher"])
                k.part("trl_teacher_grpo", trl_stage(
                    "trl_teacher_grpo", "teacher_grpo", k.T, trl_teacher,
                    2 * ft8["B"] * (train["P"] + new_trl), r.get("anchor_ft_8b_tok_s", float("nan")),
                    "8B full fine-tune", f"GRPO 2 steps x {ft8['B']}x{train['P'] + new_trl}", c.t_cfg.layers))
                bp = gc.problems(c.rng, 2 * G, c.n_tok, train["P"])
                for name, stage, fn, cls in (("trl_fkl", "fkl_warmup", trl["fkl"], FKLConfig),
                                             ("trl_opd", "opd", trl["opd"], OPDConfig)):
                    cfg = cls(lr=1e-6, steps=2, prompts_per_step=G, max_new_tokens=new_trl)
                    k.part(name, trl_stage(
                        name, stage, f"{k.S} + {k.T}",
                        lambda fn=fn, cfg=cfg: fn(c.m["student"], c.m["teacher"], bp, cfg, ctx_hf(), seed=0),
                        2 * 2 * G * (train["P"] + new_trl), anchors_bridge(r) if "anchor_score_8b_tok_s" in r
                        else float("nan"), "8B scoring + 1.7B fine-tune, 2 passes",
                        f"{stage} 2 steps x {G}x{train['P'] + new_trl}, full-vocabulary KL",
                        c.t_cfg.layers if stage == "fkl_warmup" else c.s_cfg.layers + c.t_cfg.layers // 4))
            c.m.pop("teacher", None)
            gc.free(c.device)
            sp = gc.problems(c.rng, 2, c.n_tok, train["P"])
            k.part("trl_student_grpo", trl_stage(
                "trl_student_grpo", "student_grpo", k.S,
                lambda: trl["grpo"](c.m["student"], sp, gcfg(G, new_trl), ctx_hf(), role="student", seed=0),
                2 * G * (train["P"] + new_trl), r["anchor_ft_1p7b_tok_s"], "1.7B full fine-tune",
                f"GRPO 2 steps x {G}x{train['P'] + new_trl}"))
    gc.save(c)
    return k


def committed_rates() -> dict:
    """(stage, phase) -> (tokens/s, tag) of the committed table's reference rows."""
    path = ROOT / "docs" / "results" / "gpu_costs.csv"
    if not path.is_file():
        return {}
    with path.open(newline="", encoding="utf-8") as f:
        return {(row["stage"], row["phase"]): (float(row["tokens_per_s"]), row["tag"])
                for row in csv.DictReader(f) if row["backend"] == "reference"}


def planner_check(path: Path) -> str:
    """Can theory/costs.py read the written table per backend? (Two rows per stage, phase and GPU count
    after the backend filter - e.g. teacher GRPO full and LoRA, or these rows appended beside the
    committed ones - need an engine filter or one row dropped before the planner uses the file.)"""
    from theory.costs import CostTable
    from theory.errors import InputError

    out = []
    for backend in ("reference", "trl"):
        try:
            n = len(CostTable.from_csv(path, backend=backend).rows)
            out.append(f"{backend}: {n} rows OK")
        except InputError as e:
            out.append(f"{backend}: {e}")
    return "planner read-back (theory.costs.CostTable.from_csv per backend): " + "; ".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true", help="tiny shapes (CPU run of the same code path)")
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    ap.add_argument("--out", default="",
                    help="CSV appended to (default: $OUT/gpu_costs.csv or /tmp/gpu_costs_<date>.csv)")
    ap.add_argument("--backends", default="reference,trl", help="comma-separated: reference, trl")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip (e.g. evaluation,opd16,trl_fkl)")
    ap.add_argument("--budget-s", type=float, default=270.0, help="skip parts that would start after this many seconds")
    ap.add_argument("--trl-new", type=int, default=0, help="new tokens per TRL rollout (default: the stage shape's)")
    ap.add_argument("--rehearsal", action="store_true",
                    help="run the one-GPU rehearsal of the real-scale path instead (scripts/gpu_rehearsal.py)")
    args = ap.parse_args(argv)
    args.skip = {x.strip() for x in args.skip.split(",") if x.strip()}
    if "reference" not in args.backends.split(","):  # the anchors still run: every ratio needs them
        args.skip |= {"rollouts", "evaluation", "teacher_grpo", "teacher_grpo_lora", "fkl", "opd", "opd16"}
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cpu" and not args.tiny:
        print("error: real shapes need a GPU; use --tiny on a CPU", file=sys.stderr)
        return 2
    if not args.out:
        base = Path(os.environ["OUT"]) if os.environ.get("OUT") else Path("/tmp")
        args.out = str(base / ("gpu_costs.csv" if os.environ.get("OUT") else f"gpu_costs_{_dt.date.today()}.csv"))
    if args.rehearsal:
        import gpu_rehearsal
        torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
        return gpu_rehearsal.main(args)
    if Path(args.out).resolve() == (ROOT / "docs" / "results" / "gpu_costs.csv").resolve():
        print(f"appending to the committed table {args.out} (asked for explicitly)", flush=True)
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    k = run(args)
    r = k.c.r
    print()
    print(f"GPU costs on {r['device']}{' [tiny]' if args.tiny else ''}: {len(k.rows)} rows appended to {args.out}")
    for row in k.rows:
        ratio = row["source"].split("; ")[-1].split(" the bare")[0]
        print(f"  {row['stage']:13s} {row['phase']:7s} {row['backend']:9s} {row['engine']:15s} "
              f"{row['tokens_per_s']:>9s} tok/s  peak {row['peak_gib'] or '-':>5s} GiB  {ratio}")
    if getattr(k, "extra_eval", None):
        print(f"  {k.extra_eval}")
    committed = committed_rates()
    if committed and not args.tiny:
        print("vs the committed table (docs/results/gpu_costs.csv, backend reference):")
        for row in k.rows:
            old = committed.get((row["stage"], row["phase"]))
            if old:
                print(f"  {row['stage']:13s} {row['phase']:7s} {row['backend']:9s} {row['engine']:15s} "
                      f"{float(row['tokens_per_s']) / old[0]:.2f}x the committed {old[0]:.0f} ({old[1]})")
    print(planner_check(Path(args.out)))
    print("goals:" if k.goals else "goals: none evaluated")
    for g in k.goals:
        print(f"  {g}")
    for key, v in r.items():
        if key.endswith("_error"):
            print(f"  not measured: {key[:-6]}: {v}")
    print(f"wall time {r.get('wall_s', 0):.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
