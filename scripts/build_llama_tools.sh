#!/usr/bin/env bash
# Build llama.cpp's own llama-bench and llama-perplexity from the llama.cpp sources vendored in the
# llama-cpp-python sdist of the version installed in .venv, with the build options llama-cpp-python
# uses by default (Release, GGML_NATIVE on, OpenMP on, llamafile sgemm on, shared libraries), so the
# tools run the same ggml kernels as edgemed's llama.cpp runtime.
#
# Cached under .venv/opt/llama.cpp-VER/ (sdist/, src/, build/); a second run only prints the paths.
# The last two lines of stdout are the binaries: llama-bench, then llama-perplexity.
#   JOBS     parallel compile jobs (default 2)
#   FORCE=1  rebuild even when the cached binaries are there
# Needs: .venv from scripts/setup.sh, cmake >= 3.21, a C/C++ compiler; downloads only the sdist (PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv
PY=$VENV/bin/python
JOBS=${JOBS:-2}

die() { echo "build_llama_tools: error: $*" >&2; exit 2; }
[ -x "$PY" ] || die "$PY not found; run scripts/setup.sh first"
VER=$("$PY" -c 'import llama_cpp; print(llama_cpp.__version__)' 2>/dev/null) \
  || die "llama_cpp is not importable from $PY; run scripts/setup.sh (extra: gguf)"
command -v cmake >/dev/null || die "cmake not found (apt-get install cmake)"

ROOT=$(pwd)/$VENV/opt/llama.cpp-$VER
SRC=$ROOT/src
BUILD=$ROOT/build
BENCH=$BUILD/bin/llama-bench
PPL=$BUILD/bin/llama-perplexity
GENERATOR=()
command -v ninja >/dev/null && GENERATOR=(-G Ninja)
# llama-cpp-python's defaults (its CMakeLists only forces LLAMA_BUILD_COMMON=ON, LLAMA_CURL=OFF and
# BUILD_SHARED_LIBS=On; scikit-build-core builds Release). GGML_NATIVE/OPENMP/LLAMAFILE are llama.cpp's
# defaults, spelled out. LLAMA_CURL is only a deprecated no-op in this llama.cpp; server, app and web UI are
# off because their configure steps can download assets, and OpenSSL because nothing here needs HTTPS.
CMAKE_FLAGS=(
  -DCMAKE_BUILD_TYPE=Release
  -DBUILD_SHARED_LIBS=ON
  -DGGML_NATIVE=ON
  -DGGML_OPENMP=ON
  -DGGML_LLAMAFILE=ON
  -DLLAMA_BUILD_COMMON=ON
  -DLLAMA_BUILD_TESTS=OFF
  -DLLAMA_BUILD_EXAMPLES=OFF
  -DLLAMA_BUILD_TOOLS=ON
  -DLLAMA_BUILD_SERVER=OFF
  -DLLAMA_BUILD_APP=OFF
  -DLLAMA_BUILD_UI=OFF
  -DLLAMA_OPENSSL=OFF
)
STAMP=$ROOT/.built
stamp_text() { printf '%s\n' "$VER" "${CMAKE_FLAGS[@]}"; }

if [ "${FORCE:-0}" != 1 ] && [ -x "$BENCH" ] && [ -x "$PPL" ] && [ -f "$STAMP" ] \
    && [ "$(cat "$STAMP")" = "$(stamp_text)" ]; then
  echo "build_llama_tools: llama.cpp tools of llama-cpp-python $VER are built" >&2
  echo "$BENCH"
  echo "$PPL"
  exit 0
fi

mkdir -p "$ROOT/sdist"
TARBALL=$ROOT/sdist/llama_cpp_python-$VER.tar.gz
if [ ! -f "$TARBALL" ]; then
  echo "build_llama_tools: downloading the llama-cpp-python $VER sdist" >&2
  PIP_DISABLE_PIP_VERSION_CHECK=1 "$PY" -m pip download -q --no-deps --no-binary :all: \
    "llama-cpp-python==$VER" -d "$ROOT/sdist" >&2
  [ -f "$TARBALL" ] || die "pip download did not produce $TARBALL"
fi
if [ ! -f "$SRC/vendor/llama.cpp/CMakeLists.txt" ]; then
  rm -rf "$SRC" "$SRC.tmp"
  mkdir -p "$SRC.tmp"
  tar -xzf "$TARBALL" -C "$SRC.tmp" --strip-components=1
  [ -f "$SRC.tmp/vendor/llama.cpp/tools/llama-bench/llama-bench.cpp" ] \
    || die "$TARBALL has no vendor/llama.cpp/tools/llama-bench"
  mv "$SRC.tmp" "$SRC"
fi

start=$(date +%s)
rm -f "$STAMP"
# FORCE=1 starts from an empty build folder (a changed generator or flag set cannot reuse it in place).
if [ -f "$BUILD/CMakeCache.txt" ] && [ "${FORCE:-0}" = 1 ]; then rm -rf "$BUILD"; fi
echo "build_llama_tools: configuring llama.cpp ($VER) in $BUILD" >&2
# SOURCE_DATE_EPOCH would turn GGML_NATIVE's default off; it is set explicitly, but keep the env clean anyway.
env -u SOURCE_DATE_EPOCH cmake -S "$SRC/vendor/llama.cpp" -B "$BUILD" "${GENERATOR[@]}" "${CMAKE_FLAGS[@]}" >&2
echo "build_llama_tools: building llama-bench llama-perplexity with -j $JOBS" >&2
cmake --build "$BUILD" --target llama-bench llama-perplexity -j "$JOBS" >&2
[ -x "$BENCH" ] && [ -x "$PPL" ] || die "build finished but $BENCH or $PPL is missing"
"$BENCH" --help >/dev/null || die "$BENCH does not run"
"$PPL" --help >/dev/null || die "$PPL does not run"
stamp_text > "$STAMP"
echo "build_llama_tools: built in $(( $(date +%s) - start ))s" >&2
echo "$BENCH"
echo "$PPL"
