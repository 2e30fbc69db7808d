"""Reward speed, the hostile-input bound and agreement with math-verify (printed numbers, not a test).

    python benchmarks/bench_rewards.py [--timeout 2.0] [--n 2000]
    python benchmarks/bench_rewards.py --agreement [--root DIR]

1. In-process numeric path (number against numeric gold, no worker): items per second.
2. math-verify path on a warm pool of one worker: milliseconds per item.
3. The hostile corpus of tests/test_rewards.py, one `score` call per item at `--timeout`: seconds per
   item, the worst as a multiple of the timeout (the contract is at most 2x), workers killed.
4. Agreement with `math_verify.verify(parse(gold), parse(completion))` on the AGREEMENT cases of
   tests/test_rewards.py (the documented deviations apart), with the disagreements listed. `--root`
   imports `reference.rewards` from another checkout, e.g. an export of HEAD to measure before a
   change: `git archive HEAD reference | tar -x -C DIR`.
"""

import argparse
import ast
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _cases(name: str) -> list:
    """A list literal of tests/test_rewards.py, read without importing the test module."""
    tree = ast.parse((ROOT / "tests" / "test_rewards.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == name:
            return ast.literal_eval(node.value)
    raise SystemExit(f"no {name} in tests/test_rewards.py")


def agreement() -> None:
    import logging

    from math_verify import parse, verify

    from reference.rewards import score_batch

    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    for name in ("AGREEMENT", "DEVIATIONS"):
        cases = [c[:2] for c in _cases(name)]
        ours = score_batch([c for _, c in cases], [g for g, _ in cases])
        theirs = [float(verify(parse(f"${g}$"), parse(c))) for g, c in cases]
        same = sum(o == t for o, t in zip(ours, theirs))
        print(f"4. {name}: agrees with math-verify on {same}/{len(cases)} = {same / len(cases):.1%}")
        for (g, c), o, t in zip(cases, ours, theirs):
            if o != t:
                print(f"   ours {o:.0f} math-verify {t:.0f}  gold {g!r:28s} {c!r}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--timeout", type=float, default=2.0, help="per-item timeout_s for the hostile corpus")
    ap.add_argument("--n", type=int, default=2000, help="items for the throughput measurements")
    ap.add_argument("--agreement", action="store_true", help="only section 4")
    ap.add_argument("--root", type=Path, default=ROOT, help="checkout to import reference.rewards from")
    a = ap.parse_args()
    sys.path.insert(0, str(a.root.resolve()))
    print(f"python {platform.python_version()} on {platform.machine()}; reference.rewards from {a.root}")
    if a.agreement:
        agreement()
        return
    sys.path.insert(1, str(ROOT / "tests"))
    from reference.rewards import RewardPool, score, score_batch
    from test_rewards import HOSTILE

    comps = [r"so \boxed{\frac{1}{2}}", r"\boxed{0.50}", r"\boxed{46}", r"\boxed{12+34}"] * (a.n // 4)
    golds = ["0.5", "0.5", "46", "46"] * (a.n // 4)
    lazy = RewardPool(workers=1)
    t0 = time.perf_counter()
    assert score_batch(comps, golds, pool=lazy) == [1.0, 1.0, 1.0, 0.0] * (a.n // 4)
    dt = time.perf_counter() - t0
    assert lazy._workers == []  # no worker was needed
    print(f"1. numeric in-process: {len(comps) / dt:,.0f} items/s ({len(comps)} items)")

    pool = RewardPool(workers=1)
    score(r"\boxed{\sqrt{12}}", r"2\sqrt{3}", pool=pool)  # start the worker
    m = max(50, a.n // 10)
    t0 = time.perf_counter()
    got = score_batch([r"\boxed{\sqrt{12}}"] * m, [r"2\sqrt{3}"] * m, pool=pool)
    dt = time.perf_counter() - t0
    assert got == [1.0] * m
    print(f"2. math-verify, 1 warm worker: {1000 * dt / m:.2f} ms/item ({m} items)")

    worst, killed0 = 0.0, pool.n_killed
    print(f"3. hostile corpus, timeout_s = {a.timeout}:")
    for completion, gold in HOSTILE:
        t0 = time.perf_counter()
        s = score(completion, gold, timeout_s=a.timeout, pool=pool)
        dt = time.perf_counter() - t0
        worst = max(worst, dt)
        print(f"   {dt:6.3f} s  score {s}  {repr(completion)[:44]:46s} gold {repr(gold)[:20]}")
    print(f"   worst {worst:.3f} s = {worst / a.timeout:.2f}x the timeout (contract: <= 2x); "
          f"{pool.n_killed - killed0} workers killed")
    pool.close()
    agreement()


if __name__ == "__main__":
    main()
