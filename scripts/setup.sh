#!/usr/bin/env bash
# Create .venv (if missing) and install llmcycle with a CPU build of PyTorch. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# A pinned torch first: a looser requirement would pull a multi-GB CUDA build on machines without a GPU.
.venv/bin/python -m pip install -q "torch==${LLMCYCLE_TORCH:-2.13.0}"
.venv/bin/python -m pip install -q -e '.[dev]'
