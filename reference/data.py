"""Labeled math problems for the Qwen3-scale path: training sets and evaluation sets.

Sources: a hub dataset id (optionally `id@split`) or a local JSONL / JSON / Parquet file (or a
directory of them) in the same schema. Schemas (column names as published on the hub):

| schema    | columns used                                   | e.g.                                        |
|-----------|------------------------------------------------|---------------------------------------------|
| `dapo`    | prompt[list of {role, content}], reward_model{ground_truth} | BytedTsinghua-SIA/DAPO-Math-17k |
| `answer`  | problem, answer (+ unique_id / id, level)      | HuggingFaceH4/MATH-500, HuggingFaceH4/aime_2024 |
| `solution`| problem, solution (gold = its last \\boxed{})   | MATH train (lighteval / hendrycks_math)     |
| `question`| question, answer                               | opencompass/AIME2025                        |

`schema="auto"` picks the first schema whose columns are all present. A missing column or an
unreachable hub is one `InputError` line. Gold answers are normalized once at load time (a full
solution is reduced to its boxed answer) so rewards never re-extract them; rows without a usable gold
are dropped and counted. DAPO-Math-17k repeats each problem many times in some uploads: problems are
de-duplicated by text, and its "Answer:"-format instruction wrapper is replaced by the boxed protocol.

Prompts use the tokenizer's chat template with thinking mode off (`enable_thinking=False`), as the
authors' public setup does; rewards go through the shared `reference.rewards.score_batch`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from theory.errors import InputError

from .rewards import normalize_gold

BOXED_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."

# Default split of the hub sets this project names (others: pass `id@split`).
HUB_SPLITS = {
    "HuggingFaceH4/MATH-500": "test",
    "BytedTsinghua-SIA/DAPO-Math-17k": "train",
    "HuggingFaceH4/aime_2024": "train",
    "opencompass/AIME2025": "test",
    "yentinglin/aime_2025": "train",
}

SCHEMAS: dict[str, tuple[str, ...]] = {
    "dapo": ("prompt", "reward_model"),
    "answer": ("problem", "answer"),
    "solution": ("problem", "solution"),
    "question": ("question", "answer"),
}

_DAPO_PREFIX = re.compile(r"^\s*Solve the following math problem.*?\n\n", re.S)
_DAPO_SUFFIX = re.compile(r"\n\nRemember to put your answer.*$", re.S)


@dataclass(frozen=True)
class DatasetProblem:
    """One problem as a dataset row gives it (question text, normalized gold); `load_world` turns it into
    a `reference.world.Problem` (a chat-templated prompt) for the pipeline."""

    uid: str
    question: str
    gold: str  # normalized answer (what the reward compares against)
    source: str = ""
    level: str = ""

    def messages(self, instruction: str = BOXED_INSTRUCTION) -> list[dict[str, str]]:
        return [{"role": "user", "content": f"{self.question}\n\n{instruction}"}]


@dataclass(frozen=True)
class ProblemSet:
    name: str
    schema: str
    problems: tuple[DatasetProblem, ...]
    dropped: int = 0  # rows without a usable gold answer
    duplicates: int = 0  # rows whose question text repeated an earlier row
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def __len__(self) -> int:
        return len(self.problems)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "schema": self.schema, "n": len(self.problems),
                "dropped": self.dropped, "duplicates": self.duplicates}

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame([p.__dict__ for p in self.problems])


# --------------------------------------------------------------------------------------------------
# Reading rows
# --------------------------------------------------------------------------------------------------


def _read_local(path: Path) -> list[dict[str, Any]]:
    import pandas as pd

    files = sorted(f for f in path.rglob("*") if f.suffix in (".jsonl", ".json", ".parquet")) if path.is_dir() else [path]
    if not files:
        raise InputError(f"data directory {str(path)!r} holds no .jsonl/.json/.parquet file")
    rows: list[dict[str, Any]] = []
    for f in files:
        try:
            if f.suffix == ".parquet":
                df = pd.read_parquet(f)
            elif f.suffix == ".jsonl":
                df = pd.read_json(f, lines=True, dtype=False)
            elif f.suffix == ".json":
                df = pd.read_json(f, dtype=False)
            else:
                raise InputError(f"data file {str(f)!r}: use .jsonl, .json or .parquet")
        except InputError:
            raise
        except Exception as e:  # noqa: BLE001 — pandas/pyarrow raise many types for a bad file
            raise InputError(f"data file {str(f)!r}: cannot read ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
        rows.extend(df.to_dict(orient="records"))
    return rows


def _read_hub(source: str, split: str | None) -> list[dict[str, Any]]:
    name, _, at_split = source.partition("@")
    split = at_split or split or HUB_SPLITS.get(name, "train")
    try:
        import datasets

        ds = datasets.load_dataset(name, split=split)
    except Exception as e:  # noqa: BLE001 — offline, unknown id, unknown split: one line either way
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(
            f"cannot load hub dataset {name!r} split {split!r} ({msg[:160]}); offline? pass a local "
            f".jsonl/.parquet file in the same schema"
        ) from None
    return [dict(r) for r in ds]


def _looks_local(source: str) -> bool:
    return source.startswith(("/", ".", "~")) or Path(source).exists() or source.endswith(
        (".jsonl", ".json", ".parquet")
    )


def read_rows(source: str | Path, *, split: str | None = None) -> list[dict[str, Any]]:
    s = str(source)
    if _looks_local(s):
        p = Path(s).expanduser()
        if not p.exists():
            raise InputError(f"data file {s!r} does not exist")
        return _read_local(p)
    return _read_hub(s, split)


# --------------------------------------------------------------------------------------------------
# Schemas -> problems
# --------------------------------------------------------------------------------------------------


def detect_schema(columns: Iterable[str]) -> str:
    cols = set(columns)
    for name, needed in SCHEMAS.items():
        if set(needed) <= cols:
            return name
    raise InputError(
        f"data has columns {sorted(cols)}; none of the known schemas fits "
        + "; ".join(f"{k}: {', '.join(v)}" for k, v in SCHEMAS.items())
    )


def _dapo_question(prompt: Any) -> str:
    if isinstance(prompt, str):
        text = prompt
    else:
        msgs = list(prompt) if prompt is not None else []
        users = [m for m in msgs if isinstance(m, dict) and m.get("role") == "user"]
        if not users:
            raise ValueError("no user message")
        text = str(users[-1].get("content", ""))
    text = _DAPO_SUFFIX.sub("", _DAPO_PREFIX.sub("", text, count=1))
    return text.strip()


def _row_to_problem(row: dict[str, Any], schema: str, i: int, name: str) -> DatasetProblem | None:
    if schema == "dapo":
        question = _dapo_question(row["prompt"])
        rm = row["reward_model"]
        if isinstance(rm, str):
            rm = json.loads(rm)
        raw_gold = str((rm or {}).get("ground_truth", ""))
        extra = row.get("extra_info") or {}
        uid = str(extra.get("index", "")) if isinstance(extra, dict) else ""
        level = ""
    elif schema == "answer":
        question, raw_gold = str(row["problem"]), str(row["answer"])
        uid = str(row.get("unique_id", row.get("id", "")))
        level = str(row.get("level", ""))
    elif schema == "solution":
        question, raw_gold = str(row["problem"]), str(row["solution"])
        uid = str(row.get("unique_id", ""))
        level = str(row.get("level", ""))
    elif schema == "question":
        question, raw_gold = str(row["question"]), str(row["answer"])
        uid = str(row.get("id", ""))
        level = ""
    else:  # pragma: no cover — guarded by load_problems
        raise InputError(f"unknown schema {schema!r}")
    gold = normalize_gold(raw_gold)
    if schema == "solution" and "\\boxed" not in raw_gold:
        gold = ""  # a solution without a boxed answer has no checkable gold
    if not question.strip() or not gold:
        return None
    if not uid or uid in ("nan", "None"):
        uid = f"{name}-{i}-{hashlib.sha1(question.encode()).hexdigest()[:8]}"
    return DatasetProblem(uid=uid, question=question, gold=gold, source=name, level=level)


def load_problems(
    source: str | Path,
    *,
    schema: str = "auto",
    split: str | None = None,
    limit: int | None = None,
    name: str | None = None,
) -> ProblemSet:
    """Problems from a hub id (`id` or `id@split`) or a local file/directory in a hub schema."""
    if schema != "auto" and schema not in SCHEMAS:
        raise InputError(f"data schema must be 'auto' or one of {', '.join(SCHEMAS)}, got {schema!r}")
    rows = read_rows(source, split=split)
    label = name or Path(str(source)).stem.split("@")[0]
    if not rows:
        raise InputError(f"data {str(source)!r} is empty")
    cols = set().union(*(r.keys() for r in rows[:50]))
    if schema == "auto":
        schema = detect_schema(cols)
    missing = [c for c in SCHEMAS[schema] if c not in cols]
    if missing:
        raise InputError(f"data {str(source)!r}: missing column {missing[0]!r} for schema {schema!r} (has {sorted(cols)})")
    problems: list[DatasetProblem] = []
    seen: set[str] = set()
    dropped = dups = 0
    for i, row in enumerate(rows):
        try:
            p = _row_to_problem(row, schema, i, label)
        except (KeyError, ValueError, TypeError, json.JSONDecodeError) as e:
            raise InputError(f"data {str(source)!r} row {i}: malformed {schema!r} row ({e})") from None
        if p is None:
            dropped += 1
            continue
        if p.question in seen:
            dups += 1
            continue
        seen.add(p.question)
        problems.append(p)
        if limit is not None and len(problems) >= limit:
            break
    if not problems:
        raise InputError(f"data {str(source)!r}: no row has both a problem and a usable gold answer")
    return ProblemSet(name=label, schema=schema, problems=tuple(problems), dropped=dropped, duplicates=dups,
                      meta={"source": str(source)})


# --------------------------------------------------------------------------------------------------
# Prompts and rewards
# --------------------------------------------------------------------------------------------------


def chat_prompts(problems: Sequence[DatasetProblem], tokenizer, *, instruction: str = BOXED_INSTRUCTION) -> list[str]:
    """Prompt strings from the tokenizer's chat template, thinking mode off."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise InputError("tokenizer has no chat template: use an instruct/chat checkpoint (e.g. Qwen/Qwen3-1.7B)")
    return [
        tokenizer.apply_chat_template(
            p.messages(instruction), tokenize=False, add_generation_prompt=True, enable_thinking=False
        )
        for p in problems
    ]


# --------------------------------------------------------------------------------------------------
# A dataset world: the same `World` shape the toy world has, so the pipeline has one code path
# --------------------------------------------------------------------------------------------------


def load_world(wcfg, tokenizer):
    """`reference.world.World` from `[world] kind = "dataset"` (train_path, test_path, unlabeled_path).

    labeled: the train set minus a seeded `val_fraction` held out as `val` (DAPO-Math-17k 80/20 when
    0.2), in a seeded order so the pipeline's first-N slice is a random N; problems that also appear
    in the test set are removed (contamination guard). unlabeled: `unlabeled_path` if given, else the
    labeled problems beyond the budget N (or all of them when N uses every one); its golds are kept
    for diagnostics only. Prompts longer than `max_prompt_tokens` are dropped. `val`, `unlabeled`,
    `test` > 0 cap those splits.
    """
    import random

    from reference.world import Problem, World

    if tokenizer is None:
        raise InputError("a dataset world needs the student's tokenizer (for the chat template)")
    test = load_problems(wcfg.test_path, name="test") if wcfg.test_path else None
    test_q = {p.question for p in test.problems} if test else set()
    train = load_problems(wcfg.train_path, name="train")
    pool = [p for p in train.problems if p.question not in test_q]
    random.Random(wcfg.seed).shuffle(pool)
    n_val = round(len(pool) * wcfg.val_fraction) if wcfg.val_fraction > 0 else 0
    val, labeled = pool[:n_val], pool[n_val:]
    if wcfg.unlabeled_path:
        unl = [p for p in load_problems(wcfg.unlabeled_path, name="unlabeled").problems if p.question not in test_q]
    else:
        unl = labeled[wcfg.labels:] or list(labeled)

    def convert(problems, cap: int) -> tuple:
        out = []
        for p, prompt in zip(problems, chat_prompts(problems, tokenizer)):
            if wcfg.max_prompt_tokens and len(tokenizer(prompt, add_special_tokens=False).input_ids) > wcfg.max_prompt_tokens:
                continue
            level = re.sub(r"\D", "", p.level)
            out.append(Problem(pid=p.uid, prompt=prompt, gold=p.gold, terms=int(level) if level else 0))
            if cap and len(out) >= cap:
                break
        return tuple(out)

    return World(
        labeled=convert(labeled, 0),
        val=convert(val, wcfg.val),
        unlabeled=convert(unl, wcfg.unlabeled),
        test=convert(test.problems, wcfg.test) if test else (),
        config=wcfg,
    )
