"""The reference's layout (issue 15): the orchestrator is short and read top-down, the cached-stage runner
takes a handful of bundled arguments, the modules beside the pipeline use the runner and the assembly
rather than the orchestrator, the default backend never touches TRL, and no module reaches into
another's private names."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
import sys
from types import SimpleNamespace

import pytest

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ("reference", "theory", "budget_planner", "tuning")


def _imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at the top or inside a function (`from a import b` counts a and a.b)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return found


def test_the_orchestrator_is_short_and_the_runner_takes_bundles():
    from reference.pipeline import run_pipeline
    from reference.stage_runner import run_stage

    assert len((ROOT / "reference" / "pipeline.py").read_text().splitlines()) <= 250
    assert len(inspect.getsource(run_pipeline).splitlines()) <= 40  # the arm's stages as one short loop
    assert len(inspect.signature(run_stage).parameters) <= 6


@pytest.mark.parametrize("module", ["gate", "pilot", "curves", "export"])
def test_neighbours_use_the_runner_not_the_orchestrator(module):
    assert "reference.pipeline" not in _imported_modules(ROOT / "reference" / f"{module}.py")


def test_the_default_backend_never_imports_trl(monkeypatch):
    """Every stage of the table dispatches to reference.stages under `trainer = "reference"` with the TRL
    backend unimportable."""
    import torch

    from reference import stages
    from reference.assemble import Models
    from reference.stage_runner import TrainingSetup, train_stage, update_rules
    from theory.arms import STAGES, LabelAccount

    from conftest import tiny_config

    monkeypatch.setitem(sys.modules, "reference.trl_backend", None)  # any import of it now fails
    assert update_rules("reference") == {"grpo": stages.grpo, "fkl": stages.fkl_warmup, "opd": stages.opd}
    seen = []
    for name in ("grpo", "fkl_warmup", "opd"):
        monkeypatch.setattr(stages, name, lambda *a, fn=name, **k: seen.append(fn))
    models = Models(student=torch.nn.Module(), teacher=torch.nn.Module(), ctx=None, tokenizer=None)  # no weights
    setup = TrainingSetup(tiny_config(), models, SimpleNamespace(labeled=(), unlabeled=()), LabelAccount(0, 0, 0))
    for stage in STAGES:
        train_stage(stage, setup, 0)
    assert seen == [{"grpo": "grpo", "fkl": "fkl_warmup", "opd": "opd"}[s.update] for s in STAGES.values()]


def _private_reach_ins(path: Path) -> list[str]:
    """`alias._name` where `alias` is a project module imported into `path`."""
    tree = ast.parse(path.read_text())
    aliases = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            aliases |= {a.asname for a in node.names if a.asname and a.name.split(".")[0] in PROJECT}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PROJECT:
            aliases |= {a.asname or a.name for a in node.names}
    return [f"{path.name}:{node.lineno} {node.value.id}.{node.attr}" for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
            and node.attr.startswith("_") and not node.attr.startswith("__")]


def test_no_module_reaches_into_another_modules_private_names():
    found = [hit for pkg in ("reference", "tuning", "scripts", "benchmarks")
             for path in sorted((ROOT / pkg).rglob("*.py")) for hit in _private_reach_ins(path)]
    assert found == []


def test_the_reach_in_finder_finds_one(tmp_path):
    p = tmp_path / "m.py"
    p.write_text("from reference import stages as st\nimport numpy as np\nst._norm(1)\nnp._private\nst.__doc__\n")
    assert _private_reach_ins(p) == ["m.py:3 st._norm"]
