"""`accelerate launch` for the 2-process CPU tests, each launch on a free port of its own: two test
runs at once (or a stray process) on accelerate's default port 29500 would meet in one rendezvous."""

import os
from pathlib import Path
import re
import signal
from shutil import which
import socket
import subprocess
import sys

ACCELERATE = which("accelerate") or str(Path(sys.executable).parent / "accelerate")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerate_launch(*args: str) -> list[str]:
    """The command line `accelerate launch --main_process_port <free> *args`."""
    return [ACCELERATE, "launch", "--main_process_port", str(free_port()), *args]


def failed_ranks(stderr: str) -> list[str]:
    """'rank R exit C (SIGNAME)' for each failure torchrun's error summary lists (accelerate launch)."""
    out = []
    # torchrun's summary entries: "rank : R (local_rank: R)" then "exitcode : C" on their own lines (the
    # log line "failed (exitcode: -6) local_rank: 0" above them is not an entry)
    for rank, code in re.findall(r"^\s*rank\s*:\s*(\d+).*?^\s*exitcode\s*:\s*(-?\d+)", stderr, flags=re.S | re.M):
        code = int(code)
        name = f" ({signal.Signals(-code).name})" if code < 0 and -code in signal.valid_signals() else ""
        out.append(f"rank {rank} exit {code}{name}")
    return out


def run(cmd: list[str], *, timeout: int = 400) -> subprocess.CompletedProcess:
    """Run `cmd` from the repository root and require exit 0; a failure names the failed ranks and signals.

    One thread per process unless the caller's environment sets OMP_NUM_THREADS (the CI issue's runs
    at 1 and 2 threads set it)."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "TOKENIZERS_PARALLELISM": "false"}
    out = subprocess.run(cmd, cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True,
                         timeout=timeout)
    if out.returncode != 0:
        ranks = "; ".join(failed_ranks(out.stderr)) or "no rank summary (not launched, or killed before it)"
        raise AssertionError(f"{Path(cmd[0]).name} exited {out.returncode}: {ranks}\n{out.stderr[-3000:]}")
    return out
