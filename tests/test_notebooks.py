"""The notebooks and the package helpers they call.

Tier 2 (fast): every notebook file is what notebooks/build.py writes (the same sources), committed
executed (outputs, at least one figure, no error).
Tier 2 (slow: a study and toy runs in module fixtures): the report loader / fairness checks / tuning
curves of tuning.report and the stage-log reader of reference.curves on a synthetic study and on
tiny toy runs.
Tier 3 (slow): every notebook executes top to bottom in a kernel of this interpreter, draws a figure,
and gives every cell the same kinds of output as the committed notebook (not the same pixels or numbers).
"""

import importlib.util
from pathlib import Path
import sys

import numpy as np
import pandas as pd
import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NB_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NB_DIR.glob("*.ipynb"))


def _builder():
    spec = importlib.util.spec_from_file_location("nb_build", NB_DIR / "build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_notebooks_exist_and_match_their_builder():
    mod = _builder()
    assert {p.name for p in NOTEBOOKS} == set(mod.NOTEBOOKS)
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        want = [("md" if c.cell_type == "markdown" else "code", c.source) for c in nb.cells]
        assert want == list(mod.NOTEBOOKS[path.name]), f"{path.name} differs from build.py: run notebooks/build.py"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_executed_with_a_figure(path):
    """A reader on a code host sees the outputs: every code cell ran, none failed, a figure is there."""
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    fix = "run `python notebooks/build.py --execute` and commit the notebooks"
    assert all(c.execution_count for c in code), f"{path.name}: a code cell was not executed; {fix}"
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), f"{path.name}: run out of order; {fix}"
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"], f"{path.name}: committed with an error; {fix}"
    assert any("image/png" in o.get("data", {}) for o in outputs), f"{path.name}: no figure committed; {fix}"
    assert all("execution" not in c.metadata for c in code) and "language_info" not in nb.metadata, \
        f"{path.name}: timing metadata committed; {fix}"


def output_kinds(cell) -> list[tuple]:
    """The shape of a cell's output: each output's type and its MIME types (stream: its name), with
    consecutive stream chunks merged. stderr is left out: warnings there depend on library versions."""
    kinds: list[tuple] = []
    for o in cell.get("outputs", []):
        if o.output_type == "stream":
            if o.name == "stderr":
                continue
            k = ("stream", o.name)
            if kinds and kinds[-1] == k:
                continue
        elif o.output_type in ("display_data", "execute_result"):
            k = (o.output_type, tuple(sorted(o.get("data", {}))))
        else:
            k = (o.output_type,)
        kinds.append(k)
    return kinds


def test_output_kinds_reads_structure_not_values():
    v4 = nbformat.v4
    a = v4.new_code_cell("x", outputs=[v4.new_output("stream", name="stdout", text="1\n"),
                                       v4.new_output("stream", name="stdout", text="2\n"),
                                       v4.new_output("stream", name="stderr", text="warn\n"),
                                       v4.new_output("display_data", data={"image/png": "AAA", "text/plain": "f"})])
    b = v4.new_code_cell("x", outputs=[v4.new_output("stream", name="stdout", text="3\n"),
                                       v4.new_output("display_data", data={"image/png": "BBB", "text/plain": "g"})])
    assert output_kinds(a) == output_kinds(b) == [("stream", "stdout"), ("display_data", ("image/png", "text/plain"))]
    c = v4.new_code_cell("x", outputs=[v4.new_output("execute_result", data={"text/plain": "1"}, execution_count=1)])
    assert output_kinds(c) != output_kinds(b)


# ---------- tuning.report: loading a written report, fairness checks, curves ----------

@pytest.fixture(scope="module")
def live_study(tmp_path_factory):
    from tuning.harness import check_matched, run_worker
    from tuning.evaluation import evaluate_label_matched
    from tuning.report import build_report
    from tuning.testing import synthetic_study

    d = tmp_path_factory.mktemp("study")
    handle, _, source = synthetic_study(f"sqlite:///{d}/s.db", "nb", trials=5, eval_seeds=6)
    run_worker(handle, "nb", source)
    evaluate_label_matched(handle, "nb", source)
    return handle, check_matched(handle, "nb"), build_report(handle, "nb")


@pytest.mark.slow  # the live_study fixture: a tuning study of a few trials
def test_tuning_curves_from_the_trials_table_equal_the_reports(live_study):
    from tuning.report import tuning_curves

    _, _, rep = live_study
    pd.testing.assert_frame_equal(tuning_curves(rep.trials).reset_index(drop=True),
                                  rep.curves.reset_index(drop=True), check_dtype=False)


@pytest.mark.slow
def test_load_report_reads_back_what_write_report_wrote(live_study, tmp_path):
    from tuning.report import load_report, write_report

    _, _, rep = live_study
    write_report(rep, tmp_path, figures=False)
    back = load_report(tmp_path)
    assert back.name == "nb"
    assert list(back.summary["arm"]) == list(rep.summary["arm"])
    np.testing.assert_allclose(back.summary["eval_mean"], rep.summary["eval_mean"])
    pd.testing.assert_frame_equal(back.curves, rep.curves, check_dtype=False)
    assert len(back.evals) == len(rep.evals) == 2 * 6
    # the estimates are recomputed exactly; the bootstrap intervals are redrawn but must hold them
    np.testing.assert_allclose(back.comparisons["mean_diff"], rep.comparisons["mean_diff"])
    np.testing.assert_allclose(back.comparisons["p_improvement"], rep.comparisons["p_improvement"])
    assert (back.comparisons["diff_ci_low"] <= back.comparisons["mean_diff"]).all()
    assert (back.comparisons["mean_diff"] <= back.comparisons["diff_ci_high"]).all()


@pytest.mark.slow
def test_load_report_without_per_seed_file_has_no_comparison(live_study, tmp_path):
    from tuning.report import load_report, write_report

    _, _, rep = live_study
    write_report(rep, tmp_path, figures=False)
    (tmp_path / "fairness_report_evals.csv").unlink()
    back = load_report(tmp_path)
    assert back.evals.empty and back.comparisons.empty


def test_load_report_names_the_missing_file(tmp_path):
    from theory.errors import InputError
    from tuning.report import load_report

    with pytest.raises(InputError, match="fairness_report.csv"):
        load_report(tmp_path)


@pytest.mark.slow
def test_fairness_checks_pass_on_a_matched_study_and_fail_when_tampered(live_study):
    from tuning.report import fairness_checks

    _, protocol, rep = live_study
    ok = fairness_checks(rep, protocol)
    assert ok["ok"].all() and len(ok) == 8, ok
    # one arm loses a counted trial, another slot gets a different tuning seed
    trials = rep.trials.copy()
    arm0, arm1 = protocol.arms
    drop = trials[(trials["arm"] == arm0) & trials["counted"]].index[-1]
    trials.loc[drop, "counted"] = False
    trials.loc[trials[(trials["arm"] == arm1) & (trials["slot"] == 0)].index, "tuning_seed"] = 99
    bad = fairness_checks(type(rep)(**{**vars(rep), "trials": trials}), protocol).set_index("check")["ok"]
    assert not bad["same number of finished trials per arm"]
    assert not bad["same tuning seed in each slot of every arm"]
    assert not bad["finished trials per arm = the protocol's budget"]
    assert bad["same label budget N (teacher + student + unused)"]


@pytest.mark.slow
def test_plot_fairness_draws_every_panel(live_study):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tuning.figures import plot_fairness

    _, _, rep = live_study
    fig = plot_fairness(rep)
    assert len(fig.axes) == 3
    assert all(ax.has_data() and ax.get_xlabel()
               and (ax.get_ylabel() or any(t.get_text() for t in ax.get_yticklabels())) for ax in fig.axes)
    plt.close(fig)


# ---------- reference.curves: per-step logs of the stages ----------

TINY = {"world.labels": 16, "world.val": 24, "world.test": 24, "world.unlabeled": 64,
        "grpo.prompts_per_step": 4, "grpo.group_size": 4, "grpo.epochs": 0.5, "grpo.max_new_tokens": 32,
        "fkl.steps": 2, "fkl.prompts_per_step": 4, "fkl.max_new_tokens": 32,
        "opd.steps": 3, "opd.prompts_per_step": 4, "opd.max_new_tokens": 32,
        "eval.k": 2, "eval.curve_problems": 8, "eval.max_new_tokens": 32}


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    from reference.config import load_config
    from reference.pipeline import run_pipeline

    cfg = load_config("toy_notebook").override(TINY)
    work = tmp_path_factory.mktemp("runs")
    res = [run_pipeline(cfg, arm, 0, workdir=work, progress=False)
           for arm in ("direct_grpo", "rl_teacher_bridge_stage3")]
    return cfg, work, res


@pytest.mark.slow  # the tiny_runs fixture: toy pipeline runs
def test_stage_logs_hold_every_step_of_every_stage(tiny_runs):
    from reference.curves import stage_logs

    cfg, work, res = tiny_runs
    for r in res:
        logs = stage_logs(cfg, r.arm, r.seed, work)
        for i, s in enumerate(r.stages[:-1]):  # the last entry is the final evaluation
            st = logs[logs["stage_index"] == i]
            assert st["stage"].unique().tolist() == [s["name"]]
            assert st["step"].nunique() == s["steps"], s["name"]
            want = {"student_grpo": {"reward", "zero_signal_fraction", "compliance"},
                    "teacher_grpo": {"reward", "zero_signal_fraction", "compliance"},
                    "fkl_warmup": {"forward_kl"}, "opd": {"kl_to_teacher", "compliance"}}[s["name"]]
            assert want <= set(st["metric"]), s["name"]
            frac = st[st["metric"].isin(["zero_signal_fraction", "compliance"])]["value"]
            assert frac.between(0, 1).all()
            # the logged last step is what the run recorded as the stage's last entry
            last = st[st["step"] == st["step"].max()].set_index("metric")["value"]
            for m, v in s["last"].items():
                if m != "step":
                    assert last[m] == pytest.approx(v), (s["name"], m)


@pytest.mark.slow
def test_stage_logs_of_a_run_that_never_ran(tiny_runs, tmp_path):
    from reference.curves import stage_logs
    from theory.errors import InputError

    cfg, _, _ = tiny_runs
    with pytest.raises(InputError, match="run it first"):
        stage_logs(cfg, "direct_grpo", 0, tmp_path)


@pytest.mark.slow
def test_stage_figures_have_no_empty_panel(tiny_runs):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from reference.curves import final_table, plot_final, plot_stage_curves, plot_stage_points, stage_logs

    cfg, work, res = tiny_runs
    logs = pd.concat([stage_logs(cfg, r.arm, r.seed, work) for r in res])
    fig = plot_stage_curves(logs)
    # reward x2, zero-signal x2, KL (fkl, opd), compliance (teacher_grpo, opd, student_grpo)
    assert len(fig.axes) == 9
    assert all(ax.has_data() and ax.get_xlabel() and ax.get_ylabel() for ax in fig.axes)
    table = final_table(res)
    assert list(table["arm"]) == ["direct_grpo", "rl_teacher_bridge_stage3"]
    for f in (fig, plot_stage_points(res), plot_final(table)):
        assert all(ax.has_data() for ax in f.axes)
        plt.close(f)


# ---------- tier 3: execute ----------

@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path):
    committed = nbformat.read(path, as_version=4)
    nb = nbformat.read(path, as_version=4)
    for c in nb.cells:  # run from the sources alone
        if c.cell_type == "code":
            c.outputs, c.execution_count = [], None
    # a last cell added here (not in the file): the kernel must be this interpreter
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.prefix)"))
    # "python3" is the kernel of the running interpreter (jupyter_client maps `python` to sys.executable)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", coalesce_streams=True,
                            resources={"metadata": {"path": str(NB_DIR)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    errors = [f"{o.ename}: {o.evalue}" for o in outputs if o.output_type == "error"]
    assert not errors, errors
    assert any("image/png" in o.get("data", {}) for o in outputs), "no figure was drawn"
    assert nb.cells[-1].outputs[0]["text"].strip() == sys.prefix, "the kernel runs another environment"
    for i, (old, new) in enumerate(zip(committed.cells, nb.cells)):
        if old.cell_type == "code":
            assert output_kinds(new) == output_kinds(old), (
                f"{path.name} cell {i}: the committed notebook shows other kinds of output than a fresh run; "
                "run `python notebooks/build.py --execute` and commit the notebooks")


def test_plot_family_draws_prediction_runs_and_both_crossovers():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from reference.curves import plot_family

    ns = [64, 256, 1024]
    prereg = {"worlds": {w: {"curve": {"labels": ns, "direct_grpo": [10, 20, 30], "rl_teacher_bridge": [15, 20, 25]},
                             "predicted_crossovers": [{"budget": 256.0}]} for w in ("a", "b")}}
    rows = [{"arm": arm, "seed": s, "world": w, "teacher_labels": n if arm != "direct_grpo" else 0,
             "student_labels": n if arm == "direct_grpo" else 0, "compute_tokens": 1, "split": "test",
             "metric": "accuracy", "value": float(n % 97 + s)}
            for w in ("a", "b") for arm in ("direct_grpo", "rl_teacher_bridge") for n in ns for s in (0, 1)]
    report = {"crossover": {"a": {"measured": {"crossovers": [{"budget": 128.0}]}}}}
    fig = plot_family(pd.DataFrame(rows), prereg, report)
    assert len(fig.axes) == 2 and all(ax.has_data() and ax.get_xlabel() for ax in fig.axes)
    vlines = [[ln for ln in ax.get_lines() if len(set(ln.get_xdata())) == 1] for ax in fig.axes]
    assert [len(v) for v in vlines] == [2, 1]  # world a: predicted + measured crossover; b: predicted only
    # every measured mean is drawn: 2 arms x 3 budgets per panel
    pts = [c for c in fig.axes[0].containers]
    assert sum(len(c.lines[0].get_xdata()) for c in pts) == 6
    plt.close(fig)
