"""Storages and the recovery of trials whose worker died.

URLs:
  sqlite:///path.db (or a path ending in .db)   one machine, the default;
  journal:///abs/path.log (or a path ending .log/.jsonl)  several processes on one machine
                                                 (optuna JournalFileBackend, file locks);
  postgresql://user:pw@host/db                   many machines; rewritten to the psycopg 3 driver
                                                 (postgresql+psycopg://) that the `tuning` extra installs.

A worker that is killed leaves its trial RUNNING. Both storage families detect and retry it:
  - RDB (SQLite, PostgreSQL): optuna's heartbeat. Each running trial records a heartbeat every
    `heartbeat_s`; a trial silent for `grace_s` is failed by whichever worker next calls
    `fail_stale_trials`, and `RetryHeartbeatStaleTrialCallback` (optuna 5's name for
    RetryFailedTrialCallback) re-enqueues it as WAITING with the same params and user attrs (so the
    same budget slot and tuning seed).
  - Journal: the journal backend has no heartbeat, so the running trial holds a lease: the worker
    writes the system attr `s2d:lease` (unix time) every `heartbeat_s`; `fail_stale_trials` fails any
    RUNNING trial whose lease (or start time, before the first lease) is older than `grace_s` and calls
    the same retry callback. Failing is a state change the journal serialises: if two workers judge the
    same trial stale, one wins and the other gets UpdateFinishedTrialError and does nothing, so a trial
    is retried at most once. Leases compare wall clocks, which is sound on the one machine a journal
    file lives on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timezone
import os
import re
import threading
import time
import warnings

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState

from theory.errors import InputError

LEASE_ATTR = "s2d:lease"
DEFAULT_HEARTBEAT_S = 10
DEFAULT_GRACE_S = 60
DEFAULT_MAX_RETRY = 2


def mask(url: str) -> str:
    return re.sub(r"://([^:/@]+):([^@]*)@", r"://\1:***@", url)


@dataclass
class StorageHandle:
    storage: optuna.storages.BaseStorage
    kind: str  # "rdb" | "journal"
    url: str
    heartbeat_s: int
    grace_s: int
    max_retry: int | None

    def retry_callback(self) -> RetryHeartbeatStaleTrialCallback:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return RetryHeartbeatStaleTrialCallback(max_retry=self.max_retry)


def normalise_url(url: str) -> tuple[str, str]:
    """-> (kind, url-or-path). Raises InputError for what we cannot open."""
    if not url or not url.strip():
        raise InputError("--storage: give a URL (sqlite:///study.db, journal:///path.log, postgresql://...)")
    url = url.strip()
    if url.startswith("journal://"):
        path = url[len("journal://"):]
        if not path:
            raise InputError(f"storage {url!r}: journal URL needs a file path (journal:///abs/path.log)")
        return "journal", path
    if url.endswith((".log", ".jsonl")) and "://" not in url:
        return "journal", url
    if url.endswith(".db") and "://" not in url:
        return "rdb", f"sqlite:///{url}"
    if url.startswith(("postgresql://", "postgres://")):
        return "rdb", "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith(("sqlite://", "postgresql+", "mysql")):
        return "rdb", url
    raise InputError(f"storage {mask(url)!r}: unknown scheme; use sqlite:///file.db, journal:///file.log "
                     "or postgresql://user:pw@host/db")


def storage_file(url: str) -> str | None:
    """The local file behind a sqlite or journal URL (None: a server, or SQLite in memory)."""
    kind, target = normalise_url(url)
    if kind == "journal":
        return target
    if not target.startswith("sqlite"):
        return None
    from sqlalchemy.engine import make_url

    path = make_url(target).database
    return path if path and path != ":memory:" else None


def require_existing(url: str, study: str) -> None:
    """InputError unless the storage's local file exists: opening a missing one would create it, and
    commands that only read a study (status, report, resume) must leave no file behind."""
    path = storage_file(url)
    if path is not None and not os.path.isfile(path):
        raise InputError(f"study {study!r} does not exist: --storage {mask(url)} has no file {path!r} "
                         f"(`matched-tuning run --study {study} --storage {mask(url)} --arms ... --trials ...` "
                         "creates it)")


def open_storage(url: str, *, heartbeat_s: int = DEFAULT_HEARTBEAT_S, grace_s: int = DEFAULT_GRACE_S,
                 max_retry: int | None = DEFAULT_MAX_RETRY) -> StorageHandle:
    """Open (and for a new database, initialise) a storage; unreachable -> one-line InputError."""
    if heartbeat_s < 1 or grace_s <= heartbeat_s:
        raise InputError(f"heartbeat {heartbeat_s}s / grace {grace_s}s: need heartbeat >= 1 and grace > heartbeat")
    kind, target = normalise_url(url)
    if kind == "journal":
        parent = os.path.dirname(os.path.abspath(target))
        if not os.path.isdir(parent):
            raise InputError(f"storage {url!r}: directory {parent!r} does not exist")
        try:
            storage = JournalStorage(JournalFileBackend(target))
        except OSError as e:
            raise InputError(f"storage {url!r}: cannot open journal file ({e.strerror or e})") from None
        handle = StorageHandle(storage, kind, url, heartbeat_s, grace_s, max_retry)
        return handle
    handle = StorageHandle(None, kind, url, heartbeat_s, grace_s, max_retry)  # type: ignore[arg-type]
    engine_kwargs = {}
    if target.startswith("postgresql"):
        engine_kwargs = {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # heartbeat arguments are flagged experimental
            handle.storage = RDBStorage(target, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_s,
                                        grace_period=grace_s, heartbeat_stale_trial_callback=handle.retry_callback())
    except Exception as e:  # sqlalchemy/driver errors have many types; all mean "cannot use this URL"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        first = re.sub(r"^\(\S+\)\s*", "", first)
        raise InputError(f"storage {mask(url)!r} is unreachable: {mask(first)}") from None
    return handle


class Heartbeat:
    """Keeps one running trial alive in the storage while the arm runs (a daemon thread)."""

    def __init__(self, handle: StorageHandle, trial_id: int):
        self.handle, self.trial_id = handle, trial_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name=f"heartbeat-{trial_id}")

    def _beat(self) -> None:
        if self.handle.kind == "rdb":
            self.handle.storage.record_heartbeat(self.trial_id)
        else:
            self.handle.storage.set_trial_system_attr(self.trial_id, LEASE_ATTR, time.time())

    def _loop(self) -> None:
        while not self._stop.wait(self.handle.heartbeat_s):
            try:
                self._beat()
            except optuna.exceptions.UpdateFinishedTrialError:
                return  # the trial was finished (or declared stale) meanwhile
            except Exception:  # a transient storage error must not kill the trial; the next beat retries
                pass

    def __enter__(self) -> "Heartbeat":
        self._beat()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def fail_stale_trials(study: optuna.Study, handle: StorageHandle) -> list[int]:
    """Fail RUNNING trials whose worker stopped beating and re-enqueue them. Returns failed numbers."""
    if handle.kind == "rdb":
        before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        if not before:
            return []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            optuna.storages.fail_stale_trials(study)
        return sorted(t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
                      if t.number in before)
    now = time.time()
    failed = []
    storage = study._storage
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        # a retry inherits its predecessor's old lease: the start of this attempt counts as a beat
        stamps = [float(t.system_attrs.get(LEASE_ATTR, 0.0))]
        if t.datetime_start is not None:
            stamps.append(t.datetime_start.replace(tzinfo=t.datetime_start.tzinfo or timezone.utc).timestamp())
        if now - max(stamps) <= handle.grace_s:
            continue
        try:
            if not storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker failed it first; it owns the retry
        failed.append(t.number)
        handle.retry_callback()(study, storage.get_trial(t._trial_id))
    return failed
