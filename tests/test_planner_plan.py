"""plan(): recommendations on the presets, label accounting, marginal values, the registry it uses."""

import json
from dataclasses import replace

import numpy as np
import pytest

import budget_planner.planner as plan_mod
from budget_planner import plan
from theory.arms import ARMS
from theory.fitting import build_setting, fit_scenario, values_from_z
from theory.errors import InputError
from budget_planner.presets import load_scenario, preset_names


@pytest.fixture(scope="module")
def paper():
    return plan("paper-qwen3-math")


def test_presets_exist():
    assert {"paper-qwen3-math", "weak-teacher", "compliant-raw-teacher"} <= set(preset_names())


def test_paper_recommends_the_rl_teacher_workflow(paper):
    assert paper.recommendation.arm in ("rl_teacher_bridge", "rl_teacher_bridge_stage3")
    # with all ten published numbers fitted, the two RL-teacher arms are a toss-up between themselves
    # (stage 3 at the half split measured 78.5 < the bridge's 79.3); together they are the likely best
    assert paper.arm("rl_teacher_bridge").p_best + paper.arm("rl_teacher_bridge_stage3").p_best > 0.5
    ranked = paper.to_frame().set_index("arm")["accuracy"]
    assert ranked["raw_teacher_bridge"] < ranked["direct_grpo"] < ranked["rl_teacher_bridge"]
    acct = paper.recommendation
    assert acct.teacher_labels + acct.student_labels <= paper.labels


def test_weak_teacher_recommends_direct_grpo():
    p = plan("weak-teacher")
    assert p.recommendation.arm == "direct_grpo"
    assert p.arm("rl_teacher_bridge").accuracy < p.arm("direct_grpo").accuracy
    assert not any(c.c1 for c in p.conditions if "raw" in c.teacher)


def test_compliant_raw_teacher_raises_the_raw_bridge(paper):
    p = plan("compliant-raw-teacher")
    assert p.arm("raw_teacher_bridge").accuracy > paper.arm("raw_teacher_bridge").accuracy + 3
    raw = [c for c in p.conditions if "raw" in c.teacher][0]
    assert raw.c1


def test_plan_uses_exactly_the_registry(paper):
    assert plan_mod.ARMS is ARMS
    assert [a.arm for a in paper.arms] == list(ARMS)
    assert {name for name, *_ in paper.split_curves} == {n for n, a in ARMS.items() if a.splits_labels}
    # an arm added to the registry shows up in the plan with no other change
    ARMS["probe_copy_of_direct"] = replace(ARMS["direct_grpo"], name="probe_copy_of_direct")
    try:
        p = plan("paper-qwen3-math")
        assert p.arm("probe_copy_of_direct").accuracy == pytest.approx(p.arm("direct_grpo").accuracy)
    finally:
        del ARMS["probe_copy_of_direct"]


def test_split_curve_and_intervals(paper):
    assert len(paper.split_fractions) == 101 and paper.split_fractions[1] == pytest.approx(0.01)
    for name, acc, lo, hi in paper.split_curves:
        assert np.all(np.array(lo) <= np.array(hi))
    for a in paper.arms:
        assert a.lo < a.hi
        assert (a.p_best is None) == ARMS[a.arm].control and (a.p_best is None or 0 <= a.p_best <= 1)
    # p_best is per experiment: arms that run the same experiment at this budget share it (same_as)
    assert sum(a.p_best for a in paper.arms if a.p_best is not None and a.same_as is None) == pytest.approx(1.0)
    s3 = dict((n, acc) for n, acc, *_ in paper.split_curves)["rl_teacher_bridge_stage3"]
    # the recommended split is decided on the draw mean; the MAP curve is flat near its top (10 fitted
    # numbers), so the MAP curve at the recommended split is within 0.1 point of its maximum
    rec = paper.arm("rl_teacher_bridge_stage3").teacher_labels
    i = int(np.argmin(np.abs(np.array(paper.split_fractions) * paper.labels - rec)))
    assert s3[i] >= max(s3) - 0.1


def test_labels_zero_and_marginal_values():
    p = plan("paper-qwen3-math", labels=0)
    assert p.labels == 0
    # with no labels the RL teacher is the raw teacher: identical predictions; each arm is measured
    # with its own evaluation noise, so p_best no longer splits exactly evenly (it did before the
    # predictive distribution had measurement noise), and the plan calls the choice a toss-up
    assert p.arm("rl_teacher_bridge").accuracy == pytest.approx(p.arm("raw_teacher_bridge").accuracy)
    assert not p.recommendation.separable and p.recommendation.gap_lo < 0 < p.recommendation.gap_hi
    assert p.arm("raw_teacher_bridge").marginal_per_1k == pytest.approx(0.0, abs=1e-9)
    assert p.arm("direct_grpo").marginal_per_1k > 0


def test_more_labels_help_direct_grpo_and_budget_range_warning():
    small, big = plan("paper-qwen3-math", labels=2000), plan("paper-qwen3-math", labels=30000)
    assert small.arm("direct_grpo").accuracy < big.arm("direct_grpo").accuracy
    assert any("outside the calibrated range [7000, 14000]" in w for w in small.warnings)
    assert not any("outside the calibrated range" in w for w in plan("paper-qwen3-math").warnings)


def test_bad_labels_raise_input_error():
    for bad in (-1, float("nan"), 10**12, 2.5, "x"):
        with pytest.raises(InputError):
            plan("paper-qwen3-math", labels=bad)


def test_to_dict_is_json_and_has_the_contract_keys(paper):
    d = json.loads(json.dumps(paper.to_dict()))
    assert {"scenario", "labels", "arms", "recommendation"} <= set(d)
    for name in ARMS:
        a = d["arms"][name]
        assert set(a) >= {"accuracy", "ci", "p_best"} and len(a["ci"]) == 2 and a["ci"][0] < a["ci"][1]
    assert set(d["recommendation"]) >= {"arm", "teacher_labels", "student_labels"}
    tags = {i["tag"] for i in d["inputs"]}
    assert tags <= {"measured", "published", "assumed"} and "assumed" in tags
    assert len(paper.informativeness_frame()) == 3


def test_plan_is_pure_and_repeatable(paper):
    again = plan("paper-qwen3-math")
    assert again.to_dict() == paper.to_dict()


def test_vectorised_world_matches_map_row():
    scn = load_scenario("paper-qwen3-math")
    from theory.fitting import fit_scenario
    fit = fit_scenario(scn)
    z = np.vstack([fit.z_map, fit.z_draws[:3]])
    w = build_setting(scn, values_from_z(scn, z))
    w1 = build_setting(scn, values_from_z(scn, fit.z_map[None, :]))
    assert w.student.theta_B[0] == pytest.approx(w1.student.theta_B[0])


def test_plot_writes_png(tmp_path, paper):
    out = tmp_path / "plan.png"
    paper.plot(out)
    assert out.stat().st_size > 10_000


def test_scenario_with_a_problem_table_and_other_benchmark(tmp_path):
    import shutil
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    shutil.copy(root / "docs/examples/pilot_problems.csv", tmp_path / "probe.csv")
    text = (root / "docs/examples/pilot_truth.toml").read_text()
    start = text.index("[benchmarks.pilot]")
    text = text[:start] + '[benchmarks.pilot]\nproblems = "probe.csv"\n' \
        'eval_se = { value = 1.0, tag = "measured", source = "synthetic truth" }\n\n' \
        '[student]\nname = "student"\n\n[teacher]\nname = "teacher"\n'
    (tmp_path / "s.toml").write_text(text)
    scn = load_scenario(tmp_path / "s.toml")
    assert scn.get("benchmarks.pilot.s_d").tag == "measured" and scn.get("benchmarks.pilot.s_d").has_se
    assert scn.get("student.benchmarks.pilot.compliance").value == pytest.approx(0.85, abs=0.03)
    assert plan(scn).labels == 2000
    aime = plan("paper-qwen3-math", benchmark="AIME24")
    assert aime.benchmark == "AIME24" and aime.arm("direct_grpo").accuracy < 40
    with pytest.raises(InputError, match="not in scenario"):
        plan("paper-qwen3-math", benchmark="GSM8K")


def test_repr_html_is_a_table_with_every_arm(paper):
    html = paper._repr_html_()
    assert html.startswith("<table>") and "</table>" in html
    body = html.split("<tbody>")[1].split("</tbody>")[0]
    assert body.count("<tr") == len(paper.arms)
    for a in paper.arms:
        assert f"<td>{a.arm}" in body
    assert "95%" in html and paper.recommendation.arm in html.split("</table>")[1]


def test_budget_curve_default_is_the_split_the_plan_chooses(paper):
    from budget_planner.planner import budget_curve
    curve = budget_curve("paper-qwen3-math", [paper.labels])
    stage3 = curve[curve["arm"] == "rl_teacher_bridge_stage3"].iloc[0]
    assert stage3["teacher_labels"] == paper.arm("rl_teacher_bridge_stage3").teacher_labels
    assert abs(stage3["accuracy"] - paper.arm("rl_teacher_bridge_stage3").accuracy) < 1e-9
    half = budget_curve("paper-qwen3-math", [paper.labels], teacher_fraction=0.5)
    assert half[half["arm"] == "rl_teacher_bridge_stage3"].iloc[0]["teacher_labels"] == paper.labels // 2


def test_plot_marks_the_plan_and_keeps_the_legend_off_the_data():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    pl = plan("weak-teacher", labels=3000)  # recommends direct_grpo: 0 teacher labels
    fig = pl.plot()
    ax1, ax2, ax3 = fig.axes
    try:
        assert ax1.get_legend() is None and ax2.get_legend() is None and len(fig.legends) == 1
        # the third panel: every arm's frontier on GPU-hours (log), the star at the plateau recommendation
        c = pl.compute
        best = c["arms"][c["recommended_at_plateau"]].plateau
        stars = [ln for ln in ax3.get_lines() if ln.get_marker() == "*"]
        # weak-teacher's models are not the cost table's: its frontier is drawn on training tokens
        assert not pl.gpu_costs["models_match"]
        assert ax3.get_xscale() == "log" and "training tokens" in ax3.get_xlabel()
        assert stars and stars[0].get_xdata()[0] == pytest.approx(best.tokens)
        assert stars[0].get_ydata()[0] == pytest.approx(best.accuracy)
        assert c["recommended_at_plateau"] in ax3.get_title()
        texts = [t.get_text() for t in fig.legends[0].get_texts()]
        assert any("95%" in t for t in texts) and any(t.startswith("recommended: direct_grpo") for t in texts)
        assert any(t.startswith("replay_control (control") for t in texts)
        assert "teacher share 0.00" not in ax2.get_title()
        for ax, x in ((ax1, 0.0), (ax2, pl.labels)):  # the star at the recommendation
            stars = [ln for ln in ax.get_lines() if ln.get_marker() == "*"]
            assert stars and stars[0].get_xdata()[0] == x
            assert stars[0].get_ydata()[0] == pytest.approx(pl.arm("direct_grpo").accuracy)
        # no two flat lines share colour, dash pattern and marker
        flat = [(ln.get_color(), str(ln.get_linestyle()), ln.get_marker()) for ln in ax1.get_lines()
                if len(set(ln.get_ydata())) == 1 and len(ln.get_ydata()) > 2]
        assert len(flat) == len(set((ls, m) for _, ls, m in flat)) == 5
    finally:
        plt.close(fig)


@pytest.mark.parametrize("name", preset_names())
def test_one_start_accuracy_on_every_preset(name):
    """Issue 25: the start is the arm given no labels. `plan --labels 0` direct GRPO equals explain's
    start row (within 0.1 point, as the issue asks; here to float rounding), the start does not depend
    on the plan's N, and it is the start the scenario states (accuracy, or c x accuracy given
    compliance, at the MAP): the figure the fit reads every published number with."""
    scn = load_scenario(name)
    at_zero, at_n = plan(scn, labels=0), plan(scn)
    start = at_n.informativeness[0]["accuracy"]
    assert at_n.informativeness[0]["model"].endswith("(student, start)")
    assert at_zero.arm("direct_grpo").accuracy == pytest.approx(start, abs=0.1)
    assert at_zero.arm("direct_grpo").accuracy == pytest.approx(start, abs=1e-9)
    assert at_zero.informativeness[0]["accuracy"] == pytest.approx(start, abs=1e-9)
    m = fit_scenario(scn).map_values()
    b = f"student.benchmarks.{at_n.benchmark}"
    c = m[f"{b}.compliance"] if f"{b}.compliance" in m else m["student.compliance"]
    stated = m[f"{b}.accuracy"] if f"{b}.accuracy" in m else c * m[f"{b}.accuracy_given_compliance"]
    assert start == pytest.approx(stated, abs=1e-6)
    for cond in at_n.conditions:  # the C-checks compare against the same start
        assert cond.student_accuracy == start and cond.bridge.before == start and cond.opd.before == start


@pytest.mark.parametrize("name", preset_names())
def test_condition_checks_read_the_plans_own_predictions(name):
    """The C1/C2 lines compare the verdicts with the arms `plan` predicts (raw teacher: the bridges with
    0 teacher labels; RL teacher: with N), and every line says 'agrees' or why it 'differs'."""
    p, p0 = plan(name), plan(name, labels=0)
    raw, rl = p.conditions
    assert "raw teacher" in raw.teacher and "RL teacher" in rl.teacher
    for cond, at in ((raw, p0), (rl, p)):
        assert cond.bridge.after == pytest.approx(at.arm("rl_teacher_bridge").accuracy, abs=1e-9)
        assert cond.opd.after == pytest.approx(at.arm("no_fkl").accuracy, abs=1e-9)
        assert cond.opd_after_warmup.before == pytest.approx(at.arm("no_opd").accuracy, abs=1e-9)
        assert cond.opd_after_warmup.after == cond.bridge.after
        for step in (cond.bridge, cond.opd, cond.opd_after_warmup):
            total = step.from_compliance + step.from_transfer + step.from_displacement
            assert total == pytest.approx(step.gain, abs=1e-9)
        assert cond.c1_agrees == (cond.c1 == cond.bridge.improves)
        c1_line, c2_line = cond.explain().splitlines()[1:]
        for line, agrees in ((c1_line, cond.c1_agrees), (c2_line, cond.c2_agrees)):
            assert ("-> agrees" in line) == agrees and ("-> differs: " in line) == (not agrees), line
    assert raw.bridge.after == pytest.approx(p.arm("raw_teacher_bridge").accuracy, abs=1e-9)


def test_paper_c1_line_explains_why_the_recommended_bridge_gains():
    """The issue's finding: on the paper preset C1 fails for the RL teacher after 14,000 labels
    (compliance below the student's) while plan recommends its bridge. The start is now below direct
    GRPO at N, and the C1 line says the bridge gains because its ability transfer outweighs the
    compliance it copies."""
    p = plan("paper-qwen3-math")
    start = p.informativeness[0]["accuracy"]
    assert start < p.arm("direct_grpo").accuracy - 5  # training helps: 68.2 -> 76.2
    rl = p.conditions[1]
    assert not rl.c1 and rl.teacher_compliance < rl.student_compliance
    assert rl.bridge.improves and rl.bridge.from_compliance < 0 < rl.bridge.from_transfer
    assert p.recommendation.arm in ("rl_teacher_bridge", "rl_teacher_bridge_stage3")
    line = rl.explain().splitlines()[1]
    assert "differs: a gain although C1 fails" in line
    assert "ability transfer" in line and "outweighs compliance" in line


def _drawn(pl, path):
    """The figure `pl.plot(path)` saved, with its left/right axes and the bands (fill_between) on each."""
    from matplotlib.collections import PolyCollection
    fig = pl.plot(path)
    ax1, ax2 = fig.axes[:2]  # the third, the label x compute plane, is tested on its own
    bands = [[c for c in ax.collections if isinstance(c, PolyCollection)] for ax in (ax1, ax2)]
    return fig, ax1, ax2, bands


def test_plot_marks_the_recommended_arms_own_split_and_states_the_toss_up(tmp_path, paper):
    """Issue 25 finding 5: the marker is the recommended arm's own split (rl_teacher_bridge does not split:
    all 14000 labels are teacher labels, 100%), not stage 3's 91%; the suptitle names the runner-up and the
    gap interval as the CLI's table does, and calls it a toss-up because the interval contains 0."""
    from budget_planner.cli import _fmt_plan
    from budget_planner.planner import fmt_num
    r = paper.recommendation
    assert r.arm == "rl_teacher_bridge" and not r.separable and r.gap_lo < 0 < r.gap_hi
    stage3_share = paper.arm("rl_teacher_bridge_stage3").teacher_labels / paper.labels
    fig, ax1, _, bands = _drawn(paper, tmp_path / "plan.png")
    assert (tmp_path / "plan.png").stat().st_size > 10_000
    star = next(ln for ln in ax1.get_lines() if ln.get_marker() == "*")
    assert star.get_xdata()[0] == 1.0 != stage3_share
    verticals = [ln.get_xdata()[0] for ln in ax1.get_lines() if ln.get_linestyle() == ":" and len(ln.get_xdata()) == 2
                 and ln.get_xdata()[0] == ln.get_xdata()[1]]
    assert verticals == [1.0]
    assert any("recommended split" in t.get_text() and "100% teacher" in t.get_text() for t in ax1.texts)
    title = fig.get_suptitle()
    interval = f"[{fmt_num(r.gap_lo, '+.1f')}, {fmt_num(r.gap_hi, '+.1f')}]"
    assert interval == "[-2.2, +2.6]" and interval in _fmt_plan(paper)  # the figure and the table agree
    assert r.runner_up in title and interval in title and "toss-up" in title and "separable" not in title
    # seven bands overlapped past reading: bands for the recommended arm and the runner-up only, every arm a line
    assert [len(b) for b in bands] == [2, 2]
    assert len([ln for ln in ax1.get_lines() if len(ln.get_xdata()) > 2]) == len(paper.arms)


def test_plot_calls_a_separable_gap_separable(tmp_path):
    pl = plan("toy-arith")  # direct_grpo over no_opd, the 90% gap interval excludes 0
    r = pl.recommendation
    assert r.separable and r.runner_up is not None
    fig, ax1, _, bands = _drawn(pl, tmp_path / "plan.png")
    title = fig.get_suptitle()
    assert r.runner_up in title and "separable" in title and "toss-up" not in title
    star = next(ln for ln in ax1.get_lines() if ln.get_marker() == "*")
    assert star.get_xdata()[0] == r.teacher_labels / pl.labels == 0.0
    assert len(bands[0]) == 2
