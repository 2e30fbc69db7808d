"""docs/results.md, written from the committed tables under docs/results/ (issue 25): the results page.

    python scripts/results_report.py            # (re)write docs/results.md
    python scripts/results_report.py --check    # exit 1 if docs/results.md differs from what it would write

The page holds no number of its own: every figure is read from a committed table (CSV, JSON, or a
Markdown table a report wrote) and printed with fixed formatting, in a fixed order, without dates, so
the same tables give the same bytes. Sentences that quote a figure recorded only in prose (docs/log.md,
docs/theory.md, docs/scale.md) say so and cite where. A missing table ends with one `error:` line
(exit 2). Edit the tables or this script, never docs/results.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tomllib
from pathlib import Path

from theory.errors import InputError, cli_exit

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
OUT = ROOT / "docs" / "results.md"
COMMAND = "python scripts/results_report.py"
NOT_RERUN = "not rerun yet: fixed-length protocol"
FIXED_PW = "legacy/fixed_length/paper_world_ablation_summary.csv"  # the paper-like world's fixed-length ablation
PLATEAU_PW = "paper_world_ablation_summary.csv"  # the same ablation under the plateau protocol (issue 22)
CAP_CHECK = "paper_world_cap_check.csv"  # its arms with every cap scaled 4x, on fresh seeds
OPD_RULES = "paper_world_opd_rules.csv"  # every OPD stop rule's runs and 4x checks (plateau_reruns.py rules-table)
RERUN_DIFFS = "plateau_reruns_differences.csv"
RERUN_SUMMARY = "plateau_reruns_summary.csv"
RERUN_REPORT = "plateau_crosscheck_report.json"
RERUN_REPORT_SEEN = "plateau_crosscheck_report_seen.json"
BRIDGE_VS_DIRECT = "rl_teacher_bridge - direct_grpo"
TUNED_PW = "fairness_plateau_paper_world/"  # matched tuning of the headline pair under the plateau protocol
ACCURACY_ROWS = ("raw_teacher_bridge", "rl_teacher_bridge", "no_fkl", "no_opd", "rl_teacher_bridge_stage3")


# ---------- reading the committed tables ----------

class Tables:
    """The committed tables under one results folder; every read names the file it needs."""

    def __init__(self, results: Path):
        self.results = results

    def path(self, name: str) -> Path:
        p = self.results / name
        if not p.is_file():
            raise InputError(f"{p}: missing; {COMMAND} reads the committed tables under docs/results/ "
                             f"(restore it from git or regenerate it with the command its docs/log.md entry gives)")
        return p

    def has(self, name: str) -> bool:
        """Whether an optional table (one a study in progress writes) is there."""
        return (self.results / name).is_file()

    def csv(self, name: str) -> list[dict]:
        with self.path(name).open(newline="") as f:
            return list(csv.DictReader(f))

    def json(self, name: str) -> dict:
        return json.loads(self.path(name).read_text())

    def md_table(self, name: str, heading: str) -> list[dict]:
        """The first Markdown table after the line that starts with `heading`."""
        lines = self.path(name).read_text().splitlines()
        start = next((i for i, line in enumerate(lines) if line.startswith(heading)), None)
        if start is None:
            raise InputError(f"{self.results / name}: no section starting {heading!r}")
        block = []
        for line in lines[start + 1:]:
            if line.startswith("|"):
                block.append(line)
            elif block:
                break
        if len(block) < 3:
            raise InputError(f"{self.results / name}: no table under {heading!r}")
        head = [c.strip() for c in block[0].strip("|").split("|")]
        return [dict(zip(head, (c.strip() for c in line.strip("|").split("|")))) for line in block[2:]]

    def summary(self, name: str) -> list[dict]:
        """The accuracy rows of a `*_summary.csv` (paired per-seed differences), in the table's order."""
        return [r for r in self.csv(name) if r["metric"] == "accuracy"]


def row(rows: list[dict], **match) -> dict:
    hits = [r for r in rows if all(r[k] == v for k, v in match.items())]
    if len(hits) != 1:
        raise InputError(f"expected one row with {match}, found {len(hits)}")
    return hits[0]


# ---------- fixed formatting ----------

def num(x, d: int = 1) -> str:
    s = f"{float(x):.{d}f}"
    return "0." + "0" * d if d and s.lstrip("-") == "0." + "0" * d else s.replace("-", "−")


def signed(x, d: int = 1) -> str:
    s = num(x, d)
    return s if s.startswith("−") else "+" + s


def ci(lo, hi, d: int = 1, sign: bool = True) -> str:
    f = signed if sign else num
    return f"[{f(lo, d)}, {f(hi, d)}]"


def diff(r: dict, d: int = 1) -> str:
    """A paired difference with its interval, from a summary row or a fairness-report row."""
    if "mean_diff" in r and "ci_low" in r:
        return f"{signed(r['mean_diff'], d)} {ci(r['ci_low'], r['ci_high'], d)}"
    return f"{signed(r['mean_diff'], d)} {ci(r['diff_ci_low'], r['diff_ci_high'], d)}"


def compact(v) -> str:
    """A searched value: integers as they are, other numbers to 2 significant digits."""
    return str(v) if isinstance(v, int) or float(v).is_integer() else f"{float(v):.2g}"


def table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]


# ---------- the sections ----------

def grpo_steps(cfg_path: Path) -> tuple[int, int, float, int, int, int]:
    """(labels, steps, epochs, prompts per step, FKL steps, OPD steps) of a config: the fixed length."""
    if not cfg_path.is_file():
        raise InputError(f"{cfg_path}: missing; the claims section reads its fixed training length")
    cfg = tomllib.loads(cfg_path.read_text())
    labels, g = cfg["world"]["labels"], cfg["grpo"]
    steps = max(1, -(-int(g["epochs"] * labels) // g["prompts_per_step"]))
    return labels, steps, g["epochs"], g["prompts_per_step"], cfg["fkl"]["steps"], cfg["opd"]["steps"]


def verdict(fixed: tuple[float, float, float], new: tuple[float, float, float]) -> str:
    """survives / changes / does not, for a claim that is the sign of a difference: (estimate, lo, hi) of
    the fixed-length figure and of the plateau rerun's."""
    (f, flo, fhi), (e, lo, hi) = fixed, new
    fixed_sign = 0 if flo <= 0 <= fhi else (1 if f > 0 else -1)
    new_sign = 0 if lo <= 0 <= hi else (1 if e > 0 else -1)
    if new_sign == 0:
        return "survives (no difference either way)" if fixed_sign == 0 else "does not: no difference at plateau"
    if fixed_sign == 0:
        return "changes: a difference at plateau"
    if new_sign != fixed_sign:
        return "does not: reversed at plateau"
    if lo <= f <= hi:
        return "survives"
    return "changes: same sign, " + ("larger" if abs(e) > abs(f) else "smaller")


def rerun_contrast(t: Tables, world: str, contrast: str, labels: int | None = None) -> dict | None:
    """One paired contrast of the plateau reruns (plateau_reruns_differences.csv), or None."""
    if not t.has(RERUN_DIFFS):
        return None
    hits = [r for r in t.csv(RERUN_DIFFS) if r["world"] == world and r["contrast"] == contrast
            and (labels is None or int(r["labels"]) == labels)]
    return hits[0] if hits else None


def _triple(r: dict, k: str = "accuracy") -> tuple[float, float, float]:
    return float(r[f"{k}_diff"]), float(r[f"{k}_lo"]), float(r[f"{k}_hi"])


def _rerun_figure(r: dict) -> str:
    return (f"{signed(r['accuracy_diff'])} {ci(r['accuracy_lo'], r['accuracy_hi'])} ({r['seeds']} seeds; greedy "
            f"{signed(r['accuracy_greedy_diff'])}, pass@8 {signed(r['pass_at_k_diff'])})")


def _ablation_claim(fixed: dict, new: list[dict] | None, a: str, b: str) -> tuple[str, str]:
    """(at-plateau figure, status) of a paper-like-world ablation comparison: the protocol's ablation
    when it has run, else not rerun."""
    if not new:
        return "—", NOT_RERUN
    r = row(new, a=a, b=b)
    return (f"{diff(r)} ({r['seeds']} seeds)",
            verdict((float(fixed["mean_diff"]), float(fixed["ci_low"]), float(fixed["ci_high"])),
                    (float(r["mean_diff"]), float(r["ci_low"]), float(r["ci_high"]))))


def _equal_compute(t: Tables) -> list[tuple[float, dict[str, dict]]]:
    """The plateau study's equal-compute reads (compute_matched.csv): per token level, each arm's row."""
    by: dict[float, dict[str, dict]] = {}
    for r in t.csv(f"{TUNED_PW}compute_matched.csv"):
        by.setdefault(float(r["tokens"]), {})[r["arm"]] = r
    return sorted(by.items())


def _level(r: dict) -> str:
    return "no student yet" if r is None or r["accuracy"] in ("", "nan") else num(r["accuracy"])


def _tuned_plateau_lm(t: Tables) -> dict | None:
    """The plateau tuning study's label-matched row, once the study (report and equal-compute reads) is there."""
    if not t.has(f"{TUNED_PW}fairness_report.md") or not t.has(f"{TUNED_PW}compute_matched.csv"):
        return None
    return t.md_table(f"{TUNED_PW}fairness_report.md", "## Label-matched")[0]


def _tuned_plateau(t: Tables, fixed: dict) -> list[str]:
    """(at-plateau figure, source, status) of the tuned paper-like-world comparison: the plateau study's
    label-matched difference and its equal-compute reads, once that study has run."""
    lm = _tuned_plateau_lm(t)
    if lm is None:
        return ["—", "`fairness_paper_world/fairness_report.md`", NOT_RERUN]
    levels = "; ".join(f"at {tok / 1e6:.2f}M tokens direct {_level(a.get('direct_grpo'))} vs bridge "
                       f"{_level(a.get('rl_teacher_bridge'))}" for tok, a in _equal_compute(t))
    status = verdict((float(fixed["mean_diff"]), float(fixed["diff_ci_low"]), float(fixed["diff_ci_high"])),
                     (float(lm["mean_diff"]), float(lm["diff_ci_low"]), float(lm["diff_ci_high"])))
    return [f"{diff(lm)} ({lm['seeds']} seeds); equal compute (validation): {levels}",
            f"`fairness_paper_world/fairness_report.md`; `{TUNED_PW}fairness_report.md`", status]


def claims(t: Tables, root: Path) -> list[str]:
    pw = t.summary(FIXED_PW)
    pw_new = t.summary(PLATEAU_PW) if t.has(PLATEAU_PW) else None
    fam = t.json("world_family_report.json")
    k15 = fam["crossover"]["modes-k15"]
    teach = fam["family"]["labels_teach"]
    toy = t.summary("toy_ablation_summary.csv")
    w3 = t.summary("toy_direct_teacher_summary.csv")
    w4 = t.summary("toy_compliant_teacher_summary.csv")
    label = {d: t.md_table(f"{d}/fairness_report.md" if d else "fairness_report.md", "## Label-matched")[0]
             for d in ("fairness_paper_world", "", "fairness_direct")}
    compute = {d: t.md_table(f"{d}/fairness_report.md" if d else "fairness_report.md", "## Compute-matched")[0]
               for d in ("fairness_paper_world", "", "fairness_direct")}
    n, steps, epochs, pps, fkl, opd = grpo_steps(root / "configs" / "legacy" / "fixed_length" / "paper_world.toml")
    n_toy, steps_toy, *_ = grpo_steps(root / "configs" / "toy.toml")
    rl = row(pw, a="rl_teacher_bridge", b="direct_grpo")
    raw = row(pw, a="raw_teacher_bridge", b="direct_grpo")
    no_opd = row(pw, a="no_opd", b="rl_teacher_bridge")
    c1_new, c1_status = _ablation_claim(raw, pw_new, "raw_teacher_bridge", "direct_grpo")
    no_opd_new, no_opd_status = _ablation_claim(no_opd, pw_new, "no_opd", "rl_teacher_bridge")
    measured = k15["measured"]["crossovers"]
    predicted = k15["predicted"]["crossovers"]
    lt = teach["modes-k15"]["accuracy"]
    lt30 = teach["modes-k30"]["accuracy"]
    pending = "pending: the reruns are in progress"
    rl_new = rerun_contrast(t, "modes-k15", BRIDGE_VS_DIRECT, 64)
    teach = {w: rerun_contrast(t, w, "direct_grpo N=1024 - N=64") for w in ("modes-k15", "modes-k30")}
    cc = t.json(RERUN_REPORT)["crossover"].get("modes-k15@plateau") if t.has(RERUN_REPORT) else None
    if cc is not None:
        xs = cc["measured"]["crossovers"]
        cross_new = (", ".join(f"N ≈ {c['budget']:.0f} ({c['direction'].replace('_', ' ')})" for c in xs)
                     or "none") + f" over N = {', '.join(str(b) for b in cc['measured']['budgets'])}"
        cross_status = ("changes: crossovers move" if xs else "does not: no crossover at plateau")
    else:
        cross_new, cross_status = "—", pending
    lt_fixed = {"modes-k15": lt, "modes-k30": lt30}
    if all(teach.values()):
        teach_new = "; ".join(f"{w[-3:]} {_rerun_figure(teach[w])}" for w in teach)
        statuses = {verdict((float(lt_fixed[w]["mean"]), float(lt_fixed[w]["lo"]), float(lt_fixed[w]["hi"])),
                            _triple(teach[w])) for w in teach}
        teach_status = " / ".join(sorted(statuses))
    else:
        teach_new, teach_status = "—", pending
    rows = [
        ["Paper-like world (modes-k15, N = 64, 10 seeds): RL bridge − direct GRPO", diff(rl),
         _rerun_figure(rl_new) if rl_new else "—", f"`{FIXED_PW}`; `{RERUN_DIFFS}`",
         verdict((float(rl["mean_diff"]), float(rl["ci_low"]), float(rl["ci_high"])), _triple(rl_new))
         if rl_new else pending],
        ["Paper-like world: C1 reversed (raw-teacher bridge − direct GRPO; the paper predicts < 0)",
         diff(raw) + f", reading “{raw['reading']}”",
         c1_new, f"`{FIXED_PW}`; `{PLATEAU_PW}`", c1_status],
        ["Paper-like world: no-OPD < full bridge", diff(no_opd),
         no_opd_new, f"`{FIXED_PW}`; `{PLATEAU_PW}`", no_opd_status],
        [f"Labels teach: direct GRPO from N = 64 to 1024 (k15, {lt['n']} seeds; k30, {lt30['n']} seeds)",
         f"k15 {signed(lt['mean'])} {ci(lt['lo'], lt['hi'])}; k30 {signed(lt30['mean'])} "
         f"{ci(lt30['lo'], lt30['hi'])} points", teach_new,
         "`world_family_report.json` (family.labels_teach); `" + RERUN_DIFFS + "`", teach_status],
        ["Measured bridge/direct crossover in modes-k15 (predicted: "
         + ", ".join(f"N ≈ {c['budget']:.0f}" for c in predicted) + ")",
         ", ".join(f"N ≈ {c['budget']:.0f} ({c['direction'].replace('_', ' ')})" for c in measured)
         + f"; predicted/measured {num(k15['ratio'], 1)}×", cross_new,
         "`world_family_report.json` (crossover); `" + RERUN_REPORT + "`", cross_status],
        ["Tuned, paper-like world: bridge − direct, label-matched / compute-matched",
         f"{diff(label['fairness_paper_world'])} / {diff(compute['fairness_paper_world'])}",
         *_tuned_plateau(t, label['fairness_paper_world'])],
        ["Tuned, toy world (world 1): bridge − direct, label-matched / compute-matched",
         f"{diff(label[''])} / {diff(compute[''])}", "—", "`fairness_report.md`", NOT_RERUN],
        ["Tuned, world 3: bridge − direct, label-matched / compute-matched",
         f"{diff(label['fairness_direct'], 2)} / {diff(compute['fairness_direct'], 2)}", "—",
         "`fairness_direct/fairness_report.md`", NOT_RERUN],
        ["World 4 (compliant teacher, ungated, 5 seeds): RL bridge − direct GRPO",
         diff(row(w4, a="rl_teacher_bridge", b="direct_grpo")), "—", "`toy_compliant_teacher_summary.csv`",
         NOT_RERUN],
        ["World 3 (direct-style teacher, ungated, 5 seeds): RL bridge − direct GRPO",
         diff(row(w3, a="rl_teacher_bridge", b="direct_grpo")), "—", "`toy_direct_teacher_summary.csv`", NOT_RERUN],
        ["World 1 (toy world, 10 seeds): the bridge collapses, RL bridge − direct GRPO",
         diff(row(toy, a="rl_teacher_bridge", b="direct_grpo")), "—", "`toy_ablation_summary.csv`", NOT_RERUN],
    ]
    return [
        "## Claims under review (issue 22: every stage trained to its plateau)",
        "",
        f"The fixed-length figures were made at one fixed, short training length: {epochs:g} GRPO "
        f"epochs, which is {steps} optimizer steps at N = {n} ({pps} prompts a step; {steps_toy} at the toy "
        f"worlds' N = {n_toy}), and {fkl} FKL / {opd} OPD steps, whether or not a stage had stopped "
        "improving (`configs/legacy/fixed_length/paper_world.toml`, `configs/toy.toml`). Issue 22 reruns them under the plateau "
        "protocol (`configs/plateau/modes_k*.toml`, the reruns below: every stage runs until its validation "
        "accuracy stops rising and hands on its best checkpoint; the paper-like world is modes-k15 at N = 64). "
        "Until a claim is rerun it describes the fixed-length protocol, not the method. Differences are test "
        "avg@8 points, paired by seed, with 95% bootstrap intervals; a claim is the sign of its difference "
        "(survives: same sign and the fixed-length estimate inside the new interval; changes: same sign, "
        "outside it; does not: no difference or the other sign).",
        "",
        *table(["claim", "fixed-length figure", "at plateau", "table (docs/results/)", "status"], rows),
        "",
        *_opd_caveat(t),
    ]


def _opd_caveat(t: Tables) -> list[str]:
    """Every bridge figure "at plateau" above ran the first rule: its OPD steps and 4x checks, and the current
    rule's RL bridge against it, read from the OPD rules table."""
    if not t.has(OPD_RULES):
        return []
    rr = t.csv(OPD_RULES)
    one = {(r["rule"], r["arm"]): r for r in rr if r["scale"] == "1.0"}
    four = {(r["rule"], r["arm"]): r for r in rr if r["scale"] == "4.0"}
    first, now = one.get(("window", "rl_teacher_bridge")), one.get(("opd9600", "rl_teacher_bridge"))
    direct = one.get(("opd9600", "direct_grpo")) or one.get(("window", "direct_grpo"))  # the same stages
    if not (first and now and direct):
        return []
    checks = "; ".join(f"{arm} {signed(r['gain_over_1x'])} ({'within' if r['within_limit'] == 'True' else 'over'} "
                       f"the limit)" for (rule, arm), r in four.items() if rule == "window")
    return ["**The bridge figures above are not plateaus.** Every RL-bridge, no-FKL, stage-3 and replay figure at "
            "plateau (the paper-like world's and the family's) ran the protocol's first rule, which stopped OPD "
            f"after {num(first['opd_steps_run'], 0)} steps on average (RL bridge) while its validation still rose; "
            f"its 4x cap checks: {checks}. With OPD run to a 9600-step cap (amendment 2; the OPD rules table "
            f"below), the RL bridge reads {num(now['avg_at_8'])} test avg@8 over {now['runs']} "
            f"seed{'s' if now['runs'] != '1' else ''} (greedy {num(now['greedy'])}, pass@8 {num(now['pass_at_8'])}) "
            f"where the first rule gave {num(first['avg_at_8'])} over {first['runs']}, and direct GRPO "
            f"{num(direct['avg_at_8'])} over {direct['runs']}: the bridge − direct differences above understate the bridge, and the "
            "comparisons inside the bridge (no-FKL, no-OPD, stage 3, replay) are open until their arms rerun. "
            "Direct GRPO's stages do not change with OPD's rule.", ""]


def world_family(t: Tables) -> list[str]:
    rep = t.json("world_family_report.json")
    by = rep["by_world"]
    def seeds(w=None):
        n = sorted({p["n_seeds"] for p in rep["per_config"] if w in (None, p["world"])})
        return f"{n[0]}–{n[-1]}" if n[0] != n[-1] else str(n[0])

    rows = [[w, str(v["n_configs"]), seeds(w), num(v["mae"]), num(v["naive_mae"]), num(v["coverage"], 2),
             num(v["mean_interval_width"]), num(v["decision_regret_mean"], 2), num(v["decision_regret_max"], 2)]
            for w, v in sorted(by.items())]
    rows.append(["pooled", str(rep["n_configs"]), seeds(), num(rep["mae"]), num(rep["naive_mae"]), num(rep["coverage"], 2),
                 num(rep["mean_interval_width"]), num(rep["decision_regret"]["mean"], 2),
                 num(rep["decision_regret"]["max"], 2)])
    cross = []
    for w, c in sorted(rep["crossover"].items()):
        def where(side):
            return ", ".join(f"{c['budget']:.0f} ({c['direction'].replace('_', ' ')})"
                             for c in (c.get(side) or {}).get("crossovers", [])) or "none"
        cross.append([w, where("predicted"), where("measured")])
    fam = rep["family"]
    teach = [[w, signed(v["accuracy"]["mean"]), ci(v["accuracy"]["lo"], v["accuracy"]["hi"]), str(v["accuracy"]["n"]),
              num(fam["teacher_vs_student_slope"][w]["teacher_slope"], 2),
              num(fam["teacher_vs_student_slope"][w]["student_slope"], 2)]
             for w, v in sorted(fam["labels_teach"].items())]
    k15 = next((p for p in rep["per_config"] if p["world"] == "modes-k15" and p["labels"] == 1024
                and p["arm"] == "rl_teacher_bridge_stage3"), None)
    k05 = sorted(p["meas_mean"] for p in rep["per_config"] if p["world"] == "modes-k05" and p["arm"] == "direct_grpo")
    k05_pred = max(p["pred_mean"] for p in rep["per_config"] if p["world"] == "modes-k05" and p["arm"] == "direct_grpo")
    grid = t.json("world_family_preregistration.json")["held_out"]["seeds"]
    dr, k15x = rep["decision_regret"], rep["crossover"]["modes-k15"]
    met = {True: "met", False: "**missed**"}
    targets = [  # the pre-registered targets as docs/log.md quotes them (2026-11-30, fourth session)
        ["MAE ≤ 2.5 and below the naive predictor", f"{num(rep['mae'])} (naive {num(rep['naive_mae'])})",
         met[rep["mae"] <= 2.5 and rep["mae"] < rep["naive_mae"]]],
        ["coverage of the 90% intervals ≥ 0.8", num(rep["coverage"], 2), met[rep["coverage"] >= 0.8]],
        ["mean interval width ≤ 4 × MAE", f"{num(rep['mean_interval_width'])} vs {num(4 * rep['mae'])}",
         met[rep["mean_interval_width"] <= 4 * rep["mae"]]],
        ["decision regret ≤ 1 mean, ≤ 3 max", f"{num(dr['mean'], 2)} / {num(dr['max'], 2)}",
         met[dr["mean"] <= 1 and dr["max"] <= 3]],
        ["k15 crossover within 2× of the prediction", f"ratio {num(k15x['ratio'], 2)}", met[bool(k15x["within_factor_2"])]],
    ]
    slope = fam["teacher_vs_student_slope"]
    faster = [w for w, v in sorted(slope.items()) if v["difference"]["excludes_zero"] and v["difference"]["mean"] > 0]
    out = [
        "## The world family (issue 11)",
        "",
        "Three worlds whose skill is a rarely used step mode (running partial sums); the knob K is the share "
        "of step documents in the student's pre-training (0.05 / 0.15 / 0.30), the teacher is fixed "
        "(`configs/legacy/fixed_length/family/`, `scripts/world_family.py`). The design and predicted directions were committed "
        "before any arm ran, and the planner's predictions (every arm, N = 32–2048, with its recommendation "
        "at each budget; `world_family_predictions.csv`, `world_family_preregistration.json`) before any "
        "held-out run. Gates: k15 and k30 fail only “moves” (a capacity floor); k05 also fails “learns” and "
        "is labelled ungated (`stability_gates.csv`, below).",
        "",
        f"Cross-check on the held-out runs measured so far (`world_family_report.json`, figure "
        f"`world_family.png`): seeds per configuration of the {len(grid)} pre-registered grid seeds "
        f"({min(grid)}–{max(grid)}; the paper-like world's N = 64 ran 10). Coverage of the "
        f"{num(rep['level'] * 100, 0)}% intervals; decision regret = points lost by following the "
        "recommendation:",
        "",
        *table(["world", "configs", "seeds", "MAE", "naive MAE", "coverage", "interval width", "regret mean", "regret max"],
               rows),
        "",
        "Against the targets fixed before the held-out runs (as docs/log.md, 2026-11-30 fourth session, "
        "states them), pooled:",
        "",
        *table(["target", "measured", ""], targets),
        "",
        "Crossovers of RL bridge and direct GRPO along the label budget (N):",
        "",
        *table(["world", "predicted", "measured"], cross),
        "",
        "Labels teach (direct GRPO, N = 64 → 1024, test accuracy points, paired by seed) and the slope in "
        "validation accuracy points per doubling of labels of the teacher after teacher GRPO and of the "
        "student after direct GRPO (`world_family_curves.csv`):",
        "",
        *table(["world", "labels teach", "95% CI", "seeds", "teacher slope", "student slope"], teach),
        "",
        "The teacher gains more per label than the student (paired difference excludes 0) in "
        + (", ".join(faster) or "no world") + ".",
        "",
        "The big misses: k05, where the student cannot learn (direct GRPO "
        f"{num(k05[0])}–{num(k05[-1])}% at every measured N, predicted up to {num(k05_pred)})"
        + (f", and stage 3 at large N (k15 N = 1024: {num(k15['pred_mean'])} predicted, "
           f"{num(k15['meas_mean'])} measured)." if k15 else "."),
        "",
        "![world family](results/world_family.png)",
        "",
    ]
    return out


def paper_world(t: Tables) -> list[str]:
    def rows(name):
        return [[r["question"], r["seeds"], num(r["mean_a"]), num(r["mean_b"]), diff(r), r["predicted"],
                 r["reading"]] for r in t.summary(name)]
    head = ["comparison", "seeds", "A", "B", "A − B [95% CI]", "paper predicts", "reading"]
    out = [
        "## The paper-like world (modes-k15 at N = 64; the demo's and notebook 03's world)",
        "",
        "Chosen by the pre-registered rule (the largest RL-bridge advantage the planner predicted); seven arms. "
        "Paired differences A − B, test avg@8 points.",
        "",
    ]
    if t.has(PLATEAU_PW):
        out += ["Under the plateau protocol's first rule (`configs/legacy/plateau_window/paper_world.toml`; every "
                "stage stopped at its validation plateau by the window test, `paper_world_ablation_summary.md`, "
                "which also counts the stages short of their plateau and gives greedy and pass@8; "
                "`frontier_paper_world.png`, the label × compute plane):", "",
                *table(head, rows(PLATEAU_PW)), ""]
        if t.has(CAP_CHECK):
            cc = t.csv(CAP_CHECK)
            bad = [r for r in cc if r["passed"] != "True"]
            out += ["Are these plateaus? Each arm with every cap scaled, on seeds the ablation never used, may gain at "
                    f"most {num(cc[0]['limit'], 0)} points over its committed mean (`{CAP_CHECK}`): "
                    + "; ".join(f"{r['arm']} {num(r['scale'], 0)}x {signed(r['gain'])} ({len(r['seeds'].split())} "
                                f"seed{'s' if len(r['seeds'].split()) > 1 else ''})" for r in cc) + ". "
                    + (("**Not a plateau: " + ", ".join(r["arm"] for r in bad) + "**: its committed figures are "
                        "below what longer stages reach (docs/log.md, 2026-12-08: the RL bridge's gain is in OPD, "
                        "which the stop rule ends before a slow rise). ") if bad else "")
                    + "Not checked yet: " + (", ".join(sorted({x for r in t.summary(PLATEAU_PW) for x in (r["a"], r["b"])}
                                                              - {r["arm"] for r in cc})) or "none") + ".", ""]
        if t.has(OPD_RULES):
            rr = t.csv(OPD_RULES)
            out += ["OPD's stop rule, amended twice (`" + OPD_RULES + "`; `python scripts/plateau_reruns.py "
                    "rules-table`; each amendment committed before any run under it, docs/log.md 2026-12-08). "
                    "Mean test avg@8, greedy and pass@8 of each rule's runs (1x: the ablation's seeds; 4x: its cap "
                    "check on seeds 2000-2002, against the same rule's 1x mean):", "",
                    *table(["rule", "arm", "caps", "runs", "avg@8", "greedy", "pass@8", "OPD steps run / best",
                            "4x gain (limit +3)"],
                           [[f"{r['rule']}: {r['what']}", r["arm"], f"{num(r['scale'], 0)}x", r["runs"],
                             num(r["avg_at_8"]), num(r["greedy"]), num(r["pass_at_8"]),
                             f"{num(r['opd_steps_run'], 0)} / {num(r['opd_best_step'], 0)}" if r["opd_steps_run"] else "-",
                             (signed(r["gain_over_1x"]) + ("" if r["within_limit"] == "True" else " **over**"))
                             if r["gain_over_1x"] else "-"]
                            for r in rr]), ""]
    out += ["At the fixed, short length (`configs/legacy/fixed_length/paper_world.toml`: 12 GRPO steps, 200 FKL + 200 OPD; 10 seeds, "
            f"`{FIXED_PW.replace('.csv', '.md')}`):", "", *table(head, rows(FIXED_PW)), ""]
    return out


def toy_worlds(t: Tables) -> list[str]:
    worlds = [("World 1: the toy world (gated)", "toy_ablation_summary.csv"),
              ("World 2: counterfactual, teacher = the student's base (gated)", "toy_counterfactual_summary.csv"),
              ("World 3: direct-style teacher with a 50% answer-format break (ungated)",
               "toy_direct_teacher_summary.csv"),
              ("World 4: compliant teacher (ungated)", "toy_compliant_teacher_summary.csv")]
    rows = [[w, r["question"], r["seeds"], num(r["mean_a"]), num(r["mean_b"]), diff(r), r["predicted"], r["reading"]]
            for w, name in worlds for r in t.summary(name)]
    sd = {r["model"]: r for r in t.csv("stable_pilot_selfdistill/summary.csv")}
    return [
        "## The toy worlds under the stability gate",
        "",
        "The old toy stages overshot (an identical teacher's FKL warmup cost 10 points). Every stage now runs "
        "one loop with warmup + cosine decay at rates the stability gate picked (`reference-pipeline gate`). "
        "Evaluation is the paper's (avg@8 at T 0.7, top-p 0.8, top-k 20). Paired differences A − B, "
        "accuracy points (`toy_*_summary.md`; the old protocol's tables: `legacy/`):",
        "",
        *table(["world", "comparison", "seeds", "A", "B", "A − B [95% CI]", "paper predicts", "reading"], rows),
        "",
        "- World 1: the bridge's collapse survives the gate. The student takes the teacher's step format "
        "(the teacher is 98% accurate given compliance) but not its arithmetic. Under the paper's evaluation "
        "the student's answer-format habit vanishes (compliance 100%) and 256 labels do not teach it: direct "
        "GRPO stays at or below the untouched base.",
        "- “Self-distillation costs 15 points” does not survive: a self-distillation pilot under the gate "
        f"(`stable_pilot_selfdistill/summary.csv`) gives {num(sd['student']['accuracy'])} → "
        f"{num(sd['self_distill_fkl_warmup']['accuracy'])} (FKL) → {num(sd['self_distill_opd']['accuracy'])} "
        "(OPD), so the planner's `cost_fkl`/`cost_opd` were the old rates; neither does the optimizer-noise "
        "explanation (the no-op jitter grows with the learning rate, Adam eps 1e-6 or 1e-8 alike; docs/log.md).",
        "- World 2 (counterfactual): distilling from an identical copy beats direct GRPO (the raw-bridge row); "
        "the RL-bridge row is not resolved (the planner predicted ≤ 0).",
        "- World 3: every bridge student is *more* accurate when it answers in format (+1.7 to +2.3 points; "
        "greedy 55 vs 50) but copies the teacher's format habit (compliance 53–70% vs 100%; docs/log.md "
        "2026-11-30, second session).",
        "- World 4 fails the gate's “moves” check: its lead is for the next world family, not a result. "
        "Worlds 3 and 4 (same-style teachers) fail “moves” because FKL cuts the KL only 23–27%, a floor the "
        "125k student cannot go below at any stable rate (400 steps reach the same 27% as 200; docs/log.md).",
        "",
    ]


def tuning(t: Tables) -> list[str]:
    studies = [("paper-like world, N = 64", "fairness_paper_world/"), ("world 1 (toy), N = 256", ""),
               ("world 3, N = 256", "fairness_direct/")]
    per_arm, pairs, best = [], [], []
    for name, d in studies:
        for r in t.csv(f"{d}fairness_report.csv"):
            per_arm.append([name, r["arm"], r["trials"], r["dims"], f"{num(r['eval_mean'])} "
                            f"{ci(r['eval_ci_low'], r['eval_ci_high'], sign=False)}", r["lr_position"]])
            best.append([name, r["arm"], ", ".join(f"{k} {compact(v)}" for k, v in sorted(json.loads(r["best_params"]).items()))])
        lm = t.md_table(f"{d}fairness_report.md", "## Label-matched")[0]
        cm = t.md_table(f"{d}fairness_report.md", "## Compute-matched")[0]
        stretched = t.csv(f"{d}fairness_report_evals_compute.csv")
        arm = stretched[0]["arm"]
        tokens = sum(float(r["compute_tokens"]) for r in stretched) / len(stretched)
        pairs.append([name, f"{lm['arm']} − {lm['baseline']}", diff(lm, 2), diff(cm, 2),
                      f"{arm} ×{float(stretched[0]['factor']):.2f} → {tokens / 1e3:,.0f}k tokens"])
    plateau = []
    lm = _tuned_plateau_lm(t)
    if lm is not None:
        name = "paper-like world, N = 64, plateau protocol"
        for r in t.csv(f"{TUNED_PW}fairness_report.csv"):
            per_arm.append([name, r["arm"], r["trials"], r["dims"], f"{num(r['eval_mean'])} "
                            f"{ci(r['eval_ci_low'], r['eval_ci_high'], sign=False)}",
                            r["range_position"] + (f" (**at the edge: {r['at_edge']}**)" if r["at_edge"] else "")])
            best.append([name, r["arm"], ", ".join(f"{k} {compact(v)}" for k, v in sorted(json.loads(r["best_params"]).items()))])
        plateau = ["", f"Under the plateau protocol (`{TUNED_PW}`; `python scripts/plateau_reruns.py tuning`: the "
                   "same 8 trials per arm over the learning rates, group size and temperature, each stage stopped "
                   "at its validation plateau) the tuned pair differs by "
                   f"{diff(lm, 2)} label-matched ({lm['arm']} − {lm['baseline']}, {lm['seeds']} seeds). At equal "
                   "compute (the evaluation runs' validation curves, at each arm's median tokens to its selected checkpoints and per run): "
                   + "; ".join(f"at {tok / 1e6:.2f}M tokens direct GRPO {_level(a.get('direct_grpo'))}, the bridge "
                               f"{_level(a.get('rl_teacher_bridge'))}" for tok, a in _equal_compute(t)) + "."]
    comp = t.csv("fairness_paper_world/fairness_report_evals_compute.csv")
    direct = [float(r["accuracy"]) for r in comp if r["arm"] == "direct_grpo"]
    factor = float(next(r["factor"] for r in comp if r["arm"] == "direct_grpo"))
    bridge = row(t.csv("fairness_paper_world/fairness_report.csv"), arm="rl_teacher_bridge")
    return [
        "## Matched tuning (`matched-tuning`; every arm the same trials, seeds and statistics)",
        "",
        "8 trials per arm, every learning rate searched over 1e-6–1e-3; `lr position` is each best rate's "
        "place in its log range (the report flags a best value in the outer 10%). Final evaluation on 5 fresh "
        "seeds, test split, accuracy % [95% CI]:",
        "",
        *table(["study", "arm", "trials", "dims", "tuned accuracy", "lr position"], per_arm),
        "",
        "Paired by evaluation seed, accuracy points [95% CI]; compute-matched = the cheaper arm's stages "
        "stretched to the dearer arm's per-run tokens:",
        "",
        *table(["study", "difference", "label-matched", "compute-matched", "stretched to match"], pairs),
        "",
        "Each arm's best configuration (the report's `best_params`):",
        "",
        *table(["study", "arm", "best configuration"], best),
        "",
        f"In the paper-like world the compute-matched direct GRPO reaches {num(sum(direct) / len(direct))}% vs "
        f"the bridge's {num(bridge['eval_mean'])}% ({num(factor, 0)}× the epochs on the same 64 labels): the "
        "bridge's edge there is a label-matched one only. In world 3 the old “tuned bridge loses 8.8” does "
        "not survive; both tuned arms sit near the untouched base. Reports, figures and the command that "
        "regenerates each: `fairness_report.md`, `fairness_paper_world/`, `fairness_direct/`.",
        *plateau,
        "",
    ]


def gates(t: Tables) -> list[str]:
    by: dict[tuple[str, str], list[dict]] = {}
    for r in t.csv("stability_gates.csv"):
        by.setdefault((r["config"], r["backend"]), []).append(r)
    rows = []
    for (cfg, backend), rs in sorted(by.items()):
        failed = sorted(r["check"] for r in rs if r["passed"] != "True")
        rows.append([f"`{cfg}`", backend, f"{len(rs) - len(failed)}/{len(rs)}", ", ".join(failed) or "—"])
    toy = {r["check"]: float(r["value"]) for r in by[("configs/toy.toml", "reference")]}
    return [
        "## Stability gates (`reference-pipeline gate`; `stability_gates.csv`)",
        "",
        "With an identical teacher FKL/OPD must leave the student where it is, with a real teacher they must "
        "move it toward the teacher, and GRPO's reward must rise. A config that fails is reported as ungated. "
        "In `configs/toy.toml` the identical-teacher no-ops move the student by KL ≤ "
        f"{toy['fkl_identical_teacher_max_kl']:.4f} (FKL) / {toy['opd_identical_teacher_max_kl']:.4f} (OPD) "
        "and its accuracy by “+0.02 [−0.75, +0.79] / −0.33 [−1.05, +0.38]” points (docs/log.md, 2026-11-30, "
        f"gate results); with the real teacher FKL and OPD cut the KL to it by {toy['fkl_kl_to_teacher_drop']:.2f} "
        f"and {toy['opd_kl_to_teacher_drop']:.3f} (limit 0.30).",
        "",
        *table(["config", "backend", "checks passed", "failed checks"], rows),
        "",
    ]


def crosschecks(t: Tables) -> list[str]:
    reports = [("world family (stable protocol, pre-registered)", "world_family_report.json"),
               ("toy-arith (old protocol, pre-registered)", "crosscheck_report.json"),
               ("world 3 (old protocol, pre-registered)", "direct_teacher_report.json"),
               ("world 4 (old protocol, pre-registered)", "compliant_teacher_report.json"),
               ("toy-arith with measured costs (post hoc)", "posthoc_costs_report.json"),
               ("toy-arith with the style term (post hoc)", "posthoc_style_report.json")]
    rows = []
    for name, f in reports:
        r = t.json(f)
        rows.append([name, f"`{f}`", str(r["n_configs"]), num(r["mae"], 2), num(r["naive_mae"], 2),
                     num(r["coverage"], 2), num(r["kendall_tau"], 2)])
    return [
        "## Planner cross-checks (predicted before the runs unless marked post hoc)",
        "",
        "The old-protocol cross-checks were run under the first, overshooting learning rates; where they "
        "involve a bridge their runs are artifacts of that protocol, kept as committed records, not as "
        "evidence about the method.",
        "",
        *table(["cross-check", "report", "configs", "MAE", "naive MAE", "coverage (90%)", "Kendall τ"], rows),
        "",
    ]


def gpu(t: Tables) -> list[str]:
    rows = [[r["stage"], r["phase"], r["model"], r["engine"], r["gpus"], r["tokens_per_s"], r["peak_gib"] or "—",
             r["tag"]] for r in t.csv("gpu_costs.csv")]
    return [
        "## GPU costs (`gpu_costs.csv`; the planner's GPU-hours)",
        "",
        "Training-step rates measured on one H200, rollout rates assumed (the `source` column of the CSV says "
        "how each was obtained). `budget-planner plan --scenario paper-qwen3-math --json` → `gpu_hours`; "
        "`--gpu-hours H --gpus G` recommends the best arm that fits; `python scripts/gpu_hours_table.py "
        "--gpus 8,64` prints the per-stage table (docs/scale.md “Scale-out plan”).",
        "",
        *table(["stage", "phase", "model", "engine", "GPUs", "tokens/s", "peak GiB", "tag"], rows),
        "",
    ]


def prose_only() -> list[str]:
    return [
        "## Recorded in prose only (no committed table; quoted with their source)",
        "",
        "- Planner on the paper's setting (`python scripts/loo_audit.py --markdown`; docs/theory.md §9, "
        "docs/log.md): each of the 10 published numbers predicted with the other 9 fitted: “mean |residual| "
        "1.34 points (RMS 1.84); 10 of 10 inside their 90% LOO interval”; the structural error learned from "
        "these residuals is 0.6 points and enters every interval and p_best; the shipped preset fits all 10. "
        "At 14,000 labels the RL bridge and stage 3 are a toss-up (`budget-planner plan --scenario "
        "paper-qwen3-math`: gap +0.1, 90% interval [−2.2, +2.6]); the stage-3 half-split minus RL-bridge "
        "interval “[−2.9, +2.4]” contains the paper's −0.8. The split is fragile: halving κ_T/κ_S sends it "
        "to 0 teacher labels (`explain` says so).",
        "- `plan --next` on 256 simulated worlds (docs/log.md, docs/theory.md §9): regret reduction vs random "
        "order “+0.27 [+0.14, +0.41] on weak-teacher”, no better than random on the paper presets.",
        "- GPU check (docs/scale.md, one H200): teacher scoring 1.00× the bare-PyTorch anchor, rollouts 7.8× "
        "plain HF generation, OPD step (1.7B + 8B, 8×1024, full-vocabulary KL) 54 GiB peak; after the engine "
        "fixes teacher GRPO (8B) peaks at 66.9 GiB (fits an 80 GiB H100) and student GRPO training runs at "
        "0.95× the anchor (goal 1.0×, missed). The paper preset's default compute: RL bridge 12.9 GPU-h on 8 "
        "GPUs, direct GRPO 6.2 (docs/log.md, `scripts/gpu_hours_table.py`).",
        "",
    ]


def plateau_checks(t: Tables) -> list[str]:
    """The plateau protocol's own checks (seeds 900+, outside every rerun): where its stopping rule stops
    on whole-cap curves, and what one run of each main arm costs under it. Checks, not results."""
    replay_rows = []
    by_run: dict[tuple[str, str, str], list[dict]] = {}
    for r in t.csv("plateau_stopping.csv"):
        by_run.setdefault((r["arm"], r["seed"], r["stage"]), []).append(r)
    for (arm, seed, stage), rs in sorted(by_run.items()):
        rs = sorted(rs, key=lambda r: int(r["step"]))
        best = max(rs, key=lambda r: (float(r["accuracy"]), -int(r["step"])))
        rows_txt = " / ".join(f"{r['step']}: {float(r['accuracy']):.1f}" for r in rs[::max(1, len(rs) // 6)])
        replay_rows.append([arm, seed, stage, str(len(rs)), f"{best['step']} ({float(best['accuracy']):.1f})",
                            rows_txt])
    cost_rows = [[r["arm"], r["seed"], r["stage"], r["cap"], r["steps_run"], r["best_step"], num(r["best_score"]),
                  r["reached"], f"{int(r['train_tokens']):,}", f"{int(r['tokens_to_best']):,}",
                  f"{int(r['val_tokens']):,}", num(r["seconds"], 0), num(r["test_accuracy"])]
                 for r in t.csv("plateau_costs.csv")]
    return [
        "## The plateau protocol's checks (issue 22; seeds 900+, not results)",
        "",
        "`configs/plateau/paper_world.toml` as it was before OPD's amendments (2026-12-08): every stage validates at step 0 and every 5% of its cap on V = 64 "
        "problems (avg@8), keeps its best checkpoint and stops when the curve's level over the last 30% of its "
        "steps rose ≤ 1 paired SE above its level over the 30% before (docs/reference.md). Whole-cap "
        "validation curves with early stopping off, each stage starting from the previous one's whole-cap best "
        "(`python scripts/plateau_check.py stopping`; `plateau_stopping.csv`), validation avg@4 in percent at "
        "some of the points; the rule replayed on them is in docs/log.md:",
        "",
        *table(["arm", "seed", "stage", "points", "best step (score)", "step: accuracy"], replay_rows),
        "",
        "One run per main arm under the protocol (`python scripts/plateau_check.py costs`; `plateau_costs.csv`): "
        "per stage its cap, the steps it ran, its best checkpoint, training tokens spent and to the best, "
        "validation tokens, seconds on one thread of the 2-core machine, and the run's test avg@8. One seed: "
        "a cost table, not a comparison.",
        "",
        *table(["arm", "seed", "stage", "cap", "ran", "best", "best val", "reached", "train tokens",
                "tokens to best", "val tokens", "s", "test"], cost_rows),
        "",
    ]


def plateau_preregistration(t: Tables) -> list[str]:
    """The planner's and the naive predictor's predictions of the plateau reruns, committed before any
    rerun (issue 23 item 4): what will be scored when plateau_crosscheck_runs.csv lands."""
    reg = t.json("plateau_crosscheck_preregistration.json")
    fits = [[w, *(compact(f["value"].get(p, "")) for p in ("rates.kappa", "rates.kappa_ratio", "rates.phi_w",
                                                             "lengths.reuse", "lengths.bridge_reach")),
             num(f["validation_offset"]), num(f["rmse_points"]), f"{int(reg['pilot_tokens'][w]['spent']):,}"]
            for w, f in reg["fitted_from_pilots"].items()]
    rows = [[r["world"], r["labels"], r["compute"], r["set"], r["arm"], f"{int(r['tokens']):,}",
             f"{num(r['pred_mean'])} {ci(r['pred_lo'], r['pred_hi'], sign=False)}",
             f"{num(r['naive_mean'])} {ci(r['naive_lo'], r['naive_hi'], sign=False)}",
             "yes" if r["recommended"] == "1" else ""]
            for r in t.csv("plateau_crosscheck_predictions.csv")]
    return [
        "## Pre-registered: the plateau reruns (issue 23; not yet measured)",
        "",
        f"Made by `python scripts/plateau_preregister.py` at `{reg['code']['head'][:7]}` from pilots only (N ≤ 64, "
        "every stage at 20% of the caps of `configs/plateau/modes_k*.toml`; `plateau_pilots/`), committed before "
        "any rerun (`plateau_crosscheck_preregistration.json`). Fitted to the pilot curves (per world: κ, "
        "κ_T/κ_S, φ_w, the reuse scale e_r, the bridge reach r_b; the validation offset is the base student's "
        "validation minus test accuracy; rmse of the fit; the pilot's tokens, training and validation):",
        "",
        *table(["world", "κ", "κ_T/κ_S", "φ_w", "e_r", "r_b", "val offset", "rmse", "pilot tokens"], fits),
        "",
        f"Predictions ({reg['level']:.0%} intervals for the mean of the seeds the reruns run: "
        f"{reg['seeds']['heldout']} per configuration, {reg['seeds']['seen']} in the paper-like world, set "
        "`seen`: its plateau numbers were known). `plateau` = the best checkpoint within the caps (test); "
        "`low` = the best validation checkpoint by the token budget in the tokens column, the same for both "
        "arms (midway through the RL bridge's student stages). `planner` is the theory, `naive` a saturating "
        "fit per arm of the same pilot curves; `pick` the planner's recommendation:",
        "",
        *table(["world", "N", "compute", "set", "arm", "tokens", "planner", "naive", "pick"], rows),
        "",
    ]


def plateau_reruns(t: Tables) -> list[str]:
    """The plateau reruns (issue 22 item 4) as far as they have run, and, once all have, their score
    against the pre-registration (issue 23 item 4)."""
    if not t.has(RERUN_SUMMARY):
        return []
    preds = {(r["world"], r["labels"], r["arm"], r["compute"]): r for r in t.csv("plateau_crosscheck_predictions.csv")}
    summary = t.csv(RERUN_SUMMARY)
    done = sum(int(r["seeds"]) for r in summary)
    seeds = t.json("plateau_crosscheck_preregistration.json")["seeds"]
    total = sum(int(seeds[r["set"]]) for r in {(r["world"], r["labels"], r["arm"]): r for r in preds.values()}.values())
    rows = []
    for r in summary:
        p = preds.get((r["world"], r["labels"], r["arm"], "plateau"), {})
        rows.append([r["world"], r["labels"], r["arm"], r["set"], r["seeds"],
                     num(r["accuracy_mean"]) + (f" ({num(r['accuracy_sd'])})" if r["accuracy_sd"] else ""),
                     num(r["accuracy_greedy_mean"]),
                     num(r["pass_at_k_mean"]), f"{float(r['tokens_to_best']) / 1e6:.2f}M",
                     f"{float(r['tokens_spent']) / 1e6:.2f}M", f"{r['at_plateau']}/{r['stages']}",
                     num(r["teacher_val"]) if r["teacher_val"] else "",
                     num(r["student_val"]),
                     f"{num(p['pred_mean'])} {ci(p['pred_lo'], p['pred_hi'], sign=False)}" if p else "",
                     num(p["naive_mean"]) if p else ""])
    diffs = [[r["world"], r["contrast"].replace(" - ", " − "), r["labels"], r["seeds"],
              f"{signed(r['accuracy_diff'])} {ci(r['accuracy_lo'], r['accuracy_hi'])}",
              f"{signed(r['accuracy_greedy_diff'])} {ci(r['accuracy_greedy_lo'], r['accuracy_greedy_hi'])}",
              f"{signed(r['pass_at_k_diff'])} {ci(r['pass_at_k_lo'], r['pass_at_k_hi'])}",
              f"{num(r['teacher_val'])} vs {num(r['direct_student_val'])}" if r.get("teacher_val") else ""]
             for r in t.csv(RERUN_DIFFS)]
    out = [
        "## The plateau reruns (issue 22 item 4; the held-out test of issue 23's pre-registration)",
        "",
        f"{done} of {total} pre-registered runs (`python scripts/plateau_reruns.py run`, seeds 1000+, "
        "`configs/plateau/modes_k*.toml` at `[world] labels` = N; results per run under `plateau_reruns/`; "
        f"`python scripts/plateau_reruns.py summary` → `{RERUN_SUMMARY}`, `{RERUN_DIFFS}`). Test avg@8 at the "
        "selected checkpoint (sd over seeds), greedy and pass@8 beside it; training tokens to the best "
        "checkpoint and spent (training + validation, mean per run); stages at their plateau of those trained; "
        "the selected validation scores (V = 64, avg@8) of the RL teacher and of the student; the "
        "pre-registered `plateau` predictions (planner [90%], naive):",
        "",
        *table(["world", "N", "arm", "set", "seeds", "avg@8", "greedy", "pass@8", "to best", "spent",
                "at plateau", "teacher val", "student val", "planner", "naive"], rows),
        "",
        "Paired by seed (95% bootstrap intervals), label-matched, each arm at its own plateau; the last column "
        "puts the RL teacher's validation plateau beside direct GRPO's on the student (the paper's regime: the "
        "first well above the second). Equal compute: `frontier_family_k*.{csv,png}` (validation frontiers per "
        "N) and `frontier_family_k*_matched.csv` (read at direct GRPO's and the RL bridge's tokens per run):",
        "",
        *table(["world", "contrast", "N", "seeds", "avg@8", "greedy", "pass@8", "teacher val vs direct"], diffs),
        "",
    ]
    if t.has(RERUN_REPORT):
        rep = t.json(RERUN_REPORT)
        aims = [[a["aim"], a["verdict"]] for a in rep["aims"].values()]
        worlds = [[w, str(b["n_configs"]), num(b["mae"]), num(b["naive_mae"]), num(b["coverage"], 2),
                   num(b["decision_regret_mean"], 2), num(b["decision_regret_max"], 2)]
                  for w, b in rep["by_world"].items()]
        out += [
            f"Scored (`budget-planner crosscheck --set {rep['set']}`, `{RERUN_REPORT}`; no refit between the "
            f"pre-registration and the runs): {rep['n_configs']} configurations, MAE {num(rep['mae'])} points "
            f"(naive {num(rep['naive_mae'])}), coverage of the {rep['level']:.0%} intervals "
            f"{num(rep['coverage'], 2)}, decision regret mean {num(rep['decision_regret']['mean'], 2)} / max "
            f"{num(rep['decision_regret']['max'], 2)} points.",
            "",
            *table(["world", "configs", "MAE", "naive MAE", "coverage", "regret mean", "regret max"], worlds),
            "",
            *table(["aim (issue 23)", "verdict"], aims),
            "",
        ]
    if t.has(RERUN_REPORT_SEEN):
        seen = t.json(RERUN_REPORT_SEEN)
        out += [
            f"The paper-like world, scored apart (`--set seen`: its plateau numbers were in the issues' text "
            f"when the predictions were made; `{RERUN_REPORT_SEEN}`): "
            f"{seen['n_configs']} configurations, MAE {num(seen['mae'])} points (naive {num(seen['naive_mae'])}), "
            f"coverage {num(seen['coverage'], 2)}, decision regret mean {num(seen['decision_regret']['mean'], 2)} "
            "points.",
            "",
        ]
    return out


def render(results: Path = RESULTS, root: Path = ROOT) -> str:
    t = Tables(results)
    lines = [
        "# Results",
        "",
        f"Generated by `{COMMAND}` from the committed tables in `docs/results/`; edit those or the script, "
        f"not this page (`{COMMAND} --check` fails when they disagree). Table paths below are relative to "
        "`docs/results/`. What was run, how, when and on what machine: `docs/log.md`.",
        "",
        *claims(t, root), *plateau_checks(t), *plateau_preregistration(t), *plateau_reruns(t), *world_family(t), *paper_world(t), *toy_worlds(t), *tuning(t),
        *gates(t), *crosschecks(t), *gpu(t), *prose_only(),
    ]
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the page on disk differs; write nothing")
    ap.add_argument("--results", type=Path, default=RESULTS, help="folder of the committed tables")
    ap.add_argument("--out", type=Path, default=OUT, help="the page to write or check (default: docs/results.md)")
    args = ap.parse_args(argv)

    def body() -> int:
        text = render(args.results)
        if args.check:
            if not args.out.is_file() or args.out.read_text() != text:
                print(f"{args.out} is out of date with {args.results}: run `{COMMAND}`", file=sys.stderr)
                return 1
            print(f"{args.out} is up to date")
            return 0
        args.out.write_text(text)
        print(f"wrote {args.out}")
        return 0

    return cli_exit(body)


if __name__ == "__main__":
    sys.exit(main())
