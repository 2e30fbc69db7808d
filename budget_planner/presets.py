"""The planner's preset scenarios (budget_planner/scenarios/*.toml), by name or path."""

from __future__ import annotations

from pathlib import Path

from theory.errors import InputError
from theory.scenario import Scenario, read_scenario

PRESET_DIR = Path(__file__).resolve().parent / "scenarios"


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def load_scenario(name_or_path: str | Path) -> Scenario:
    """A preset name (see `preset_names()`) or a path to a TOML file."""
    s = str(name_or_path)
    p = Path(s)
    if not (s.endswith(".toml") or p.is_file()):
        p = PRESET_DIR / f"{s}.toml"
        if not p.is_file():
            raise InputError(f"unknown scenario {s!r}; presets: {', '.join(preset_names())} (or give a .toml path)")
    return read_scenario(p)
