#!/usr/bin/env bash
# One entry point for a fresh machine: creates .venv/ if missing, installs the package with its test
# extras, seeds the ir_datasets cache from ../shared when it is there, then runs what is asked:
#   bash scripts/run.sh experiment [e2rank experiment options]   # the SciFact experiment (all-minilm-l6-v2)
#   bash scripts/run.sh test [pytest options]                    # the test suite
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
venv="$repo/.venv"
if [ ! -x "$venv/bin/python" ]; then
  python3.11 -m venv "$venv" 2>/dev/null || python3 -m venv "$venv"
fi
inputs="setup.cfg pyproject.toml pyterrier_e2rank/__init__.py scripts/*.sh"
stamp="$venv/.installed-$(cat $inputs | sha1sum | cut -c1-12)"
if [ ! -e "$stamp" ]; then
  # torch is named here so that pip takes the local CPU build instead of a multi-GB CUDA one
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q torch==2.13.0 -e ".[test]"
  if [ -x scripts/install-pyserini.sh ]; then bash scripts/install-pyserini.sh "$venv"; fi
  touch "$stamp"
fi
if [ -x ../shared/tools/seed-irds-cache ]; then
  ../shared/tools/seed-irds-cache >/dev/null  # offline copy of the datasets; never overwrites
fi
command=${1:-test}
shift || true
case "$command" in
  experiment)
    exec "$venv/bin/e2rank" experiment --dataset irds:beir/scifact/test --model all-minilm-l6-v2 \
      --output runs/scifact-minilm.json "$@" ;;
  test)
    exec "$venv/bin/python" -m pytest -q "$@" ;;
  *)
    echo "usage: bash scripts/run.sh {experiment|test} [options]" >&2; exit 2 ;;
esac
