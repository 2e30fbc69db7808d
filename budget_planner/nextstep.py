"""`budget-planner plan --next`: which pilot measurement to take next, and a check of that advice on
simulated worlds.

The measurements (`pilot_measurements`) and their value for the arm decision (`next_measurement`) use
the planner's predictive distribution (budget_planner/planner.py) and the preposterior analysis of
theory/voi.py. `simulate_worlds` draws true worlds from an independent posterior sample, optionally
with structural perturbations the planner does not model, and compares measuring what `--next` names
with measuring at random under the same pilot token budget.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from budget_planner.planner import ARMS, PlanSetup, plan_setup, best_split, check_budget, config_key, predict_arm
from budget_planner.presets import load_scenario
from theory.arms import STAGES, STUDENT, TEACHER, candidate_arms
from theory.dynamics import predict_arms
from theory.scenario import Scenario

PILOT_SHARE = 0.1  # a pilot run uses a tenth of the budget's labels (at least 100, at most the budget)


def plateau_lengths(setup: PlanSetup, n: int) -> dict:
    """{arm: its plateau's stage lengths} on the label x compute plane (budget_planner.compute): the
    decision `--next` informs is between arms trained to their plateaus."""
    from budget_planner.compute import arm_compute, evaluate_grid
    from theory.costs import CostTable, DEFAULT_GPUS
    tl = best_split(setup, n)
    # the frontiers alone (compute_plan would also price an exchange rate, which --next does not read)
    grid, ev = evaluate_grid(setup, n, tl, CostTable.default(), DEFAULT_GPUS)
    return {a: dict(arm_compute(setup, a, n, tl, *ev[a], grid).plateau.lengths) for a in ev}


def _candidate_values(setup: PlanSetup, n: int, lengths: dict | None = None, t_best: int | None = None
                      ) -> tuple[list[str], dict, np.ndarray]:
    """Distinct candidate experiments at budget n (split arms at the plan's split), each trained to its
    plateau (`lengths`, default `plateau_lengths`; `t_best`, default the plan's split): representative
    arm names, their config keys, and value_DA = model draw + structural error (what each would reach)."""
    t_best = best_split(setup, n) if t_best is None else t_best
    lengths = plateau_lengths(setup, n) if lengths is None else lengths
    keys = {}
    for name in candidate_arms():
        arm = ARMS[name]
        key = config_key(arm, arm.labels(n, t_best if arm.splits_labels else None))
        if key not in keys.values():
            keys[name] = key
    exps = list(keys)
    acc_ED = [predict_arms(setup.setting, [ARMS[e]], n, t_best, lengths[e])[0, ..., setup.b][1:] for e in exps]
    return exps, keys, np.stack([acc_ED[i] + setup.delta(keys[e]) for i, e in enumerate(exps)], -1)


def pilot_measurements(setup: PlanSetup, n: int):
    """The measurements a pilot can take, each with its predicted outcome per draw and its token cost:
    the base student's and teacher's pass rates on the benchmark, KL_0, a short direct GRPO run and a
    short RL-teacher bridge run at a tenth of the budget (evaluated once)."""
    from theory.voi import Measurement

    scn, w, b = setup.fit.scenario, setup.setting, setup.b
    cm = scn.compute
    bench = setup.bench
    n_p = int(scn.get(f"benchmarks.{bench}.n_problems").value) if scn.has(f"benchmarks.{bench}.n_problems") else 500
    k = int(scn.get(f"benchmarks.{bench}.samples").value) if scn.has(f"benchmarks.{bench}.samples") else 8
    eval_tokens = n_p * k * cm.sequence_tokens
    se = float(np.median(setup.vals[f"benchmarks.{bench}.eval_se"][1:]))
    out = []
    for role, pol in (("student", w.student), ("teacher", w.teacher)):
        acc = np.asarray(w.accuracy(pol))[1:, b]
        sd = float(100.0 * np.sqrt(max(np.mean(acc) / 100 * (1 - np.mean(acc) / 100), 1e-4) / (n_p * k)))
        out.append(Measurement(f"{role}_pass_rate", f"evaluate the base {role} ({n_p} problems x {k} samples)",
                               eval_tokens, acc, sd))
    kl = np.log(np.asarray(setup.vals["inputs.kl0"], dtype=float)[1:])
    out.append(Measurement("kl0", "KL_0 of the teacher on 256 student rollouts (10% relative error)",
                           256 * cm.sequence_tokens * 2, kl, 0.1))
    labels = min(n, max(100, int(round(PILOT_SHARE * n))))
    if labels > 0:
        for arm_name, what in (("direct_grpo", "a short direct GRPO run"),
                               ("rl_teacher_bridge", "a short RL-teacher bridge run")):
            arm = ARMS[arm_name]
            acc = predict_arm(w, arm, labels)[..., b][1:] + setup.delta(config_key(arm, arm.labels(labels)))
            out.append(Measurement(f"{arm_name}_pilot", f"{what} with {labels} labels, one seed, evaluated",
                                   arm.total_compute_tokens(labels, cm) + eval_tokens, acc, se))
        out += curve_extensions(setup, labels, se)
    return out


CURVE_LENGTHS = (4.0, 16.0)  # a pilot curve extended to this many times the reference GRPO length


def curve_extensions(setup: PlanSetup, labels: int, se: float):
    """Extending a pilot curve (`reference-pipeline pilot-curves`) of direct GRPO or the RL bridge at
    `labels` labels to m x the reference GRPO length (the bridge's units to min(m / 4, 2)): its
    validation point there, what it costs in training and validation tokens (the plateau protocol's
    21 points of V x k samples per stage). These inform kappa and the training-length inputs, the
    measurements the plain pilot (one reference-length run) cannot."""
    from budget_planner.compute import VALIDATION
    from theory.voi import Measurement

    w, b, cm = setup.setting, setup.b, setup.fit.scenario.compute
    e0 = float(cm.label_passes)
    val = VALIDATION["problems"] * VALIDATION["samples"] * VALIDATION["points"] * cm.sequence_tokens
    se_val = max(se, 100.0 * 0.5 / np.sqrt(VALIDATION["problems"]))  # V problems: a coarser read than the test
    out = []
    for arm_name in ("direct_grpo", "rl_teacher_bridge"):
        arm = ARMS[arm_name]
        for m in CURVE_LENGTHS:
            lengths = {s.value: (m * e0 if STAGES[s].update == "grpo" else min(m / 4.0, 2.0)) for s in arm.stages}
            acc = (predict_arms(w, [arm], labels, None, lengths)[0, ..., b][1:]
                   + setup.delta(config_key(arm, arm.labels(labels))))
            cost = arm.total_compute_tokens(labels, cm, lengths=lengths) + val * len(arm.stages)
            out.append(Measurement(f"{arm_name}_curve_x{m:g}", f"a {arm_name} pilot curve at {labels} labels to "
                                   f"{m:g}x the reference GRPO length, one seed", cost, acc, se_val))
    return out


def next_measurement(scenario: Scenario | str, labels: int | None = None, *, benchmark: str | None = None,
                     seed: int = 0) -> dict:
    """Rank the pilot measurements by expected reduction in decision regret per pilot token
    (theory/voi.py): {"expected_regret": points, "rows": [...best first], "best": name or None}."""
    from theory.voi import expected_regret, rank

    scn = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
    n = scn.budget if labels is None else check_budget(labels)
    setup = plan_setup(scn, benchmark)
    exps, _, value_DA = _candidate_values(setup, n)
    rows = rank(value_DA, pilot_measurements(setup, n), np.random.default_rng([scn.seed, 99, seed]))
    best = rows[0]["measurement"] if rows and rows[0]["regret_reduction"] > 0 else None
    return {"expected_regret": expected_regret(value_DA), "experiments": exps, "rows": rows, "best": best}


_BRIDGE_STAGES = {s.value for s, spec in STAGES.items() if spec.scorer == TEACHER}
_STUDENT_GRPO_STAGES = {s.value for s, spec in STAGES.items() if spec.trains == STUDENT and spec.update == "grpo"}


def _perturbation(key: tuple, bias: dict) -> float:
    """Structural error the planner does not model: one shift shared by every experiment that runs a
    bridge, one shared by every experiment that runs student GRPO (correlated across arms, unlike the
    planner's independent per-experiment delta)."""
    if key == ():
        return 0.0
    stages = set(key[0])
    shift = bias["bridge"] if stages & _BRIDGE_STAGES else 0.0
    return shift + (bias["student_grpo"] if stages & _STUDENT_GRPO_STAGES else 0.0)


def simulate_worlds(scenario: Scenario | str, labels: int | None = None, *, n_worlds: int = 256,
                    budget_tokens: float | None = None, perturb_share: float = 0.5, perturb_sd: float = 2.0,
                    seed: int = 0) -> dict:
    """Measure-what-`--next`-names vs measure-at-random, paired over simulated worlds.

    Belief: the scenario's posterior draws. Truths: draws of an independent calibration of the same
    scenario (another seed), each with its own structural error, and in a share `perturb_share` of the
    worlds a structural perturbation (`_perturbation`, sd `perturb_sd` points) the planner does not model.
    Each policy takes measurements (no repeats) while the next fits in `budget_tokens` (default: all of
    them): the VOI policy takes the best expected regret reduction per token under its current belief
    (the cheapest affordable one when none is expected to help), the random policy a uniformly random
    affordable one; after each, both decide with their updated belief. "Faster" = a lower regret
    averaged over the tokens spent (the area under regret vs pilot tokens, / budget). Returns the mean
    areas, the paired difference random - VOI with a 95% bootstrap interval, and the final regrets."""
    from theory.voi import evsi, update

    scn = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
    n = scn.budget if labels is None else check_budget(labels)
    draws = max(scn.draws, n_worlds)
    belief = plan_setup(replace(scn, draws=draws), None)
    truth = plan_setup(replace(scn, draws=draws, seed=scn.seed + 1000), None)
    lengths, t_best = plateau_lengths(belief, n), best_split(belief, n)
    exps, keys, value_DA = _candidate_values(belief, n, lengths, t_best)
    ms_b = pilot_measurements(belief, n)
    ms_t = {m.name: m for m in pilot_measurements(truth, n)}
    # true experiment values: the truth draw's model + its structural error (same experiments, trained to
    # the lengths the belief's plan would train them to)
    true_exps, _, true_DA = _candidate_values(truth, n, lengths, t_best)
    assert true_exps == exps
    pilot_keys = {}
    n_p = min(n, max(100, int(round(PILOT_SHARE * n))))
    for m in ms_b:
        arm = next((a for a in ("direct_grpo", "rl_teacher_bridge") if m.name.startswith(a + "_")), None)
        if arm is not None:  # a pilot run or curve: the perturbation of the experiment it runs
            pilot_keys[m.name] = config_key(ARMS[arm], ARMS[arm].labels(n_p))
    budget = float(sum(m.cost_tokens for m in ms_b) if budget_tokens is None else budget_tokens)
    rng = np.random.default_rng([scn.seed, 4242, seed])
    out = {"voi": [], "random": [], "none": [], "perturbed": [], "first_voi": [], "first_random": [],
           "final_voi": [], "final_random": []}
    for i in range(n_worlds):
        perturbed = rng.random() < perturb_share
        bias = {"bridge": rng.normal(0, perturb_sd), "student_grpo": rng.normal(0, perturb_sd)} if perturbed \
            else {"bridge": 0.0, "student_grpo": 0.0}
        true_A = true_DA[i] + np.array([_perturbation(keys[e], bias) for e in exps])
        y_true = {m.name: float(ms_t[m.name].y_D[i]) + (_perturbation(pilot_keys[m.name], bias)
                                                        if m.name in pilot_keys else 0.0) for m in ms_b}
        noise = {m.name: rng.standard_normal() * m.noise_sd for m in ms_b}  # same noise for both policies
        w0 = np.full(draws, 1.0 / draws)
        out["none"].append(float(true_A.max() - true_A[int(np.argmax(w0 @ value_DA))]))
        for policy in ("voi", "random"):
            w, spent, taken = w0.copy(), 0.0, []
            prng = np.random.default_rng([seed, i, 7])
            regret = out["none"][-1]
            area = 0.0  # regret integrated over the tokens spent (a step function), then / budget
            while True:
                options = [m for m in ms_b if m.name not in taken and spent + m.cost_tokens <= budget]
                if not options:
                    break
                if policy == "voi":
                    score = [evsi(value_DA, m, prng, w) / m.cost_tokens for m in options]
                    m = options[int(np.argmax(score))] if max(score) > 0 else min(options, key=lambda x: x.cost_tokens)
                else:
                    m = options[int(prng.integers(len(options)))]
                taken.append(m.name)
                area += regret * m.cost_tokens
                spent += m.cost_tokens
                w = update(w, m, y_true[m.name] + noise[m.name])
                regret = float(true_A.max() - true_A[int(np.argmax(w @ value_DA))])
            area += regret * (budget - spent)
            out[policy].append(area / budget)
            out[f"final_{policy}"].append(regret)
            out[f"first_{policy}"].append(taken[0] if taken else None)
        out["perturbed"].append(bool(perturbed))
    diff = np.array(out["random"]) - np.array(out["voi"])
    boot = np.random.default_rng([seed, 5]).integers(0, len(diff), (4000, len(diff)))
    lo, hi = np.percentile(diff[boot].mean(1), [2.5, 97.5])
    pert = np.array(out["perturbed"])
    return {"n_worlds": n_worlds, "budget_tokens": budget, "labels": n,
            "regret_none": float(np.mean(out["none"])), "regret_voi": float(np.mean(out["voi"])),
            "regret_random": float(np.mean(out["random"])), "diff_mean": float(diff.mean()),
            "final_regret_voi": float(np.mean(out["final_voi"])),
            "final_regret_random": float(np.mean(out["final_random"])),
            "diff_ci": [float(lo), float(hi)], "diff_mean_perturbed": float(diff[pert].mean()) if pert.any() else None,
            "n_perturbed": int(pert.sum()), "first_voi": out["first_voi"], "first_random": out["first_random"]}
