"""Verifiable reward: the final ``\\boxed{...}`` answer checked against a gold answer.

One reward for both scales (toy arithmetic and Qwen3 on MATH/AIME):

1. The answer is the *last* ``\\boxed{...}`` of the completion, with balanced braces (``\\{``/``\\}``
   are literal braces and do not count). A completion whose last box is cut off (unbalanced) has no
   answer: a truncated generation never scores.
2. When the gold is a plain number (``46``, ``-3``, ``0.5``, ``10{,}000``) the prediction must be a
   *number* too: a decimal literal (``46``, ``46.0``, ``0.50``, ``10,000``) or a fraction in lowest
   terms (``\\frac{1}{2}``, ``\\dfrac12``, ``-\\frac{1}{2}``, ``1/2``), compared exactly with the
   gold. math-verify alone accepts ``12+34`` for 46 (it evaluates expressions), which would reward a
   policy for echoing the question (science.md), so expressions are refused -- and so is an
   unreduced fraction such as ``\\frac{92}{2}``, which is a division, not a number in its final form.
   Light, common decorations are stripped first: ``x = ``, ``^\\circ``, ``\\%``, a trailing
   ``\\text{...}`` unit, digit grouping, one pair of outer braces.
3. Number against numeric gold is decided exactly in-process (canonical digit strings, so a
   200,000-digit literal costs microseconds and never reaches ``int()``'s 4300-digit limit; fractions
   via ``fractions.Fraction``). The toy world scores thousands of completions per step and needs no
   worker for them. Deliberate deviation: math-verify rounds floats to 6 places (it accepts
   ``0.5000001`` for ``0.5``); this comparison is exact. A test checks it otherwise agrees.
4. Everything else (fractions, radicals, tuples, intervals, sets, text answers) goes to
   math-verify's ``verify(gold, pred)`` -- gold first, it is not symmetric -- on a persistent pool of
   worker processes. math-verify's own timeout uses ``signal.alarm`` (fails off the main thread) and
   some inputs hang anyway (``9^{9^{9^{9}}}`` makes sympy build a 369-million-digit integer), so the
   parent enforces the timeout: a worker that overruns is killed, the item scores 0.0, and a fresh
   worker is started. Each item gets ``timeout_s`` of worker time, so ``score`` returns within about
   ``timeout_s`` plus one worker start (~0.5 s) whatever the text; ``score_batch`` spreads items over
   the workers and every item is bounded the same way.
5. No exception leaves ``score``/``score_batch`` because of what a completion or gold says: an answer
   longer than ``MAX_ANSWER_CHARS`` is not checked (scores 0.0), a non-string completion scores 0.0,
   an integer gold is read as its decimal string, and any failure while deciding scores 0.0. What
   still raises is misuse of the API (lengths that differ, ``timeout_s <= 0``) and an environment
   where the workers cannot start at all (one RuntimeError naming the cause, not silent zeros).

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
from fractions import Fraction
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
    "MAX_ANSWER_CHARS",
]

_BOXED = "\\boxed"
# No real final answer is this long (MATH-style answers run to tens of characters); longer boxes are
# junk or hostile, and checking them would only ship megabytes to a worker that times out.
MAX_ANSWER_CHARS = 2000
# Fractions are compared through Python ints; keep them far below int()'s 4300-digit limit.
_MAX_FRACTION_DIGITS = 1000


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

_DEC_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")
_GROUPED_RE = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d*)?")
_UNIT_TAIL_RE = re.compile(r"\\(?:text|mbox|mathrm)\{[^{}]*\}$")
_VAR_PREFIX_RE = re.compile(r"^[A-Za-z](?:_\{?\w+\}?)?\s*=\s*")


def _strip_math(s: str) -> str:
    """Drop surrounding ``$`` pairs and whitespace (index walk: linear even for a million ``$``)."""
    i, j = 0, len(s)
    while True:
        while i < j and s[i].isspace():
            i += 1
        while j > i and s[j - 1].isspace():
            j -= 1
        if j - i >= 2 and s[i] == "$" and s[j - 1] == "$":
            i, j = i + 1, j - 1
        else:
            return s[i:j]


def _numeric_gold(gold: str) -> str | None:
    """The gold as a canonical numeric literal string, or None if it is not a plain number."""
    g = _strip_math(gold).replace("{,}", "").replace("\\!", "").replace(" ", "")
    return g if _DEC_RE.fullmatch(g) else None


def _undecorate(pred: str) -> str:
    """``pred`` without the decorations a correct numeric answer may carry (see the module doc)."""
    p = _strip_math(pred)
    p = _VAR_PREFIX_RE.sub("", p)
    p = _UNIT_TAIL_RE.sub("", p).strip()
    for deco in ("^\\circ", "^{\\circ}", "\\%", "%", "\\$"):
        if p.endswith(deco):
            p = p[: -len(deco)]
        if p.startswith(deco):
            p = p[len(deco) :]
    p = p.replace("{,}", "").replace("\\,", "").replace("\\!", "").replace(" ", "")
    if len(p) >= 2 and p[0] == "{" and p[-1] == "}" and "{" not in p[1:-1] and "}" not in p[1:-1]:
        p = p[1:-1]  # `{0.5}`; only a flat group, so `{1}{2}` is not mistaken for one
    if _GROUPED_RE.fullmatch(p):
        p = p.replace(",", "")
    return p


def _canonical_decimal(lit: str) -> str:
    """``-007.50`` -> ``-7.5``; ``-0`` -> ``0.``: equal numbers get equal strings, in linear time."""
    sign = "-" if lit[0] == "-" else ""
    body = lit.lstrip("+-")
    whole, _, frac = body.partition(".")
    whole, frac = whole.lstrip("0") or "0", frac.rstrip("0")
    if whole == "0" and not frac:
        sign = ""
    return f"{sign}{whole}.{frac}"


def _decimal_fraction(canonical: str) -> Fraction | None:
    """The exact value of a canonical decimal string, or None when it is too long to convert."""
    sign, body = (-1, canonical[1:]) if canonical[0] == "-" else (1, canonical)
    whole, _, frac = body.partition(".")
    if len(whole) + len(frac) > _MAX_FRACTION_DIGITS:
        return None
    return sign * Fraction(int(whole + frac), 10 ** len(frac))


_FRAC_RES = (
    re.compile(r"([+-]?)\\[dt]?frac(?:\{([+-]?)(\d+)\}|()(\d))(?:\{(\d+)\}|(\d))"),  # \frac{1}{2}, \frac12
    re.compile(r"([+-]?)()(\d+)()()/(\d+)()"),  # 1/2
)


def _lowest_terms_fraction(p: str) -> Fraction | None:
    """The value of a fraction written in lowest terms with denominator >= 2, else None."""
    for rx in _FRAC_RES:
        m = rx.fullmatch(p)
        if m is None:
            continue
        outer, inner, num_a, _, num_b, den_a, den_b = m.groups()
        inner = inner or ""
        if outer and inner:
            return None  # `-\frac{-1}{2}`: a sign game, not a number in final form
        num, den = num_a or num_b, den_a or den_b
        if len(num) > _MAX_FRACTION_DIGITS or len(den) > _MAX_FRACTION_DIGITS:
            return None
        n, d = int(num), int(den)
        if d < 2 or math.gcd(n, d) != 1:
            return None  # `\frac{92}{2}`, `\frac{46}{1}`, `\frac{0}{5}`: a division, not a final number
        return Fraction(-n if "-" in (outer + inner) else n, d)
    return None


def _numeric_match(num_gold: str, pred: str) -> bool:
    """Is ``pred`` a number (decimal literal or lowest-terms fraction) equal to the numeric gold?"""
    p = _undecorate(pred)
    gold = _canonical_decimal(num_gold)
    if _DEC_RE.fullmatch(p):
        return _canonical_decimal(p) == gold
    frac = _lowest_terms_fraction(p)
    if frac is None:
        return False  # e.g. `12+34` for 46: not a final numeric answer
    gold_value = _decimal_fraction(gold)
    return gold_value is not None and frac == gold_value


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
    """Score in-process when possible, else name the math-verify job; never raises on content."""
    try:
        return _decide_unguarded(completion, gold)
    except Exception:  # noqa: BLE001 -- a reward must not end a training run over one odd completion
        return _Decision(0.0)


def _decide_unguarded(completion: str, gold: str) -> _Decision:
    if not isinstance(completion, str):
        return _Decision(0.0)
    if isinstance(gold, int) and not isinstance(gold, bool):
        gold = str(gold)  # datasets often store integer answers as ints
    if not isinstance(gold, str):
        return _Decision(0.0)
    pred = extract_boxed(completion)
    if not pred or len(pred) > MAX_ANSWER_CHARS:
        return _Decision(0.0)
    gold = normalize_gold(gold)
    if not gold:
        return _Decision(0.0)
    num_gold = _numeric_gold(gold)
    if num_gold is not None:
        return _Decision(float(_numeric_match(num_gold, pred)))
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
    """1.0/0.0 per (completion, gold). Each math-verify check is bounded by ``timeout_s``.

    Whatever the completions or golds contain, this returns scores (0.0 for anything it cannot
    check) rather than raising; see the module docstring, point 5, for what still raises.
    """
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
