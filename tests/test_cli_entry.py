"""The three console scripts at their edges: the extras check in an environment that lacks them,
help on every flag, `--version`, `python -m`, and output paths checked before any work.

A missing extra is simulated in a subprocess by `sys.modules[name] = None` (import fails, find_spec
finds nothing), so nothing is uninstalled."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TORCH_SIDE = ["torch", "transformers", "trl", "math_verify", "accelerate", "peft", "datasets"]

_WRAPPER = """
import sys
for name in {hide!r}:
    sys.modules[name] = None
from {module} import main
sys.exit(main({argv!r}))
"""


def run_hidden(module: str, argv: list[str], hide: list[str], cwd=ROOT) -> subprocess.CompletedProcess:
    code = _WRAPPER.format(hide=hide, module=module, argv=argv)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=300,
                          env=_env())


def _env():
    import os

    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def one_error_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr[-2000:]
    return lines[0]


# -- extras ----------------------------------------------------------------------------------------------

REFERENCE_LINE = 'pip install -c constraints.txt -e ".[reference]"'


@pytest.mark.parametrize("argv", [
    ["demo"],
    ["run", "--arm", "direct_grpo"],
    ["run", "--dry-run", "--config", "paper-qwen3-math"],
    ["table", "--seeds", "1", "--out", "OUT"],
    ["pilot", "--config", "toy", "--out", "OUT"],
])
def test_reference_pipeline_without_torch_names_the_install(argv, tmp_path):
    argv = [a.replace("OUT", str(tmp_path / "o")) for a in argv]
    line = one_error_line(run_hidden("reference.cli", argv, TORCH_SIDE))
    assert line == ("error: reference-pipeline needs the reference extra (torch, transformers, trl, math_verify, "
                    f"accelerate, peft, datasets not installed): {REFERENCE_LINE}")
    assert not (tmp_path / "o").exists()  # nothing was started


def test_help_and_version_work_without_the_extra():
    r = run_hidden("reference.cli", ["demo", "--help"], TORCH_SIDE)
    assert r.returncode == 0 and "--workdir" in r.stdout
    r = run_hidden("reference.cli", ["--version"], TORCH_SIDE)
    assert r.returncode == 0 and r.stdout.startswith("reference-pipeline ")
    r = run_hidden("tuning.cli", ["run", "--help"], ["optuna", *TORCH_SIDE])
    assert r.returncode == 0 and "--eval-seeds" in r.stdout


def test_matched_tuning_without_optuna_or_torch(tmp_path):
    db = tmp_path / "s.db"
    base = ["run", "--arms", "direct_grpo", "--trials", "1", "--storage", f"sqlite:///{db}"]
    line = one_error_line(run_hidden("tuning.cli", base, ["optuna"]))
    assert line == ('error: matched-tuning needs the tuning extra (optuna not installed): '
                    'pip install -c constraints.txt -e ".[tuning]"')
    line = one_error_line(run_hidden("tuning.cli", base, TORCH_SIDE))  # default arm source: reference
    assert line.startswith("error: matched-tuning run --arm-source reference needs the reference extra (torch,")
    assert line.endswith(REFERENCE_LINE)
    assert not db.exists()  # refused before the storage was created
    for cmd in (["status", "--study", "x", "--storage", f"sqlite:///{db}"],
                ["report", "--study", "x", "--storage", f"sqlite:///{db}", "--out", str(tmp_path / "r")]):
        assert "optuna not installed" in one_error_line(run_hidden("tuning.cli", cmd, ["optuna"]))


@pytest.mark.slow  # a synthetic study in a subprocess
def test_synthetic_tuning_needs_no_torch(tmp_path):
    argv = ["run", "--arms", "direct_grpo", "--trials", "1", "--storage", f"sqlite:///{tmp_path}/s.db",
            "--arm-source", "synthetic", "--labels", "64", "--eval-seeds", "2"]
    r = run_hidden("tuning.cli", argv, TORCH_SIDE)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "direct_grpo" in r.stdout


def test_planner_runs_without_torch_and_optuna():
    r = run_hidden("budget_planner.cli", ["plan", "--scenario", "paper-qwen3-math"], TORCH_SIDE + ["optuna"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert "recommended:" in r.stdout


# -- help, examples, --version, python -m -----------------------------------------------------------------

CLIS = {"budget-planner": "budget_planner", "reference-pipeline": "reference", "matched-tuning": "tuning"}


def _parsers():
    """(label, parser) for every CLI and every subcommand, found by walking argparse's tree, so a
    subcommand added later is covered without editing this test."""
    import argparse
    import importlib

    out = []
    for prog, pkg in CLIS.items():
        stack = [(prog, importlib.import_module(f"{pkg}.cli").build_parser())]
        while stack:
            label, parser = stack.pop()
            out.append((label, parser))
            for action in parser._actions:
                if isinstance(action, argparse._SubParsersAction):
                    stack += [(f"{label} {name}", sub) for name, sub in action.choices.items()]
    return out


PARSERS = _parsers()


def test_the_walk_found_every_known_subcommand():
    labels = {label for label, _ in PARSERS}
    assert {"budget-planner plan", "budget-planner crosscheck", "reference-pipeline demo", "reference-pipeline pilot",
            "matched-tuning run", "matched-tuning report"} <= labels


@pytest.mark.parametrize("label, parser", PARSERS, ids=[label for label, _ in PARSERS])
def test_every_option_has_help_and_every_subcommand_an_example(label, parser):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            continue
        name = "/".join(action.option_strings) or action.dest
        assert action.help and action.help.strip() and action.help != argparse.SUPPRESS, f"{label} {name}"
    text = parser.format_help()  # formats every %(default)s: a stray % would raise here
    assert "example" in (parser.epilog or ""), f"{label}: no example in its epilog"
    assert label.split()[0] in parser.epilog, label
    # defaults are shown: every option with a real default says what it is
    for action in parser._actions:
        d = action.default
        if action.option_strings and not action.required and not any(d is v for v in (None, False, argparse.SUPPRESS)):
            assert "default" in (action.help or "").lower() or f"(default: {d})" in " ".join(text.split()), \
                f"{label} {action.option_strings[0]}"


@pytest.mark.parametrize("prog, pkg", CLIS.items())
def test_version_and_python_m(prog, pkg):
    from importlib.metadata import version

    r = subprocess.run([sys.executable, "-m", pkg, "--version"], capture_output=True, text=True, cwd=ROOT,
                       env=_env(), timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{prog} {version('sparse2dense')}"
    r = subprocess.run([sys.executable, "-m", pkg, "--help"], capture_output=True, text=True, cwd=ROOT,
                       env=_env(), timeout=120)
    assert r.returncode == 0 and r.stdout.startswith(f"usage: {prog} ")


def test_version_falls_back_to_pyproject(monkeypatch):
    import importlib.metadata
    import tomllib

    from theory.cliutil import version_string

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    expected = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert version_string("budget-planner") == f"budget-planner {expected}"


# -- output paths fail before any work ------------------------------------------------------------------

BAD_OUTPUTS = [
    # (module, argv; MISSING = a directory that does not exist, FILE = an existing file, DIR = a directory)
    ("budget_planner", ["plan", "--scenario", "paper-qwen3-math", "--plot", "MISSING/p.png"], "--plot"),
    ("budget_planner", ["plan", "--scenario", "paper-qwen3-math", "--json", "MISSING/p.json"], "--json"),
    ("budget_planner", ["plan", "--scenario", "paper-qwen3-math", "--json", "DIR"], "--json"),
    ("budget_planner", ["calibrate", "--runs", "docs/examples/pilot_runs.csv", "--problems",
                        "docs/examples/pilot_problems.csv", "--out", "MISSING/s.toml"], "--out"),
    ("budget_planner", ["crosscheck", "--runs", "docs/results/crosscheck_runs.csv", "--predictions",
                        "docs/results/crosscheck_predictions.csv", "--json", "MISSING/cc.json"], "--json"),
    ("reference", ["run", "--arm", "direct_grpo", "--out", "MISSING/runs.csv"], "--out"),
    ("reference", ["run", "--arm", "direct_grpo", "--workdir", "FILE"], "--workdir"),
    ("reference", ["demo", "--workdir", "FILE/sub"], "--workdir"),
    ("reference", ["table", "--seeds", "1", "--out", "FILE"], "--out"),
    ("reference", ["pilot", "--config", "toy", "--out", "FILE/sub"], "--out"),
    ("tuning", ["report", "--study", "s", "--storage", "sqlite:///DIR/s.db", "--out", "FILE"], "--out"),
]


@pytest.mark.parametrize("pkg, argv, flag", BAD_OUTPUTS, ids=[f"{m} {a[0]} {f}" for m, a, f in BAD_OUTPUTS])
def test_bad_output_path_fails_in_one_line_before_any_work(pkg, argv, flag, tmp_path):
    (tmp_path / "file").write_text("keep me")
    (tmp_path / "dir").mkdir()
    subst = {"MISSING": str(tmp_path / "missing"), "FILE": str(tmp_path / "file"), "DIR": str(tmp_path / "dir")}
    argv = [next((a.replace(k, v) for k, v in subst.items() if k in a), a) for a in argv]
    r = subprocess.run([sys.executable, "-m", pkg, *argv], capture_output=True, text=True, cwd=ROOT, env=_env(),
                       timeout=300)
    line = one_error_line(r)
    assert line.startswith(f"error: argument {flag}: "), line
    assert r.stdout == ""  # nothing was computed or printed first (the plan used to print, then fail)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "file"]  # nothing created
    assert (tmp_path / "file").read_text() == "keep me" and not any((tmp_path / "dir").iterdir())


# -- seeds and counts fail before any work --------------------------------------------------------------

BAD_SEEDS = [
    (["run", "--arm", "direct_grpo", "--config", "toy_short", "--seed", "-1"], "--seed"),
    (["run", "--arm", "direct_grpo", "--config", "toy_short", "--seed", "1.5"], "--seed"),
    (["export", "--arm", "direct_grpo", "--seed", "-1", "--out", "hf"], "--seed"),
    (["demo", "--seed", "-1"], "--seed"),
    (["demo", "--jobs", "0"], "--jobs"),
    (["pilot", "--config", "toy_short", "--out", "p", "--seed", "-1"], "--seed"),
    (["table", "--seeds", "1", "--first-seed", "-1", "--out", "t"], "--first-seed"),
    (["table", "--seeds", "0", "--out", "t"], "--seeds"),
    (["table", "--seeds", "1", "--jobs", "0", "--out", "t"], "--jobs"),
]


@pytest.mark.parametrize("argv, flag", BAD_SEEDS, ids=[f"{a[0]} {a[-1]}" for a, _ in BAD_SEEDS])
def test_bad_seed_or_count_fails_in_one_line_and_writes_nothing(argv, flag, tmp_path, monkeypatch, capsys):
    from reference.cli import main

    monkeypatch.chdir(tmp_path)  # the default --workdir (.s2d_runs) and every relative --out land here
    assert main(argv) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: argument {flag}: "), err
    assert out == "" and list(tmp_path.iterdir()) == []
