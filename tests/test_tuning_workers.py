"""Several worker processes on one study (journal file; PostgreSQL when S2D_PG_URL is set): the budget
is finished with per-arm counts equal, slots are never run twice, and a SIGKILLed worker's trial is
failed, retried with the same params and seed, and the study resumed to completion."""

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import optuna
import pytest
from optuna.trial import TrialState

from tuning.harness import arm_status, check_matched, run_worker
from tuning.report import trials_frame
from tuning.testing import synthetic_study

ARMS = ("direct_grpo", "rl_teacher_bridge")
BACKENDS = ["journal", pytest.param("postgres", marks=pytest.mark.postgres)]
pytestmark = pytest.mark.slow  # worker subprocesses, heartbeats and a grace period


def _url(backend, tmp_path):
    if backend == "journal":
        return f"journal:///{tmp_path}/study.log"
    url = os.environ.get("S2D_PG_URL")
    if not url:
        pytest.skip("S2D_PG_URL is unset (scripts/ci_postgres.sh starts a server and sets it)")
    return url


def _worker(url, name, *extra):
    cmd = [sys.executable, "-m", "tuning.cli", "resume", "--study", name, "--storage", url,
           "--heartbeat", "1", "--grace", "2", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _trials(handle, name, arm):
    return optuna.load_study(study_name=f"{name}.{arm}", storage=handle.storage).get_trials(deepcopy=False)


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_workers_finish_the_budget_with_equal_arms(backend, tmp_path):
    url, name = _url(backend, tmp_path), f"two-{uuid.uuid4().hex[:8]}"
    handle, protocol, _ = synthetic_study(url, name, trials=4, options={"delay_s": 0.1})
    procs = [_worker(url, name) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    workers = set()
    for arm in ARMS:
        st = arm_status(handle, name, arm)
        assert (st.finished, st.running, st.waiting, st.retried) == (4, 0, 0, 0)
        trials = _trials(handle, name, arm)
        assert sorted(t.user_attrs["slot"] for t in trials) == list(range(4))  # each slot ran once
        workers |= {t.user_attrs["worker"] for t in trials}
    assert len(workers) == 2, "both workers should have run trials"
    check_matched(handle, name)


@pytest.mark.parametrize("backend", BACKENDS)
def test_racing_claims_never_exceed_the_cap(backend, tmp_path):
    url, name = _url(backend, tmp_path), f"race-{uuid.uuid4().hex[:8]}"
    synthetic_study(url, name, trials=6)
    code = ("import json, sys, optuna; from tuning.storage import open_storage; from tuning.harness import _claim; "
            "h = open_storage(sys.argv[1]); s = optuna.load_study(study_name=sys.argv[2], storage=h.storage); "
            "ids = []\n"
            "while (t := _claim(s)) is not None: ids.append(t)\n"
            "print(json.dumps(ids))")
    procs = [subprocess.Popen([sys.executable, "-c", code, url, f"{name}.direct_grpo"], stdout=subprocess.PIPE,
                              text=True) for _ in range(2)]
    claimed = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    flat = [t for ids in claimed for t in ids]
    assert len(flat) == len(set(flat)) == 6  # every slot claimed exactly once, none created


@pytest.mark.parametrize("backend", BACKENDS)
def test_sigkilled_worker_is_detected_retried_and_resumed(backend, tmp_path):
    url, name = _url(backend, tmp_path), f"kill-{uuid.uuid4().hex[:8]}"
    handle, protocol, source = synthetic_study(url, name, trials=3, options={"delay_s": 0.08},
                                               heartbeat_s=1, grace_s=2)
    proc = _worker(url, name)
    victim = None
    deadline = time.monotonic() + 60
    while victim is None and time.monotonic() < deadline:
        for arm in ARMS:
            running = [t for t in _trials(handle, name, arm) if t.state == TrialState.RUNNING and t.intermediate_values]
            if running:
                victim = (arm, running[0])
                break
        time.sleep(0.02)
    assert victim is not None, proc.communicate(timeout=5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    arm, killed = victim
    assert _trials(handle, name, arm)[killed.number].state == TrialState.RUNNING  # left behind by the kill

    run_worker(handle, name, source, poll_s=0.2)  # the resuming worker waits out the grace period
    for a in ARMS:
        st = arm_status(handle, name, a)
        assert (st.finished, st.running, st.waiting) == (3, 0, 0)
    trials = _trials(handle, name, arm)
    assert trials[killed.number].state == TrialState.FAIL
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retry) == 1
    assert retry[0].user_attrs["slot"] == killed.user_attrs["slot"]
    assert retry[0].user_attrs["tuning_seed"] == killed.user_attrs["tuning_seed"]
    assert retry[0].params == killed.params and retry[0].state.is_finished()
    assert arm_status(handle, name, arm).retried == 1
    frame = trials_frame(handle, name, protocol)
    row = frame[(frame["arm"] == arm) & (frame["number"] == killed.number)].iloc[0]
    assert not row["counted"] and row["fail_reason"].startswith("worker lost")
    check_matched(handle, name)
