"""Usage: python scripts/diagnostics/stage_logs_k05.py grpo|opd LR SEED  (the modes-k05 gate, 2026-11-30)
K05 instrument check: student GRPO (first 100 steps) and OPD toward the 50-step RL teacher, per-step logs."""
import copy, sys, json
import numpy as np, torch
from reference.config import load_config
from reference.seeds import seed_from
from reference import stages
from reference.assemble import build_models, build_world
what, lr, seed = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(1)
cfg = load_config("configs/legacy/fixed_length/family/modes_k05.toml")
m = build_models(cfg, need_teacher=True); world = build_world(cfg, m.tokenizer)
labeled = world.labeled[: cfg.world.labels]
def show(log, keys):
    for i in list(range(0, len(log), max(1, len(log) // 12))) + [len(log) - 1]:
        e = log[i]; print(i, {k: round(float(e[k]), 4) for k in keys if k in e}, flush=True)
if what == "grpo":
    c = cfg.override({"grpo.lr": lr}).grpo
    torch.manual_seed(seed_from("gate", seed, "student_grpo"))
    res = stages.grpo(copy.deepcopy(m.student), labeled, c, m.ctx, role="student", seed=seed_from("gate-data", seed, "student_grpo"), limit=100)
    print("keys", list(res.log[0].keys()))
    show(res.log, ["reward", "pass_rate", "zero_signal_fraction", "length", "compliance", "grad_norm", "lr"])
    r = np.array([e["reward"] for e in res.log]); print("reward blocks of 10:", np.round(r.reshape(-1, 10).mean(1), 3))
else:
    teacher = copy.deepcopy(m.teacher)
    torch.manual_seed(seed_from("gate", seed, "teacher_grpo"))
    stages.grpo(teacher, labeled, cfg.grpo, m.ctx, role="teacher", seed=seed_from("gate-data", seed, "teacher_grpo"), limit=50)
    teacher.requires_grad_(False)
    c = cfg.override({"opd.lr": lr}).opd
    torch.manual_seed(seed_from("gate", seed, "move_opd"))
    res = stages.opd(copy.deepcopy(m.student), teacher, world.unlabeled, c, m.ctx, seed=seed_from("gate-data", seed, "move_opd"))
    print("keys", list(res.log[0].keys()))
    show(res.log, ["kl_to_teacher", "length", "compliance", "grad_norm", "lr", "loss"])
