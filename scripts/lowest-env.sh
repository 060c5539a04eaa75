#!/usr/bin/env bash
# The quick tier in a second environment, .venv-lowest/, resolved by uv to the lowest versions that setup.cfg
# allows for each direct requirement (--resolution lowest-direct), with the test extras but mteb and bright:
#   bash scripts/lowest-env.sh [pytest options]
# uv is installed into that environment by pip. Its torch is PyPI's (a CUDA build for Linux, about 3 GB of
# downloads, kept in uv's cache). The versions resolved are written to .venv-lowest/versions.txt and compared
# with requirements-lowest.txt, the record of the last check (a difference is reported, not an error:
# dependencies of dependencies move on).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
venv="$repo/.venv-lowest"
if [ ! -x "$venv/bin/uv" ]; then
  rm -rf "$venv"
  python3.11 -m venv "$venv" 2>/dev/null || python3 -m venv "$venv"
  "$venv/bin/pip" install -q uv
fi
stamp="$venv/.installed-$(cat setup.cfg scripts/lowest-env.sh | sha1sum | cut -c1-12)"
if [ ! -e "$stamp" ]; then
  # the test extra less mteb and bright: their pyarrow needs NumPy 2, above the core's floor (their tests skip here)
  "$venv/bin/uv" pip install -q -p "$venv/bin/python" --resolution lowest-direct \
    -e ".[testtools,minilm,cpu,pyserini,train,study]" \
    "setuptools>=68" "wheel>=0.41"  # pyproject.toml's build requirements: a test builds the wheel
  "$venv/bin/uv" pip freeze -p "$venv/bin/python" --exclude-editable | grep -vE '^(uv|pip)==' > "$venv/versions.txt"
  touch "$stamp"
fi
if ! diff -u requirements-lowest.txt "$venv/versions.txt"; then
  echo "lowest-env: the versions resolved differ from requirements-lowest.txt (above)" >&2
fi
if [ -x ../shared/tools/seed-irds-cache ]; then
  ../shared/tools/seed-irds-cache >/dev/null  # offline copy of the datasets; never overwrites
fi
export E2RANK_TESTED_EXTRAS="testtools,minilm,cpu,pyserini,train,study"  # what it installs (test_packaging)
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider -m "not slow" "$@"
