"""The planner, the reference pipeline and the tuner use exactly the one arm registry (theory.arms.ARMS)."""

import ast
from pathlib import Path

import pytest

from theory.arms import ARM_NAMES, ARMS

ROOT = Path(__file__).resolve().parents[1]


def test_planner_evaluates_the_registry_itself():
    import budget_planner.planner as planner_mod
    from budget_planner.planner import plan

    assert planner_mod.ARMS is ARMS
    assert tuple(a.arm for a in plan("paper-qwen3-math", labels=100).arms) == ARM_NAMES


def test_reference_runs_arms_from_the_registry():
    pytest.importorskip("torch")
    import reference.api as api
    import reference.pipeline as pipeline

    assert api.ARMS is ARMS
    assert tuple(api.PARAM_SPACE) == ARM_NAMES
    assert pipeline.get_arm("direct_grpo") is ARMS["direct_grpo"]


def test_tuner_arms_come_from_the_registry():
    from tuning import synthetic

    assert synthetic.ARMS is ARMS
    assert set(synthetic.PEAK) == set(ARM_NAMES)  # the stand-in covers every registered arm, no more


def _string_constants(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def test_no_package_keeps_its_own_arm_list():
    """Outside theory/arms.py no module names more than two arms literally (a second list would drift)."""
    offenders = {}
    for pkg in ("theory", "budget_planner", "reference", "tuning"):
        for path in (ROOT / pkg).rglob("*.py"):
            if path.name == "arms.py" and pkg == "theory" or path.name == "synthetic.py":
                continue
            named = _string_constants(path) & set(ARM_NAMES)
            if len(named) > 2:
                offenders[str(path.relative_to(ROOT))] = sorted(named)
    assert not offenders, f"arm names listed outside the registry: {offenders}"


def test_no_module_imports_a_private_name_of_the_stage_modules():
    """The stage table, the cached-stage runner and the seed helper are reached through public names
    only (issue 15): nothing imports `_x` from theory.arms or the reference's pipeline, stage runner,
    assembly, runs, pilot, curves, gate or seeds modules."""
    owners = {"theory.arms", "reference.pipeline", "reference.stage_runner", "reference.assemble", "reference.runs",
              "reference.pilot", "reference.curves", "reference.gate", "reference.seeds"}
    offenders = []
    for pkg in ("theory", "budget_planner", "reference", "tuning", "scripts", "benchmarks"):
        for path in (ROOT / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module in owners:
                    offenders += [f"{path.relative_to(ROOT)}: {node.module}.{a.name}" for a in node.names
                                  if a.name.startswith("_")]
    assert not offenders, offenders
