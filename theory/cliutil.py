"""What the three console scripts share at their edges: the extras check (the planner has none),
`--version`, help that shows defaults, and output paths checked before any work. Standard library
only: no CLI may import torch to find out whether torch is there.

    require_extra("reference-pipeline", "reference")   # InputError: one line naming the pip install
    ap.add_argument("--version", action="version", version=version_string("budget-planner"))
    sp.add_argument("--plot", type=output_file, ...)   # checked while parsing, before any work
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from pathlib import Path

from theory.errors import InputError

DIST = "sparse2dense"

# The modules each extra of pyproject.toml provides (import names, not distribution names). The
# planner has no extra: its dependencies are the core install's. psycopg is left out of `tuning`
# because only postgresql:// storage needs it, and that path reports its own missing driver.
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "reference": ("torch", "transformers", "trl", "math_verify", "accelerate", "peft", "datasets", "tqdm"),
    "tuning": ("optuna",),
}


def install_command(*extras: str) -> str:
    """The install line a user copies: `pip install -c constraints.txt -e ".[reference,tuning]"`."""
    return f'pip install -c constraints.txt -e ".[{",".join(extras)}]"'


def missing_modules(*extras: str) -> list[str]:
    """Modules of the given extras that cannot be found (found by spec, never imported)."""
    missing = []
    for extra in extras:
        for mod in EXTRA_MODULES[extra]:
            try:
                found = importlib.util.find_spec(mod) is not None
            except (ImportError, ValueError):  # a broken or half-removed package
                found = False
            if not found and mod not in missing:
                missing.append(mod)
    return missing


def require_extra(who: str, *extras: str) -> None:
    """Raise one-line InputError if an extra's modules are missing, naming the command to run."""
    missing = missing_modules(*extras)
    if missing:
        kind = "extra" if len(extras) == 1 else "extras"
        raise InputError(f"{who} needs the {' and '.join(extras)} {kind} ({', '.join(missing)} not installed): "
                         f"{install_command(*extras)}")


def version_string(prog: str) -> str:
    """`prog 0.1.0`: the installed distribution's version, else the checkout's pyproject.toml."""
    try:
        from importlib.metadata import PackageNotFoundError, version

        return f"{prog} {version(DIST)}"
    except PackageNotFoundError:
        pass
    try:
        import tomllib

        data = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text(encoding="utf-8"))
        return f"{prog} {data['project']['version']}"
    except (OSError, KeyError, ValueError):
        return f"{prog} (version unknown: not installed and no pyproject.toml)"


def _check_parent(path: Path) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise argparse.ArgumentTypeError(f"output directory {str(parent)!r} does not exist")
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"{str(parent)!r} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"output directory {str(parent)!r} is not writable")


def output_file(text: str) -> str:
    """argparse `type=` for a file the command will write: its directory must exist and be writable.

    It runs while the command line is parsed, so a bad path fails in one line before any work
    (argparse names the flag: `error: argument --plot: output directory 'x' does not exist`)."""
    p = Path(text)
    if not text or p.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a directory, not a file to write")
    _check_parent(p)
    return text


def output_dir(text: str) -> str:
    """argparse `type=` for a directory the command will create or fill: not a file, and its nearest
    existing ancestor is a writable directory (the command makes the missing levels)."""
    p = Path(text)
    if not text:
        raise argparse.ArgumentTypeError("give a directory")
    if p.exists() and not p.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a file, not a directory")
    anc = p.resolve()
    while not anc.exists():
        anc = anc.parent
    if not anc.is_dir():
        raise argparse.ArgumentTypeError(f"cannot create {text!r}: {str(anc)!r} is a file")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot create {text!r}: {str(anc)!r} is not writable")
    return text


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples in epilogs as written and appends `(default: X)` to an option's help when
    it has a real default (not None/False) and the help does not already say one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("default" in text.lower() or not action.option_strings or action.required
                or any(action.default is v for v in (None, False, argparse.SUPPRESS))):  # `is`: 0 == False
            return text
        return text + " (default: %(default)s)"
