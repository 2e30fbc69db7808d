"""The budget-planner CLI end to end (subprocess): output, JSON contract, exit codes, one-line errors."""

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "docs" / "examples"


@pytest.fixture(autouse=True)
def _private_fit_cache(tmp_path_factory, monkeypatch):
    """The CLI caches calibrations on disk (budget_planner/fitcache.py): keep the tests' out of $HOME."""
    monkeypatch.setenv("SPARSE2DENSE_CACHE", str(tmp_path_factory.getbasetemp() / "fitcache"))


def run_subprocess(*args):
    """The real entry point in a fresh interpreter (used where import-time behaviour matters)."""
    return subprocess.run([sys.executable, "-m", "budget_planner.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def run(*args):
    """budget_planner.cli.main in-process: same code path, exit status and streams, without the
    ~1 s interpreter start per call."""
    from budget_planner.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(args))
    return subprocess.CompletedProcess(args, rc, out.getvalue(), err.getvalue())


def assert_one_line_error(r, *needles):
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.mark.slow
def test_plan_prints_table_and_writes_json(tmp_path):
    out = tmp_path / "plan.json"
    r = run_subprocess("plan", "--scenario", "paper-qwen3-math", "--labels", "5000", "--json", str(out))
    assert r.returncode == 0, r.stderr
    assert "recommended:" in r.stdout and "direct_grpo" in r.stdout
    d = json.loads(out.read_text())
    assert d["scenario"] == "paper-qwen3-math" and d["labels"] == 5000
    assert set(d["arms"]["rl_teacher_bridge"]) >= {"accuracy", "ci", "p_best"}
    assert set(d["recommendation"]) >= {"arm", "teacher_labels", "student_labels"}


def test_plan_json_without_a_path_prints_only_the_json_with_gpu_hours_for_every_arm():
    r = run("plan", "--scenario", "paper-qwen3-math", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)  # stdout is the JSON alone (pipeable); the table went to stderr
    assert "recommended:" in r.stderr and "recommended:" not in r.stdout
    assert len(d["arms"]) == 7 and all(a["gpu_hours"] > 0 for a in d["arms"].values())
    assert json.loads(run("plan", "--scenario", "paper-qwen3-math", "--json", "-").stdout) == d


def test_plan_defaults_to_scenario_budget_and_labels_zero_works():
    r = run("plan", "--scenario", "paper-qwen3-math")
    assert r.returncode == 0 and "N = 14000" in r.stdout
    r = run("plan", "--scenario", "paper-qwen3-math", "--labels", "0")
    assert r.returncode == 0 and "N = 0" in r.stdout


def test_scenarios_and_explain():
    r = run("scenarios")
    assert r.returncode == 0 and "weak-teacher" in r.stdout and "compliant-raw-teacher" in r.stdout
    r = run("explain", "--scenario", "paper-qwen3-math")
    assert r.returncode == 0
    for needle in ("bits/label", "signal frac", "C1 (teacher reward-shaped)", "C2 (teacher within small KL)",
                   "assumed", "published"):
        assert needle in r.stdout, needle


@pytest.mark.parametrize("labels,needle", [("-5", ">= 0"), ("nan", "finite"), ("1e13", "maximum"),
                                           ("abc", "--labels"), ("2.5", "whole number")])
def test_bad_budgets(labels, needle):
    assert_one_line_error(run("plan", "--scenario", "paper-qwen3-math", "--labels", labels), needle)


def test_bad_scenarios(tmp_path):
    assert_one_line_error(run_subprocess("plan", "--scenario", "no-such-scenario"), "unknown scenario")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [unclosed\n")
    assert_one_line_error(run("plan", "--scenario", str(bad)), "malformed TOML")
    text = (ROOT / "budget_planner/scenarios/paper-qwen3-math.toml").read_text()
    prob = tmp_path / "prob.toml"
    prob.write_text(text.replace('compliance = { value = 0.95, tag = "assumed", sd = 1.0, why = "fraction',
                                 'compliance = { value = 1.5, tag = "assumed", sd = 1.0, why = "fraction'))
    assert_one_line_error(run("plan", "--scenario", str(prob)), "student.compliance.value", "[0, 1]")
    missing = tmp_path / "missing.toml"
    missing.write_text(text.replace("[rates]\nkappa =", "[rates]\nkappa_typo ="))
    assert_one_line_error(run("plan", "--scenario", str(missing)), "rates")
    assert_one_line_error(run("plan"), "--scenario")
    assert_one_line_error(run(), "command")


def test_calibrate_from_example_csvs(tmp_path):
    out = tmp_path / "pilot.toml"
    r = run("calibrate", "--runs", str(EXAMPLES / "pilot_runs.csv"), "--problems", str(EXAMPLES / "pilot_problems.csv"),
            "--out", str(out))
    assert r.returncode == 0, r.stderr
    r = run("plan", "--scenario", str(out))
    assert r.returncode == 0 and "N = 2000" in r.stdout


def test_calibrate_reads_several_run_tables(tmp_path):
    """Trained runs and the pilot's pilot_runs.csv are separate files; the pilot alone is not enough."""
    lines = (EXAMPLES / "pilot_runs.csv").read_text().splitlines()
    trained, pilot = tmp_path / "runs.csv", tmp_path / "pilot_runs.csv"
    trained.write_text("\n".join([lines[0], *(r for r in lines[1:] if ",accuracy," in r)]) + "\n")
    pilot.write_text("\n".join([lines[0], *(r for r in lines[1:] if ",accuracy," not in r)]) + "\n")
    out = tmp_path / "pilot.toml"
    tables = ["--problems", str(EXAMPLES / "pilot_problems.csv"), "--out", str(out)]
    assert_one_line_error(run("calibrate", "--runs", str(pilot), *tables),
                          "no rows with metric 'accuracy'", "reference-pipeline run --config CONFIG --arm")
    assert not out.exists()
    r = run("calibrate", "--runs", str(trained), str(pilot), *tables)
    assert r.returncode == 0, r.stderr
    assert "run-table row(s) with metric kl0_per_token" in out.read_text()  # KL_0 from the second table


def test_calibrate_bad_tables(tmp_path):
    runs = tmp_path / "runs.csv"
    runs.write_text((EXAMPLES / "pilot_runs.csv").read_text().replace("accuracy,41.", "accuracy,abc"))
    assert_one_line_error(run("calibrate", "--runs", str(runs), "--problems", str(EXAMPLES / "pilot_problems.csv"),
                              "--out", str(tmp_path / "o.toml")), "run table", "value")
    frac = tmp_path / "frac.csv"
    lines = (EXAMPLES / "pilot_runs.csv").read_text().splitlines()
    head, rows = lines[0], lines[1:]
    frac.write_text("\n".join([head] + [",".join(r.split(",")[:-1] + ["0.42"]) for r in rows]))
    assert_one_line_error(run("calibrate", "--runs", str(frac), "--problems", str(EXAMPLES / "pilot_problems.csv"),
                              "--out", str(tmp_path / "o.toml")), "fractions")
    assert_one_line_error(run("calibrate", "--runs", str(tmp_path / "none.csv"), "--problems",
                              str(EXAMPLES / "pilot_problems.csv"), "--out", str(tmp_path / "o.toml")), "no such file")
    assert not (tmp_path / "o.toml").exists()  # nothing half-written


@pytest.mark.slow  # subprocesses
def test_theory_and_planner_never_import_torch():
    code = ("import importlib, pkgutil, sys, theory, budget_planner\n"
            "for pkg in (theory, budget_planner):\n"
            "    for m in pkgutil.iter_modules(pkg.__path__):\n"
            "        importlib.import_module(f'{pkg.__name__}.{m.name}')\n"
            "from budget_planner import plan\n"
            "from budget_planner.nextstep import next_measurement\n"
            "p = plan('paper-qwen3-math', labels=3000)\n"
            "next_measurement('weak-teacher', 3000)\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n"
            "assert 'seaborn' not in sys.modules, 'seaborn imported outside plot()'\n"
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported outside plot()'\n"
            "print('ok')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_fit_cache_round_trip_gives_the_same_plan(tmp_path, monkeypatch):
    from budget_planner import fitcache
    from theory import fitting
    from budget_planner.presets import load_scenario
    monkeypatch.setenv("SPARSE2DENSE_CACHE", str(tmp_path))
    first = run("plan", "--scenario", "weak-teacher", "--labels", "3000")
    assert first.returncode == 0 and len(list(tmp_path.glob("fit-*.npz"))) == 1
    scn = load_scenario("weak-teacher")
    monkeypatch.setattr(fitting, "_CACHE", {})  # this process has not calibrated it
    assert fitcache.warm(scn)  # read back from disk, not recalibrated
    again = run("plan", "--scenario", "weak-teacher", "--labels", "3000")
    assert again.stdout == first.stdout
    # a damaged cache file is ignored: the plan recalibrates
    for f in tmp_path.glob("fit-*.npz"):
        f.write_bytes(b"not a cache")
    monkeypatch.setattr(fitting, "_CACHE", {})  # this process has not calibrated it
    assert not fitcache.warm(scn)
    assert run("plan", "--scenario", "weak-teacher", "--labels", "3000").stdout == first.stdout
    monkeypatch.setenv("SPARSE2DENSE_CACHE", "off")
    assert fitcache.cache_dir() is None


def test_maximum_budget_and_next_step_of_the_cli():
    r = run("plan", "--scenario", "paper-qwen3-math", "--labels", "10000000")
    assert r.returncode == 0, r.stderr
    assert "exceeds the dataset" in r.stdout and "extrapolation" in r.stdout
    r = run("plan", "--scenario", "paper-qwen3-math", "--labels", "100000")
    assert "exceeds the dataset's 17000 distinct problems" in r.stdout
    assert_one_line_error(run("plan", "--scenario", "paper-qwen3-math", "--labels", "10000001"), "maximum")


def test_toss_up_names_the_cheaper_arm():
    r = run("plan", "--scenario", "paper-qwen3-math", "--labels", "0")
    assert r.returncode == 0
    assert "toss-up:" in r.stdout and ("the cheaper is" in r.stdout or "both cost" in r.stdout)


def test_calibrate_from_another_stack_worked_example(tmp_path):
    """docs/examples/other_stack: the CSV template a foreign training stack fills in, end to end."""
    ex = EXAMPLES / "other_stack"
    out = tmp_path / "my.toml"
    r = run("calibrate", "--runs", str(ex / "runs.csv"), "--problems", str(ex / "problems.csv"),
            "--student", "my-0.5b", "--teacher", "my-3b", "--benchmark", "my_eval", "--name", "my-stack",
            "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "4 observations" in r.stdout
    r = run("plan", "--scenario", str(out), "--labels", "4000")
    assert r.returncode == 0, r.stderr
    assert "outside the calibrated range [500, 2000]" in r.stdout
    assert "recommended:" in r.stdout and "runner-up:" in r.stdout


def test_plan_next_prints_and_writes_the_measurement_ranking(tmp_path):
    out = tmp_path / "p.json"
    r = run("plan", "--scenario", "weak-teacher", "--next", "--json", str(out))
    assert r.returncode == 0, r.stderr
    assert "what to measure next" in r.stdout and "measure next:" in r.stdout
    d = json.loads(out.read_text())
    assert d["next"]["rows"] and d["next"]["best"] in {row["measurement"] for row in d["next"]["rows"]}


# --- reading the output (issue 14 item 3) -------------------------------------------------------

_NEG_ZERO = r"(?<![\d.])-0\.0+(?![\d])"


def test_no_negative_zero_in_plan_text():
    """weak-teacher at 300 labels has replay_control's marginal value at -0.002 per 1k labels:
    it printed '-0.00'."""
    import re
    r = run("plan", "--scenario", "weak-teacher", "--labels", "300", "--next")
    assert r.returncode == 0, r.stderr
    assert "replay_control" in r.stdout
    assert not re.search(_NEG_ZERO, r.stdout), r.stdout
    from budget_planner.cli import _num
    assert _num(-0.0021, ".2f") == "0.00" and _num(-0.0021, "+.1f") == "+0.0" and _num(-0.021, ".2f") == "-0.02"


def test_plan_json_floats_are_rounded_to_what_they_mean(tmp_path):
    import re
    out = tmp_path / "p.json"
    assert run("plan", "--scenario", "weak-teacher", "--labels", "300", "--json", str(out)).returncode == 0
    text = out.read_text()
    d = json.loads(text)

    def floats(o, key=None):
        if isinstance(o, dict):
            for k, v in o.items():
                if k != "inputs":  # the stated inputs are kept as given (a learning rate may be 1e-6)
                    yield from floats(v, k)
        elif isinstance(o, list):
            for v in o:
                yield from floats(v, key)
        elif isinstance(o, float):
            yield key, o
    assert not [(k, v) for k, v in floats(d) if "e" in repr(v)], "exponent noise such as 1.0e-13 in the JSON"

    def decimals(v):
        return len(repr(v).split(".")[1]) if "." in repr(v) else 0
    for a in d["arms"].values():
        assert decimals(a["accuracy"]) <= 2 and all(decimals(x) <= 2 for x in a["ci"])
        assert a["p_best"] is None or decimals(a["p_best"]) <= 3
        assert decimals(a["marginal_per_1k_labels"]) <= 3
    assert decimals(d["recommendation"]["p_best"]) <= 3
    for c in d["split_curves"].values():
        assert all(decimals(x) <= 2 for x in c["accuracy"] + c["lo"] + c["hi"])
    for row in d["informativeness"]:
        assert all(decimals(v) <= 3 for v in row.values() if isinstance(v, float))
    assert not re.search(r'(?<![\d.])-0\.0(?![\d])', text)
    # the stated inputs are kept exactly as the scenario gives them
    from budget_planner.presets import load_scenario
    stated = {t.path: t.value for t in load_scenario("weak-teacher").inputs}
    assert all(i["value"] == stated[i["input"]] for i in d["inputs"] if i["input"] in stated)


def test_plan_counts_inputs_by_tag():
    r = run("plan", "--scenario", "paper-qwen3-math")
    line = next(x for x in r.stdout.splitlines() if x.startswith("inputs:"))
    from budget_planner.presets import load_scenario
    inputs = load_scenario("paper-qwen3-math").inputs
    for tag in ("measured", "published", "assumed"):
        n = sum(1 for t in inputs if t.tag == tag) + (tag == "assumed")  # + the compute model (assumed)
        assert f"{n} {tag}" in line, line


def test_explain_inputs_are_aligned_and_rounded_to_their_interval():
    r = run("explain", "--scenario", "paper-qwen3-math")
    assert r.returncode == 0, r.stderr
    block = r.stdout.split("\ninputs (")[1].split("\n\n")[0].splitlines()[2:]
    fitted = [x for x in block if " -> " in x]
    assert len(fitted) >= 10
    # the arrow, the MAP's last digit and the interval start at the same column on every fitted row
    assert len({x.index(" -> ") for x in fitted}) == 1
    assert len({x.index(" [") for x in fitted}) == 1
    assert len({x.index(" (") for x in block if not x.lstrip().startswith("compute ")}) == 1
    gs = next(x for x in fitted if "inputs.group_size" in x)
    assert "7.96" not in gs and "-> " in gs and "8.0" in gs.split("->")[1], gs  # not '8 -> 7.969'
