#!/usr/bin/env python
"""No new copy of a block of 6+ lines: pylint's similarity checker against a committed baseline.

    python scripts/check_duplicates.py            # exit 1 naming each block the baseline does not hold
    python scripts/check_duplicates.py --update   # rewrite docs/duplicates_baseline.txt from the tree

Runs pylint's similarity engine (`Symilar`, behind duplicate-code R0801) over the packages,
scripts/, benchmarks/ and tests/, ignoring comments and docstrings. pylint's other two ignores
(imports, signatures) parse every file with astroid, which took minutes here instead of a second, so
six shared import lines count as a copy. A block is keyed by the two files that share it and a hash
of its lines, never by line numbers: code moving inside a file keeps its key. A block that grows or
gains a copy is new; one that disappeared is reported as gone (exit 0; --update drops it).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path

from pylint.checkers.symilar import Symilar

ROOT = Path(__file__).resolve().parents[1]
PATHS = ["theory", "budget_planner", "reference", "tuning", "scripts", "benchmarks", "tests"]
BASELINE = ROOT / "docs" / "duplicates_baseline.txt"
MIN_LINES = 6


def python_files(paths: list[str], root: Path) -> list[str]:
    """Every .py file under `paths`, relative to `root`, sorted; symlinked folders are not followed."""
    files = []
    for p in paths:
        for folder, dirs, names in os.walk(root / p):
            dirs[:] = [d for d in dirs if not d.startswith((".", "__pycache__"))]
            files += [os.path.relpath(os.path.join(folder, n), root) for n in names if n.endswith(".py")]
    return sorted(files)


def find_duplicates(paths: list[str], root: Path = ROOT) -> dict[str, str]:
    """{key: one line describing the block} for every block of MIN_LINES+ lines shared by two files."""
    sim = Symilar(min_lines=MIN_LINES - 1, ignore_comments=True, ignore_docstrings=True)  # it reports > min_lines
    for name in python_files(paths, root):
        with open(root / name, encoding="utf-8") as stream:
            sim.append_stream(name, stream)
    found = {}
    # Every pair of files (_iter_sims): the public report merges a third copy of a block into the
    # first pair's message without naming it, so a new copy of an accepted block would go unseen.
    for c in sim._iter_sims():
        body = [s.text for s in c.fst_lset.stripped_lines if c.fst_file_start <= s.line_number < c.fst_file_end]
        digest = hashlib.sha256("\n".join(body).encode()).hexdigest()[:12]
        key = f"{digest} {' '.join(sorted([c.fst_lset.name, c.snd_lset.name]))}"
        found[key] = f"{key}  ({len(body)} lines: {body[0][:60]})"
    return found


def read_baseline(path: Path) -> set[str]:
    if not path.exists():
        return set()
    lines = (line.split("  (", 1)[0].strip() for line in path.read_text().splitlines())
    return {line for line in lines if line and not line.startswith("#")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--update", action="store_true", help="rewrite the baseline with today's blocks")
    ap.add_argument("--baseline", type=Path, default=BASELINE, help="default: docs/duplicates_baseline.txt")
    ap.add_argument("--root", type=Path, default=ROOT, help="folder the paths are relative to (default: the repo)")
    ap.add_argument("paths", nargs="*", default=PATHS, help=f"folders to scan (default: {' '.join(PATHS)})")
    a = ap.parse_args(argv)
    found = find_duplicates(a.paths, a.root)
    if a.update:
        a.baseline.write_text(
            "# Blocks of 6+ lines shared by two files, accepted as of the last `scripts/check_duplicates.py --update`.\n"
            "# <hash of the shared lines> <the files that share them>  (size: first line)\n"
            + "".join(f"{found[k]}\n" for k in sorted(found)))
        print(f"{a.baseline}: {len(found)} blocks")
        return 0
    known = read_baseline(a.baseline)
    new, gone = sorted(set(found) - known), sorted(known - set(found))
    for k in gone:
        print(f"gone (--update drops it): {k}")
    for k in new:
        print(f"NEW duplicated block: {found[k]}")
    print(f"{len(found)} duplicated blocks, {len(new)} new, {len(gone)} gone (baseline {a.baseline.name})")
    return 1 if new else 0


if __name__ == "__main__":
    sys.exit(main())
