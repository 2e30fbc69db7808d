"""Final evaluation of a matched study: each arm's best configuration re-run on the protocol's evaluation
seeds (disjoint from the tuning seeds) on the test split.

`evaluate_label_matched` (every arm at the same N labels) stores each result in the arm study as user
attr `eval:<seed>` the moment it finishes, so an interrupted report resumes where it stopped;
`evaluate_compute_matched` adds the compute-matched view (`evalc:<seed>`: cheaper arms stretched to the
dearest arm's tokens per run).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
import json
import multiprocessing
import os

import numpy as np
import optuna
from optuna.trial import TrialState

from theory.errors import InputError
from tuning.harness import arm_study_name, check_matched, load_study, slot_trials
from tuning.interface import SPLITS_EVAL, ArmSource, Budget
from tuning.protocol import Protocol
from tuning.sources import load_arm_source
from tuning.storage import StorageHandle

EVAL_PREFIX = "eval:"
EVALC_PREFIX = "evalc:"  # compute-matched final evaluation (the cheaper arm stretched to the dearest's tokens)
EVALC_PLAN = "evalc_plan"
COMPUTE_TOL = 0.05  # compute-matched: each arm's per-run training tokens within +-5% of the dearest arm's


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    latest, _, _ = slot_trials(study)
    done = [t for t in latest.values() if t.state == TrialState.COMPLETE and t.value is not None]
    if not done:
        return None
    return max(done, key=lambda t: (t.value, -t.number))  # ties: the earlier trial


_SOURCE_CACHE: dict = {}


def _eval_one(source_name: str, options: dict, arm: str, params: dict, budget: Budget, seed: int) -> tuple[float, int]:
    key = (source_name, json.dumps(options, sort_keys=True))
    if key not in _SOURCE_CACHE:
        _SOURCE_CACHE[key] = load_arm_source(source_name, options)
    try:
        res = _SOURCE_CACHE[key].fn(arm, params=params, budget=budget, seed=seed, split=SPLITS_EVAL, report=None)
        acc = float(res.accuracy)
    except Exception as e:  # one line for the CLI; evaluations stored so far are kept
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise InputError(f"evaluation of {arm} seed {seed} failed: {type(e).__name__}: {msg} "
                         "(fix it and rerun report; finished evaluations are kept)") from None
    if not np.isfinite(acc) or not 0 <= acc <= 100:
        raise InputError(f"evaluation of {arm} seed {seed} returned accuracy {acc}")
    return acc, int(res.compute_tokens)


def _init_child() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def evaluate_label_matched(handle: StorageHandle, name: str, source: ArmSource | None = None, *, jobs: int = 1,
                           log: Callable[[str], None] | None = None) -> int:
    """Run the missing label-matched final evaluations; returns how many were run."""
    protocol = check_matched(handle, name)
    todo = []
    studies = {}
    for arm in protocol.arms:
        study = studies[arm] = load_study(handle, arm_study_name(name, arm))
        best = best_trial(study)
        if best is None:
            continue
        for seed in protocol.eval_seeds:
            done = study.user_attrs.get(f"{EVAL_PREFIX}{seed}")
            if done is None or done.get("trial") != best.number:
                todo.append((arm, best.number, dict(best.params), seed))
    if not todo:
        return 0
    if source is not None:
        _cache_source(protocol, source)

    def store(tag, acc, tokens):
        arm, number, seed = tag
        studies[arm].set_user_attr(f"{EVAL_PREFIX}{seed}", {"trial": number, "accuracy": acc,
                                                           "compute_tokens": tokens, "split": SPLITS_EVAL})
        if log:
            log(f"eval {arm} (trial #{number}) seed {seed}: {acc:.2f}% on {SPLITS_EVAL}")

    _run_jobs(protocol, [(arm, params, seed, (arm, number, seed)) for arm, number, params, seed in todo], jobs, store)
    return len(todo)


def _cache_source(protocol: Protocol, source: ArmSource) -> None:
    """Let in-process evaluations reuse a loaded arm source (spawned workers load their own)."""
    _SOURCE_CACHE[(protocol.arm_source, json.dumps(dict(protocol.arm_options), sort_keys=True))] = source


def _run_jobs(protocol: Protocol, jobs_: list[tuple], n_workers: int, on_done) -> None:
    """Run (arm, params, seed, tag) evaluations, in a spawn pool when n_workers > 1; on_done(tag, acc, tokens)."""
    budget = protocol.budget
    opts = dict(protocol.arm_options)
    if n_workers <= 1:
        for arm, params, seed, tag in jobs_:
            on_done(tag, *_eval_one(protocol.arm_source, opts, arm, params, budget, seed))
        return
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter per job: no forked torch threads
    with ProcessPoolExecutor(max_workers=n_workers, mp_context=ctx, initializer=_init_child) as pool:
        futures = {pool.submit(_eval_one, protocol.arm_source, opts, arm, params, budget, seed): tag
                   for arm, params, seed, tag in jobs_}
        for fut in as_completed(futures):
            on_done(futures[fut], *fut.result())


def evaluate_compute_matched(handle: StorageHandle, name: str, source: ArmSource | None = None, *, jobs: int = 1,
                             log: Callable[[str], None] | None = None) -> int:
    """The compute-matched view: every arm whose final configuration trains on fewer tokens than the
    dearest arm's is re-evaluated with its stage lengths stretched (the source's `scale_compute`) until
    its per-run tokens lie within +-5% of the dearest arm's; stored as `evalc:<seed>`. Resumable like
    `evaluate_label_matched`. Returns how many runs were made (0 when the source cannot scale compute, or
    its stages stop at their validation plateau, where longer caps buy no tokens)."""
    protocol = check_matched(handle, name)
    if source is None:
        source = load_arm_source(protocol.arm_source, dict(protocol.arm_options))
    scale = getattr(source.fn, "scale_compute", None)
    plateau = getattr(source.fn, "stops_at_plateau", None)
    if not callable(scale) or (callable(plateau) and plateau()):
        return 0
    _cache_source(protocol, source)
    studies = {arm: load_study(handle, arm_study_name(name, arm)) for arm in protocol.arms}
    cost = {}
    for arm, study in studies.items():
        best = best_trial(study)
        ev = [study.user_attrs.get(f"{EVAL_PREFIX}{s}") for s in protocol.eval_seeds]
        if best is None or any(e is None or e.get("trial") != best.number for e in ev):
            return 0  # the label-matched evaluations come first
        cost[arm] = (best, float(np.mean([e["compute_tokens"] for e in ev])))
    target = max(c for _, c in cost.values())
    runs = 0
    for arm, (best, own) in cost.items():
        if own >= (1 - COMPUTE_TOL) * target:
            continue  # the dearest arm (or one within tolerance) keeps its label-matched runs
        study = studies[arm]
        plan = study.user_attrs.get(EVALC_PLAN)
        if plan is None or plan.get("trial") != best.number or plan.get("target") != target:
            # calibrate the stretch on the first evaluation seed: tokens are close to linear in stage length
            factor, seed = target / own, protocol.eval_seeds[0]
            for _ in range(3):
                acc, tokens = _eval_one(protocol.arm_source, dict(protocol.arm_options), arm,
                                        scale(arm, dict(best.params), factor), protocol.budget, seed)
                runs += 1
                if abs(tokens / target - 1) <= COMPUTE_TOL:
                    break
                factor *= target / tokens
            plan = {"trial": best.number, "target": target, "factor": factor}
            study.set_user_attr(EVALC_PLAN, plan)
            study.set_user_attr(f"{EVALC_PREFIX}{seed}", {"trial": best.number, "factor": factor, "accuracy": acc,
                                                          "compute_tokens": tokens, "split": SPLITS_EVAL})
            if log:
                log(f"compute-matched {arm}: stage lengths x{factor:.2f} -> {tokens:,} tokens per run "
                    f"(target {target:,.0f})")
        params = scale(arm, dict(best.params), plan["factor"])
        todo = []
        for seed in protocol.eval_seeds:
            done = study.user_attrs.get(f"{EVALC_PREFIX}{seed}")
            if done is None or done.get("trial") != best.number or done.get("factor") != plan["factor"]:
                todo.append((arm, params, seed, seed))

        def on_done(seed, acc, tokens, _study=study, _arm=arm, _plan=plan, _n=best.number):
            _study.set_user_attr(f"{EVALC_PREFIX}{seed}", {"trial": _n, "factor": _plan["factor"], "accuracy": acc,
                                                           "compute_tokens": tokens, "split": SPLITS_EVAL})
            if log:
                log(f"compute-matched eval {_arm} x{_plan['factor']:.2f} seed {seed}: {acc:.2f}% ({tokens:,} tokens)")
        _run_jobs(protocol, todo, jobs, on_done)
        runs += len(todo)
    return runs
