"""Verifiable reward: the final ``\\boxed{...}`` answer checked against a gold answer.

One reward for both scales (toy arithmetic and Qwen3 on MATH/AIME):

1. The answer is the *last* ``\\boxed{...}`` of the completion, with balanced braces (``\\{``/``\\}``
   are literal braces and do not count). A completion whose last box is cut off (unbalanced) has no
   answer: a truncated generation never scores.
2. When the gold is a plain number (``46``, ``-3``, ``0.5``, ``10{,}000``) the prediction must be a
   numeric literal too. math-verify alone accepts ``12+34`` for 46 (it evaluates expressions), which
   would reward a policy for echoing the question (science.md). Light, common decorations are
   stripped first: ``x = ``, ``^\\circ``, ``\\%``, a trailing ``\\text{...}`` unit, digit grouping.
3. Integer gold + integer-literal prediction is decided exactly in-process (the toy world scores
   thousands of completions per step; a test checks it agrees with math-verify).
4. Everything else (fractions, radicals, tuples, intervals, sets, text answers, decimals) goes to
   math-verify's ``verify(gold, pred)`` — gold first, it is not symmetric — on a persistent pool of
   worker processes. math-verify's own timeout uses ``signal.alarm`` (fails off the main thread) and
   some inputs hang anyway, so the parent enforces the timeout: a worker that overruns is killed,
   the item scores 0.0, and a fresh worker is forked. Each item gets ``timeout_s`` of worker time, so
   ``score`` returns within about ``timeout_s`` (+ a few ms) whatever the text; ``score_batch``
   spreads items over the workers and every item is bounded the same way.

The pool is created lazily on first use (plain `python` subprocesses over pipes; start-up is not
charged to any item's timeout) and shut down at interpreter exit. A worker that dies before it is
ready three times in a row means a broken environment: one RuntimeError naming the cause.
"""

from __future__ import annotations

import atexit
import math
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from functools import lru_cache
from multiprocessing.connection import Connection, wait

__all__ = [
    "score",
    "score_batch",
    "is_compliant",
    "extract_boxed",
    "normalize_gold",
    "RewardPool",
    "default_pool",
]

_BOXED = "\\boxed"


# --------------------------------------------------------------------------------------------------
# Answer extraction (pure string work, in-process)
# --------------------------------------------------------------------------------------------------


def _match_brace(text: str, open_idx: int) -> int:
    """Index just past the ``}`` closing the ``{`` at ``open_idx``, or -1 if it never closes."""
    depth = 0
    i = open_idx
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2  # \{ \} \\ are escapes, not grouping
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return -1


def extract_boxed(completion: str) -> str | None:
    """Content of the last top-level ``\\boxed{...}``; None if there is none or it never closes."""
    last: str | None = None
    pos = 0
    while True:
        i = completion.find(_BOXED, pos)
        if i < 0:
            return last
        j = i + len(_BOXED)
        while j < len(completion) and completion[j] in " \t":
            j += 1
        if j >= len(completion) or completion[j] != "{":
            pos = j  # `\boxed` without a brace group is not an answer
            continue
        end = _match_brace(completion, j)
        if end < 0:
            return None  # the final box is cut off: everything after it is inside it
        last = completion[j + 1 : end - 1].strip()
        pos = end


def is_compliant(completion: str) -> bool:
    """True if the completion ends its work with a well-formed, non-empty ``\\boxed{...}`` answer."""
    ans = extract_boxed(completion)
    return bool(ans)


# --------------------------------------------------------------------------------------------------
# Numeric literals
# --------------------------------------------------------------------------------------------------

_INT_RE = re.compile(r"[+-]?\d+")
_DEC_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")
_GROUPED_RE = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d*)?")
_UNIT_TAIL_RE = re.compile(r"\\(?:text|mbox|mathrm)\{[^{}]*\}$")
_VAR_PREFIX_RE = re.compile(r"^[A-Za-z](?:_\{?\w+\}?)?\s*=\s*")


def _strip_math(s: str) -> str:
    s = s.strip()
    while len(s) >= 2 and s[0] == "$" and s[-1] == "$":
        s = s[1:-1].strip()
    return s


def _numeric_gold(gold: str) -> str | None:
    """The gold as a canonical numeric literal string, or None if it is not a plain number."""
    g = _strip_math(gold).replace("{,}", "").replace("\\!", "").replace(" ", "")
    return g if _DEC_RE.fullmatch(g) else None


def _numeric_literal(pred: str) -> str | None:
    """The prediction as a numeric literal after stripping decorations, or None if it is not one."""
    p = _strip_math(pred)
    p = _VAR_PREFIX_RE.sub("", p)
    p = _UNIT_TAIL_RE.sub("", p).strip()
    for deco in ("^\\circ", "^{\\circ}", "\\%", "%", "\\$"):
        if p.endswith(deco):
            p = p[: -len(deco)]
        if p.startswith(deco):
            p = p[len(deco) :]
    p = p.replace("{,}", "").replace("\\,", "").replace("\\!", "").replace(" ", "")
    if _GROUPED_RE.fullmatch(p):
        p = p.replace(",", "")
    return p if _DEC_RE.fullmatch(p) else None


@dataclass(frozen=True)
class _Decision:
    """In-process verdict (score) or the math-verify job (gold, pred) still to run."""

    score: float | None
    job: tuple[str, str] | None = None


def normalize_gold(gold: str) -> str:
    """The answer a gold string holds: the boxed part of a full solution, else the text without `$`."""
    # A MATH `solution` field (or any text holding a box) is reduced to its boxed answer.
    if _BOXED in gold:
        boxed = extract_boxed(gold)
        if boxed:
            return boxed
    return _strip_math(gold)


def _decide(completion: str, gold: str) -> _Decision:
    pred = extract_boxed(completion)
    if not pred:
        return _Decision(0.0)
    gold = normalize_gold(gold)
    if not gold:
        return _Decision(0.0)
    num_gold = _numeric_gold(gold)
    if num_gold is not None:
        lit = _numeric_literal(pred)
        if lit is None:
            return _Decision(0.0)  # e.g. `12+34` for 46: not a final numeric answer
        if _INT_RE.fullmatch(num_gold) and _INT_RE.fullmatch(lit):
            return _Decision(float(int(num_gold) == int(lit)))  # exact fast path
        return _Decision(None, (num_gold, lit))
    return _Decision(None, (gold, pred))


# --------------------------------------------------------------------------------------------------
# Worker process
# --------------------------------------------------------------------------------------------------


def _worker_main(recv: Connection, send: Connection, stall_marker: str | None) -> None:
    """Loop: receive (gold, pred), send back a bool. Timeouts are the parent's job (hard kill)."""
    import logging

    logging.getLogger("math_verify").setLevel(logging.CRITICAL)  # "timeout disabled" warning
    from math_verify import parse, verify

    @lru_cache(maxsize=4096)
    def parsed_gold(g: str):
        return parse("$" + g + "$", parsing_timeout=None)

    send.send("ready")
    while True:
        try:
            msg = recv.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        gold, pred = msg
        if stall_marker is not None and pred == stall_marker:
            time.sleep(3600)  # test hook: behave like an input that hangs sympy
        try:
            g = parsed_gold(gold)
            p = parse("$" + pred + "$", parsing_timeout=None)
            ok = bool(g) and bool(p) and verify(g, p, timeout_seconds=None)
        except Exception:  # noqa: BLE001 — any parser/sympy failure means "not verified"
            ok = False
        send.send(bool(ok))


def _worker_entry() -> None:
    """`python -c` entry of a worker process: argv = read fd, write fd, stall marker ("" = none)."""
    r, w, marker = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    _worker_main(Connection(r, writable=False), Connection(w, readable=False), marker or None)


class _Worker:
    """One worker: a plain `python` subprocess talking over two pipes.

    Not `multiprocessing.Process`: spawn/forkserver re-import the parent's `__main__` in the child,
    which fails for scripts fed on stdin and some notebook set-ups; fork would copy a parent that may
    hold torch threads. A subprocess imports only this module (~0.5 s, not charged to any item).
    """

    def __init__(self, stall_marker: str | None) -> None:
        p2c_r, p2c_w = os.pipe()
        c2p_r, c2p_w = os.pipe()
        self.stderr = tempfile.TemporaryFile()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        code = "from reference.rewards import _worker_entry; _worker_entry()"
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", code, str(p2c_r), str(c2p_w), stall_marker or ""],
                pass_fds=(p2c_r, c2p_w), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=self.stderr, env=env, close_fds=True,
            )
        finally:
            os.close(p2c_r)
            os.close(c2p_w)
        self.send_conn = Connection(p2c_w, readable=False)
        self.conn = Connection(c2p_r, writable=False)
        self.ready = False
        self.job: int | None = None
        self.deadline = math.inf
        self.born = time.monotonic()

    def stderr_tail(self) -> str:
        try:
            self.stderr.seek(0)
            lines = self.stderr.read().decode(errors="replace").strip().splitlines()
            return lines[-1] if lines else "(no output)"
        except Exception:  # noqa: BLE001
            return "(unreadable)"

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.wait(timeout=5)
        except Exception:  # noqa: BLE001
            pass
        for c in (self.conn, self.send_conn):
            try:
                c.close()
            except Exception:  # noqa: BLE001
                pass
        self.stderr.close()


class RewardPool:
    """A persistent pool of math-verify worker processes with a hard per-item timeout.

    ``workers`` defaults to ``min(2, cpu_count)`` (env ``S2D_REWARD_WORKERS`` overrides).
    ``startup_timeout_s`` bounds the wait for a worker's first import (not charged to any item).
    """

    def __init__(
        self,
        workers: int | None = None,
        *,
        startup_timeout_s: float = 120.0,
        _stall_marker: str | None = None,
    ) -> None:
        if workers is None:
            workers = int(os.environ.get("S2D_REWARD_WORKERS", min(2, os.cpu_count() or 1)))
        if workers < 1:
            raise ValueError(f"RewardPool: workers must be >= 1, got {workers}")
        self.n_workers = workers
        self.startup_timeout_s = startup_timeout_s
        self._stall_marker = _stall_marker
        self._workers: list[_Worker] = []
        self._lock = threading.RLock()  # close() may run inside verify_many
        self.n_killed = 0  # workers killed for overrunning (observable for tests/logs)

    # -- lifecycle ---------------------------------------------------------------------------------
    def _ensure_started(self) -> None:
        if self._workers:
            return
        self._workers = [_Worker(self._stall_marker) for _ in range(self.n_workers)]
        self._start_failures = 0

    def close(self) -> None:
        with self._lock:
            for w in self._workers:
                try:
                    if w.ready and w.job is None:
                        w.send_conn.send(None)
                except Exception:  # noqa: BLE001
                    pass
                w.kill()
            self._workers = []

    def _respawn(self, i: int) -> None:
        old = self._workers[i]
        if not old.ready:  # died before its first message: a broken environment, not a bad input
            self._start_failures += 1
            if self._start_failures >= 3:
                why = old.stderr_tail()
                self.close()
                raise RuntimeError(f"reward workers cannot start ({why}); is math-verify installed? "
                                   "`pip install math-verify==0.9.0`")
        old.kill()
        self._workers[i] = _Worker(self._stall_marker)

    # -- scoring -----------------------------------------------------------------------------------
    def verify_many(self, jobs: list[tuple[str, str]], *, timeout_s: float) -> list[bool]:
        """math-verify ``verify(parse(gold), parse(pred))`` for each (gold, pred); False on timeout."""
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        out = [False] * len(jobs)
        if not jobs:
            return out
        with self._lock:
            self._ensure_started()
            pending = deque(range(len(jobs)))
            while pending or any(w.job is not None for w in self._workers):
                now = time.monotonic()
                for i, w in enumerate(list(self._workers)):
                    if w.ready and w.job is None and pending:
                        k = pending.popleft()
                        try:
                            w.send_conn.send(jobs[k])
                        except OSError:  # died while idle: retry the item on a fresh worker
                            pending.appendleft(k)
                            self._respawn(i)
                            continue
                        w.job, w.deadline = k, now + timeout_s
                starting = [w for w in self._workers if not w.ready]
                if any(now - w.born > self.startup_timeout_s for w in starting):
                    self.close()
                    raise RuntimeError(f"reward workers did not start within {self.startup_timeout_s:.0f} s")
                waiting = [w for w in self._workers if not w.ready or w.job is not None]
                next_deadline = min([w.deadline for w in waiting if w.job is not None]
                                    + [w.born + self.startup_timeout_s for w in starting])
                ready_conns = wait([w.conn for w in waiting], timeout=max(0.0, next_deadline - time.monotonic()))
                now = time.monotonic()
                for i, w in enumerate(list(self._workers)):
                    dead = False
                    if w.conn in ready_conns:
                        try:
                            msg = w.conn.recv()
                        except (EOFError, OSError):  # the process is gone (crash or kill)
                            dead = True
                        else:
                            if msg == "ready":
                                w.ready = True
                                self._start_failures = 0
                            elif w.job is not None:
                                out[w.job] = bool(msg)
                                w.job, w.deadline = None, math.inf
                            continue
                    overran = w.job is not None and now >= w.deadline
                    if dead or overran:
                        if w.job is not None:
                            out[w.job] = False  # hung or crashed on this input: no reward
                        if overran:
                            self.n_killed += 1
                        self._respawn(i)
        return out


_default_pool: RewardPool | None = None
_default_lock = threading.Lock()


def default_pool() -> RewardPool:
    """The process-wide pool, created on first use and closed at exit."""
    global _default_pool
    with _default_lock:
        if _default_pool is None:
            _default_pool = RewardPool()
            atexit.register(_default_pool.close)
        return _default_pool


# --------------------------------------------------------------------------------------------------
# Public API (fixed interface shared with the toy world)
# --------------------------------------------------------------------------------------------------


def score_batch(
    completions: list[str],
    golds: list[str],
    *,
    timeout_s: float = 5.0,
    pool: RewardPool | None = None,
) -> list[float]:
    """1.0/0.0 per (completion, gold). Each math-verify check is bounded by ``timeout_s``."""
    if len(completions) != len(golds):
        raise ValueError(
            f"score_batch: {len(completions)} completions but {len(golds)} golds"
        )
    decisions = [_decide(c, g) for c, g in zip(completions, golds)]
    scores = [d.score for d in decisions]
    todo = [i for i, d in enumerate(decisions) if d.score is None]
    if todo:
        p = pool if pool is not None else default_pool()
        verdicts = p.verify_many([decisions[i].job for i in todo], timeout_s=timeout_s)  # type: ignore[misc]
        for i, ok in zip(todo, verdicts):
            scores[i] = 1.0 if ok else 0.0
    return [float(s) for s in scores]  # type: ignore[arg-type]


def score(completion: str, gold: str, *, timeout_s: float = 5.0, pool: RewardPool | None = None) -> float:
    """1.0 if the completion's final ``\\boxed{}`` answer matches ``gold``, else 0.0."""
    return score_batch([completion], [gold], timeout_s=timeout_s, pool=pool)[0]
