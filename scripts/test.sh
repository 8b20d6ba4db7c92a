#!/usr/bin/env bash
# Set up .venv (idempotent) and run the test suite: the README's second command.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
# --durations=15: the 15 slowest tests (setup included) after the run, so a test that grows shows.
.venv/bin/python -m pytest -q --durations=15 "$@"
