"""Torch-free theory of reward-density informativeness: the shared vocabulary (arms, tables) and the
analytical model the budget planner runs on. Depends on numpy, scipy and pandas only."""

from theory.arms import ARM_NAMES, ARMS, Arm, ComputeModel, LabelAccount, Stage, Teacher, get_arm
from theory.errors import InputError

__all__ = ["ARM_NAMES", "ARMS", "Arm", "ComputeModel", "InputError", "LabelAccount", "Stage", "Teacher", "get_arm"]
