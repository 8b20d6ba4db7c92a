#!/usr/bin/env bash
# Set up .venv (idempotent) and run the test suite: the README's second command.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
# -n: two pytest-xdist worker processes (EDGEMED_TEST_WORKERS; 0 runs every test in this process). Most tests are
# one thread (a CLI start-up, a one-thread engine), so two workers keep two cores busy. --dist loadfile: all of a
# file's tests go to one worker, so its module fixtures are built once; the conftest orders the files slowest first.
# --durations=15: the 15 slowest tests (setup included) after the run, so a test that grows shows.
.venv/bin/python -m pytest -q -n "${EDGEMED_TEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder \
    --durations=15 "$@"
