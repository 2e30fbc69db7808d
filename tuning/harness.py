"""Matched tuning: per-arm studies with a fixed number of budget slots, claimed atomically.

Design (docs/tuning.md has the reasons):
- One optuna study per arm, `<name>.<arm>`, plus a trial-less header study `<name>` that holds the
  protocol. Per-arm studies give each arm its own TPE model (a model fit on one arm's history must not
  steer another's) and an ordinary optuna study per arm for optuna-dashboard.
- The per-arm cap is made of slots: when an arm study is created, exactly `trials_per_arm` WAITING
  trials are enqueued, slot k carrying tuning seed k. A worker claims a slot by moving one WAITING
  trial to RUNNING with `storage.set_trial_state_values`, the compare-and-set optuna itself uses to pop
  enqueued trials (a row update in an RDB, a serialised log entry in a journal): two racing workers
  cannot both win a slot, and no trial is ever created beyond the slots, so no interleaving of workers
  can overshoot the cap. Empty-parameter slots are sampled by TPE when claimed.
- A killed worker's slot comes back: heartbeat/lease -> FAIL -> re-enqueued with the same params,
  slot and seed (tuning.storage). A slot's state is its latest attempt's state.
- A trial that raises, returns NaN/inf, exceeds the time limit or the compute cap is FAIL with the
  reason in the user attr `fail_reason`, and its slot is spent like any other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
import math
import os
import socket
import time
import warnings

import optuna
from optuna.exceptions import DuplicatedStudyError, UpdateFinishedTrialError
from optuna.trial import TrialState

from theory.errors import InputError
from tuning.interface import SPLITS_TUNE, ArmSource, ParamSpec
from tuning.protocol import PROTOCOL_ATTR, Protocol, describe_differences
from tuning.storage import Heartbeat, StorageHandle, fail_stale_trials

SLOT_ATTR = "slot"
SEED_ATTR = "tuning_seed"
REASON_ATTR = "fail_reason"
READY_ATTR = "s2d_slots_ready"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)

optuna.logging.set_verbosity(optuna.logging.WARNING)


class TrialTimeout(Exception):
    """Raised inside an arm (from `report`) when the trial's time limit has passed."""


def arm_study_name(name: str, arm: str) -> str:
    return f"{name}.{arm}"


def load_study(handle: StorageHandle, name: str) -> optuna.Study:
    """The stored study `name` (Optuna raises KeyError when there is none)."""
    return optuna.load_study(study_name=name, storage=handle.storage)


def _study_names(handle: StorageHandle) -> set[str]:
    return {s.study_name for s in optuna.get_all_study_summaries(handle.storage, include_best_trial=False)}


def load_protocol(handle: StorageHandle, name: str) -> Protocol:
    if name not in _study_names(handle):
        raise InputError(f"study {name!r} does not exist in storage {handle.url!r}")
    stored = _wait_attr(load_study(handle, name), PROTOCOL_ATTR)
    if stored is None:
        raise InputError(f"study {name!r} is not a matched-tuning study (no {PROTOCOL_ATTR} attr)")
    return Protocol.from_dict(stored)


def _wait_attr(study: optuna.Study, key: str, timeout_s: float = 10.0):
    """A study created by another worker a moment ago may not carry its attrs yet."""
    end = time.monotonic() + timeout_s
    while True:
        value = study.user_attrs.get(key)
        if value is not None or time.monotonic() > end:
            return value
        time.sleep(0.1)


def _check_same(stored: dict | None, protocol: Protocol, what: str) -> None:
    diffs = describe_differences(stored or {}, protocol.to_dict())
    if diffs:
        raise InputError(f"{what} exists with a different protocol: " + "; ".join(diffs)
                         + " (resume it unchanged, or start a new --study)")


def create_or_check(handle: StorageHandle, name: str, protocol: Protocol) -> None:
    """Create the header and arm studies with their slots, or check an existing study is identical."""
    try:
        header = optuna.create_study(study_name=name, storage=handle.storage, direction="maximize")
        header.set_user_attr(PROTOCOL_ATTR, protocol.to_dict())
    except DuplicatedStudyError:
        _check_same(_wait_attr(load_study(handle, name), PROTOCOL_ATTR), protocol, f"study {name!r}")
    for arm in protocol.arms:
        _ensure_arm_study(handle, name, arm, protocol)


def _ensure_arm_study(handle: StorageHandle, name: str, arm: str, protocol: Protocol) -> None:
    sname = arm_study_name(name, arm)
    try:
        study = optuna.create_study(study_name=sname, storage=handle.storage, direction="maximize")
        study.set_user_attr(PROTOCOL_ATTR, protocol.to_dict())
        study.set_user_attr("arm", arm)
        created = True
    except DuplicatedStudyError:
        study = load_study(handle, sname)
        _check_same(_wait_attr(study, PROTOCOL_ATTR), protocol, f"arm study {sname!r}")
        created = False
    if not created and _wait_attr(study, READY_ATTR) is not None:
        return
    # The creator enqueues the slots. A study left without the ready flag (its creator died while
    # enqueueing) is completed here: only missing slot numbers are added.
    have = {t.user_attrs.get(SLOT_ATTR) for t in study.get_trials(deepcopy=False)}
    space = protocol.search_space[arm]
    defaults = {p: s.get("default") for p, s in space.items()}
    use_defaults = protocol.enqueue_defaults and all(v is not None for v in defaults.values())
    for k in range(protocol.trials_per_arm):
        if k in have:
            continue
        params = defaults if (use_defaults and k == 0) else {}
        study.enqueue_trial(params, user_attrs={SLOT_ATTR: k, SEED_ATTR: protocol.tuning_seeds[k]})
    study.set_user_attr(READY_ATTR, True)


@dataclass(frozen=True)
class ArmStatus:
    arm: str
    slots: int
    complete: int
    pruned: int
    failed: int
    running: int
    waiting: int
    retried: int  # attempts superseded by a retry (a killed worker), not counted as trials
    foreign: int  # trials without a slot (e.g. added by hand); ignored

    @property
    def finished(self) -> int:
        return self.complete + self.pruned + self.failed


def slot_trials(study: optuna.Study) -> tuple[dict[int, optuna.trial.FrozenTrial], int, int]:
    """-> ({slot: latest attempt}, superseded attempts, foreign trials)."""
    latest: dict[int, optuna.trial.FrozenTrial] = {}
    attempts = foreign = 0
    for t in study.get_trials(deepcopy=False):
        slot = t.user_attrs.get(SLOT_ATTR)
        if slot is None:
            foreign += 1
            continue
        attempts += 1
        if slot not in latest or t.number > latest[slot].number:
            latest[slot] = t
    return latest, attempts - len(latest), foreign


def arm_status(handle: StorageHandle, name: str, arm: str) -> ArmStatus:
    latest, retried, foreign = slot_trials(load_study(handle, arm_study_name(name, arm)))
    states = [t.state for t in latest.values()]
    return ArmStatus(arm, len(latest), states.count(TrialState.COMPLETE), states.count(TrialState.PRUNED),
                     states.count(TrialState.FAIL), states.count(TrialState.RUNNING),
                     states.count(TrialState.WAITING), retried, foreign)


def check_matched(handle: StorageHandle, name: str) -> Protocol:
    """The rules checked before any comparison. Raises InputError naming what is unequal."""
    protocol = load_protocol(handle, name)
    names = _study_names(handle)
    problems = []
    for arm in protocol.arms:
        sname = arm_study_name(name, arm)
        if sname not in names:
            problems.append(f"arm study {sname!r} is missing")
            continue
        diffs = describe_differences(load_study(handle, sname).user_attrs.get(PROTOCOL_ATTR) or {}, protocol.to_dict())
        if diffs:
            problems.append(f"arm {arm} protocol differs from the header: {'; '.join(diffs)}")
            continue
        st = arm_status(handle, name, arm)
        if st.slots != protocol.trials_per_arm:
            problems.append(f"arm {arm} has {st.slots} slots, the protocol says {protocol.trials_per_arm}")
        if st.finished != protocol.trials_per_arm:
            problems.append(f"arm {arm} has {st.finished}/{protocol.trials_per_arm} finished trials "
                            f"({st.running} running, {st.waiting} waiting)")
    if problems:
        raise InputError(f"study {name!r} is not a matched comparison yet: " + "; ".join(problems)
                         + " (run `matched-tuning resume` to finish it)")
    return protocol


def make_sampler(protocol: Protocol, slot: int) -> optuna.samplers.BaseSampler:
    # A per-slot seed: workers that claim slots at the same time do not draw the same start-up params,
    # and arm A's slot k and arm B's slot k use the same sampler seed.
    s = protocol.sampler
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return optuna.samplers.TPESampler(seed=int(s["seed"]) * 1000 + slot,
                                          n_startup_trials=int(s["n_startup_trials"]),
                                          multivariate=bool(s["multivariate"]),
                                          constant_liar=bool(s["constant_liar"]))


def make_pruner(protocol: Protocol) -> optuna.pruners.BasePruner:
    p = protocol.pruner
    if p["name"] == "MedianPruner":
        return optuna.pruners.MedianPruner(n_startup_trials=int(p["n_startup_trials"]),
                                           n_warmup_steps=int(p["n_warmup_steps"]))
    return optuna.pruners.NopPruner()


def _claim(study: optuna.Study) -> int | None:
    """Atomically move one WAITING slot to RUNNING; the lowest slot first. -> trial_id or None."""
    waiting = sorted(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)),
                     key=lambda t: t.user_attrs.get(SLOT_ATTR, 1 << 30))
    for t in waiting:
        if t.user_attrs.get(SLOT_ATTR) is None:
            continue  # not ours (e.g. enqueued by hand): never run it under a budget slot
        try:
            if study._storage.set_trial_state_values(t._trial_id, state=TrialState.RUNNING):
                return t._trial_id
        except UpdateFinishedTrialError:
            continue
    return None


@dataclass(frozen=True)
class TrialOutcome:
    arm: str
    number: int
    slot: int
    state: str
    value: float | None
    reason: str | None
    elapsed_s: float
    harness_s: float  # harness time in this trial: sampling, storage, heartbeat start, report/prune calls


def _first_line(e: BaseException, limit: int = 300) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {msg}"[:limit]


class TrialFailed(Exception):
    """The arm ran but its result cannot count as a score (NaN, over the compute cap, wrong split...)."""


def objective(trial, arm: str, protocol: Protocol, source: ArmSource, *, seed: int,
              timing: dict | None = None) -> tuple[float, object]:
    """One trial: suggest the arm's params, run it on the validation split, check the result.

    Works with any optuna trial (a stored `Trial` or a `FixedTrial` in unit tests). Returns
    (validation accuracy in percent, the arm's result); raises optuna.TrialPruned, TrialTimeout or
    TrialFailed, or whatever the arm raised. `timing["report_s"]` accumulates the time spent in
    `report` (storage writes and pruning decisions: harness overhead paid inside the arm's run).
    """
    timing = {} if timing is None else timing
    timing.setdefault("report_s", 0.0)
    params = {n: ParamSpec.parse(s, f"{arm}.{n}").suggest(trial, n) for n, s in protocol.search_space[arm].items()}
    deadline = time.monotonic() + protocol.time_limit_s

    def report(step: int, val: float) -> None:
        t0 = time.perf_counter()
        try:
            val = float(val)
            if not math.isfinite(val):
                raise TrialFailed(f"intermediate value at step {step} is {val}")
            trial.report(val, int(step))
            if time.monotonic() > deadline:
                raise TrialTimeout(f"time limit {protocol.time_limit_s:g}s exceeded at step {step}")
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step}")
        finally:
            timing["report_s"] += time.perf_counter() - t0

    t0 = time.perf_counter()
    result = source.fn(arm, params=params, budget=protocol.budget, seed=seed, split=SPLITS_TUNE, report=report)
    tokens = getattr(result, "compute_tokens", None)
    if tokens is not None:
        trial.set_user_attr("compute_tokens", int(tokens))
    value, reason = _check_result(result, protocol, time.perf_counter() - t0)
    if reason is not None:
        raise (TrialTimeout(reason) if reason.startswith("timeout") else TrialFailed(reason))
    return value, result


def run_trial(handle: StorageHandle, study: optuna.Study, trial_id: int, arm: str, protocol: Protocol,
              source: ArmSource) -> TrialOutcome:
    t_start = time.perf_counter()
    frozen = study._storage.get_trial(trial_id)
    slot, seed = int(frozen.user_attrs[SLOT_ATTR]), int(frozen.user_attrs[SEED_ATTR])
    study.sampler = make_sampler(protocol, slot)
    study.pruner = make_pruner(protocol)
    trial = optuna.Trial(study, trial_id)
    state, value, reason = TrialState.FAIL, None, None
    with Heartbeat(handle, trial_id):
        t_arm = time.perf_counter()
        timing: dict = {}
        try:
            value, _ = objective(trial, arm, protocol, source, seed=seed, timing=timing)
            state = TrialState.COMPLETE
        except optuna.TrialPruned:
            state = TrialState.PRUNED
        except TrialTimeout as e:
            reason = str(e) if str(e).startswith("timeout") else f"timeout: {e}"
        except TrialFailed as e:
            reason = str(e)
        except Exception as e:  # any arm error is the trial's failure, recorded, never the worker's
            reason = f"raised {_first_line(e)}"
        except KeyboardInterrupt:
            _release(handle, study, trial_id)
            raise
        arm_s = time.perf_counter() - t_arm - timing.get("report_s", 0.0)  # the arm's own time
        try:
            if reason:
                trial.set_user_attr(REASON_ATTR, reason)
            trial.set_user_attr("elapsed_s", round(arm_s, 3))
            trial.set_user_attr("split", SPLITS_TUNE)
            trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
            study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
        except UpdateFinishedTrialError:
            # another worker declared this trial stale (missed heartbeats) and re-enqueued its slot;
            # the retry owns the slot now, so this result is dropped rather than counted twice
            reason = "superseded: declared stale by another worker; result dropped"
            state, value = TrialState.FAIL, None
    total = time.perf_counter() - t_start
    return TrialOutcome(arm, frozen.number, slot, state.name, value, reason, arm_s, total - arm_s)


def _release(handle: StorageHandle, study: optuna.Study, trial_id: int) -> None:
    """Ctrl-C: hand the slot back at once (as a stale trial would be after the grace period)."""
    try:
        if study._storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
            handle.retry_callback()(study, study._storage.get_trial(trial_id))
    except UpdateFinishedTrialError:
        pass


def _check_result(result, protocol: Protocol, elapsed_s: float) -> tuple[float | None, str | None]:
    acc = getattr(result, "accuracy", None)
    tokens = getattr(result, "compute_tokens", None)
    if acc is None or tokens is None:
        return None, f"bad result: expected an ArmResult with accuracy and compute_tokens, got {type(result).__name__}"
    split = getattr(result, "split", SPLITS_TUNE)
    if split != SPLITS_TUNE:
        return None, f"bad result: scored on split {split!r}; tuning reads the validation split only"
    try:
        acc = float(acc)
    except (TypeError, ValueError):
        return None, f"bad result: accuracy {acc!r} is not a number"
    if not math.isfinite(acc):
        return None, f"returned {acc} accuracy"
    if not 0.0 <= acc <= 100.0:
        return None, f"bad result: accuracy {acc} is outside [0, 100] percent"
    if elapsed_s > protocol.time_limit_s:
        return None, f"timeout: ran {elapsed_s:.1f}s, limit {protocol.time_limit_s:g}s"
    cap = protocol.compute_cap_tokens
    if cap is not None and int(tokens) > cap:
        return None, f"over compute cap: {int(tokens)} tokens > {cap}"
    return acc, None


def _pick_arm(handle: StorageHandle, name: str, protocol: Protocol, studies: dict) -> list[str]:
    """Arms ordered by fewest claimed slots, so arms advance together (a cut-off study stays balanced)."""
    def claimed(arm):
        latest, _, _ = slot_trials(studies[arm])
        return sum(t.state != TrialState.WAITING for t in latest.values())
    return sorted(protocol.arms, key=lambda a: (claimed(a), protocol.arms.index(a)))


def run_worker(handle: StorageHandle, name: str, source: ArmSource, *, max_trials: int | None = None,
               poll_s: float = 0.5, log: Callable[[str], None] | None = None) -> list[TrialOutcome]:
    """Claim and run slots until every arm's budget is finished (waiting for other workers' running
    trials, which finish or go stale and come back). Returns this worker's outcomes."""
    protocol = load_protocol(handle, name)
    studies = {arm: load_study(handle, arm_study_name(name, arm)) for arm in protocol.arms}
    outcomes: list[TrialOutcome] = []
    while max_trials is None or len(outcomes) < max_trials:
        ran = False
        for arm in _pick_arm(handle, name, protocol, studies):
            study = studies[arm]
            for number in fail_stale_trials(study, handle):
                if log:
                    log(f"{arm}: trial #{number} lost its worker (no heartbeat for {handle.grace_s}s); slot re-enqueued")
            trial_id = _claim(study)
            if trial_id is None:
                continue
            out = run_trial(handle, study, trial_id, arm, protocol, source)
            outcomes.append(out)
            if log:
                val = f"{out.value:.2f}%" if out.value is not None else "-"
                log(f"{arm} slot {out.slot} (trial #{out.number}): {out.state} {val} in {out.elapsed_s:.1f}s"
                    + (f" [{out.reason}]" if out.reason else ""))
            ran = True
            break
        if ran:
            continue
        pending = False
        for arm in protocol.arms:
            latest, _, _ = slot_trials(studies[arm])
            if any(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in latest.values()):
                pending = True
        if not pending:
            break
        time.sleep(poll_s)
    return outcomes
