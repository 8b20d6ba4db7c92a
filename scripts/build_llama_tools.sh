#!/usr/bin/env bash
# Build llama.cpp's own llama-imatrix, llama-quantize, llama-bench and llama-perplexity from the llama.cpp sources
# vendored in the llama-cpp-python sdist of the version installed in .venv, with the build options
# llama-cpp-python uses by default (Release, GGML_NATIVE on, OpenMP on, llamafile sgemm on, shared libraries), so
# the tools run the same ggml kernels as edgemed's llama.cpp runtime.
#
# A thin caller of the product's own builder, export/gguf/tools.py (`edgemed export` builds the same tools on
# first use for calibrated GGUF): cached once per machine under ~/.cache/edgemed/llama.cpp/VER-COMPILER-HASH/bin/
# (see export/gguf/tools.py for the key, the stamp and the lock); a second run only prints the paths. stdout is one binary a line: llama-imatrix, llama-quantize, then llama-bench and
# llama-perplexity as the last two lines.
#   JOBS     parallel compile jobs (default 2)
#   FORCE=1  rebuild even when the cached binaries are there
# Needs: .venv from scripts/setup.sh, cmake, a C/C++ compiler; downloads only the sdist (PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python

die() { echo "build_llama_tools: error: $*" >&2; exit 2; }
[ -x "$PY" ] || die "$PY not found; run scripts/setup.sh first"
"$PY" -c 'import edgemed.export.gguf.tools' 2>/dev/null || die "edgemed is not importable from $PY; run scripts/setup.sh"
exec "$PY" -m edgemed.export.gguf.tools --jobs "${JOBS:-2}"  # FORCE=1 is read from the environment
