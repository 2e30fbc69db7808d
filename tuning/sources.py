"""Sources of arms, by name (`load_arm_source`; the protocol stores the name and its options):
  - "synthetic"        a cheap seeded stand-in (tuning.synthetic) used by the tests;
  - "reference"        the toy/Qwen3 reference pipeline (tuning.reference_arms; imports torch lazily);
  - "module:function"  your own arm function; its search space is `PARAM_SPACE` in the same module
                       (or a `param_space` attribute of the function).
"""

from __future__ import annotations

from collections.abc import Mapping
import importlib
from typing import Any

from theory.errors import InputError
from tuning.interface import ArmSource


def load_arm_source(name: str, options: Mapping[str, Any] | None = None) -> ArmSource:
    """Resolve 'synthetic', 'reference' or 'module:function' (see the module docstring)."""
    options = dict(options or {})
    if name == "synthetic":
        from tuning.synthetic import SyntheticArms

        arms = SyntheticArms(**options)
        return ArmSource(name, arms, arms.param_space())
    if name == "reference":
        from theory.cliutil import require_extra

        require_extra("arm source 'reference'", "reference")
        from tuning.reference_arms import ReferenceArms

        arms = ReferenceArms(**options)
        return ArmSource(name, arms, arms.param_space())
    if ":" not in name:
        raise InputError(f"arm source must be 'synthetic', 'reference' or 'module:function', got {name!r}")
    mod_name, fn_name = name.split(":", 1)
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise InputError(f"arm source {name!r}: cannot import {mod_name!r} ({e})") from None
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        raise InputError(f"arm source {name!r}: {mod_name} has no callable {fn_name!r}")
    space = getattr(fn, "param_space", None) or getattr(mod, "PARAM_SPACE", None)
    if not isinstance(space, Mapping):
        raise InputError(f"arm source {name!r}: declare PARAM_SPACE = {{arm: {{param: spec}}}} in {mod_name}")
    if options:
        raise InputError(f"arm source {name!r} takes no options, got {sorted(options)}")
    return ArmSource(name, fn, space)
