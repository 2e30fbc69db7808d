"""docs/results.md is what scripts/results_report.py writes from the committed tables (issue 25).

Tier 2 (fast): the committed page regenerates byte-identical; `--check` fails on a stale page; a missing
table ends in one `error:` line naming it and writes nothing; numbers print with one sign convention.
Slow: the command as CI and the README run it, in a subprocess.
"""

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "results_report.py"


@pytest.fixture(scope="module")
def report():
    spec = importlib.util.spec_from_file_location("results_report", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_committed_page_regenerates_byte_identical(report):
    page = ROOT / "docs" / "results.md"
    assert page.read_bytes() == report.render().encode(), "run `python scripts/results_report.py` and commit"
    assert report.render() == report.render()  # no clock, no set or dict order leaks in


def test_page_states_every_claims_status(report):
    page = report.render()
    claims = page.split("## Claims under review (issue 22: every stage trained to its plateau)")[1].split("\n## ")[0]
    rows = [line for line in claims.splitlines() if line.startswith("| ") and not line.startswith("| claim")]
    statuses = [r.rstrip(" |").rsplit("| ", 1)[1] for r in rows]
    assert len(rows) >= 7
    assert all(s.startswith(("survives", "changes: ", "does not: ", "pending: ", "not rerun yet: ")) for s in statuses)
    assert "12 optimizer steps at N = 64" in claims
    assert "+1.3 [+0.8, +2.1]" in claims  # the paper-like world's RL bridge − direct, from its summary CSV
    # a claim not rerun keeps its fixed-length figure and says so; a rerun one has a figure at plateau
    for r, s in zip(rows, statuses):
        at_plateau = r.strip("| ").split(" | ")[2]
        assert (at_plateau == "—") == s.startswith(("not rerun yet", "pending"))


def test_verdict_reads_the_sign_of_a_difference(report):
    v = report.verdict
    assert v((1.3, 0.8, 2.1), (1.5, 1.0, 2.0)) == "survives"
    assert v((1.3, 0.8, 2.1), (6.7, 6.2, 7.3)) == "changes: same sign, larger"
    assert v((22.2, 21.9, 22.5), (5.2, 4.3, 6.7)) == "changes: same sign, smaller"
    assert v((1.3, 0.8, 2.1), (-2.0, -3.0, -1.0)) == "does not: reversed at plateau"
    assert v((1.3, 0.8, 2.1), (0.5, -1.6, 2.0)) == "does not: no difference at plateau"
    assert v((0.1, -1.0, 1.1), (0.5, -1.6, 2.0)) == "survives (no difference either way)"
    assert v((0.1, -1.0, 1.1), (3.0, 1.0, 5.0)) == "changes: a difference at plateau"


def test_check_passes_on_the_page_it_writes_and_fails_on_a_stale_one(report, tmp_path, capsys):
    out = tmp_path / "results.md"
    assert report.main(["--out", str(out)]) == 0
    assert report.main(["--check", "--out", str(out)]) == 0
    out.write_text(out.read_text().replace("+1.3 [+0.8, +2.1]", "+9.9 [+0.8, +2.1]"))
    capsys.readouterr()
    assert report.main(["--check", "--out", str(out)]) == 1
    assert "out of date" in capsys.readouterr().err


@pytest.mark.parametrize("table", ["world_family_report.json", "legacy/fixed_length/paper_world_ablation_summary.csv",
                                   "fairness_direct/fairness_report.md", "stability_gates.csv"])
def test_missing_table_is_one_error_line_and_writes_nothing(report, tmp_path, capsys, table):
    results = tmp_path / "results"
    shutil.copytree(ROOT / "docs" / "results", results,
                    ignore=shutil.ignore_patterns("*.png", "*curves.csv"))
    (results / table).unlink()
    out = tmp_path / "results.md"
    assert report.main(["--results", str(results), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and table in err[0]
    assert not out.exists()


def test_numbers_have_one_sign_convention(report):
    assert report.signed(1.34) == "+1.3" and report.signed(-0.04) == "+0.0" and report.signed(-0.7) == "−0.7"
    assert report.ci(-1.0, 0.8) == "[−1.0, +0.8]" and report.num(9.475) == "9.5"


@pytest.mark.slow
def test_check_command_as_ci_runs_it():
    r = subprocess.run([sys.executable, str(SCRIPT), "--check"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
