"""Calibration of the training-length inputs from pilot curves (issue 23, item 3).

A pilot (`reference-pipeline pilot-curves`) trains chosen arms at small budgets with every stage capped
at a fraction of its plateau cap and records the student's validation curve. Each curve point is a
student trained at known stage lengths:

    direct GRPO at step t            student_grpo = t x P_grpo / N label passes
    the bridge's FKL at step t       teacher_grpo = the teacher stage's returned (best) step x P_grpo / N,
                                     fkl_warmup   = t x P_fkl / U bridge units
    the bridge's OPD at step t       the same teacher, fkl_warmup at the FKL stage's returned step,
                                     opd = t x P_opd / U

(P = prompts per step of the stage, from the pilot's config; U = the scenario's bridge unit,
`compute.bridge_prompts` x `bridge_samples`; a stage returns its best checkpoint, so the next stage
starts from the best step's length). `fit_lengths` finds the GRPO rate kappa (the protocol's own: the
pilot runs the plateau protocol's schedule, which the fixed-length observations did not), the teacher's
relative GRPO efficiency kappa_ratio (when the scenario has it) and the warmup's transfer phi_w (the
bridge curves start from the RL teacher and climb through FKL), the reuse scale e_r and the bridge
reach r_b that make `theory.dynamics` predict the curves: least squares on
the transformed scale (log kappa, log e_r, logit r_b), each point weighted by its validation error
(binomial over V problems, at least 1 point), with the scenario's priors as a Gaussian penalty; every
other input at its MAP. The result is written back as measured inputs with their standard errors
(Laplace), so `plan` draws them from it (`calibrated_scenario`).

numpy / scipy / pandas only (theory never imports torch).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import optimize

from theory.arms import ARMS, STAGES, STUDENT, Stage
from theory.curvefit import validate_curves
from theory.dynamics import predict_arms
from theory.errors import InputError
from theory.fitting import build_setting, fit_scenario, from_z, to_z, values_from_z
from theory.scenario import Scenario, Tagged

# what the curves measure: the GRPO rate under the plateau protocol's schedule, the teacher's relative
# GRPO efficiency (the bridge's curve starts from the RL teacher) and the warmup's transfer (the FKL
# curve), beside the two length inputs; an input the scenario lacks (kappa_ratio is optional) is skipped
FITTED = ("rates.kappa", "rates.kappa_ratio", "rates.phi_w", "lengths.reuse", "lengths.bridge_reach")
MIN_SE = 1.0  # points: the floor of a curve point's error


@dataclass(frozen=True)
class LengthFit:
    paths: tuple[str, ...]
    value: dict  # path -> fitted natural value
    sd_z: dict  # path -> standard error on the transformed scale
    rows: pd.DataFrame  # the curve points with their lengths, the prediction and the residual
    chi2: float
    source: str
    # validation minus test accuracy of the base student (points): the pilot's V validation problems are
    # a sample, easier or harder than the test set; the curves are fitted as prediction + offset
    offset: float = 0.0

    @property
    def rmse(self) -> float:
        return float(np.sqrt(np.mean(self.rows["residual"] ** 2)))


def read_pilot(directory: str | Path) -> tuple[pd.DataFrame, dict, dict]:
    """(curves, the pilot's JSON, its config as a dict) of a `reference-pipeline pilot-curves` output."""
    import json
    d = Path(directory)
    for name in ("pilot_curves.csv", "pilot_curves.json"):
        if not (d / name).is_file():
            raise InputError(f"{d}: no {name} (the output of `reference-pipeline pilot-curves`)")
    meta = json.loads((d / "pilot_curves.json").read_text())
    cfg_path = Path(meta["config"])
    if not cfg_path.is_file():
        raise InputError(f"{d}/pilot_curves.json: its config {str(cfg_path)!r} is not there (run from the repository)")
    return validate_curves(pd.read_csv(d / "pilot_curves.csv")), meta, tomllib.loads(cfg_path.read_text())


def curve_lengths(curves: pd.DataFrame, meta: dict, config: dict, bridge_unit: float) -> pd.DataFrame:
    """The curve points with each stage's length (label passes / bridge units) at that point."""
    best = {(c["labels"], c["arm"], c["seed"], c["stage"]): c.get("best_step") for c in meta["stage_caps"]}
    per_step = {"grpo": config["grpo"]["prompts_per_step"], "fkl": config["fkl"]["prompts_per_step"],
                "opd": config["opd"]["prompts_per_step"]}
    rows = []
    for r in curves.itertuples(index=False):
        arm = ARMS[r.arm]
        lengths, stop = {}, Stage(r.stage)
        for s in arm.stages:
            step = r.step if s is stop else best.get((r.labels, r.arm, r.seed, s.value))
            if step is None:
                raise InputError(f"pilot_curves.json has no best step for {r.arm} N={r.labels} seed={r.seed} "
                                 f"stage {s.value} (rerun the pilot with this version)")
            if s in (Stage.TEACHER_GRPO, Stage.STUDENT_GRPO):
                n = r.teacher_labels if s is Stage.TEACHER_GRPO else r.student_labels
                lengths[s.value] = step * per_step["grpo"] / max(n, 1)
            else:
                lengths[s.value] = step * per_step["fkl" if s is Stage.FKL_WARMUP else "opd"] / bridge_unit
            if s is stop:
                break
        rows.append({**r._asdict(), "lengths": lengths})
    return pd.DataFrame(rows)


def prefix_arm(arm: str, stage: str):
    """The registry arm that runs `arm`'s stages up to and including `stage` (a curve point mid-arm is
    that arm's student): the RL bridge's FKL points are `no_opd`'s."""
    stages = ARMS[arm].stages
    prefix = stages[:stages.index(Stage(stage)) + 1]
    for a in ARMS.values():
        if a.stages == prefix and a.teacher == ARMS[arm].teacher or (a.stages == prefix and prefix == stages):
            return a
    raise InputError(f"no arm runs {arm}'s stages up to {stage} ({', '.join(s.value for s in prefix)})")


def map_values(scn: Scenario) -> dict:
    """Every input at the scenario's MAP, shape (1,) each."""
    fit = fit_scenario(scn)
    return {k: np.asarray(v, dtype=float)[:1] for k, v in values_from_z(scn, fit.z_map[None, :]).items()}


def predict_points(scn: Scenario, pts: pd.DataFrame, values: dict, *, benchmark: str | None = None) -> np.ndarray:
    """The dynamics' accuracy (percent) at each curve point of `pts` (`curve_lengths`), with `values` the
    inputs (`map_values`, some replaced): the arm run up to the point's stage, at the point's lengths."""
    bench = benchmark or scn.target_benchmark
    setting = build_setting(scn, values, (bench,)).expand()  # R = (1, 1): the points on the split axis
    out = np.empty(len(pts))
    for (arm, n, stage), g in pts.groupby(["arm", "labels", "stage"], sort=False):
        idx = np.flatnonzero(pts.index.isin(g.index))
        lengths = {s: np.array([pts["lengths"].iloc[i][s] for i in idx]) for s in pts["lengths"].iloc[idx[0]]}
        out[idx] = predict_arms(setting, [prefix_arm(arm, stage)], int(n), None, lengths)[0, 0, :, 0]
    return out


def fit_lengths(scn: Scenario, curves: pd.DataFrame, meta: dict, config: dict, *, benchmark: str | None = None,
                source: str = "pilot curves") -> LengthFit:
    """kappa (kappa_ratio, phi_w), e_r and r_b that make the dynamics predict the pilot curves (module
    docstring). The points of one curve share their validation problems and their run: the standard
    errors treat them as independent and are too small by about the square root of a curve's length."""
    vals = map_values(scn)
    paths = tuple(p for p in FITTED if scn.has(p))
    tagged = {p: scn.get(p) for p in paths}
    unit = float(scn.compute.bridge_prompts * scn.compute.bridge_samples)
    pts = curve_lengths(curves, meta, config, unit).reset_index(drop=True)
    if pts.empty:
        raise InputError("pilot curves: no points")
    V = int(meta.get("validation_labels", 64))
    se = np.maximum(np.sqrt(np.clip(pts["accuracy"] * (100 - pts["accuracy"]), 0, None) / V), MIN_SE).to_numpy()
    z0 = np.array([float(to_z(tagged[p])) for p in paths])
    sd0 = np.array([tagged[p].sd for p in paths])
    y = pts["accuracy"].to_numpy(dtype=float)
    offset = validation_offset(scn, pts, vals, benchmark)

    def predict(z) -> np.ndarray:
        v = dict(vals)
        for p, zi in zip(paths, z):
            v[p] = np.atleast_1d(from_z(tagged[p], zi))
        return predict_points(scn, pts, v, benchmark=benchmark) + offset

    def resid(z):
        return np.concatenate([(predict(z) - y) / se, (z - z0) / sd0])

    sol = optimize.least_squares(resid, z0, method="trf", x_scale=1.0)
    cov = np.linalg.pinv(sol.jac.T @ sol.jac)
    pred = predict(sol.x)
    rows = pts.assign(predicted=pred, residual=pred - y, se=se)
    return LengthFit(paths=paths, value={p: float(from_z(tagged[p], z)) for p, z in zip(paths, sol.x)},
                     sd_z={p: float(np.sqrt(max(cov[i, i], 0.0))) for i, p in enumerate(paths)},
                     rows=rows, chi2=float(np.sum(((pred - y) / se) ** 2)), source=source, offset=offset)


def validation_offset(scn: Scenario, pts: pd.DataFrame, values: dict, benchmark: str | None = None) -> float:
    """Validation minus test accuracy of the base student: the mean of the curves' points where the
    student is untrained (step 0 of a first student stage: direct GRPO's, the bridge's FKL) minus the
    scenario's start accuracy on the benchmark (its test set)."""
    def first_student_stage(arm: str) -> str:
        return next(s.value for s in ARMS[arm].stages if STAGES[s].trains == STUDENT)

    base = pts[(pts["step"] == 0) & (pts["stage"] == pts["arm"].map(first_student_stage))]
    if base.empty:
        return 0.0
    bench = benchmark or scn.target_benchmark
    setting = build_setting(scn, values, (bench,))
    start = float(np.asarray(setting.accuracy(setting.student))[0, 0])
    return float(base["accuracy"].mean() - start)


def calibrated_scenario(scn: Scenario, lf: LengthFit) -> Scenario:
    """The scenario with the fitted inputs as measured values with their standard errors."""
    new = []
    for t in scn.inputs:
        if t.path in lf.value:
            note = (f"{lf.source}: fitted to {len(lf.rows)} validation points (rmse {lf.rmse:.1f} points); "
                    f"prior {t.value:.4g} ({t.tag})")
            t = Tagged(path=t.path, value=lf.value[t.path], tag="measured", note=note, kind=t.kind,
                       sd=max(lf.sd_z[t.path], 1e-3), has_se=True)
        new.append(t)
    return replace(scn, inputs=tuple(new), name=f"{scn.name}-pilot", description=f"{scn.description} "
                   f"(kappa and the length inputs from {lf.source})")
