"""Verifiable reward: the final ``\\boxed{...}`` answer checked against a gold answer.

One reward for both scales (toy arithmetic and Qwen3 on MATH/AIME). It reads answers the way
math-verify's own tests expect, except for the deliberate deviations listed below, and a test
(tests/test_rewards.py, ``test_agreement_with_math_verify``) measures the agreement with
``math_verify.verify(parse(gold), parse(completion))`` on boxed cases of every kind.

1. The answer is in the boxes at the end of the completion, with balanced braces (``\\{``/``\\}`` are
   literal braces). A completion whose last box is cut off (unbalanced) has no answer: a truncated
   generation never scores. Boxes written together are one answer, as math-verify groups them:
   every box of the math environment that holds the last box, and of the environments before it
   joined by a bare connector (``$x=\\boxed{1}$ and $y=\\boxed{2}$``); outside math delimiters, boxes
   fewer than 10 characters apart, or fewer than 70 with a connector (and, or, a comma, a
   semicolon). An earlier box across prose is an intermediate value and is not read.
2. Against a gold of several values -- a tuple ``(3, -1)``, a set ``\\{-2, 5\\}``, an interval, a
   bare list ``1, 2``, ``\\pm 5``, or a gold of several boxes -- the boxes together are the answer,
   compared by math-verify: in order for a tuple or an interval, in any order for a set or a list;
   one box holding a list (``\\boxed{1, 2}``) is the same answer. Against a single value the last
   box decides. A comma followed by a space separates list items (``\\boxed{32, 349}`` is two
   numbers); ``10,000``, ``10{,}000``, ``1\\,000`` are one number.
3. When the gold is a plain number (``46``, ``-3``, ``0.5``, ``10{,}000``; a gold given as a Python
   int or float is read as its decimal string) the prediction must be a *number* too: a decimal
   literal, a fraction in lowest terms (``\\frac{1}{2}``, ``\\dfrac12``, ``1/2``), a mixed number with
   a proper fraction (``3\\frac{1}{2}``) or scientific notation (``1.5\\times10^{3}``), compared
   exactly (canonical digit strings, so a 200,000-digit literal costs microseconds and never
   reaches ``int()``'s 4300-digit limit; fractions via ``fractions.Fraction``). Decorations are
   read as math-verify reads them: ``x = `` (a name on the left: ``k = 45``, ``x_1 = 3``, ``AB =
   5``, ``f(3) = 9``), ``^\\circ``, ``\\$``, a ``\\%`` (``40\\%`` is 40 and 0.4), trailing
   ``\\text{...}`` units (``\\text{m}/\\text{s}``, ``\\text{cm}^2``), one pair of braces or
   parentheses, ``\\text{7}``/``\\mathbf{7}``, and plain unit words, which a worker strips with
   math-verify's own unit list (``15 meters`` is 15, ``5 bananas`` is not a number). The Unicode
   minus (U+2212) is a minus in gold and prediction alike. The toy world scores thousands of
   completions per step and needs no worker for them.
4. Deliberate deviations from math-verify, each for a reason:
   - expressions are refused against a numeric gold (``\\boxed{12+34}``, ``2^{10}``, ``\\sqrt{4}``,
     ``12+34=46``; math-verify evaluates them), which would reward a policy for echoing the
     question (science.md); so are forms not final: an unreduced fraction ``\\frac{92}{2}``, an
     improper mixed number ``3\\frac{3}{2}``, and a box nested in a box ``\\boxed{\\boxed{3}}`` (a
     broken protocol; the toy world's alphabet can write it and its scores stay as they were);
   - numbers are compared exactly: math-verify rounds to 6 places (it accepts ``0.5000001`` for
     ``0.5`` and ``\\frac{1}{3}`` for ``0.333333``);
   - against a single-value gold the last box decides even when other boxes stand next to it
     (``\\boxed{3}, \\boxed{7}`` for 7 scores 1; math-verify reads a set and refuses it): the rule
     does not turn on how many characters separate two boxes, and it pays nothing for hedging,
     since only the last box is read (no credit when any other box matches);
   - digit grouping by a space or a thin space (``10 000``, ``1\\,000``) is one number, as
     math-verify's own number tests expect; its LaTeX parser reads a product (``10\\cdot000 = 0``).
5. Everything else (fractions, radicals, tuples, intervals, sets, text answers, against non-numeric
   golds) goes to math-verify's ``verify(gold, pred)`` -- gold first, it is not symmetric -- on a
   persistent pool of worker processes; several boxes are parsed as one list, as math-verify
   parses them in a completion. math-verify's own timeout uses ``signal.alarm`` (fails off the
   main thread) and some inputs hang anyway (``9^{9^{9^{9}}}`` makes sympy build a 369-million-digit
   integer), so the parent enforces the timeout: a worker that overruns is killed, the item scores
   0.0, and a fresh worker is started. Each item gets ``timeout_s`` of worker time, so ``score``
   returns within about ``timeout_s`` plus one worker start (~0.5 s) whatever the text;
   ``score_batch`` spreads items over the workers and every item is bounded the same way.
6. No exception leaves ``score``/``score_batch`` because of what a completion or gold says: an answer
   longer than ``MAX_ANSWER_CHARS`` is not checked (scores 0.0), a non-string completion scores 0.0,
   a gold that is neither text nor a finite number scores 0.0, and any failure while deciding
   scores 0.0. What still raises is misuse of the API (lengths that differ, ``timeout_s <= 0``) and
   an environment where the workers cannot start at all (one RuntimeError naming the cause, not
   silent zeros).

The pool is created lazily on first use (plain `python` subprocesses over pipes; start-up is not
charged to any item's timeout) and shut down at interpreter exit. A worker that dies before it is
ready three times in a row means a broken environment: one RuntimeError naming the cause.
"""

from __future__ import annotations

import atexit
import bisect
import math
import numbers
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from functools import lru_cache
from multiprocessing.connection import Connection, wait

__all__ = [
    "score",
    "score_batch",
    "is_compliant",
    "extract_boxed",
    "extract_answer",
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


def _scan_boxes(text: str) -> list[tuple[int, int, str]] | None:
    """Every top-level box, in order, as (index of ``\\boxed``, index of its closing brace, stripped
    content); None when the final box never closes (everything after it is inside it)."""
    boxes: list[tuple[int, int, str]] = []
    pos = 0
    while True:
        i = text.find(_BOXED, pos)
        if i < 0:
            return boxes
        j = i + len(_BOXED)
        while j < len(text) and text[j] in " \t":
            j += 1
        if j >= len(text) or text[j] != "{":
            pos = j  # `\boxed` without a brace group is not an answer
            continue
        end = _match_brace(text, j)
        if end < 0:
            return None
        boxes.append((i, end - 1, text[j + 1 : end - 1].strip()))
        pos = end


# Which boxes are one answer follows math-verify's reading (its rule and thresholds), so a pair or a
# set may be written as several boxes:
# - the last box inside a math environment ($...$, $$...$$, \(...\), \[...\]): every box in that
#   environment, and in the environments before it joined by a bare connector (`$\boxed{1}$ and
#   $\boxed{2}$`, up to six environments; `$\boxed{1}$, so $\boxed{2}$` is two statements);
# - otherwise (bare boxes, or a brace follows the answer's environment): a box joins the one after it
#   when fewer than _JOIN_NEAR characters separate them (`\boxed{1}\boxed{2}`, `x_1 = \boxed{2}, x_2 =
#   \boxed{3}`), or fewer than _JOIN_FAR with a connector (and / or / , / ;) and a different value.
# A box further back, or across prose, is an intermediate value. A value repeated next to itself counts once.
_JOIN_NEAR = 10
_JOIN_FAR = 70
_CONNECTOR_RE = re.compile(r"\b(?:and|or)\b|,|;")
_ENV_JOIN_RE = re.compile(r"\s*(?:,?and|,?or|,)\s*")
_MAX_CHAINED_ENVS = 6
_UNESCAPED_DOLLAR_RE = re.compile(r"(?<!\\)\$")


def _env_of(text: str, pos: int) -> tuple[int, int] | None:
    """The math environment around ``pos`` as (start, end), or None (str.find/count only: linear)."""
    for opener, closer in (("\\[", "\\]"), ("\\(", "\\)")):
        a = text.rfind(opener, 0, pos)
        if a >= 0 and text.find(closer, a, pos) < 0:
            b = text.find(closer, pos)
            if b >= 0:
                return a, b + 2
    if text.count("$$", 0, pos) % 2 == 1:
        b = text.find("$$", pos)
        if b >= 0:
            return text.rfind("$$", 0, pos), b + 2
    line_start = text.rfind("\n", 0, pos) + 1
    before = text[line_start:pos].replace("\\$", "").replace("$$", "")
    if before.count("$") % 2 == 1:  # an inline $...$ never crosses a line
        line_end = text.find("\n", pos)
        m = _UNESCAPED_DOLLAR_RE.search(text, pos, len(text) if line_end < 0 else line_end)
        if m is not None:
            return text.rfind("$", line_start, pos), m.end()
    return None


def _dedup(contents: list[str]) -> list[str]:
    return [c for i, c in enumerate(contents) if i == 0 or c != contents[i - 1]]


def extract_answer(completion: str) -> list[str] | None:
    """The final answer's boxes, in order: the last box and the boxes written together with it (see
    above); None if there is no box or the last one never closes."""
    boxes = _scan_boxes(completion)
    if not boxes:
        return None
    if len(boxes) == 1:
        return [boxes[0][2]]
    env = _env_of(completion, boxes[-1][0])
    if env is not None and completion.rfind("}") < env[1]:
        starts = [b[0] for b in boxes]
        lo = bisect.bisect_left(starts, env[0])
        for _ in range(_MAX_CHAINED_ENVS - 1):
            prev = _env_of(completion, boxes[lo - 1][0]) if lo > 0 else None
            if prev is None or prev[1] > env[0] or not _ENV_JOIN_RE.fullmatch(completion, prev[1], env[0]):
                break
            env, lo = prev, bisect.bisect_left(starts, prev[0])
        return _dedup([b[2] for b in boxes[lo:]])
    group = [boxes[-1][2]]
    right = boxes[-1][0]
    for start, close, content in reversed(boxes[:-1]):
        between = completion[close + 1 : right]
        if not (len(between) < _JOIN_NEAR or (
                len(between) < _JOIN_FAR and content != group[-1] and _CONNECTOR_RE.search(between))):
            break
        group.append(content)
        right = start
    return _dedup(group[::-1])


def extract_boxed(completion: str) -> str | None:
    """Content of the last top-level ``\\boxed{...}``; None if there is none or it never closes."""
    boxes = _scan_boxes(completion)
    return boxes[-1][2] if boxes else None


def is_compliant(completion: str) -> bool:
    """True if the completion ends its work with a well-formed, non-empty ``\\boxed{...}`` answer."""
    ans = extract_boxed(completion)
    return bool(ans)


# --------------------------------------------------------------------------------------------------
# Numeric literals
# --------------------------------------------------------------------------------------------------

_DEC_RE = re.compile(r"[+-]?(?:\d+(?:\.\d+)?|\.\d+)")  # `5.` is not read (math-verify fails on it)
# Digit grouping: one separator kind throughout, groups of three (`10,000`, `1\,000`, `1 000`).
_GROUPED_RE = re.compile(r"[+-]?\d{1,3}(,|\\,|\\ | )\d{3}(?:\1\d{3})*(?:\.\d+)?")
_NEG_SPACE_RE = re.compile(r"\\!\s*")  # `\!`, a negative thin space (`32,\! 349` is one number)
_SIGN_SPACE_RE = re.compile(r"^([+-])\s+")
_LIST_COMMA_RE = re.compile(r",\s")  # `32, 349` is a list of two numbers, `32,349` one number
_UNIT_TAIL_RE = re.compile(  # trailing text blocks, with powers, / and \cdot between: ` \text{m}/\text{s}^2`
    r"(?:(?:\s|\\[,;: ]|/|\\cdot)*"
    r"\\(?:text|textrm|textit|textbf|mbox|mathrm|mathit|mathbf)\s*\{[^{}]*\}(?:\^\{?\d\}?)?)+$")
_PARENS_RE = re.compile(r"\\left\s*\((.*)\\right\s*\)|\((.*)\)")  # `(-\frac{5}{2})`
_WRAPPER_RE = re.compile(r"\\(?:text|textrm|textbf|mbox|mathrm|mathbf|boldsymbol)\s*\{([^{}]*)\}")
_PERCENT_RE = re.compile(r"(?:\\%|%|\\text\{\s*(?:\\%|percent|percentage|pct)\s*\}|\b(?:percentage|percent|pct))$")
_EDGE_SPACE_RE = re.compile(r"^(?:\s|\\[,;:! ]|\\q?quad)+|(?:\s|\\[,;:! ]|\\q?quad)+$")
_RELATION_EQ_RE = re.compile(r"(?<![\\<>!:])=")
# The left side of `name = value`: letters (runs of at most two: x, k, AB), commands (\theta), with
# subscripts, primes and argument lists (x_1, f(3), P(A)), joined by spaces or + - * / \cdot. Not
# arithmetic on numbers (`12+34 = 46` stays an expression), and not the toy world's `ANS` marker.
_NAME = (r"(?:\d+(?:\.\d+)?)?(?:\\[A-Za-z]+|[A-Za-z]{1,2})"  # an optional coefficient: `2x`
         r"(?:_\{[^{}]*\}|_[A-Za-z0-9]|\^\{[^{}]*\}|\^[A-Za-z0-9]|'|\([^()]*\))*")
_LHS_RE = re.compile(rf"\s*{_NAME}(?:(?:\s*(?:[+\-*/]|\\cdot|\\times)\s*|\s+){_NAME})*\s*")
_UNICODE_MINUS = str.maketrans({"\u2212": "-"})  # what math-verify reads as a minus; `–` (en dash) it does not


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


def _plain_number(s: str) -> str | None:
    """``s`` as a decimal literal without grouping (``10{,}000`` -> ``10000``), or None."""
    s = _NEG_SPACE_RE.sub("", s.replace("{,}", ","))
    if _LIST_COMMA_RE.search(s):
        return None
    s = _SIGN_SPACE_RE.sub(r"\1", s.strip())
    if _DEC_RE.fullmatch(s):
        return s
    m = _GROUPED_RE.fullmatch(s)
    return s.replace(m.group(1), "") if m else None


def _numeric_gold(gold: str) -> str | None:
    """The gold as a canonical numeric literal string, or None if it is not a plain number."""
    lit = _plain_number(_strip_math(gold))
    return None if lit is None else _canonical_decimal(lit)


def _equation_rhs(p: str) -> str:
    """``value`` of ``name = value`` (one ``=``, a name on the left: see _LHS_RE), else ``p``."""
    parts = _RELATION_EQ_RE.split(p)
    if len(parts) == 2 and _LHS_RE.fullmatch(parts[0]):
        return parts[1].strip()
    return p


def _undecorate(pred: str) -> tuple[str, bool, bool]:
    """(``pred`` without the decorations a numeric answer may carry, had a percent sign, was wrapped
    whole in ``\\text{}``/``\\mathbf{}``: then only a plain number counts)."""
    p = _EDGE_SPACE_RE.sub("", _equation_rhs(_strip_math(pred).replace("\\displaystyle", "")))
    percent = False
    m = _PERCENT_RE.search(p)
    if m is not None:
        p, percent = _EDGE_SPACE_RE.sub("", p[: m.start()]), True
    m = _WRAPPER_RE.fullmatch(p)
    if m is not None:
        return m.group(1).strip(), percent, True
    p = _EDGE_SPACE_RE.sub("", _UNIT_TAIL_RE.sub("", p))
    for deco in ("^\\circ", "^{\\circ}", "\\$"):
        if p.endswith(deco):
            p = p[: -len(deco)]
        if p.startswith(deco):
            p = p[len(deco) :]
    p = _EDGE_SPACE_RE.sub("", p)
    if len(p) >= 2 and p[0] == "{" and p[-1] == "}" and "{" not in p[1:-1] and "}" not in p[1:-1]:
        p = p[1:-1].strip()  # `{0.5}`; only a flat group, so `{1}{2}` is not mistaken for one
    m = _PARENS_RE.fullmatch(p)
    if m is not None and "(" not in (inner := m.group(1) or m.group(2) or "") and ")" not in inner:
        p = inner.strip()  # one number in parentheses; `(1, 2)` stays a pair (the comma rule)
    return p, percent, False


def _word_tail(p: str) -> int:
    """Start of a trailing run of plain words (`` meters``, `` square units``) after a number, or -1."""
    i = len(p)
    while i > 0 and (p[i - 1].isascii() and (p[i - 1].isalpha() or p[i - 1] in " .")):
        i -= 1
    while i < len(p) and not p[i].isalpha():
        i += 1  # the run starts at a letter
    tail = p[i:]
    if i == 0 or not tail or not any(c.islower() for c in tail) or not (p[i - 1].isdigit() or p[i - 1] in " }"):
        return -1
    return i


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
    re.compile(r"([+-]?)\\[dtc]?frac(?:\{([+-]?)(\d+)\}|()(\d))(?:\{(\d+)\}|(\d))"),  # \frac{1}{2}, \frac12
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


_MIXED_RE = re.compile(r"([+-]?)(\d+)\\[dtc]?frac(?:\{(\d+)\}|(\d))(?:\{(\d+)\}|(\d))")  # 3\frac{1}{2}
_SCIENTIFIC_RE = re.compile(r"([+-]?[1-9](?:\.\d+)?)(?:\\times|\\cdot)10\^(?:\{([+-]?\d{1,4})\}|(\d))")


def _mixed_or_scientific(p: str) -> Fraction | None:
    """A mixed number with a proper fraction in lowest terms (``3\\frac{1}{2}``) or scientific
    notation (``1.5 \\times 10^{3}``: one nonzero digit before the point), else None."""
    m = _MIXED_RE.fullmatch(p)
    if m is not None:
        sign, whole, num_a, num_b, den_a, den_b = m.groups()
        digits = (whole, num_a or num_b, den_a or den_b)
        if max(len(x) for x in digits) > _MAX_FRACTION_DIGITS:
            return None
        w, n, d = (int(x) for x in digits)
        if not 0 < n < d or math.gcd(n, d) != 1:
            return None  # `3\frac{3}{2}`, `3\frac{2}{4}`: not a number in its final form
        return (-1 if sign == "-" else 1) * (w + Fraction(n, d))
    m = _SCIENTIFIC_RE.fullmatch(p)
    if m is not None:
        exponent = int(m.group(2) or m.group(3))
        if abs(exponent) > _MAX_FRACTION_DIGITS:
            return None
        return Fraction(m.group(1)) * Fraction(10) ** exponent
    return None


_UNITS = "units"  # verdict: a number followed by words; the worker reads them with math-verify's unit list


def _numeric_verdict(num_gold: str, pred: str, strip_units=None) -> float | str:
    """1.0/0.0: is ``pred`` a number (module docstring, point 3; with a percent sign also read as
    hundredths) equal to the numeric gold? ``_UNITS`` when words follow the number and
    ``strip_units`` (math-verify's unit remover, in a worker) is not given."""
    if _DEC_RE.fullmatch(pred):
        return float(_canonical_decimal(pred) == num_gold)  # the common case, undecorated
    p, percent, wrapped = _undecorate(pred)
    value: str | Fraction | None = None
    lit = _plain_number(p)
    if lit is not None:
        value = _canonical_decimal(lit)
    else:
        compact = re.sub(r"\s+", "", p)
        value = _lowest_terms_fraction(compact) or _mixed_or_scientific(compact)
    if value is None:
        if wrapped or _word_tail(p) < 0:
            return 0.0  # e.g. `12+34` for 46: not a final numeric answer
        if strip_units is None:
            return _UNITS
        stripped = strip_units(p)
        verdict = _numeric_verdict(num_gold, stripped) if stripped != p else 0.0
        return 0.0 if verdict == _UNITS else verdict
    if isinstance(value, str):
        if value == num_gold:
            return 1.0
        if not percent:
            return 0.0
        value = _decimal_fraction(value)
    gold_value = _decimal_fraction(num_gold)
    if value is None or gold_value is None:
        return 0.0
    return float(value == gold_value or (percent and value / 100 == gold_value))


@dataclass(frozen=True)
class _Decision:
    """In-process verdict (score) or the worker job (kind, gold, pred) still to run."""

    score: float | None
    job: tuple | None = None


def normalize_gold(gold: str) -> str:
    """The answer a gold string holds: the boxed answer of a full solution (several boxes written
    together as ``\\boxed{a}, \\boxed{b}``, a list), else the text without ``$``."""
    if _BOXED in gold:
        boxes = extract_answer(gold)
        if boxes and all(boxes):
            return boxes[0] if len(boxes) == 1 else ", ".join(f"\\boxed{{{b}}}" for b in boxes)
    return _strip_math(gold)


def _gold_text(gold) -> str | None:
    """A gold given as a number is read as its decimal string (``0.5`` as ``"0.5"``); None if unusable."""
    if isinstance(gold, str):
        return gold
    if isinstance(gold, bool):
        return None
    if isinstance(gold, numbers.Integral):
        return str(int(gold))
    if isinstance(gold, numbers.Rational):
        return f"\\frac{{{gold.numerator}}}{{{gold.denominator}}}" if gold.denominator != 1 else str(gold.numerator)
    if isinstance(gold, (numbers.Real, Decimal)):
        try:
            d = Decimal(str(gold))  # the shortest form that reads back: `0.1`, not float32's 0.100000001...
        except ArithmeticError:
            d = Decimal(repr(float(gold)))
        return format(d, "f") if d.is_finite() else None  # `1e-07` as `0.0000001`
    return None


def _is_collection(gold: str) -> bool:
    """Whether the gold is several values (a tuple, set, interval, list or several boxes): then the
    prediction's boxes together are its answer, otherwise its last box."""
    return _BOXED in gold or "," in gold.replace("{,}", "") or ";" in gold or "\\pm" in gold or "\\mp" in gold


def _decide(completion: str, gold: str) -> _Decision:
    """Score in-process when possible, else name the worker job; never raises on content."""
    try:
        return _decide_unguarded(completion, gold)
    except Exception:  # noqa: BLE001 -- a reward must not end a training run over one odd completion
        return _Decision(0.0)


def _decide_unguarded(completion: str, gold) -> _Decision:
    if not isinstance(completion, str):
        return _Decision(0.0)
    gold = _gold_text(gold)
    if gold is None:
        return _Decision(0.0)
    boxes = extract_answer(completion)
    if not boxes or not boxes[-1]:
        return _Decision(0.0)
    gold = normalize_gold(gold.translate(_UNICODE_MINUS))
    if not gold:
        return _Decision(0.0)
    boxes = [b.translate(_UNICODE_MINUS) for b in boxes]
    num_gold = _numeric_gold(gold)
    if num_gold is not None or not _is_collection(gold):
        boxes = boxes[-1:]  # against a single value the last box decides
    if sum(len(b) for b in boxes) > MAX_ANSWER_CHARS:
        return _Decision(0.0)
    if num_gold is not None:
        verdict = _numeric_verdict(num_gold, boxes[0])
        if verdict == _UNITS:
            return _Decision(None, ("units", num_gold, boxes[0]))
        return _Decision(verdict)  # type: ignore[arg-type]
    return _Decision(None, ("verify", gold, boxes[0] if len(boxes) == 1 else tuple(boxes)))


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

    def strip_units(text: str) -> str:
        # math-verify's own unit remover (its NormalizationConfig.units step: two passes)
        from latex2sympy2_extended.math_normalization import units_regex

        for _ in range(2):
            t = units_regex.sub(r"\1", text)
            if t and t != text:
                text = t
        return text.strip()

    send.send("ready")
    while True:
        try:
            msg = recv.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        kind, gold, pred = msg
        parts = (pred,) if isinstance(pred, str) else tuple(pred)
        if stall_marker is not None and stall_marker in parts:
            time.sleep(3600)  # test hook: behave like an input that hangs sympy
        try:
            if kind == "units":  # a number followed by words: math-verify's units, then our number rule
                ok = _numeric_verdict(gold, pred, strip_units) == 1.0
            else:
                g = parsed_gold(gold)
                # several boxes are parsed as math-verify parses them in a completion: one list
                text = parts[0] if len(parts) == 1 else ", ".join(f"\\boxed{{{b}}}" for b in parts)
                p = parse("$" + text + "$", parsing_timeout=None)
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
    def verify_many(self, jobs: list[tuple], *, timeout_s: float) -> list[bool]:
        """One verdict per job; False on timeout. A job is ``(gold, pred)`` or ``("verify", gold,
        pred)``: math-verify ``verify(parse(gold), parse(pred))``, ``pred`` one box's content or a
        tuple of boxes read together as one list; or ``("units", numeric_gold, pred)``: the number
        rule after math-verify's unit remover."""
        jobs = [("verify", *j) if len(j) == 2 else tuple(j) for j in jobs]
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
    check) rather than raising; see the module docstring, point 6, for what still raises.
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
