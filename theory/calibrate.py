"""A Scenario from a user's pilot, and back: `calibrate(run_table, problem_table)` turns the problem
table into measured start states (IRT, `theory.irt`) and the run table into observations, with generic
wide priors for the rates (see docs/theory.md and docs/examples/); `simulate_pilot` draws the two
tables from a known scenario, for recovery tests and the worked example. The fit itself is
`theory.fitting.fit_scenario`.
"""

from __future__ import annotations

import numpy as np

from theory import irt
from theory._lazy import LazyModule
from theory.arms import ARMS, BRIDGE_ARM, DIRECT_ARM, STAGES, Stage
from theory.errors import InputError
from theory.fitting import Fit, build_setting, from_z, predict_observations, to_z, values_from_z
from theory.scenario import Scenario

pd = LazyModule("pandas")

CEILING_PRIOR = 97.0  # percent given compliance, prior mean of a pilot's accuracy ceiling (sd 1 logit)
_PILOT_PRIORS = {  # generic priors for a pilot without stated ones (wide; tagged assumed)
    "kappa": (0.1, 1.5, "generic wide prior: GRPO moves pass@1 part of the way to pass@k per 1000 labels"),
    "rho": (0.6, 1.0, "generic prior: a smaller student absorbs a good part, not all, of a teacher's ability gap"),
    "phi_w": (0.5, 1.0, "generic prior: off-policy warmup suffers exposure bias and closes about half the gap"),
    "phi_o": (0.9, 1.0, "generic prior: on-policy distillation closes most of the gap inside its trust region"),
    "kl_c": (0.5, 1.0, "generic prior: OPD's trust region is a few tenths of a nat per token"),
    "gamma": (0.1, 1.5, "generic wide prior: a student that crosses a style gap of KL_0 nats/token loses "
                        "~0.1 ability logits per nat (0 = no displacement; docs/theory.md)"),
}


def _obs_labels(arm: str, t: int, s: int, stage3_by_t: dict[int, int]) -> tuple[int | None, int | None, str | None]:
    """(labels, teacher_labels, note) for one run-table configuration, via the registry's accounting."""
    a = ARMS[arm]
    if any(STAGES[s].replays for s in a.stages):
        # the registry leaves the replay's held-back labels unused (student_labels = 0): recover the
        # budget from a stage-3 run with the same teacher share, else assume the default half split
        if t in stage3_by_t:
            return stage3_by_t[t], t, None
        return 2 * t, t, f"replay_control with teacher_labels={t}: budget assumed {2 * t} (half split)"
    if a.splits_labels:
        return t + s, t, None
    acct_total = t + s
    if acct_total == 0:
        return None, None, None  # labels unused by this arm (raw teacher bridge)
    return acct_total, None, None


def _runs_hint(have: tuple[str, ...]) -> str:
    """The commands that make the trained runs calibrate lacks (the README's pilot -> calibrate sequence)."""
    arms = [a for a in (DIRECT_ARM, BRIDGE_ARM) if a not in have][: 2 - len(have)]
    runs = " and ".join(f"`reference-pipeline run --config CONFIG --arm {a} --out runs.csv`" for a in arms)
    return (f"calibrate needs trained runs of at least 2 arms: {runs}, then give both tables: "
            "`budget-planner calibrate --runs runs.csv PILOT/pilot_runs.csv ...`")


def posterior_priors(fit: Fit, prefixes: tuple[str, ...] = ("rates.", "inputs.k_explore", "benchmarks.")) -> dict:
    """path -> {value, tag, sd, why}: a fit's posterior (mean and sd of its draws, transformed scale) as
    the prior of the same input in another scenario -- a Gaussian approximation, stated in `why`.
    Only fitted inputs whose path starts with one of `prefixes` (per-benchmark entries keep their
    leaf name, e.g. 'benchmarks.eval_se')."""
    out = {}
    for i, path in enumerate(fit.names):
        if not path.startswith(prefixes):
            continue
        t = fit.scenario.get(path)
        z = fit.z_draws[:, i]
        key = "benchmarks." + path.split(".")[-1] if path.startswith("benchmarks.") else path
        out[key] = {"value": float(from_z(t, z.mean())), "tag": "assumed", "sd": float(max(z.std(), 1e-3)),
                    "why": f"posterior of scenario {fit.scenario.name!r} ({len(z)} draws, Gaussian on the "
                           f"transformed scale) used as the prior here"}
    return out


# problem-table model names written by `reference-pipeline pilot --self-distill`: the student after the
# FKL warmup / after warmup + OPD, both distilled from a frozen copy of itself
SELF_DISTILL_MODELS = ("self_distill_fkl_warmup", "self_distill_opd")


def stage_costs(fit: irt.IRTFit, student: str, src: str) -> dict:
    """rates.cost_fkl / cost_opd (ability logits) measured from a self-distillation pilot, if present:
    what each bridge stage costs the student when the teacher is the student itself (no gap to close,
    no style to cross: what is left is the optimiser's drift). sd = the two abilities' standard errors."""
    out = {}
    prev = student
    for name, m in (("cost_fkl", SELF_DISTILL_MODELS[0]), ("cost_opd", SELF_DISTILL_MODELS[1])):
        if m not in fit.models:
            break
        i, j = fit.models.index(prev), fit.models.index(m)
        ses = [fit.theta_se[k] if np.isfinite(fit.theta_se[k]) else 1.0 for k in (i, j)]
        out[name] = {"value": float(fit.theta[i] - fit.theta[j]), "tag": "measured",
                     "sd": float(np.clip(np.hypot(*ses), 1e-3, 10)),
                     "source": f"self-distillation pilot: ability of {prev!r} minus {m!r} ({src})"}
        prev = m
    return out


def calibrate(runs: pd.DataFrame, problems: pd.DataFrame, *, student: str = "student", teacher: str = "teacher",
              benchmark: str = "pilot", name: str = "pilot", split: str = "test", group_size: int = 8,
              seed: int = 0, rates_from: Fit | None = None, same_models: dict[str, str] | None = None) -> Scenario:
    """A Scenario from a pilot: problem table -> (theta, c, s_d) per model (measured); run table ->
    observations (mean accuracy over seeds per arm and label split, se from the seed spread).

    Refuses (InputError) with fewer than 2 distinct observations; the fit itself reports how many
    parameter directions the observations inform (`fit_scenario(...).warnings`).

    `rates_from`: an earlier calibration (same training recipe, another student/teacher pair) whose
    posterior becomes the prior of the rates, k_explore and eval_se (`posterior_priors`); then the run
    table may hold no accuracy rows at all (a pilot of the new pair's base models is enough: the
    prediction is the earlier world's dynamics applied to the new start states).
    `same_models` (with `rates_from`): role here -> role there, for a model that IS a checkpoint of the
    earlier calibration (e.g. {"student": "student", "teacher": "student"} when the new teacher is a copy
    of the old student): its start state is the earlier posterior, not this pilot's, so one checkpoint
    has one calibrated state in both scenarios (the pilot still supplies KL_0 and the other model).
    """
    from theory.scenario import parse_scenario
    from theory.tables import validate_problems, validate_runs

    runs = validate_runs(runs)
    problems = validate_problems(problems)
    present = set(problems["model"])
    sd_models = [m for m in SELF_DISTILL_MODELS if m in present]
    fit = irt.fit_problems(problems, models=[student, teacher, *sd_models])
    src = f"fitted from the pilot problem table ({fit.n_items} problems, IRT marginal ML)"
    acc = runs[(runs["metric"] == "accuracy") & (runs["split"] == split)]
    if acc.empty and rates_from is None:
        other = sorted(runs.loc[runs["metric"] == "accuracy", "split"].unique())
        held = ", ".join(sorted(runs["metric"].unique())) or "no rows"
        fix = (f"accuracy rows exist on split {', '.join(map(repr, other))}: give that split (--split)" if other
               else f"the table holds only {held}; " + _runs_hint(()))
        raise InputError(f"run table: no rows with metric 'accuracy' and split {split!r} to calibrate on; {fix}")
    if acc["world"].nunique() > 1:
        raise InputError(f"run table: several worlds ({', '.join(sorted(acc['world'].unique()))}); "
                         "give the rows of one student/teacher pair")
    grp = acc.groupby(["arm", "teacher_labels", "student_labels"])["value"]
    stats = grp.agg(["mean", "std", "count"]).reset_index()
    if len(stats) < 2 and rates_from is None:
        raise InputError(f"calibrate: need accuracy rows for at least 2 arms or label budgets; found {len(stats)} "
                         f"({', '.join(stats['arm'])}: too few to fit any rate); " + _runs_hint(tuple(stats["arm"])))
    notes: list[str] = []
    multi = stats[stats["count"] >= 2]
    borrowed = posterior_priors(rates_from) if rates_from is not None else {}
    if rates_from is not None and "benchmarks.eval_se" not in borrowed:
        # a measured (unfitted) seed spread carries over as measured
        t = rates_from.scenario.get(f"benchmarks.{rates_from.scenario.target_benchmark}.eval_se")
        borrowed["benchmarks.eval_se"] = {"value": t.value, "tag": t.tag, "source": f"{t.note} (scenario "
                                          f"{rates_from.scenario.name!r})"} if t.tag != "assumed" else \
            {"value": t.value, "tag": "assumed", "sd": t.sd, "why": t.note}
    if "benchmarks.eval_se" in borrowed and not len(multi):
        eval_se = borrowed["benchmarks.eval_se"]
    elif len(multi):
        pooled = float(np.sqrt(np.average(multi["std"] ** 2, weights=multi["count"] - 1)))
        eval_se = {"value": max(pooled, 0.1), "tag": "measured",
                   "source": f"pooled seed-to-seed std of {int(multi['count'].sum())} pilot runs"}
    else:
        eval_se = {"value": 1.0, "tag": "assumed", "sd": 0.7,
                   "why": "one seed per configuration: seed spread unknown, assumed 1 point"}
        notes.append("every configuration has one seed: standard errors assumed (1 point)")
    s3 = stats[stats["arm"].map(lambda n: Stage.STUDENT_GRPO in ARMS[n].stages and ARMS[n].splits_labels)]
    stage3_by_t = {int(r.teacher_labels): int(r.teacher_labels + r.student_labels) for r in s3.itertuples()}
    observations = []
    for r in stats.itertuples():
        labels, tl, note = _obs_labels(r.arm, int(r.teacher_labels), int(r.student_labels), stage3_by_t)
        if note:
            notes.append(note)
        se = float(r.std / np.sqrt(r.count)) if r.count >= 2 else float(eval_se["value"])
        o = {"arm": r.arm, "benchmark": benchmark, "value": float(r.mean), "se": max(se, 0.1), "tag": "measured",
             "source": f"pilot run table: mean of {int(r.count)} seed(s)"}
        if labels is not None:
            o["labels"] = int(labels)
        if tl is not None:
            o["teacher_labels"] = int(tl)
        observations.append(o)
    budget = max([o.get("labels", 0) for o in observations] + [1])
    budget_src = "largest label budget in the pilot runs"
    if not observations and rates_from is not None:  # nothing run with this pair: plan at the earlier budget
        budget, budget_src = rates_from.scenario.budget, f"budget of scenario {rates_from.scenario.name!r}"
    kl = runs[runs["metric"].isin(["kl0_per_token", "kl_to_teacher"])]
    if len(kl):
        # a teacher identical to the student measures KL_0 = 0 exactly; the input lives on a log scale
        kl0 = {"value": max(float(kl["value"].mean()), 1e-6), "tag": "measured",
               "source": f"mean of {len(kl)} run-table row(s) with metric kl0_per_token/kl_to_teacher"}
    else:
        kl0 = {"value": 0.3, "tag": "assumed", "sd": 1.0,
               "why": "not in the pilot tables (add metric 'kl0_per_token'); generic wide prior"}
        notes.append("KL_0 not measured: assumed (add run-table rows with metric 'kl0_per_token')")

    if rates_from is not None:
        notes.append(f"rates, k_explore and eval_se borrowed from scenario {rates_from.scenario.name!r}'s posterior")
    kls = runs[runs["metric"] == "kl0_compliant_per_token"]
    kl0_style = ({"value": max(float(kls["value"].mean()), 1e-6), "tag": "measured",
                  "source": f"mean of {len(kls)} run-table row(s) with metric kl0_compliant_per_token"}
                 if len(kls) else None)
    meas = irt.irt_measurements(fit, problems)

    same_models = dict(same_models or {})
    if same_models and rates_from is None:
        raise InputError("same_models needs rates_from (the calibration those models come from)")
    for role, src in same_models.items():
        if role not in ("student", "teacher") or src not in ("student", "teacher"):
            raise InputError(f"same_models: roles are 'student'/'teacher', got {role!r} -> {src!r}")

    def model(role: str, name_: str) -> dict:
        if role in same_models:
            src_role, src_bench = same_models[role], rates_from.scenario.target_benchmark
            got = posterior_priors(rates_from, (f"{src_role}.benchmarks.{src_bench}.",))
            leaf = {p.split(".")[-1]: v for p, v in got.items()}
            if {"accuracy_given_compliance", "compliance"} - set(leaf):
                raise InputError(f"same_models: {src_role}'s start state is not a fitted input of "
                                 f"scenario {rates_from.scenario.name!r}")
            return {"name": name_, "benchmarks": {benchmark: {k: leaf[k] for k in ("accuracy_given_compliance",
                                                                                  "compliance")}}}
        (a, a_sd), (c, c_sd) = meas[name_]
        return {"name": name_, "benchmarks": {benchmark: {
            "accuracy_given_compliance": {"value": a, "tag": "measured", "sd": a_sd, "source": src},
            "compliance": {"value": c, "tag": "measured", "sd": c_sd, "source": src},
            "ceiling": {"value": float(max(CEILING_PRIOR, (a + 100.0) / 2.0)), "tag": "assumed", "sd": 1.0,
                        "why": "generic wide prior: a few problems are mislabeled or beyond the model whatever "
                               "it is trained on; a pilot does not measure it"}}}}

    doc = {
        "name": name,
        "description": "; ".join([f"calibrated from a pilot ({len(observations)} observations)", *notes]),
        "target_benchmark": benchmark, "train_benchmark": benchmark, "seed": seed, "draws": 256,
        "inputs": {
            "budget": {"value": int(budget), "tag": "measured", "source": budget_src},
            "group_size": {"value": int(group_size), "tag": "assumed", "sd": 0.1, "why": "GRPO group size of the pilot"},
            "k_explore": borrowed.get("inputs.k_explore", {
                "value": float(group_size), "tag": "assumed", "sd": 0.5,
                "why": "RLVR raises pass@1 toward pass@k with k of the order of the group size (Yue et al. 2504.13837)"}),
            "kl0": kl0,
            **({"kl0_style": kl0_style} if kl0_style else {}),
        },
        "rates": {**{k: borrowed.get(f"rates.{k}", {"value": v, "tag": "assumed", "sd": sd, "why": why})
                     for k, (v, sd, why) in _PILOT_PRIORS.items()},
                  **{k.split(".", 1)[1]: v for k, v in borrowed.items() if k in ("rates.cost_fkl", "rates.cost_opd")},
                  "kappa_ratio": borrowed.get("rates.kappa_ratio", {
                      "value": 1.0, "tag": "assumed", "sd": 0.5,
                      "why": "teacher / student GRPO efficiency: tied at 1 (one recipe for both); observations "
                             "of both GRPO stages can move it"}),
                  **stage_costs(fit, student, src)},
        "benchmarks": {benchmark: {"s_d": {"value": float(fit.s_d), "tag": "measured", "source": src,
                                           "sd": float(np.clip(fit.s_d_se / fit.s_d, 1e-3, 10))},
                                   "eval_se": eval_se}},
        "student": model("student", student),
        "teacher": model("teacher", teacher),
        "observations": observations,
    }
    return parse_scenario(doc, source="calibrate()")


def simulate_pilot(truth: Scenario, configs, *, seeds: int, n_items: int, k: int, rng: np.random.Generator,
                   benchmark: str | None = None, world: str = "synthetic") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Pilot tables drawn from the model itself, at the truth scenario's stated input values.

    `configs`: iterable of (arm, labels, teacher_labels or None). Run rows get the model's accuracy
    plus N(0, eval_se^2) per seed; the problem table samples k answers per problem for the student
    and teacher (named as in `truth`). For calibration-recovery tests and docs/examples.
    """
    from theory.scenario import Observation

    bench = benchmark or truth.target_benchmark
    z_true = np.array([float(to_z(t)) for t in truth.fitted_inputs()])
    vals = values_from_z(truth, z_true[None, :])
    setting = build_setting(truth, vals, (bench,))
    b = setting.benchmarks.index(bench)
    obs = [Observation(arm=a, benchmark=bench, value=0.0, se=1.0, labels=n, teacher_labels=t, tag="measured",
                       note="simulated") for a, n, t in configs]
    mean_J = predict_observations(truth, z_true[None, :], obs)[0]
    se = float(vals[f"benchmarks.{bench}.eval_se"][0])
    rows = []
    for (arm, n, t), m in zip(configs, mean_J):
        acct = ARMS[arm].labels(n, t)
        for s in range(seeds):
            rows.append({"arm": arm, "seed": s, "world": world, "teacher_labels": acct.teacher,
                         "student_labels": acct.student,
                         "compute_tokens": ARMS[arm].total_compute_tokens(n, truth.compute, t),
                         "split": "test", "metric": "accuracy",
                         "value": float(np.clip(m + rng.normal(0, se), 0, 100))})
    if truth.has("inputs.kl0") and truth.get("inputs.kl0").tag == "measured":
        rows.append({"arm": "raw_teacher_bridge", "seed": 0, "world": world, "teacher_labels": 0, "student_labels": 0,
                     "compute_tokens": 0, "split": "probe", "metric": "kl0_per_token",
                     "value": truth.get("inputs.kl0").value})
    runs = pd.DataFrame(rows)
    theta_M = [float(setting.student.theta_B[0, b]), float(setting.teacher.theta_B[0, b])]
    c_M = [float(setting.student.c_B[0, b]), float(setting.teacher.c_B[0, b])]
    problems = irt.simulate_problems(theta_M, c_M, float(setting.s_d_B[0, b]), n_items=n_items, k=k, rng=rng,
                                     models=[truth.student, truth.teacher])
    return runs, problems
