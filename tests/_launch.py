"""`accelerate launch` for the 2-process CPU tests, each launch on a free port of its own: two test
runs at once (or a stray process) on accelerate's default port 29500 would meet in one rendezvous."""

import os
from pathlib import Path
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


def run(cmd: list[str], *, timeout: int = 400) -> subprocess.CompletedProcess:
    """Run `cmd` from the repository root, one thread per process, and require exit 0."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    out = subprocess.run(cmd, cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True,
                         timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return out
