#!/usr/bin/env bash
# Set up (idempotent) and run every check: lint, format, the whole test suite including slow integration tests.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"` for the quick loop.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/install-browser.sh
.venv/bin/ruff check serving ui tests
.venv/bin/ruff format --check serving ui tests
.venv/bin/python -m pytest "$@"
