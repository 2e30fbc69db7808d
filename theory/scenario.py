"""Scenarios: every input of the planner, tagged measured | published | assumed, validated on load.

A scenario is a TOML file (`read_scenario`; the budget planner ships presets). Each numeric input is a table
`{ value = ..., tag = "measured"|"published"|"assumed", why = "..." (or source = "..."), sd = ... }`.
`sd` is the prior standard deviation of an assumed input on its transformed scale (logit for
probabilities and percents, log for positive quantities, identity for logits); assumed inputs are
fitted parameters (they get a Gaussian prior there and enter the Laplace covariance).

Inputs are addressed by a flat path, e.g. `rates.kappa`, `inputs.kl0`, `benchmarks.MATH.s_d`,
`student.compliance`, `student.benchmarks.MATH.accuracy_given_compliance`. See docs/theory.md.
"""

from __future__ import annotations

import copy
import functools
import math
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from theory.arms import ARMS, ComputeModel
from theory.errors import InputError

TAGS = ("measured", "published", "assumed")
# kind -> (default prior sd on the transformed scale, lower bound, upper bound) of the natural value
KINDS = {
    "percent": (0.15, 0.0, 100.0),
    "probability": (0.5, 0.0, 1.0),
    "positive": (0.5, 0.0, math.inf),
    "real": (0.5, -math.inf, math.inf),  # identity scale (a signed shift, e.g. a stage's ability cost in logits)
}
RATES = {  # name -> kind
    "kappa": "positive",  # GRPO progress per 1000 labels at full signal
    "rho": "probability",  # absorption ceiling
    "phi_w": "probability",  # FKL warmup closes this fraction of the gap
    "phi_o": "probability",  # OPD closes this fraction of what is left, at zero KL
    "kl_c": "positive",  # OPD trust-region KL scale, nats/token
}
# Optional rates: absent = the original theory (the term is exactly 0, nothing fitted).
OPTIONAL_RATES = {
    "gamma": "positive",  # style displacement: ability logits lost per nat of KL_0 the student moves across
    "cost_fkl": "real",  # ability logits one FKL warmup costs by itself (self-distillation pilot)
    "cost_opd": "real",  # ability logits one OPD pass costs by itself (self-distillation pilot)
    # teacher GRPO efficiency / student GRPO efficiency; absent = 1 (one kappa for both). Give it a prior
    # around 1 (it ties the two) and let observations of both GRPO stages break the tie.
    "kappa_ratio": "positive",
}
# [lengths]: the training-length inputs (docs/theory.md, "Training length"). Never fitted to the
# observations (those were run at the reference lengths, where these inputs do not act): their prior is
# their distribution until pilot curves measure them (`theory.curves`); the plan draws them from it.
LENGTHS = {
    "reuse": "positive",  # e_r: label passes over which reusing a GRPO label saturates
    "bridge_reach": "probability",  # r_b: share of what one bridge unit leaves that longer bridges can close
}
DEFAULT_LENGTHS = {  # a scenario without [lengths] gets these, tagged assumed
    "reuse": {"value": 20.0, "tag": "assumed", "sd": 1.0, "why": (
        "built-in default: a GRPO label keeps paying over ~20 passes (the paper's recipe trains 15 epochs over "
        "its labels; 1-shot RLVR, arXiv 2504.20571, gains for hundreds of steps on one example); wide prior "
        "(95%: 2.8-140 passes)")},
    "bridge_reach": {"value": 0.3, "tag": "assumed", "sd": 1.0, "why": (
        "built-in default: a bridge stage run longer closes ~30% of what one unit leaves (the paper-like toy "
        "world's FKL and OPD validation peaked at 0.9 and 0.75 units of 200 steps, seed 900); wide prior")},
}
SCALARS = {  # [inputs] name -> (kind, required)
    "budget": ("positive", True),  # labels the observations were run with / the default plan budget
    "group_size": ("positive", True),  # G of the GRPO groups
    "k_explore": ("positive", True),  # k of the exploration ceiling pass@k
    "kl0": ("positive", True),  # teacher-student per-token KL before the bridge, nats
    # the style part of KL_0 (on protocol-following rollouts): what displaces ability; absent = kl0
    "kl0_style": ("positive", False),
    # distinct labeled problems the scenario's dataset holds (a plan beyond it warns: labels repeat)
    "dataset_size": ("positive", False),
    # sd (accuracy points) of the model's structural error, learned from held-out residuals
    # (docs/theory.md section 9); absent = theory.discrepancy.DEFAULT_SD
    "discrepancy_sd": ("positive", False),
}
MAX_DRAWS = 20_000
# Listed, never fitted: units and sizes, and the discrepancy (learned from held-out residuals, not from
# the in-sample fit it widens)
UNFITTED = frozenset({"inputs.budget", "inputs.dataset_size", "inputs.discrepancy_sd"})
UNFITTED_LEAVES = (".n_problems", ".samples")


@dataclass(frozen=True)
class Tagged:
    path: str
    value: float
    tag: str
    note: str  # why (assumed) or source (measured/published)
    kind: str
    sd: float  # prior sd on the transformed scale (assumed inputs; measured ones only with has_se)
    has_se: bool = False  # a measured/published input that stated its standard error as `sd`

    @property
    def fitted(self) -> bool:
        # The budget is the unit labels are counted in: only kappa * labels enters the dynamics, so an
        # uncertain budget is the same as an uncertain kappa and kappa's (wide) prior carries it.
        # Fitting both would leave one exactly flat direction; the budget is listed, not fitted.
        # A measured input that states `sd` (its standard error on the transformed scale, e.g. a
        # start state fitted from a pilot's problem table) is fitted too, its measurement the prior.
        return ((self.tag == "assumed" or self.has_se) and self.path not in UNFITTED
                and not self.path.endswith(UNFITTED_LEAVES) and not self.path.startswith("lengths."))


@dataclass(frozen=True)
class Observation:
    arm: str
    benchmark: str
    value: float  # percent
    se: float  # percent
    labels: int | None  # None -> the scenario's budget
    teacher_labels: int | None
    tag: str
    note: str

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    student: str  # model names
    teacher: str
    benchmarks: tuple[str, ...]
    target_benchmark: str  # what the plan reports
    train_benchmark: str  # stands for the training distribution in the GRPO rate
    inputs: tuple[Tagged, ...]
    compute: ComputeModel
    compute_tag: str
    compute_note: str
    observations: tuple[Observation, ...]
    holdout: tuple[Observation, ...]  # published numbers NOT fitted on: out-of-sample checks
    seed: int = 0
    draws: int = 256
    source: str = ""

    def get(self, path: str) -> Tagged:
        for t in self.inputs:
            if t.path == path:
                return t
        raise KeyError(path)

    def has(self, path: str) -> bool:
        return any(t.path == path for t in self.inputs)

    @property
    def budget(self) -> int:
        return int(round(self.get("inputs.budget").value))

    @property
    def group_size(self) -> int:
        return int(round(self.get("inputs.group_size").value))

    def fitted_inputs(self) -> tuple[Tagged, ...]:
        return tuple(t for t in self.inputs if t.fitted)

    def key(self) -> str:
        """Content key for the calibration cache."""
        return repr((self.name, self.inputs, self.observations, self.compute, self.seed, self.draws,
                     self.benchmarks, self.target_benchmark, self.train_benchmark))

    def inputs_frame(self):
        import pandas as pd
        return pd.DataFrame([{"input": t.path, "value": t.value, "tag": t.tag,
                              "fitted": t.fitted, "note": t.note} for t in self.inputs])


# ------------------------------------------------------------------------------------------------
# Loading and validation
# ------------------------------------------------------------------------------------------------

def _num(x: Any, where: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise InputError(f"{where}: must be a number, got {x!r}")
    f = float(x)
    if not math.isfinite(f):
        raise InputError(f"{where}: must be finite, got {x!r}")
    return f


def _str(x: Any, where: str) -> str:
    if not isinstance(x, str) or not x.strip():
        raise InputError(f"{where}: must be a non-empty string, got {x!r}")
    return x


def _int(x: Any, where: str, lo: int = 0, hi: int | None = None) -> int:
    f = _num(x, where)
    if f != int(f):
        raise InputError(f"{where}: must be a whole number, got {x!r}")
    if f < lo or (hi is not None and f > hi):
        raise InputError(f"{where}: must lie in [{lo}, {hi if hi is not None else 'inf'}], got {x!r}")
    return int(f)


def _table(d: dict, key: str, where: str, required: bool = True) -> dict | None:
    if key not in d:
        if required:
            raise InputError(f"{where}: missing field {key!r}")
        return None
    v = d[key]
    if not isinstance(v, dict):
        raise InputError(f"{where}.{key}: must be a table")
    return v


def parse_tagged(raw: Any, path: str, kind: str) -> Tagged:
    if not isinstance(raw, dict):
        raise InputError(f"{path}: must be a table {{ value = ..., tag = ..., why = ... }}, got {raw!r}")
    unknown = set(raw) - {"value", "tag", "why", "source", "sd"}
    if unknown:
        raise InputError(f"{path}: unknown field {sorted(unknown)[0]!r}")
    if "value" not in raw:
        raise InputError(f"{path}: missing field 'value'")
    value = _num(raw["value"], f"{path}.value")
    tag = raw.get("tag")
    if tag not in TAGS:
        raise InputError(f"{path}.tag: must be one of {', '.join(TAGS)}, got {tag!r}")
    note = raw.get("why", raw.get("source"))
    if not isinstance(note, str) or not note.strip():
        raise InputError(f"{path}: give `why` (assumed) or `source` (measured/published) as a non-empty string")
    default_sd, lo, hi = KINDS[kind]
    if kind == "positive" and not value > 0:
        raise InputError(f"{path}.value: must be > 0, got {value!r}")
    if kind == "percent" and not 0 < value < 100:
        raise InputError(f"{path}.value: must be a percent strictly inside (0, 100), got {value!r}")
    if kind == "probability" and not 0 <= value <= 1:
        raise InputError(f"{path}.value: must be a probability in [0, 1], got {value!r}")
    if kind == "probability" and tag == "assumed" and not 0 < value < 1:
        raise InputError(f"{path}.value: an assumed probability must lie strictly inside (0, 1), got {value!r}")
    sd = _num(raw.get("sd", default_sd), f"{path}.sd")
    if not 0 < sd <= 10:
        raise InputError(f"{path}.sd: must lie in (0, 10] (prior sd on the transformed scale), got {sd!r}")
    if kind == "probability" and "sd" in raw and not 0 < value < 1:
        raise InputError(f"{path}.value: a probability with an `sd` must lie strictly inside (0, 1), got {value!r}")
    return Tagged(path=path, value=value, tag=tag, note=note.strip(), kind=kind, sd=sd,
                  has_se=tag != "assumed" and "sd" in raw)


def _parse_obs(raw: Any, where: str, benchmarks: tuple[str, ...]) -> Observation:
    if not isinstance(raw, dict):
        raise InputError(f"{where}: must be a table")
    unknown = set(raw) - {"arm", "benchmark", "value", "se", "labels", "teacher_labels", "tag", "source", "why"}
    if unknown:
        raise InputError(f"{where}: unknown field {sorted(unknown)[0]!r}")
    for k in ("arm", "benchmark", "value", "se", "tag"):
        if k not in raw:
            raise InputError(f"{where}: missing field {k!r}")
    arm = _str(raw["arm"], f"{where}.arm")
    if arm not in ARMS:
        raise InputError(f"{where}.arm: unknown arm {arm!r}; known: {', '.join(ARMS)}")
    bench = _str(raw["benchmark"], f"{where}.benchmark")
    if bench not in benchmarks:
        raise InputError(f"{where}.benchmark: {bench!r} is not one of [benchmarks] ({', '.join(benchmarks)})")
    value = _num(raw["value"], f"{where}.value")
    if not 0 <= value <= 100:
        raise InputError(f"{where}.value: accuracy is a percent in [0, 100], got {value!r}")
    se = _num(raw["se"], f"{where}.se")
    if not 0 < se <= 50:
        raise InputError(f"{where}.se: must lie in (0, 50] percent, got {se!r}")
    tag = raw["tag"]
    if tag not in TAGS:
        raise InputError(f"{where}.tag: must be one of {', '.join(TAGS)}, got {tag!r}")
    note = raw.get("source", raw.get("why"))
    if not isinstance(note, str) or not note.strip():
        raise InputError(f"{where}: give `source` (or `why`) as a non-empty string")
    labels = _int(raw["labels"], f"{where}.labels", 0, 10_000_000) if "labels" in raw else None
    tl = _int(raw["teacher_labels"], f"{where}.teacher_labels", 0, 10_000_000) if "teacher_labels" in raw else None
    if tl is not None and labels is not None:
        ARMS[arm].labels(labels, tl)  # raises InputError if the split is impossible for this arm
    return Observation(arm=arm, benchmark=bench, value=value, se=se, labels=labels, teacher_labels=tl,
                       tag=tag, note=note.strip())


def parse_scenario(doc: dict, *, source: str = "<dict>", base_dir: Path | None = None) -> Scenario:
    """Validate a parsed TOML document into a Scenario. Raises InputError naming the field."""
    if not isinstance(doc, dict):
        raise InputError("scenario: must be a TOML table")
    known = {"name", "description", "target_benchmark", "train_benchmark", "seed", "draws", "inputs", "rates",
             "compute", "lengths", "benchmarks", "student", "teacher", "observations", "holdout"}
    unknown = set(doc) - known
    if unknown:
        raise InputError(f"scenario: unknown field {sorted(unknown)[0]!r}")
    name = _str(doc.get("name"), "name") if "name" in doc else _missing("name")
    description = doc.get("description", "")
    if not isinstance(description, str):
        raise InputError("description: must be a string")
    seed = _int(doc.get("seed", 0), "seed", 0, 2**32 - 1)
    draws = _int(doc.get("draws", 256), "draws", 16, MAX_DRAWS)

    bench_doc = _table(doc, "benchmarks", "scenario")
    if not bench_doc:
        raise InputError("benchmarks: give at least one benchmark table, e.g. [benchmarks.MATH]")
    benchmarks = tuple(bench_doc)
    inputs: list[Tagged] = []
    problem_fits: dict[str, Any] = {}
    for b in benchmarks:
        where = f"benchmarks.{b}"
        bd = _table(bench_doc, b, "benchmarks")
        unknown = set(bd) - {"s_d", "eval_se", "problems", "n_problems", "samples"}
        if unknown:
            raise InputError(f"{where}: unknown field {sorted(unknown)[0]!r}")
        if "problems" in bd:
            problem_fits[b] = _str(bd["problems"], f"{where}.problems")
        elif "s_d" not in bd:
            raise InputError(f"{where}: missing field 's_d' (or give `problems` = a problem-table CSV)")
        if "s_d" in bd:
            if b in problem_fits:
                raise InputError(f"{where}: give either `s_d` or `problems`, not both")
            inputs.append(parse_tagged(bd["s_d"], f"{where}.s_d", "positive"))
        if "eval_se" not in bd:
            raise InputError(f"{where}: missing field 'eval_se' (seed-to-seed std of a measured accuracy, percent)")
        inputs.append(parse_tagged(bd["eval_se"], f"{where}.eval_se", "positive"))
        for k in ("n_problems", "samples"):  # the user's evaluation: problems x samples per problem
            if k in bd:
                t = parse_tagged(bd[k], f"{where}.{k}", "positive")
                if t.value != int(t.value):
                    raise InputError(f"{where}.{k}.value: must be a whole number, got {t.value!r}")
                inputs.append(t)

    target = doc.get("target_benchmark", benchmarks[0])
    train = doc.get("train_benchmark", target)
    for key, val in (("target_benchmark", target), ("train_benchmark", train)):
        if val not in benchmarks:
            raise InputError(f"{key}: {val!r} is not one of [benchmarks] ({', '.join(benchmarks)})")

    inp = _table(doc, "inputs", "scenario")
    unknown = set(inp) - set(SCALARS)
    if unknown:
        raise InputError(f"inputs: unknown field {sorted(unknown)[0]!r}")
    for k, (kind, req) in SCALARS.items():
        if k not in inp:
            if not req:
                continue
            raise InputError(f"inputs: missing field {k!r}")
        inputs.append(parse_tagged(inp[k], f"inputs.{k}", kind))
    g = next(t for t in inputs if t.path == "inputs.group_size").value
    if g < 2 or g != int(g):
        raise InputError(f"inputs.group_size.value: must be a whole number >= 2, got {g!r}")
    budget = next(t for t in inputs if t.path == "inputs.budget").value
    if budget != int(budget) or budget > 10_000_000:
        raise InputError(f"inputs.budget.value: must be a whole number <= 10000000, got {budget!r}")

    rates = _table(doc, "rates", "scenario")
    unknown = set(rates) - set(RATES) - set(OPTIONAL_RATES)
    if unknown:
        raise InputError(f"rates: unknown field {sorted(unknown)[0]!r}; rates are "
                         f"{', '.join([*RATES, *OPTIONAL_RATES])}")
    for k, kind in RATES.items():
        if k not in rates:
            raise InputError(f"rates: missing field {k!r}")
        inputs.append(parse_tagged(rates[k], f"rates.{k}", kind))
    for k, kind in OPTIONAL_RATES.items():
        if k in rates:
            inputs.append(parse_tagged(rates[k], f"rates.{k}", kind))

    lens = _table(doc, "lengths", "scenario", required=False) or {}
    unknown = set(lens) - set(LENGTHS)
    if unknown:
        raise InputError(f"lengths: unknown field {sorted(unknown)[0]!r}; lengths are {', '.join(LENGTHS)}")
    for k, kind in LENGTHS.items():
        inputs.append(parse_tagged(lens.get(k, DEFAULT_LENGTHS[k]), f"lengths.{k}", kind))

    comp = _table(doc, "compute", "scenario", required=False) or {}
    c_tag = comp.get("tag", "assumed")
    if c_tag not in TAGS:
        raise InputError(f"compute.tag: must be one of {', '.join(TAGS)}, got {c_tag!r}")
    c_note = comp.get("why", comp.get("source", "ComputeModel defaults"))
    if not isinstance(c_note, str):
        raise InputError("compute.why: must be a string")
    cm_fields = {f.name for f in fields(ComputeModel)}
    unknown = set(comp) - cm_fields - {"tag", "why", "source"}
    if "grpo_epochs" in unknown:
        raise InputError("compute.grpo_epochs was split in two: train_passes (training passes per GRPO rollout "
                         "batch, what it meant here) and label_passes (passes over the labels, the reference's "
                         "[grpo] epochs); rename it")
    if unknown:
        raise InputError(f"compute: unknown field {sorted(unknown)[0]!r}")
    for k in cm_fields & set(comp):
        _int(comp[k], f"compute.{k}", 0 if k == "bridge_response_tokens" else 1, 10**9)
    compute = ComputeModel(**{k: int(comp[k]) for k in cm_fields & set(comp)})

    names = {}
    for role in ("student", "teacher"):
        md = _table(doc, role, "scenario")
        unknown = set(md) - {"name", "params_b", "compliance", "benchmarks"}
        if unknown:
            raise InputError(f"{role}: unknown field {sorted(unknown)[0]!r}")
        names[role] = _str(md.get("name"), f"{role}.name") if "name" in md else _missing(f"{role}.name")
        if "params_b" in md:  # model size (billions); documents the rho prior, enters no equation
            inputs.append(parse_tagged(md["params_b"], f"{role}.params_b", "positive"))
        if "compliance" in md:
            inputs.append(parse_tagged(md["compliance"], f"{role}.compliance", "probability"))
        mb = _table(md, "benchmarks", role, required=False) or {}
        unknown = set(mb) - set(benchmarks)
        if unknown:
            raise InputError(f"{role}.benchmarks: {sorted(unknown)[0]!r} is not one of [benchmarks]")
        for b in benchmarks:
            where = f"{role}.benchmarks.{b}"
            if b in problem_fits:
                if b in mb:
                    raise InputError(f"{where}: benchmark {b} is fitted from `problems`; drop this table")
                continue
            if b not in mb:
                raise InputError(f"{role}.benchmarks: missing benchmark {b!r}")
            bd = mb[b]
            if not isinstance(bd, dict):
                raise InputError(f"{where}: must be a table")
            unknown = set(bd) - {"accuracy", "accuracy_given_compliance", "compliance", "ceiling"}
            if unknown:
                raise InputError(f"{where}: unknown field {sorted(unknown)[0]!r}")
            has_a, has_g = "accuracy" in bd, "accuracy_given_compliance" in bd
            if has_a == has_g:
                raise InputError(f"{where}: give exactly one of `accuracy` or `accuracy_given_compliance`")
            key = "accuracy" if has_a else "accuracy_given_compliance"
            inputs.append(parse_tagged(bd[key], f"{where}.{key}", "percent"))
            if "ceiling" in bd:  # accuracy ceiling (%) given compliance: the share of items within reach
                inputs.append(parse_tagged(bd["ceiling"], f"{where}.ceiling", "percent"))
            if "compliance" in bd:
                inputs.append(parse_tagged(bd["compliance"], f"{where}.compliance", "probability"))
            elif "compliance" not in md:
                raise InputError(f"{where}: missing field 'compliance' (give it here or as {role}.compliance)")
    if names["student"] == names["teacher"]:
        raise InputError("teacher.name: must differ from student.name")

    for b, rel in problem_fits.items():
        inputs.extend(_inputs_from_problems(b, rel, names, base_dir))

    # strict accuracy can't exceed compliance (ability-only accuracy would exceed 100%)
    by_path = {t.path: t for t in inputs}
    for role in ("student", "teacher"):
        for b in benchmarks:
            a = by_path.get(f"{role}.benchmarks.{b}.accuracy")
            if a is None:
                continue
            c = by_path.get(f"{role}.benchmarks.{b}.compliance", by_path.get(f"{role}.compliance"))
            if a.value >= 100 * c.value:
                raise InputError(f"{role}.benchmarks.{b}.accuracy: {a.value} must be below 100 x compliance "
                                 f"({100 * c.value:.1f}); a non-compliant answer is never correct")
        for b in benchmarks:
            u = by_path.get(f"{role}.benchmarks.{b}.ceiling")
            if u is None:
                continue
            a = by_path.get(f"{role}.benchmarks.{b}.accuracy_given_compliance")
            if a is None:
                a_ = by_path.get(f"{role}.benchmarks.{b}.accuracy")
                c = by_path.get(f"{role}.benchmarks.{b}.compliance", by_path.get(f"{role}.compliance"))
                a_value = a_.value / c.value
            else:
                a_value = a.value
            if a_value >= u.value:
                raise InputError(f"{role}.benchmarks.{b}.ceiling: {u.value} must lie above the model's start "
                                 f"accuracy given compliance ({a_value:.1f})")

    obs_raw = doc.get("observations", [])
    hold_raw = doc.get("holdout", [])
    for key, raw in (("observations", obs_raw), ("holdout", hold_raw)):
        if not isinstance(raw, list):
            raise InputError(f"{key}: must be an array of tables [[{key}]]")
    observations = tuple(_parse_obs(o, f"observations[{i}]", benchmarks) for i, o in enumerate(obs_raw))
    holdout = tuple(_parse_obs(o, f"holdout[{i}]", benchmarks) for i, o in enumerate(hold_raw))
    return Scenario(name=name, description=description, student=names["student"], teacher=names["teacher"],
                    benchmarks=benchmarks, target_benchmark=target, train_benchmark=train,
                    inputs=tuple(inputs), compute=compute, compute_tag=c_tag, compute_note=c_note,
                    observations=observations, holdout=holdout, seed=seed, draws=draws, source=source)


def _missing(field: str):
    raise InputError(f"scenario: missing field {field!r}")


def _inputs_from_problems(bench: str, rel: str, names: dict, base_dir: Path | None) -> list[Tagged]:
    """(theta, c, s_d) per model from a pilot problem table -> measured inputs with standard errors."""
    import numpy as np

    from theory.irt import fit_problems, irt_measurements
    from theory.tables import read_table

    p = Path(rel)
    if not p.is_absolute() and base_dir is not None:
        p = base_dir / p
    problems = read_table(p, "problems")
    fit = fit_problems(problems, models=[names["student"], names["teacher"]])
    meas = irt_measurements(fit, problems)
    src = f"fitted from problem table {p.name} ({fit.n_items} problems)"
    s_d_sd = float(np.clip(fit.s_d_se / fit.s_d, 1e-3, 10)) if np.isfinite(fit.s_d_se) else 0.5
    out = [Tagged(f"benchmarks.{bench}.s_d", fit.s_d, "measured", src, "positive", s_d_sd, True)]
    for role in ("student", "teacher"):
        (a, a_sd), (c, c_sd) = meas[names[role]]
        out.append(Tagged(f"{role}.benchmarks.{bench}.accuracy_given_compliance", a, "measured", src, "percent",
                          a_sd, True))
        out.append(Tagged(f"{role}.benchmarks.{bench}.compliance", c, "measured", src, "probability", c_sd, True))
    return out


def read_scenario(path: str | Path) -> Scenario:
    """A scenario from a TOML file; relative problem-table paths resolve from its directory."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"scenario file {str(path)!r} not found")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"scenario {str(p)!r}: not UTF-8 text") from None
    return loads_scenario(text, source=str(p), base_dir=p.parent)


@functools.lru_cache(maxsize=32)
def _toml(text: str) -> dict:
    """Parsed TOML by text: a notebook or the planner re-reading a preset parses it once (a few ms each)."""
    return tomllib.loads(text)


def loads_scenario(text: str, *, source: str | None = None, base_dir: Path | None = None) -> Scenario:
    """A scenario from TOML text; `source` (a file name) is named in messages."""
    try:
        doc = copy.deepcopy(_toml(text))  # a copy: the cached document stays as parsed
    except tomllib.TOMLDecodeError as e:
        where = "scenario" if source is None else f"scenario {source!r}"
        raise InputError(f"{where}: malformed TOML ({e})") from None
    return parse_scenario(doc, source=source or "<text>", base_dir=base_dir)


# ------------------------------------------------------------------------------------------------
# Writing (calibrate --out): Scenario -> TOML text that loads back to an equal Scenario
# ------------------------------------------------------------------------------------------------

def _toml_value(v) -> str:
    import json
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # JSON string escapes are valid TOML basic-string escapes
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(type(v))


def _tagged_dict(t: Tagged) -> dict:
    d: dict = {"value": t.value, "tag": t.tag}
    d["why" if t.tag == "assumed" else "source"] = t.note
    if t.tag == "assumed" or t.has_se:
        d["sd"] = t.sd
    return d


def scenario_to_toml(scn: Scenario) -> str:
    by = {t.path: t for t in scn.inputs}
    out = [f"name = {_toml_value(scn.name)}", f"description = {_toml_value(scn.description)}",
           f"target_benchmark = {_toml_value(scn.target_benchmark)}",
           f"train_benchmark = {_toml_value(scn.train_benchmark)}", f"seed = {scn.seed}", f"draws = {scn.draws}", ""]
    out.append("[inputs]")
    for k in SCALARS:
        if f"inputs.{k}" in by:
            out.append(f"{k} = {_toml_value(_tagged_dict(by[f'inputs.{k}']))}")
    out += ["", "[rates]"]
    for k in [*RATES, *(k for k in OPTIONAL_RATES if f"rates.{k}" in by)]:
        out.append(f"{k} = {_toml_value(_tagged_dict(by[f'rates.{k}']))}")
    out += ["", "[lengths]"]
    for k in LENGTHS:
        if f"lengths.{k}" in by:
            out.append(f"{k} = {_toml_value(_tagged_dict(by[f'lengths.{k}']))}")
    out += ["", "[compute]", f"tag = {_toml_value(scn.compute_tag)}", f"why = {_toml_value(scn.compute_note)}"]
    for f in fields(ComputeModel):
        out.append(f"{f.name} = {getattr(scn.compute, f.name)}")
    for b in scn.benchmarks:
        out += ["", f"[benchmarks.{_key(b)}]"]
        for k in ("s_d", "eval_se", "n_problems", "samples"):
            if f"benchmarks.{b}.{k}" in by:
                out.append(f"{k} = {_toml_value(_tagged_dict(by[f'benchmarks.{b}.{k}']))}")
    for role, name in (("student", scn.student), ("teacher", scn.teacher)):
        out += ["", f"[{role}]", f"name = {_toml_value(name)}"]
        for k in ("params_b", "compliance"):
            if f"{role}.{k}" in by:
                out.append(f"{k} = {_toml_value(_tagged_dict(by[f'{role}.{k}']))}")
        for b in scn.benchmarks:
            out += ["", f"[{role}.benchmarks.{_key(b)}]"]
            for k in ("accuracy", "accuracy_given_compliance", "compliance", "ceiling"):
                p = f"{role}.benchmarks.{b}.{k}"
                if p in by:
                    out.append(f"{k} = {_toml_value(_tagged_dict(by[p]))}")
    for key, obs in (("observations", scn.observations), ("holdout", scn.holdout)):
        for o in obs:
            out += ["", f"[[{key}]]"]
            for f in ("arm", "benchmark", "value", "se", "labels", "teacher_labels", "tag"):
                v = getattr(o, f)
                if v is not None:
                    out.append(f"{f} = {_toml_value(v)}")
            out.append(f"source = {_toml_value(o.note)}")
    return "\n".join(out) + "\n"


def _key(name: str) -> str:
    import re
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else _toml_value(name)
