#!/usr/bin/env bash
# Set up .venv (idempotent) and run the test suite: the README's second command.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/python -m pytest -q "$@"
