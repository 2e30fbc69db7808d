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


def test_rehearsal_tiny_on_cpu(tmp_path):
    """scripts/gpu_costs.py --rehearsal (scripts/gpu_rehearsal.py, issue 24 item 8) on tiny shapes: every
    part runs; mixed precision moves >= 90% of the fp32 master at lr 1e-6, a cut and resumed stage ends
    where the uninterrupted one ends, and the parts that need a GPU say so instead of passing."""
    import json
    out = tmp_path / "rehearsal.json"
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_costs.py"), "--rehearsal", "--tiny", "--device",
                        "cpu", "--out", str(out)], capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["mixed"]["master_dtypes"] == ["torch.float32"] and r["mixed"]["changed_share"] >= 0.9
    assert r["midstage"]["max_abs_diff"] == 0.0
    marks = r["marks"]
    assert [m.split(":")[0] for m in marks] == ["PASS", "SKIP", "PASS", "SKIP", "SKIP"], marks
    assert not any(k.endswith("_error") for k in r)
