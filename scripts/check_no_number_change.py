"""Prove a refactor changes no number: every arm at seed 0 on configs/toy_short.toml, one thread.

    python scripts/check_no_number_change.py --workdir /tmp/nnc_base --out base.json      # before
    python scripts/check_no_number_change.py --workdir /tmp/nnc_new --compare base.json   # after

Writes (or compares against) a JSON of {stage checkpoint path relative to the workdir -> sha256 of its
weights} and, per arm, the result rows: metrics, label account, compute tokens and per-stage
tokens / steps / last log entry / validation curve point. Wall-clock seconds are left out, and so is
each checkpoint's meta.json (it records the stage's seconds); the weights file is safetensors written
from a plain state dict with no metadata, so equal tensors give equal bytes and its sha256 is a fair
test. `--compare` exits 1 and names every difference.

Uses only the public API that exists before and after issue 15 (`load_config`, `run_pipeline`), so the
same script runs against the old tree and the new one: put the tree under test first on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
import sys


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def measure(workdir: Path, seed: int = 0) -> dict:
    import torch

    import reference
    from reference.config import load_config
    from reference.pipeline import run_pipeline
    from theory.arms import ARMS

    torch.set_num_threads(1)
    config = Path(reference.__file__).resolve().parents[1] / "configs" / "toy_short.toml"
    cfg = load_config(config)
    runs = {}
    for name in ARMS:
        res = run_pipeline(cfg, name, seed, workdir=workdir, split="test", progress=False)
        runs[name] = {"metrics": res.metrics, "label_account": vars(res.label_account),
                      "compute_tokens": res.compute_tokens,
                      "stages": [{k: s.get(k) for k in ("name", "model", "tokens", "steps", "last", "curve")}
                                 for s in res.stages]}
        print(f"{name}: {res.metrics}", flush=True)
    checkpoints = {str(p.relative_to(workdir)): sha256(p)
                   for p in sorted((workdir / "stages").glob("*/model.safetensors"))}
    return {"config": str(config.relative_to(config.parents[1])), "seed": seed, "checkpoints": checkpoints,
            "runs": runs}


def differences(base: dict, new: dict, path: str = "") -> list[str]:
    """Every leaf where the two JSON trees differ (exact comparison, floats included)."""
    if isinstance(base, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(base) | set(new)):
            p = f"{path}/{k}"
            if k not in new:
                out.append(f"{p}: missing in the new run")
            elif k not in base:
                out.append(f"{p}: not in the base")
            else:
                out += differences(base[k], new[k], p)
        return out
    if isinstance(base, list) and isinstance(new, list) and len(base) == len(new):
        return [d for i, (a, b) in enumerate(zip(base, new)) for d in differences(a, b, f"{path}[{i}]")]
    return [] if base == new else [f"{path}: {base!r} -> {new!r}"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", required=True, type=Path, help="an empty (or this script's) work directory")
    ap.add_argument("--out", type=Path, help="write the measurement here")
    ap.add_argument("--compare", type=Path, help="a measurement to compare with; exit 1 on any difference")
    args = ap.parse_args(argv)
    new = json.loads(json.dumps(measure(args.workdir)))  # through JSON, as the base went
    if args.out:
        args.out.write_text(json.dumps(new, indent=1, sort_keys=True))
        print(f"wrote {args.out}: {len(new['checkpoints'])} stage checkpoints, {len(new['runs'])} arms")
    if args.compare:
        diffs = differences(json.loads(args.compare.read_text()), new)
        for d in diffs:
            print(f"DIFF {d}")
        print(f"{len(new['checkpoints'])} stage checkpoints, {len(new['runs'])} arms: "
              + (f"{len(diffs)} differences" if diffs else "identical (sha256 and result rows)"))
        return 1 if diffs else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
