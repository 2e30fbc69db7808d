"""Instrument check of stage 3 in the paper-like world's plateau ablation: is its learning rate the reason
it only hurts? Every ablation seed so far selected stage 3's step 0 (its input): on the held-back 32
labels, student GRPO at `grpo.lr` = 1e-4 (the rate direct GRPO uses from the base student) lowers the
distilled student's validation score from ~28% to ~12% over 120 steps while its training reward sits at
~0.5.

    python scripts/stage3_lr_check.py --workdir /work/reruns/paper-world/seed_1000 --seed 1000 --lrs 1e-5,3e-5,1e-4

Loads the bridge student that stage 3 starts from (the stage-3 arm's OPD checkpoint in an ablation seed's
workdir: `plateau_reruns.py ablation`), then runs stage 3 (student GRPO on the held-back labels, the
plateau protocol's first rule, configs/legacy/plateau_window/paper_world.toml) once per learning rate from that same start, in the
stage's own seeded RNG. Prints the validation curve and the selected step per rate; writes nothing under
docs/ (the log quotes it).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
import sys

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from theory.errors import InputError, cli_exit  # noqa: E402

# the protocol's first rule, which its committed check ran (configs/plateau/paper_world.toml has since been
# amended: OPD runs to a 9600-step cap)
CONFIG = ROOT / "configs" / "legacy" / "plateau_window" / "paper_world.toml"


def opd_checkpoint(workdir: Path) -> Path:
    """The stage-3 arm's OPD checkpoint under CONFIG: the OPD stage whose teacher had half the labels."""
    from reference.config import load_config
    from reference.stage_runner import stage_key
    cfg = load_config(CONFIG)
    for meta in sorted((workdir / "stages").glob("[!.]*/meta.json")):  # not the hidden mid-stage directories
        m = json.loads(meta.read_text())
        if (m["stage"] == "opd" and m["prefix"][0][0] == "teacher_grpo" and m["prefix"][0][1] < 64
                and stage_key(cfg, m["seed"], [tuple(p) for p in m["prefix"]]) == meta.parent.name):
            return meta.parent
    raise InputError(f"no stage-3 OPD checkpoint under {workdir}/stages (run `plateau_reruns.py ablation` first)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--lrs", default="1e-5,3e-5,1e-4")
    a = ap.parse_args(argv)
    import tempfile
    import torch
    from reference import checkpoint as ckpt
    from reference.assemble import build_models, build_world
    from reference.config import load_config
    from reference.seeds import seed_from, seeded
    from reference.stage_runner import Slot, TrainingSetup, stage_watch, train_stage
    from theory.arms import Stage, get_arm

    start = opd_checkpoint(a.workdir)
    for lr in (float(x) for x in a.lrs.split(",")):
        cfg = load_config(CONFIG).override({"grpo.lr": lr})
        torch.set_num_threads(cfg.engine.threads)
        models = build_models(cfg, need_teacher=False)
        ckpt.load_weights(models.student, start)
        acct = get_arm("rl_teacher_bridge_stage3").labels(cfg.world.labels, None)
        setup = TrainingSetup(cfg, models, build_world(cfg, models.tokenizer), acct)
        with tempfile.TemporaryDirectory() as d:
            slot = Slot(Path(d) / "stage3", f"stage3-lr-check/{a.seed}", {})
            with seeded(cfg.engine.device, seed_from(slot.seed_key)):
                watch = stage_watch(Stage.STUDENT_GRPO, setup, slot)
                res = train_stage(Stage.STUDENT_GRPO, setup, seed_from(slot.seed_key, "data"), None, watch)
        p = res.plateau
        curve = " ".join(f"{c['step']}:{c['accuracy']:.1f}" for c in p["curve"])
        rewards = [e["reward"] for e in res.log if "reward" in e]
        print(f"lr {lr:g}: selected step {p['best_step']} ({p['best_score']:.1f}), ran {p['steps_run']} of {p['cap']}; "
              f"train reward first/last 10 steps {sum(rewards[:10]) / 10:.2f}/{sum(rewards[-10:]) / 10:.2f}; "
              f"validation {curve}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(cli_exit(main))
