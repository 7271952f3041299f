#!/usr/bin/env bash
# Set up (idempotent) and start the service and the UI together: real weights if present, else tiny demo models.
# Extra arguments go to `python -m serving demo`, e.g. `--port 3000 --ui-port 8501`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m serving demo "$@"
