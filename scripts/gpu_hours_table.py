"""GPU-hours per arm on several GPU counts, as the planner prices them (docs/scale.md "Scale-out plan").

    python scripts/gpu_hours_table.py [--scenario paper-qwen3-math] [--labels N] [--gpus 8,64] [--costs CSV]
        [--compute response_tokens=8192,...]

One `budget_planner.plan` per GPU count (so the numbers are the ones `budget-planner plan --gpus G`
prints, stage-3 arms at the plan's split), then a Markdown table: per arm, the GPU-hours of each stage
and the total and wall-clock hours on each GPU count, and the tags of the rates used. `--compute`
overrides fields of the scenario's `[compute]` table (theory.arms.ComputeModel) for a what-if.
"""

import argparse
import sys
from dataclasses import fields, replace

from budget_planner.planner import plan
from theory.arms import ARMS, ComputeModel, Stage
from theory.errors import InputError, cli_exit
from budget_planner.presets import load_scenario


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", default="paper-qwen3-math")
    ap.add_argument("--labels", type=int, default=None)
    ap.add_argument("--gpus", default="8,64", help="comma-separated GPU counts")
    ap.add_argument("--costs", default=None, help="cost table CSV (default: docs/results/gpu_costs.csv)")
    ap.add_argument("--compute", default="",
                    help="ComputeModel overrides, e.g. response_tokens=8192,bridge_prompts=12800")
    args = ap.parse_args(argv)

    def body() -> int:
        try:
            counts = [int(g) for g in args.gpus.split(",")]
        except ValueError:
            raise InputError(f"--gpus must be comma-separated whole numbers, got {args.gpus!r}") from None
        scn = load_scenario(args.scenario)
        known = {f.name for f in fields(ComputeModel)}
        over = {}
        for item in filter(None, args.compute.split(",")):
            key, _, value = item.partition("=")
            if key.strip() not in known or not value.strip().isdigit():
                raise InputError(f"--compute: expected field=integer with field in {', '.join(sorted(known))}, "
                                 f"got {item!r}")
            over[key.strip()] = int(value)
        if over:
            scn = replace(scn, compute=replace(scn.compute, **over))
        plans = {g: plan(scn, labels=args.labels, gpus=g, costs=args.costs) for g in counts}
        first = plans[counts[0]]
        stages = [s.value for s in Stage]
        print(f"{first.scenario}, N = {first.labels} labels, {scn.compute}\n"
              f"GPU-hours per stage on {counts[0]} GPUs; "
              f"total GPU-hours (wall hours) on each count; cost table {first.gpu_costs['table']}\n")
        head = ["arm", "teacher / student labels"] + stages + [f"{g} GPUs" for g in counts]
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * 2 + "---:|" * (len(stages) + len(counts)))
        for a in first.arms:
            per_stage = first.gpu_costs["stage_gpu_hours"][a.arm]
            cells = [a.arm + (" (control)" if ARMS[a.arm].control else ""), f"{a.teacher_labels} / {a.student_labels}"]
            cells += [f"{per_stage[s]:.2f}" if s in per_stage else "–" for s in stages]
            for g in counts:
                h = plans[g].arm(a.arm).gpu_hours
                cells.append(f"{h:.1f} ({h / g:.2f} h)")
            print("| " + " | ".join(cells) + " |")
        for g in counts:
            gc = plans[g].gpu_costs
            tags = sorted({f"{ph} {t}" for st in gc["tags"].values() for ph, t in st.items()})
            print(f"\n{g} GPUs: parallel efficiency {gc['parallel_efficiency']:.2f} ({gc['parallel_efficiency_tag']}); "
                  f"rates: {', '.join(tags)}")
        return 0

    return cli_exit(body)


if __name__ == "__main__":
    sys.exit(main())
