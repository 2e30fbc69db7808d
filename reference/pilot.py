"""Pilot measurement: what the planner needs, measured from a config's BASE models on a probe set.

    problems.csv    per-problem counts (theory.tables problem schema), models "student" / "teacher":
                    k answers per problem at the config's [eval] sampling, scored by the run's own
                    evaluation (reference.evaluate: correct = verified by reference.rewards,
                    compliant = has a well-formed final \\boxed{} answer)
    pass_at_k.csv   model, k, pass_at_k (%): the unbiased estimator from per-problem counts, k = 1..K
    summary.csv     per model: accuracy (avg@K), compliance, accuracy given compliance, pass@1, pass@K
    pilot_runs.csv  run-table rows (arm raw_teacher_bridge, seed 0, labels 0/0, split "probe"):
                    kl0_per_token        mean per-token KL(student || teacher), full vocabulary, on
                                         student rollouts at the OPD stage's sampling (what OPD sees
                                         at its start)
                    kl0_compliant_per_token  the same on the protocol-following student rollouts only
                                         (the style gap without protocol habits; theory: kl0_style)
                    kl_forward_per_token mean per-token KL(teacher || student) on teacher rollouts at
                                         the FKL warmup's sampling (what the warmup sees)
    pilot.json      all of the above, the parameters and per-part timings

Self-distillation (`self_distill=True`, needs the student): the per-stage cost of the bridge with no
teacher signal at all. The frozen teacher is an exact copy of the student's BASE weights, a second
copy is trained by the config's bridge stages exactly as the pipeline runs them (stage_runner.run_stage:
reference.stages.fkl_warmup, then reference.stages.opd, with [fkl]/[opd], the world's unlabeled
prompts and build_models' StageContext), and the probe is sampled as for the base student after FKL
(model "self_distill_fkl_warmup") and after FKL then OPD ("self_distill_opd"). Their accuracy minus the
base student's is the stage cost the planner lacks (docs/log.md, the third world's entry).

One code path for the toy world and Qwen3: models are built by reference.assemble.build_models (toy
assets or hub ids / local directories), rollouts go through the config's Rollout backend, the KL
through reference.rollout.completion_logits and reference.losses as the OPD / FKL stages compute it.

Sharded (`engine.launcher = "accelerate"` under `accelerate launch`): every rank builds the models,
the probe problems are split across ranks by reference.evaluate (fixed chunks seeded by index, results
gathered: the per-problem counts do not depend on the number of ranks), the self-distillation stages
train on their shards, and rank 0 alone writes parts and tables (the others wait at a barrier).
One plain process (`launcher = "single"`) runs exactly as before.

Resume: each part (one model's samples, each KL) is saved under the work directory keyed by a hash
of everything it depends on; a rerun loads finished parts instead of recomputing them. Outputs are
written atomically (temp file + rename). Randomness: each part reseeds torch from (seed, part) inside
a forked RNG, so a part gives the same numbers whether it runs alone or after the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import json
from pathlib import Path
import time

import numpy as np
import pandas as pd

from reference.config import Config, load_config
from reference.seeds import seed_from, seeded
from theory.errors import InputError

MODELS = ("student", "teacher")
# self-distillation: problem-table model name -> the bridge stages run on the student copy before sampling
SELF_DISTILL_STAGES = {"self_distill_fkl_warmup": ("fkl_warmup",), "self_distill_opd": ("fkl_warmup", "opd")}
SPLITS = ("val", "test", "labeled")  # labeled problems (the budget N) are allowed but are not a probe set
PILOT_ARM = "raw_teacher_bridge"  # the run-table convention for base-model pilot rows (calibrate.simulate_pilot)


@dataclass(frozen=True)
class PilotConfig:
    """What to measure. `problems` = 0 takes the whole split."""

    k: int = 8
    problems: int = 200
    split: str = "val"
    seed: int = 0
    models: tuple[str, ...] = MODELS
    self_distill: bool = False  # also run the bridge stages with teacher = the student's copy (module doc)

    def __post_init__(self) -> None:
        for name in ("k", "problems", "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise InputError(f"pilot: {name} must be an integer, got {v!r}")
        if self.k < 1:
            raise InputError(f"pilot: k must be >= 1, got {self.k}")
        if self.seed < 0:
            raise InputError(f"pilot: seed must be >= 0, got {self.seed}")
        if self.problems < 0:
            raise InputError(f"pilot: problems must be >= 0 (0 = the whole split), got {self.problems}")
        if self.split not in SPLITS:
            raise InputError(f"pilot: split must be one of {', '.join(SPLITS)}, got {self.split!r}")
        if not self.models:
            raise InputError("pilot: models must name at least one of student, teacher")
        unknown = [m for m in self.models if m not in MODELS]
        if unknown:
            raise InputError(f"pilot: unknown model {unknown[0]!r}; use student and/or teacher")
        if len(set(self.models)) != len(self.models):
            raise InputError(f"pilot: model listed twice in {','.join(self.models)!r}")
        if not isinstance(self.self_distill, bool):
            raise InputError(f"pilot: self_distill must be true or false, got {self.self_distill!r}")
        if self.self_distill and "student" not in self.models:
            raise InputError("pilot: --self-distill needs the student in --models (its teacher is the student's copy)")


def parse_models(spec: str) -> tuple[str, ...]:
    names = tuple(s.strip() for s in spec.split(",") if s.strip())
    if not names:
        raise InputError("--models: give student, teacher or student,teacher")
    return names


# ------------------------------------------------------------------------------------------------
# Pure estimators (numpy only)
# ------------------------------------------------------------------------------------------------

def pass_at_k_unbiased(n_P: np.ndarray, c_P: np.ndarray, k: int) -> float:
    """Mean over problems of 1 - C(n-c, k) / C(n, k) (Chen et al. 2021, arXiv 2107.03374), in percent.

    n_P samples and c_P correct ones per problem; needs k <= n for every problem. Computed as
    1 - prod_{i=n-c+1}^{n} (1 - k/i), which never forms a large binomial coefficient.
    """
    n_P = np.asarray(n_P, dtype=int)
    c_P = np.asarray(c_P, dtype=int)
    if k < 1 or (n_P < k).any():
        raise InputError(f"pass@{k} needs k in [1, samples per problem]")
    out = np.empty(len(n_P))
    for i, (n, c) in enumerate(zip(n_P, c_P)):
        if n - c < k:
            out[i] = 1.0
        else:
            out[i] = 1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1))
    return 100.0 * float(out.mean())


def pass_at_k_table(problems: pd.DataFrame) -> pd.DataFrame:
    """model, k, pass_at_k (%) for k = 1..min samples, from a problem table."""
    rows = []
    for model, g in problems.groupby("model", sort=False):
        for k in range(1, int(g["k"].min()) + 1):
            rows.append({"model": model, "k": k, "pass_at_k": pass_at_k_unbiased(g["k"], g["correct"], k)})
    return pd.DataFrame(rows, columns=["model", "k", "pass_at_k"])


def summary_table(problems: pd.DataFrame) -> pd.DataFrame:
    """Per model: accuracy (avg@k), compliance, accuracy given compliance, pass@1 and pass@k (percent)."""
    rows = []
    for model, g in problems.groupby("model", sort=False):
        k = int(g["k"].min())
        n, c, comp = g["k"].sum(), g["correct"].sum(), g["compliant"].sum()
        rows.append({"model": model, "problems": len(g), "k": k,
                     "accuracy": 100.0 * c / n, "compliance": 100.0 * comp / n,
                     "accuracy_given_compliance": 100.0 * c / comp if comp else 0.0,
                     "pass_at_1": pass_at_k_unbiased(g["k"], g["correct"], 1),
                     "pass_at_k": pass_at_k_unbiased(g["k"], g["correct"], k)})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------
# Result
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PilotResult:
    config: str  # config source
    world: str
    pilot: PilotConfig
    problems: pd.DataFrame = field(repr=False)  # theory.tables problem schema
    pass_at_k: pd.DataFrame = field(repr=False)
    summary: pd.DataFrame = field(repr=False)
    runs: pd.DataFrame | None = field(repr=False)  # theory.tables run schema; None without both models
    kl: dict[str, dict]  # metric -> {"value", "tokens", "sequences"}
    parts: dict[str, dict]  # part -> {"seconds", "cached"}
    seconds: float

    def to_frame(self) -> pd.DataFrame:
        return self.summary.copy()

    self_distill: dict[str, dict] = field(default_factory=dict)  # stage -> steps, tokens, seconds, first/last log

    def to_dict(self) -> dict:
        pilot = {"k": self.pilot.k, "problems": self.pilot.problems, "split": self.pilot.split,
                 "seed": self.pilot.seed, "models": list(self.pilot.models)}
        if self.pilot.self_distill:  # only then: a pilot without the flag writes the fields it always wrote
            pilot["self_distill"] = True
        d = {"config": self.config, "world": self.world, "pilot": pilot,
             "summary": self.summary.to_dict("records"), "pass_at_k": self.pass_at_k.to_dict("records"),
             "kl": self.kl, "parts": self.parts, "seconds": self.seconds}
        if self.pilot.self_distill:
            d["self_distill_stages"] = self.self_distill
        return d


# ------------------------------------------------------------------------------------------------
# Measurement (torch lives below this line)
# ------------------------------------------------------------------------------------------------

def _part_key(cfg: Config, pc: PilotConfig, n_problems: int, part: str) -> str:
    # [eval] drives the samples, [opd]/[fkl] the KL rollouts, the rest the models and problems
    h = cfg.section_hash(("world", "student", "teacher", "eval", "fkl", "opd", "engine"),
                         extra={"k": pc.k, "problems": n_problems, "split": pc.split, "seed": pc.seed,
                                "part": part})
    return f"{part}_{h}"


def _part_name(seed: int, part: str) -> str:
    """The name a part's seeds derive from (reference.seeds.seed_from)."""
    return f"pilot/{seed}/{part}"


def _self_distill_record(model, result) -> dict:
    """What a self-distillation stage's checkpoint records of its run."""
    return {"steps": result.steps, "tokens": result.tokens, "seconds": result.seconds,
            "first": result.log[0] if result.log else {}, "last": result.log[-1] if result.log else {}}


def _write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _write_csv_atomic(df: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    df.to_csv(tmp, index=False)
    tmp.replace(path)


def mean_token_kl(sampler, scorer_student, scorer_teacher, prompts: list[str], ctx, *, temperature: float,
                  max_new_tokens: int, direction: str, batch: int, only_compliant: bool = False) -> dict:
    """Mean per-token KL over all completion tokens (EOS included, as OPD's mask) of one rollout per
    prompt drawn from `sampler`. direction "reverse": KL(student || teacher) (losses.reverse_kl_BT,
    the OPD loss); "forward": KL(teacher || student) (losses.forward_kl_BT, the FKL warmup loss).
    Returns {"value", "tokens", "sequences"}; scoring goes in micro-batches of ctx.micro_batch rows.
    `only_compliant`: average over the rollouts that follow the answer protocol only (ctx.is_compliant),
    so a protocol habit the teacher lacks (e.g. the student's `ANS` answers) does not count as a style gap.
    """
    import torch

    from reference import losses
    from reference.rollout import RolloutBatch, completion_logits

    kl_fn = {"reverse": losses.reverse_kl_BT, "forward": losses.forward_kl_BT}[direction]
    total, count, kept = 0.0, 0.0, 0
    with torch.no_grad():
        for i in range(0, len(prompts), batch):
            ro = ctx.rollout.generate(sampler, prompts[i:i + batch], n=1, temperature=temperature,
                                      max_new_tokens=max_new_tokens)
            B = ro.completion_BT.shape[0]
            mb = ctx.micro_batch if 0 < ctx.micro_batch < B else B
            for s in range(0, B, mb):
                sub = ro if mb == B else RolloutBatch(
                    ro.input_ids_BL[s:s + mb], ro.attention_BL[s:s + mb], ro.prompt_len,
                    ro.completion_BT[s:s + mb], ro.mask_BT[s:s + mb], ro.texts[s:s + mb], ro.n)
                s_logits = completion_logits(scorer_student, sub, ctx.vocab_size)
                t_logits = completion_logits(scorer_teacher, sub, ctx.vocab_size)
                kl_BT = kl_fn(s_logits, t_logits)
                mask_BT = sub.mask_BT
                if only_compliant:
                    keep_B = torch.tensor([bool(ctx.is_compliant(t)) for t in sub.texts], device=mask_BT.device)
                    mask_BT = mask_BT * keep_B[:, None].to(mask_BT.dtype)
                    kept += int(keep_B.sum())
                total += float((kl_BT * mask_BT).sum())
                count += float(mask_BT.sum())
    out = {"value": total / max(count, 1.0), "tokens": int(count), "sequences": len(prompts)}
    if only_compliant:
        out["compliant_sequences"] = kept
    return out


def self_distill_pair(student):
    """(frozen teacher, trainable student): two exact copies of `student`'s current (base) weights, so
    every KL between them is 0 before training. `student` itself is left untouched."""
    import copy

    teacher = copy.deepcopy(student)
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher, copy.deepcopy(student)


def _stage_weights_key(cfg: Config, pc: PilotConfig, stages: tuple[str, ...]) -> str:
    # the trained copy depends on the world (prompts), the student (the copy and the teacher), the
    # stage sections, the engine and the seed; not on [eval], the probe or the teacher section
    h = cfg.section_hash(("world", "student", "fkl", "opd", "engine"),
                         extra={"seed": pc.seed, "self_distill": list(stages)})
    return f"self_distill_{'_'.join(stages)}_{h}"


def run_pilot(config: str | Path | Config, pc: PilotConfig, out: str | Path, *,
              workdir: str | Path | None = None, progress=print) -> PilotResult:
    """Measure `pc` on the base models of `config`; write the tables into `out` (see module doc)."""
    cfg = config if isinstance(config, Config) else load_config(config)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {str(out)!r} exists and is not a directory")
    work = Path(workdir) if workdir is not None else out / ".work"
    t_start = time.perf_counter()
    log = progress or (lambda *_: None)

    import torch

    from reference.evaluate import evaluate
    from reference.assemble import build_models, build_world, engine_for
    from theory.tables import validate_problems, validate_runs

    torch.set_num_threads(cfg.engine.threads)
    both = set(pc.models) == set(MODELS)
    engine = engine_for(cfg)  # None: one plain process; else this rank's share of the probe
    main = engine is None or engine.is_main

    def barrier() -> None:
        if engine is not None:
            engine.accelerator.wait_for_everyone()

    models = build_models(cfg, need_teacher="teacher" in pc.models, engine=engine)
    world = build_world(cfg, models.tokenizer)
    available = world.split(pc.split)
    if pc.problems > len(available):
        raise InputError(f"--problems {pc.problems} exceeds the {len(available)} problems of split "
                         f"{pc.split!r} in {cfg.source or 'the config'}")
    probe = available[: pc.problems] if pc.problems else available
    if not probe:
        raise InputError(f"split {pc.split!r} of {cfg.source or 'the config'} has no problems")
    by_role = {"student": models.student, "teacher": models.teacher}
    for m in by_role.values():
        if m is not None:
            m.eval()
    parts: dict[str, dict] = {}

    def cached_part(part: str, suffix: str, compute, save, load):
        path = work / f"{_part_key(cfg, pc, len(probe), part)}.{suffix}"
        if path.is_file():
            parts[part] = {"seconds": 0.0, "cached": True}
            log(f"  {part}: loaded from {path}")
            return load(path)
        t0 = time.perf_counter()
        with seeded(cfg.engine.device, seed_from(_part_name(pc.seed, part))):
            value = compute()
        parts[part] = {"seconds": time.perf_counter() - t0, "cached": False}
        if main:
            save(value, path)
            log(f"  {part}: {parts[part]['seconds']:.1f} s")
        barrier()  # every rank sees the same parts as finished before it checks the next
        return value

    tables = []
    for role in pc.models:
        def sample(role=role):
            res = evaluate(by_role[role], probe, models.ctx, cfg.eval, k=pc.k, extras=False)
            return res.problems.assign(model=role)
        tables.append(cached_part(f"samples_{role}", "csv", sample, _write_csv_atomic,
                                  lambda p: pd.read_csv(p, dtype={"problem_id": str, "model": str})))
    sd_info: dict[str, dict] = {}
    if pc.self_distill:
        tables += _self_distill_parts(cfg, pc, models, world, probe, work, cached_part, sd_info, log,
                                      engine=engine)
    problems = validate_problems(pd.concat(tables, ignore_index=True))

    kl: dict[str, dict] = {}
    runs = None
    if both:
        prompts = [p.prompt for p in probe]
        batch = max(1, cfg.eval.batch)
        specs = {
            "kl0_per_token": (models.student, "reverse", cfg.opd.temperature, cfg.opd.max_new_tokens),
            "kl_forward_per_token": (models.teacher, "forward", cfg.fkl.temperature, cfg.fkl.max_new_tokens),
            # the style part of KL_0: the same reverse KL on protocol-following student rollouts only
            "kl0_compliant_per_token": (models.student, "reverse", cfg.opd.temperature, cfg.opd.max_new_tokens),
        }
        for metric, (sampler, direction, temp, max_new) in specs.items():
            def measure(sampler=sampler, direction=direction, temp=temp, max_new=max_new, metric=metric):
                return mean_token_kl(sampler, models.student, models.teacher, prompts, models.ctx,
                                     temperature=temp, max_new_tokens=max_new, direction=direction, batch=batch,
                                     only_compliant=metric == "kl0_compliant_per_token")
            kl[metric] = cached_part(metric, "json", measure,
                                     lambda v, p: _write_text_atomic(p, json.dumps(v)),
                                     lambda p: json.loads(p.read_text()))
        runs = validate_runs(pd.DataFrame([
            {"arm": PILOT_ARM, "seed": 0, "world": cfg.world.name, "teacher_labels": 0, "student_labels": 0,
             "compute_tokens": 0, "split": "probe", "metric": metric, "value": float(v["value"])}
            for metric, v in kl.items()]))

    pak = pass_at_k_table(problems)
    summ = summary_table(problems)
    for metric, v in kl.items():
        summ[metric] = float(v["value"])
    res = PilotResult(config=cfg.source, world=cfg.world.name, pilot=pc, problems=problems, pass_at_k=pak,
                      summary=summ, runs=runs, kl=kl, parts=parts, seconds=time.perf_counter() - t_start,
                      self_distill=sd_info)
    from theory.tables import write_table
    if main:
        write_table(problems, out / "problems.csv", "problems")
        _write_csv_atomic(pak, out / "pass_at_k.csv")
        _write_csv_atomic(summ, out / "summary.csv")
        if runs is not None:
            write_table(runs, out / "pilot_runs.csv", "runs")
        _write_text_atomic(out / "pilot.json", json.dumps(res.to_dict(), indent=1, default=float))
    barrier()
    return res


def format_pilot(res: PilotResult) -> str:
    pc = res.pilot
    w = max(8, *(len(m) for m in res.summary["model"]))  # 8 = the base models' column, as before
    lines = [f"pilot: {res.config} ({res.world}), split {pc.split}, "
             f"{len(res.problems) // res.problems['model'].nunique()} problems, k = {pc.k}, seed {pc.seed}",
             f"{'model':<{w}} {'acc(avg@k)':>10} {'compl.':>7} {'acc|compl':>9} {'pass@1':>7} {f'pass@{pc.k}':>7}"]
    for r in res.summary.itertuples():
        lines.append(f"{r.model:<{w}} {r.accuracy:10.1f} {r.compliance:7.1f} {r.accuracy_given_compliance:9.1f} "
                     f"{r.pass_at_1:7.1f} {r.pass_at_k:7.1f}")
    curve = res.pass_at_k.pivot(index="k", columns="model", values="pass_at_k")
    lines.append("pass@k (%): " + "; ".join(
        f"{m} " + " ".join(f"{v:.1f}" for v in curve[m].to_numpy()) for m in curve.columns))
    for metric, v in res.kl.items():
        lines.append(f"{metric} = {v['value']:.4f} nats/token ({v['tokens']} tokens, {v['sequences']} rollouts)")
    if not res.kl:
        lines.append("KL not measured (needs both models): no pilot_runs.csv")
    for stage, info in res.self_distill.items():
        first, last = info.get("first") or {}, info.get("last") or {}
        kl_name = "forward_kl" if "forward_kl" in last else "kl_to_teacher"
        lines.append(f"self-distill {stage}: {info['steps']} steps, {info['seconds']:.1f} s"
                     + (" (loaded)" if info.get("cached") else "")
                     + (f", {kl_name} {first.get(kl_name, float('nan')):.4f} -> {last.get(kl_name, float('nan')):.4f}"
                        if last else ""))
    fresh = sum(1 for p in res.parts.values() if not p["cached"])
    lines.append(f"wall {res.seconds:.1f} s ({fresh} part(s) computed, {len(res.parts) - fresh} loaded)")
    return "\n".join(lines)


def _self_distill_parts(cfg: Config, pc: PilotConfig, models, world, probe, work: Path, cached_part,
                        sd_info: dict, log, engine=None) -> list[pd.DataFrame]:
    """The self-distillation models' problem tables (see the module doc). Samples are cached parts like
    the base models'; the trained copy after each stage is cached too (reference.checkpoint, keyed by
    _stage_weights_key), so a rerun that lacks only the OPD samples does not retrain FKL. Training is
    skipped entirely when every sample part is already done."""
    from reference import checkpoint as ckpt
    from reference.assemble import Models
    from reference.evaluate import evaluate
    from reference.stage_runner import Hooks, Slot, TrainingSetup, run_stage
    from theory.arms import LabelAccount, Stage

    teacher, student = self_distill_pair(models.student)
    m = Models(student=student, teacher=teacher, ctx=models.ctx, tokenizer=models.tokenizer)
    setup = TrainingSetup(cfg, m, world, LabelAccount(teacher=0, student=0, unused=0))  # the bridge reads no labels
    state: tuple[str, ...] = ()  # stages already applied to `student`

    def advance(stages: tuple[str, ...]) -> None:
        nonlocal state
        for i in range(len(state), len(stages)):
            done = stages[: i + 1]
            wdir = work / _stage_weights_key(cfg, pc, done)
            # torch (sampling) and data order seeded from --seed and the stage prefix, as the pipeline
            # seeds a stage from its key; the caller's RNG state is left as it was
            seed_key = _part_name(pc.seed, f"self_distill/{'/'.join(done)}")
            slot = Slot(wdir, seed_key, meta={"self_distill": list(done), "seed": pc.seed, "config_hash": cfg.hash()})
            finished = run_stage(Stage(done[-1]), setup, slot, Hooks(_self_distill_record))
            if engine is not None:  # rank 0 has written the checkpoint before any rank checks the next
                engine.accelerator.wait_for_everyone()
            sd_info[done[-1]] = dict(finished.info, cached=finished.cached)
            log(f"  self-distill {done[-1]}: " + (f"weights loaded from {wdir}" if finished.cached
                                                  else f"{finished.info['seconds']:.1f} s"))
            state = done
        student.eval()

    tables = []
    for name, stages in SELF_DISTILL_STAGES.items():
        def sample(name=name, stages=stages):
            advance(stages)
            res = evaluate(student, probe, models.ctx, cfg.eval, k=pc.k, extras=False)  # as the base student
            return res.problems.assign(model=name)
        tables.append(cached_part(f"samples_{name}", "csv", sample, _write_csv_atomic,
                                  lambda p: pd.read_csv(p, dtype={"problem_id": str, "model": str})))
    for i, stage in enumerate(SELF_DISTILL_STAGES["self_distill_opd"]):  # stages a rerun never needed to touch
        wdir = work / _stage_weights_key(cfg, pc, SELF_DISTILL_STAGES["self_distill_opd"][: i + 1])
        if stage not in sd_info and (wdir / "meta.json").is_file():
            sd_info[stage] = dict(ckpt.read_meta(wdir)["result"], cached=True)
    return tables
