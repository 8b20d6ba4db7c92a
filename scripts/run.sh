#!/usr/bin/env bash
# Set up .venv (idempotent) and run the main job on the embedded defaults: the README's first command.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/edgemed pipeline "$@"
