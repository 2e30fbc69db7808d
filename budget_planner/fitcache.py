"""On-disk cache of calibrations for the CLI (an edge: `theory` itself stays pure, with its in-memory
cache only). A fit is keyed by the scenario's content and the source of `theory/`, so editing either
recalibrates. Directory: $SPARSE2DENSE_CACHE, else $XDG_CACHE_HOME/sparse2dense, else
~/.cache/sparse2dense; SPARSE2DENSE_CACHE=off disables it. A cache that cannot be read or written is
ignored (the plan is calibrated as if it were absent)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from theory import fitting

_THEORY = Path(fitting.__file__).resolve().parent
_VERSION: str | None = None


def cache_dir() -> Path | None:
    env = os.environ.get("SPARSE2DENSE_CACHE")
    if env == "off":
        return None
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sparse2dense"


def _version() -> str:
    global _VERSION
    if _VERSION is None:
        h = hashlib.sha256()
        for p in sorted(_THEORY.glob("*.py")):
            h.update(p.name.encode() + p.read_bytes())
        _VERSION = h.hexdigest()
    return _VERSION


def _path(scn) -> Path | None:
    d = cache_dir()
    if d is None:
        return None
    key = hashlib.sha256((_version() + scn.key()).encode()).hexdigest()[:32]
    return d / f"fit-{key}.npz"


def warm(scn) -> bool:
    """Put a cached fit of `scn` into theory.fitting's in-memory cache; True if one was found."""
    p = _path(scn)
    if p is None or fitting.cached_fit(scn) is not None or not p.is_file():
        return False
    try:
        with np.load(p, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            fit = fitting.Fit(scenario=scn, names=tuple(meta["names"]), z_map=z["z_map"], cov=z["cov"],
                                z_draws=z["z_draws"], chi2=float(meta["chi2"]), warnings=tuple(meta["warnings"]),
                                labels_range=None if meta["labels_range"] is None else tuple(meta["labels_range"]),
                                ess=float(meta["ess"]))
    except (OSError, ValueError, KeyError):
        return False
    if fit.names != tuple(t.path for t in scn.fitted_inputs()):
        return False
    fitting.remember_fit(fit)
    return True


def store(scn) -> None:
    """Write the in-memory fit of `scn` to the cache (atomically; errors ignored)."""
    p = _path(scn)
    fit = fitting.cached_fit(scn)
    if p is None or fit is None or p.is_file():
        return
    meta = {"names": list(fit.names), "chi2": fit.chi2, "warnings": list(fit.warnings),
            "labels_range": None if fit.labels_range is None else list(fit.labels_range), "ess": fit.ess}
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + f".{os.getpid()}.tmp.npz")
        np.savez(tmp, z_map=fit.z_map, cov=fit.cov, z_draws=fit.z_draws, meta=np.array(json.dumps(meta)))
        os.replace(tmp, p)
    except OSError:
        pass
