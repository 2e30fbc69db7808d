"""Usage: python scripts/diagnostics/long_opd.py SEED CAP [--from /work/reruns/paper-world] [--out /work/reruns/long-opd]
(issue 22, 2026-12-08): where does the paper-like world's OPD reach its plateau?

The 4x cap check of the first amendment (OPD to its 600-step cap) found OPD's validation still rising at
2400 steps (seed 2000: 30 -> 35.5 at 480 -> 40.6 at 1920). This runs the RL bridge of `configs/plateau/
paper_world.toml` at seed SEED with OPD's cap set to CAP (run to the cap, as the config says), on the
validation split only (no test read: it chooses a cap). Teacher GRPO and the FKL warmup are taken from a
finished 1x run of the same seed (`--from`): a stage's trajectory and stopping do not depend on a later
stage's cap (their seed keys leave every cap out, and their stopping reads only their own curve), but
their checkpoint keys hash the whole config, so the finished directories are linked in under the keys
this config computes. Prints OPD's validation curve; the stage record stays under `--out`."""
import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from reference.config import load_config  # noqa: E402
from reference.pipeline import run_pipeline  # noqa: E402
from reference.stage_runner import stage_key  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("seed", type=int)
p.add_argument("cap", type=int)
p.add_argument("--from", dest="src", default="/work/reruns/paper-world")
p.add_argument("--out", default="/work/reruns/long-opd")
a = p.parse_args()
base = load_config(ROOT / "configs/plateau/paper_world.toml")
cfg = base.override({"opd.steps": a.cap})
src = Path(a.src) / f"seed_{a.seed}" / "stages"
out = Path(a.out) / f"cap_{a.cap}" / f"seed_{a.seed}"
(out / "stages").mkdir(parents=True, exist_ok=True)
labels = base.world.labels
for prefix in ([("teacher_grpo", labels)], [("teacher_grpo", labels), ("fkl_warmup", 0)]):
    old, new = src / stage_key(base, a.seed, prefix), out / "stages" / stage_key(cfg, a.seed, prefix)
    if not (old / "meta.json").is_file():
        sys.exit(f"no finished {prefix[-1][0]} stage at {old} (run the 1x ablation of seed {a.seed} first)")
    if not new.exists():
        new.mkdir()
        for f in old.iterdir():
            os.link(f, new / f.name)
res = run_pipeline(cfg, "rl_teacher_bridge", a.seed, workdir=out, split="val", progress=False)
rec = next(s["plateau"] for s in res.stages if s["name"] == "opd")
print(json.dumps({k: rec[k] for k in ("cap", "steps_run", "best_step", "best_score", "reached", "why",
                                      "window_gain", "window_se")}))
print(" ".join(f"{c['step']}:{c['accuracy']:.1f}" for c in rec["curve"]))
