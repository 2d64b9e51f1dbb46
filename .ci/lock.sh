#!/usr/bin/env bash
# Regenerate constraints.txt: resolve gga-serve with every extra in a fresh virtual environment and
# pin what it installed (torch excepted: it is pinned on its own, from the CPU or a CUDA index).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=$(mktemp -d)/venv
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
"$VENV/bin/pip" install --quiet torch==2.13.0
"$VENV/bin/pip" install --quiet -e '.[dev]'
# Pinned here, installed without its declared torchvision everywhere (see pyproject's [import]).
"$VENV/bin/pip" install --quiet --no-deps onnx2torch
{
  echo "# Pinned versions of every package gga-serve and its extras install (torch excepted: it is"
  echo "# pinned on its own, from the CPU or a CUDA index). CI and the Docker image install with"
  echo "# \`pip install -c constraints.txt ...\`, so both resolve the same versions."
  echo "# Regenerate after changing pyproject.toml: .ci/lock.sh"
  "$VENV/bin/pip" freeze --exclude-editable | grep -viE '^(torch|torchattacks)=='
} > constraints.txt
rm -rf "$(dirname "$VENV")"
echo "constraints.txt: $(grep -vc '^#' constraints.txt) packages pinned"
