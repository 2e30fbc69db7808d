"""Writes the three notebooks from the cell sources below (reviewable text, no hidden JSON edits).

    python notebooks/build.py        # rewrite notebooks/*.ipynb (outputs cleared; CI executes them)

The notebooks import the packages and define no logic of their own.
"""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).parent

NOTEBOOKS = {
    "01_plan_label_budget.ipynb": [
        ("md", "# 01 — Plan a label budget\n\nI have N labeled math problems, a 1.7B model to ship and an 8B "
               "model I could train first: where do the labels go, and what accuracy should I expect? "
               "Scenario → plan → figures → what-if on N and on the teacher."),
        ("code", "from budget_planner import load_scenario, plan, preset_names\npreset_names()"),
        ("code", "scn = load_scenario('paper-qwen3-math')\np = plan(scn)\np.to_frame()"),
        ("md", "The recommendation comes with the probability that it is the best arm under the calibrated "
               "uncertainty, and the warnings say which inputs are only priors."),
        ("code", "print(p.recommendation)\nprint(*p.warnings, sep='\\n')"),
        ("md", "Every input is tagged measured / published / assumed; assumed inputs are fitted parameters."),
        ("code", "import pandas as pd\npd.DataFrame(list(p.inputs))"),
        ("md", "Accuracy against the teacher/student label split (stage-3 arm and its replay control), and against N."),
        ("code", "p.plot();"),
        ("md", "## What if: fewer labels"),
        ("code", "for n in (500, 2000, 14000):\n    q = plan(scn, labels=n)\n"
                 "    print(n, q.recommendation.arm, round(q.recommendation.p_best, 2),\n"
                 "          {a.arm: round(a.accuracy, 1) for a in q.arms if a.arm in ('direct_grpo', 'rl_teacher_bridge')})"),
        ("md", "## What if: another teacher\n\nA teacher that can reach no more than the student, and a raw "
               "teacher that already follows the answer protocol (C1 satisfied without RL)."),
        ("code", "rows = []\nfor name in ('paper-qwen3-math', 'weak-teacher', 'compliant-raw-teacher'):\n"
                 "    q = plan(name)\n"
                 "    rows.append({'scenario': name, 'recommended': q.recommendation.arm, 'p_best': q.recommendation.p_best,\n"
                 "                 **{a.arm: a.accuracy for a in q.arms}})\npd.DataFrame(rows).set_index('scenario').round(2)"),
        ("md", "Informativeness per model: the fraction of GRPO groups that carry signal, bits per label, "
               "and the C1/C2 checks that say whether dense transfer from this teacher can help."),
        ("code", "pd.DataFrame(list(p.informativeness))"),
        ("code", "for c in p.conditions:\n    print(c)"),
    ],
}


def build() -> list[Path]:
    written = []
    for name, cells in NOTEBOOKS.items():
        nb = new_notebook(cells=[new_markdown_cell(src) if kind == "md" else new_code_cell(src) for kind, src in cells])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        path = HERE / name
        nbformat.write(nb, path)
        written.append(path)
    return written


if __name__ == "__main__":
    for p in build():
        print("wrote", p)
