"""Usage: python scripts/diagnostics/moves_at_rate.py CONFIG LR SEED  (the family gate, 2026-11-30)
Diagnostic: is the gate's 'moves' failure a rate or a floor? FKL/OPD toward the 50-step RL teacher
at the configured lr and at 3x / 10x, one seed; prints the gate's drop statistic for each."""
import copy, sys, json
import torch
from reference.config import load_config
from reference.gate import kl_drop, seed_from
from reference import stages
from reference.assemble import build_models, build_world
cfg_path, lr, seed = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(1)
cfg = load_config(cfg_path).override({"fkl.lr": lr, "opd.lr": lr})
m = build_models(cfg, need_teacher=True); world = build_world(cfg, m.tokenizer)
teacher = copy.deepcopy(m.teacher)
torch.manual_seed(seed_from("gate", seed, "teacher_grpo"))
stages.grpo(teacher, world.labeled[: cfg.world.labels], cfg.grpo, m.ctx, role="teacher", seed=seed_from("gate-data", seed, "teacher_grpo"), limit=50)
teacher.requires_grad_(False)
out = {"lr": lr}
for stage, fn, scfg, key in (("fkl", stages.fkl_warmup, cfg.fkl, "forward_kl"), ("opd", stages.opd, cfg.opd, "kl_to_teacher")):
    torch.manual_seed(seed_from("gate", seed, f"move_{stage}"))
    res = fn(copy.deepcopy(m.student), teacher, world.unlabeled, scfg, m.ctx, seed=seed_from("gate-data", seed, f"move_{stage}"))
    d, a, b = kl_drop([e[key] for e in res.log])  # the gate's own statistic
    out[stage] = {"drop": round(d, 3), "first": round(a, 4), "last": round(b, 4)}
print(json.dumps(out), flush=True)
