"""The budget planner: where scarce verifiable labels go, with predicted accuracy and uncertainty.

    from budget_planner import plan, load_scenario
    p = plan("paper-qwen3-math", labels=5000)
    p.to_frame(); p.recommendation; p.plot("plan.png")

Torch-free: depends on `theory` (numpy/scipy/pandas); seaborn is imported only by `Plan.plot`.
"""

from budget_planner.planner import Plan, budget_curve, plan
from budget_planner.presets import load_scenario, preset_names
from theory.calibrate import calibrate
from theory.fitting import fit_scenario
from theory.scenario import Scenario

__all__ = ["Plan", "Scenario", "budget_curve", "calibrate", "fit_scenario", "load_scenario", "plan", "preset_names"]
