#!/usr/bin/env bash
# Pyserini 0.25.0 into a venv (default .venv): it runs on the system Java (11+; 17 here). Installed
# --no-deps because its declared dependencies pin old releases (and pull a CUDA torch); these are the
# modules its encode/search packages actually import.
set -euo pipefail
venv=${1:-.venv}
if ! command -v java >/dev/null; then
  echo "install-pyserini: no java on PATH; Pyserini needs a JDK (11+), skipping" >&2
  exit 0
fi
"$venv/bin/pip" install -q --no-deps pyserini==0.25.0
"$venv/bin/pip" install -q torch==2.13.0 faiss-cpu onnxruntime pillow tiktoken 'openai<2'
