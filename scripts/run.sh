#!/usr/bin/env bash
# Set up .venv (idempotent) and run the main job on the embedded defaults: the README's first command.
# At the end: the pipeline's wall time per step (also in runs/pipeline/pipeline.json, "last_run") and setup's.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
bash scripts/setup.sh
setup_s=$(( $(date +%s) - start ))
rc=0
.venv/bin/edgemed pipeline "$@" || rc=$?
echo "run.sh: setup ${setup_s} s (not a pipeline step); pipeline exit code ${rc}"
exit "$rc"
