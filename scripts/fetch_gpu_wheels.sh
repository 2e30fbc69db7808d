#!/usr/bin/env bash
# Wheels to carry to an offline GPU machine whose Python already has torch 2.11 + transformers 5.17
# (and so numpy, sympy, tokenizers, safetensors, jinja2, huggingface_hub, pyyaml, psutil, packaging).
# All pure-python ("py3-none-any"), so one download serves any CPU arch / Python >= 3.11.
#
#   bash scripts/fetch_gpu_wheels.sh [DIR]          # default DIR: build/gpu-wheels (prints the total size)
#   # on the GPU machine:
#   pip install --no-index --no-deps DIR/*.whl
#
# What each is for:
#   math-verify, latex2sympy2_extended, antlr4-python3-runtime  rewards (reference/rewards.py)
#   accelerate                                                    multi-GPU launch (reference/engines.py)
#   peft                                                          LoRA option for teacher RL
#   trl                                                           only if you run TRL's trainers there; its
#                                                                 datasets/pandas/pyarrow deps are NOT carried
#                                                                 (pyarrow alone is ~40 MB): reference/ does not
#                                                                 import trl, and scripts/gpu_check.py needs none
#                                                                 of these wheels (it checks math-verify if present).
# No --deps: the GPU image already has the rest; a missing one shows as an ImportError naming it.
set -euo pipefail
DIR="${1:-build/gpu-wheels}"
PIP="${PIP:-python -m pip}"
mkdir -p "$DIR"
$PIP download --no-deps --only-binary=:all: --dest "$DIR" \
    "math-verify==0.9.0" \
    "latex2sympy2_extended==1.11.0" \
    "antlr4-python3-runtime==4.13.2" \
    "accelerate==1.15.0" \
    "peft==0.21.2" \
    "trl==1.16.0"
ls -l "$DIR"/*.whl
total=$(du -cb "$DIR"/*.whl | tail -1 | cut -f1)
echo "total: $total bytes ($(( total / 1024 / 1024 )) MiB; limit 64 MiB)"
if [ "$total" -gt $(( 64 * 1024 * 1024 )) ]; then echo "error: wheels exceed 64 MiB" >&2; exit 1; fi
