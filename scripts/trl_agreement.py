"""Both backends from the same start on the gated toy world: N steps of every stage, step by step.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python scripts/trl_agreement.py [--steps 20] [--config toy_short]

Stages: student GRPO, FKL warmup and OPD (toward the base teacher), teacher GRPO. Each starts from
the same weights and the same seeded torch state; the reference runs `reference.stages`, the TRL path
`reference.trl_backend` (GRPOTrainer / GKDTrainer / DistillationTrainer). Prints per step the two losses and grad norms, and at the end the largest
relative difference of the logged losses and of the final weights.
"""

from __future__ import annotations

import argparse
import copy
import tempfile

import torch

from reference import stages
from reference import trl_backend as tb
from reference.config import load_config
from reference.assemble import build_models, build_world
from reference.seeds import seeded


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-12)


def weights_rel(m1, m2) -> float:
    worst = 0.0
    for (n, a), (_, b) in zip(m1.named_parameters(), m2.named_parameters()):
        worst = max(worst, float((a - b).detach().abs().max() / b.detach().abs().max().clamp(min=1e-12)))
    return worst


def compare_stage(kind: str, cfg, m, world, steps: int, seed: int = 7) -> dict:
    start = m.teacher if kind == "teacher_grpo" else m.student
    ref_model = copy.deepcopy(start)
    trl_model = copy.deepcopy(start)
    labeled = world.labeled[:cfg.world.labels]
    trl = tb.UPDATE_RULES
    with seeded("cpu", 1234):
        if kind == "teacher_grpo":
            r = stages.grpo(ref_model, labeled, cfg.grpo, m.ctx, role="teacher", seed=seed, limit=steps)
        elif kind == "grpo":
            r = stages.grpo(ref_model, labeled, cfg.grpo, m.ctx, role="student", seed=seed, limit=steps)
        elif kind == "fkl":
            r = stages.fkl_warmup(ref_model, m.teacher, world.unlabeled, cfg.fkl, m.ctx, seed=seed, limit=steps)
        else:
            r = stages.opd(ref_model, m.teacher, world.unlabeled, cfg.opd, m.ctx, seed=seed, limit=steps)
    with seeded("cpu", 1234), tempfile.TemporaryDirectory() as out:
        if kind == "teacher_grpo":
            b = None
            t = trl["grpo"](trl_model, labeled, cfg.grpo, m.ctx, role="teacher", seed=seed, limit=steps)
        elif kind == "grpo":
            b = tb.build_grpo(trl_model, labeled, cfg.grpo, m.ctx, m.tokenizer, role="student", seed=seed,
                              out_dir=out, limit=steps)
        elif kind == "fkl":
            b = tb.build_gkd(trl_model, m.teacher, world.unlabeled, cfg.fkl, m.tokenizer, seed=seed, out_dir=out,
                             limit=steps)
        else:
            b = tb.build_distillation(trl_model, m.teacher, world.unlabeled, cfg.opd, m.tokenizer, seed=seed,
                                      out_dir=out, limit=steps)
        if b is not None:
            t = tb.train_built(kind, b)
    key = {"teacher_grpo": "loss", "grpo": "loss", "fkl": "forward_kl", "opd": "loss"}[kind]
    ref_log = [e for e in r.log if key in e]
    worst = 0.0
    print(f"\n== {kind}: {len(r.log)} reference steps ({len(ref_log)} updates), {len(t.log)} TRL steps")
    print(f"{'step':>4} {'ref ' + key:>14} {'trl ' + key:>14} {'rel':>9} {'ref gnorm':>10} {'trl gnorm':>10}")
    trl_by_step = list(t.log)
    for i, e in enumerate(r.log):
        if key not in e:
            print(f"{i:>4} (no signal: no update)")
            continue
        te = trl_by_step[i]
        d = rel(e[key], te[key])
        worst = max(worst, d)
        print(f"{i:>4} {e[key]:>14.8f} {te[key]:>14.8f} {d:>9.2e} {e['grad_norm']:>10.5f} {te['grad_norm']:>10.5f}")
    w = weights_rel(ref_model, trl_model)
    print(f"max rel. loss difference {worst:.2e}; final weights max |diff| / max |w| per tensor {w:.2e}; "
          f"seconds reference {r.seconds:.1f}, TRL {t.seconds:.1f}")
    return {"stage": kind, "loss_rel": worst, "weights_rel": w, "s_ref": r.seconds, "s_trl": t.seconds}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--config", default="toy_short")
    ap.add_argument("--stages", default="grpo,fkl,opd,teacher_grpo")
    a = ap.parse_args()
    torch.set_num_threads(1)
    cfg = load_config(a.config)
    m = build_models(cfg, need_teacher=True)
    world = build_world(cfg, m.tokenizer)
    rows = [compare_stage(k, cfg, m, world, a.steps) for k in a.stages.split(",")]
    print()
    for r in rows:
        print(f"{r['stage']:>5}: loss rel {r['loss_rel']:.2e}  weights rel {r['weights_rel']:.2e}  "
              f"seconds {r['s_ref']:.1f} reference / {r['s_trl']:.1f} TRL")


if __name__ == "__main__":
    main()
