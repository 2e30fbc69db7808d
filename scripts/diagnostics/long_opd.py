"""Usage: python scripts/diagnostics/long_opd.py SEED CAP [--workdir /work/reruns/paper-world]
(issue 22, 2026-12-08): where does the paper-like world's OPD reach its plateau?

The 4x cap check of the first amendment (OPD to its 600-step cap) found OPD's validation still rising at
2400 steps (seed 2000: 30 -> 35.5 at 480 -> 40.6 at 1920). This runs the RL bridge of `configs/plateau/
paper_world.toml` at seed SEED with OPD's cap set to CAP (run to the cap, as the config says) on the
validation split only (no test read: it chooses a cap), in the ablation's workdir. Teacher GRPO and the
FKL warmup come from the finished runs of amendment 1's config there (configs/legacy/plateau_opd600/:
the same stages, whose trajectories do not depend on OPD's cap; `plateau_reruns.link_unchanged_stages`).
Prints OPD's validation curve; the stage checkpoint stays in the workdir (at CAP = 9600 it is the
current config's own OPD stage, which the ablation then reuses)."""
import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from plateau_reruns import link_unchanged_stages, set_aside_stale_runs  # noqa: E402
from reference.config import load_config  # noqa: E402
from reference.pipeline import run_pipeline  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("seed", type=int)
p.add_argument("cap", type=int)
p.add_argument("--workdir", default="/work/reruns/paper-world")
a = p.parse_args()
cfg = load_config(ROOT / "configs/plateau/paper_world.toml").override({"opd.steps": a.cap})
work = Path(a.workdir) / f"seed_{a.seed}"
link_unchanged_stages(load_config(ROOT / "configs/legacy/plateau_opd600/paper_world.toml"), cfg, work / "stages")
set_aside_stale_runs(work, cfg)
res = run_pipeline(cfg, "rl_teacher_bridge", a.seed, workdir=work, split="val", progress=False)
rec = next(s["plateau"] for s in res.stages if s["name"] == "opd")
print(json.dumps({k: rec[k] for k in ("cap", "steps_run", "best_step", "best_score", "reached", "why",
                                      "window_gain", "window_se")}))
print(" ".join(f"{c['step']}:{c['accuracy']:.1f}" for c in rec["curve"]))
