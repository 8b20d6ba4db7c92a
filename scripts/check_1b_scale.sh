#!/usr/bin/env bash
# The whole pipeline (train -> merge -> export every installed format -> bench) on llama32-1b-shape
# (Llama 3.2 1B's exact shape, random weights), with wall time, peak RSS of the whole process tree (and of each
# process), disk and result per step, the machine, and a per-format table: runs/scale-1b/report.md and report.json,
# rewritten as each step starts and ends. Exit 1 when the whole-run peak is above --max-rss-gb (default 20) or a
# step failed (the pipeline's own exit code when it failed). The logic is in scripts/dev/scale_check.py.
#
#   usage: scripts/check_1b_scale.sh [--out DIR] [--max-rss-gb GB] [--max-steps N] [--resume] [-- PIPELINE ARGS]
#   e.g.   scripts/check_1b_scale.sh -- --limit 16        (arguments after -- go to edgemed pipeline)
#          scripts/check_1b_scale.sh --resume             (after a kill: finished steps are kept, measurements too)
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python scripts/dev/scale_check.py "$@"
