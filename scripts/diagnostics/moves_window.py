"""Usage: python scripts/diagnostics/moves_window.py [WORKDIR]   (issue 22, 2026-12-07, sixth session)
The gate's "moves" statistic against the window it uses. `gate.kl_drop` compares the last tenth of a
stage's steps with its first tenth, so the first window grows with the configured length: at the
plateau config's 600-step caps it spans 60 steps, inside which most of the fast initial drop happens.
Read from the paper-like world ablation's own stage logs (WORKDIR/paper-world/seed_*/stages/*/meta.json,
the per-step KL of each FKL warmup and OPD stage as trained under the protocol): per stage kind, the mean
over seeds of the steps run, the KL at step 0, over the first 5 steps, over the first 60, over the last
tenth, and the drop against the first 5 and against the first 60 steps."""
import collections
import glob
import json
import sys

import numpy as np

work = sys.argv[1] if len(sys.argv) > 1 else "/tmp/plateau_reruns"
KINDS = {(("teacher_grpo", 64), ("fkl_warmup", 0)): "FKL toward the RL teacher",
         (("teacher_grpo", 64), ("fkl_warmup", 0), ("opd", 0)): "OPD after FKL, RL teacher",
         (("teacher_grpo", 64), ("opd", 0)): "OPD from the base (no FKL), RL teacher",
         (("fkl_warmup", 0),): "FKL toward the raw teacher",
         (("fkl_warmup", 0), ("opd", 0)): "OPD after FKL, raw teacher"}
rows = collections.defaultdict(list)
for f in sorted(glob.glob(f"{work}/paper-world/seed_*/stages/*/meta.json")):
    m = json.load(open(f))
    kind = KINDS.get(tuple(tuple(p) for p in m["prefix"]))
    if kind is None:
        continue
    kl = np.array([e["forward_kl" if m["stage"] == "fkl_warmup" else "kl_to_teacher"] for e in m["log"]])
    w = min(max(5, len(kl) // 10), len(kl) // 2)
    last = kl[-w:].mean()
    rows[kind].append([len(kl), kl[0], kl[:5].mean(), kl[:60].mean(), last, 1 - last / kl[:5].mean(),
                       1 - last / kl[:60].mean()])
if not rows:
    sys.exit(f"no ablation stage logs under {work}/paper-world (run scripts/plateau_reruns.py ablation first)")
print("| stage | seeds | steps run | KL step 0 | first 5 | first 60 | last tenth | drop vs first 5 | drop vs first 60 |")
print("|---|---|---|---|---|---|---|---|---|")
for kind, r in rows.items():
    a = np.asarray(r).mean(0)
    print(f"| {kind} | {len(r)} | {a[0]:.0f} | " + " | ".join(f"{x:.3f}" for x in a[1:5]) + f" | {a[5]:.2f} | {a[6]:.2f} |")
