#!/usr/bin/env bash
# Pyserini 0.25.0 into a venv (default .venv), with the modules it imports (the [pyserini] extra).
# It runs on the system Java (11+; 17 here). Installed --no-deps: its declared dependencies pin old
# releases and would pull a CUDA build of torch.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.venv}
if ! command -v java >/dev/null; then
  echo "install-pyserini: no java on PATH; Pyserini needs a JDK (11+): skipping it" >&2
  exit 0
fi
"$venv/bin/pip" install -q torch==2.13.0 -e ".[pyserini]"
"$venv/bin/pip" install -q --no-deps pyserini==0.25.0
