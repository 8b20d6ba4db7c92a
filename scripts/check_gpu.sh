#!/usr/bin/env bash
# The notebook's scenario on one CUDA GPU (train bf16 LoRA and --qlora, merge, export hf/bnb-int8/bnb-nf4, bench on
# CUDA, the gpu-marked tests), timed, with peak GPU memory: a JSON report in runs/gpu-check/gpu-check.json.
# Works offline on a machine whose Python has its own torch: what edgemed pins and it lacks comes from a folder of
# wheels (--wheels DIR, default ../shared/wheels; how to make it: docs/gpu.md). Without CUDA: exit 2.
#   scripts/check_gpu.sh [--dry-run] [--wheels DIR] [--out DIR] [--model NAME]   (--help for all options)
#   PYTHON   the Python to read and build on (default: the machine's python3; .venv/bin/python with --dry-run)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
  PYTHON=python3
  case " $* " in *" --dry-run "*) [ -x .venv/bin/python ] && PYTHON=.venv/bin/python ;; esac
fi
exec "$PYTHON" scripts/dev/gpu_check.py "$@"
