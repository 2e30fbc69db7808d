"""Fuzzing the scenario loader and the table loaders: any input ends in a result or an InputError."""

import tempfile
import tomllib
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from theory.errors import InputError
from theory.scenario import loads_scenario, parse_scenario
from theory.tables import read_table, validate_problems, validate_runs

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow  # hypothesis runs hundreds of inputs per test
PAPER = tomllib.loads((ROOT / "budget_planner/scenarios/paper-qwen3-math.toml").read_text())

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                    st.text(max_size=8), st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3),
                                                                                             st.integers(), max_size=2))


def _paths(doc, prefix=()):
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield prefix + (k,)
            yield from _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield prefix + (i,)
            yield from _paths(v, prefix + (i,))


PATHS = list(_paths(PAPER))


def _mutate(doc, path, value, delete):
    import copy
    d = copy.deepcopy(doc)
    node = d
    for p in path[:-1]:
        node = node[p]
    if delete:
        if isinstance(node, dict):
            del node[path[-1]]
        else:
            node.pop(path[-1])
    else:
        node[path[-1]] = value
    return d


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(PATHS), scalars, st.booleans())
def test_scenario_mutations_load_or_raise_input_error(path, value, delete):
    doc = _mutate(PAPER, path, value, delete)
    try:
        parse_scenario(doc)
    except InputError as e:
        _one_line(e)


def _one_line(e: InputError) -> None:
    """Bad input's error: a non-empty message on one line (the project's rule for every refusal)."""
    assert str(e).strip() and "\n" not in str(e), repr(str(e))


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200))
def test_scenario_text_never_crashes(text):
    try:
        loads_scenario(text)
    except InputError as e:  # the only way out besides success, and with a one-line message
        _one_line(e)


cells = st.one_of(st.integers(-5, 200), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=5), st.none())


@settings(max_examples=150, deadline=None)
@given(st.lists(st.fixed_dictionaries({
    "arm": st.sampled_from(["direct_grpo", "rl_teacher_bridge", "nope", ""]), "seed": cells, "world": cells,
    "teacher_labels": cells, "student_labels": cells, "compute_tokens": cells,
    "split": st.sampled_from(["test", "val", "bogus"]), "metric": st.sampled_from(["accuracy", "kl", ""]),
    "value": cells}), max_size=6), st.booleans())
def test_run_table_validator(rows, via_csv):
    df = pd.DataFrame(rows)
    try:
        if via_csv:  # through the file loader, as the CLI reads it
            with tempfile.TemporaryDirectory() as d:
                p = Path(d) / "runs.csv"
                p.write_text(df.to_csv(index=False))
                read_table(p, "runs")
        else:
            validate_runs(df)
    except InputError as e:
        _one_line(e)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(["runs", "problems"]))
def test_table_files_with_arbitrary_bytes(data, kind):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "t.csv"
        p.write_bytes(data)
        try:
            read_table(p, kind)
        except InputError as e:
            _one_line(e)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.fixed_dictionaries({"model": cells, "problem_id": cells, "k": cells, "correct": cells,
                                       "compliant": cells}), max_size=8))
def test_problem_table_validator_and_fit(rows):
    from theory.irt import fit_problems
    try:
        df = validate_problems(pd.DataFrame(rows))
        fit_problems(df)
    except InputError as e:
        _one_line(e)


NUMERIC = [p for p in PATHS if p and p[-1] == "value"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(NUMERIC), st.floats(-6, 6), st.sampled_from(["scale", "edge"])),
                min_size=1, max_size=3),
       st.integers(0, 50_000))
def test_valid_but_extreme_scenarios_plan_or_raise_input_error(mutations, labels):
    """Values the loader accepts, however extreme, give finite plans (or a clean InputError)."""
    import copy

    import numpy as np

    from budget_planner import plan
    doc = copy.deepcopy(PAPER)
    doc["draws"] = 16
    for path, exponent, how in mutations:
        node = doc
        for p in path[:-1]:
            node = node[p]
        v = node["value"]
        node["value"] = v * 10**exponent if how == "scale" else (1e-9 if exponent < 0 else 1 - 1e-9)
    try:
        p = plan(parse_scenario(doc), labels=labels)
    except InputError:
        return
    acc = [a.accuracy for a in p.arms] + [a.lo for a in p.arms] + [a.hi for a in p.arms]
    assert np.all(np.isfinite(acc)) and all(0 <= a <= 100 for a in acc)
