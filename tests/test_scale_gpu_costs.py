"""scripts/gpu_costs.py --tiny runs the GPU cost script's code path on a CPU: every stage on both backends,
rows appended in the cost-table schema that theory/costs.py reads, the committed table untouched."""

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from theory.costs import COLUMNS, CostTable, _parse_row

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # starts the script: torch + transformers + trl, ~40 s on a CPU


def test_gpu_costs_tiny_on_cpu(tmp_path):
    committed = (ROOT / "docs" / "results" / "gpu_costs.csv").read_bytes()
    out = tmp_path / "costs.csv"
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_costs.py"), "--tiny", "--device", "cpu",
                        "--out", str(out)], capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert (ROOT / "docs" / "results" / "gpu_costs.csv").read_bytes() == committed
    with out.open(newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == COLUMNS
        rows = [_parse_row(raw, f"row {i}") for i, raw in enumerate(reader, start=2)]
    assert {r.backend for r in rows} == {"reference", "trl"}
    assert all(r.tag == "measured" and "scripts/gpu_costs.py" in r.source and "x the bare anchor" in r.source
               for r in rows)
    got = {(r.stage.value, r.phase, r.backend, r.engine) for r in rows}
    for stage in ("teacher_grpo", "fkl_warmup", "opd", "student_grpo"):
        assert (stage, "step", "reference", "single") in got, stage
        assert (stage, "step", "trl", "single") in got, stage
    assert ("teacher_grpo", "step", "reference", "single+lora") in got
    assert ("student_grpo", "rollout", "reference", "hf") in got
    # the planner's reader takes each backend's rows
    assert len(CostTable.from_csv(out, backend="trl").rows) == 4
    assert CostTable.from_csv(out, backend="reference", engine="single").rows
    assert "evaluation avg@4" in p.stdout and "goals:" in p.stdout and "not measured" not in p.stdout


def test_real_shapes_refuse_cpu():
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_costs.py"), "--device", "cpu"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "real shapes need a GPU" in p.stderr
