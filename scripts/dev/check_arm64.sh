#!/usr/bin/env bash
# Raspberry-class proof under emulation. NOT part of CI: it needs root and qemu-user. The first run
# builds the rootfs (4 min here) and two llama.cpp wheels (10-18 min each); later runs take the eval/bench time
# only: 87 min on this 2-core Xeon with THREADS=1, 62 of them the 50 gated f16 questions (see docs/measurements.md).
#
# 1. arm64 Debian rootfs (mmdebstrap, minimal: python3, python3-venv, libgomp1), cached.
# 2. llama-cpp-python (the version in .venv) cross-compiled on the host for aarch64 with GGML_NATIVE=OFF (cached):
#    - the BOARD build, GGML_CPU_ARM_ARCH for the board (-mcpu=native would read the host's x86 CPU);
#    - the GATE build (GATE_ARCH, default armv8-a: no FP16 vector arithmetic). With FP16 vector arithmetic
#      (the rpi5 build) ggml computes f16 matmuls in fp16 (llamafile sgemm's float16x8_t accumulators,
#      ggml_vec_dot_f16), which is other arithmetic than the host's f32 accumulation, and qemu emulates fp16
#      in software: about 250 s per question here against 73 s for the armv8-a build.
# 3. arm64 venvs in the rootfs with the edgemed wheel and ONLY its `gguf` extra (pip inside the rootfs, offline,
#    from a wheelhouse the host's pip fetched for aarch64), one per build.
# 4. inside the rootfs under qemu-user (QEMU_CPU = the board's core): `edgemed info`; `edgemed eval` of gguf-f16
#    with the gate build (LIMIT questions) and of the quantized GGUFs with the board build (QUANT_LIMIT);
#    `edgemed bench --profile BOARD` of the quantized GGUFs with the board build.
# 5. the host's `edgemed eval` of the same GGUF files on the same questions; the letter predictions and letter
#    log-probs compared; beside them the host's own floor: the same file and questions on the host with
#    llama.cpp's flash attention off instead of on (another valid kernel); OUT/report.json and report.md.
# The gate is on gguf-f16: quantized GGUFs quantize the activations to 8 bits per block, so on this model (near
# ties between letters) any rounding change upstream flips answers, on the host alone as much as across
# platforms; their agreement is reported beside that floor and flagged only when clearly below it.
# Exit 0 only when info, eval and bench exit 0 inside the rootfs, every gguf-f16 artifact's arm64 answers agree
# with the host's on at least MIN_AGREEMENT of the questions, and no quantized file is clearly below its host
# floor. Timings measured under emulation are not board numbers and are labelled so wherever this script writes them.
#
#   usage: sudo scripts/dev/check_arm64.sh [GGUF_ARTIFACT ...]
#          (default: runs/pipeline/artifacts/gguf-f16, gguf-q8_0 and gguf-q4_k_m; exported from the embedded
#          SmolLM2-135M with the host's edgemed when missing)
#   env:   ARM_BOARD      rpi5 (default: Cortex-A76, armv8.2-a+dotprod+fp16) | rpi4 (Cortex-A72, armv8-a)
#          ARM_ARCH       override GGML_CPU_ARM_ARCH (-march) of the board build; QEMU_CPU: the emulated core
#          GATE_ARCH      GGML_CPU_ARM_ARCH of the build that runs the gated f16 comparison (default armv8-a;
#                         the same as ARM_ARCH: one build for everything)
#          THREADS        threads of every edgemed command, arm64 and host (default 2)
#          BENCH_PROFILE  profile for `edgemed bench --profile` (default: the board)
#          EDGEMED_ARM64_CACHE  cache folder (default ~/.cache/edgemed-arm64)
#          OUT            output folder (default runs/arm64-BOARD)
#          DATA, SPLIT    questions of the eval comparison (default: ../shared/data/medmcqa/validation.jsonl,
#                         real MedMCQA questions the pipeline never trained on, when present, else edgemed's
#                         default data; SPLIT passed on only when set); the first questions of the file are used
#          LIMIT          gguf-f16 questions, the gated comparison (default 50)
#          QUANT_LIMIT    questions of each quantized GGUF (default 20)
#          BOARD_F16_LIMIT  questions of gguf-f16 with the BOARD build too (default 0: off; reported, not gated;
#                         about 250 s per question here under emulation)
#          BENCH_LIMIT    questions of the bench's accuracy/fidelity pass (default 2)
#          MIN_AGREEMENT  default 0.98; DEBIAN_SUITE default stable; DEBIAN_MIRROR default: apt's own
#          JOBS           compile jobs (default 2); FORCE=rootfs,wheel,venv rebuilds those cached steps (both builds)
# Needs (Debian host, root): apt-get install mmdebstrap qemu-user-static binfmt-support crossbuild-essential-arm64
set -euo pipefail
cd "$(dirname "$0")/../.."  # the repo root (this script is scripts/dev/)
REPO=$(pwd)
PY=$REPO/.venv/bin/python
HOST_EDGEMED=$REPO/.venv/bin/edgemed
export PIP_DISABLE_PIP_VERSION_CHECK=1

die() { echo "check_arm64: error: $*" >&2; exit 2; }
say() { echo "check_arm64: $*"; }

# ---------------------------------------------------------------------------------------------- settings
ARM_BOARD=${ARM_BOARD:-rpi5}
case "$ARM_BOARD" in
  rpi5) BOARD_ARCH=armv8.2-a+dotprod+fp16; BOARD_CPU=cortex-a76; BOARD_PROFILE=rpi5;;
  rpi4) BOARD_ARCH=armv8-a; BOARD_CPU=cortex-a72; BOARD_PROFILE=rpi4;;
  *) die "ARM_BOARD=$ARM_BOARD: known boards are rpi5 and rpi4 (set ARM_ARCH and QEMU_CPU for others)";;
esac
ARM_ARCH=${ARM_ARCH:-$BOARD_ARCH}
export QEMU_CPU=${QEMU_CPU:-$BOARD_CPU}
BENCH_PROFILE=${BENCH_PROFILE:-$BOARD_PROFILE}
CACHE=${EDGEMED_ARM64_CACHE:-$HOME/.cache/edgemed-arm64}
OUT=${OUT:-runs/arm64-$ARM_BOARD}
MIN_AGREEMENT=${MIN_AGREEMENT:-0.98}
SUITE=${DEBIAN_SUITE:-stable}
GATE_ARCH=${GATE_ARCH:-armv8-a}
JOBS=${JOBS:-2}
THREADS=${THREADS:-2}
FORCE=${FORCE:-}
LIMIT=${LIMIT:-50}
QUANT_LIMIT=${QUANT_LIMIT:-20}
BOARD_F16_LIMIT=${BOARD_F16_LIMIT:-0}
BENCH_LIMIT=${BENCH_LIMIT:-2}
EMULATED="emulated (qemu-user), not board numbers"
if [ -z "${DATA:-}" ]; then
  if [ -f "$REPO/../shared/data/medmcqa/validation.jsonl" ]; then
    DATA=$(cd "$REPO/../shared/data/medmcqa" && pwd)/validation.jsonl
  else
    DATA=sample
  fi
fi
SPLIT=${SPLIT:-}  # passed on only when set (edgemed's default: the recorded evaluation side)
SPLIT_ARGS=(); [ -z "$SPLIT" ] || SPLIT_ARGS=(--split "$SPLIT")
forced() { case ",$FORCE," in *",$1,"*) return 0;; *) return 1;; esac; }

[ "$(id -u)" = 0 ] || die "needs root (mmdebstrap, chroot, bind mounts)"
[ -x "$PY" ] || die "$PY not found; run scripts/setup.sh first"
for tool in mmdebstrap aarch64-linux-gnu-gcc aarch64-linux-gnu-g++ cmake; do
  command -v "$tool" >/dev/null || die "$tool not found: apt-get install mmdebstrap qemu-user-static binfmt-support crossbuild-essential-arm64 cmake"
done
LLAMA_VER=$("$PY" -c 'import llama_cpp; print(llama_cpp.__version__)' 2>/dev/null) \
  || die "llama_cpp is not importable from $PY (extra: gguf)"
case "$DATA" in sample) ;; *) [ -e "$DATA" ] || die "DATA=$DATA does not exist";; esac
for v in THREADS LIMIT QUANT_LIMIT BOARD_F16_LIMIT BENCH_LIMIT JOBS; do
  [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v=${!v}: a whole number is expected"
done
[ "$THREADS" -ge 1 ] && [ "$LIMIT" -ge 1 ] && [ "$QUANT_LIMIT" -ge 1 ] || die "THREADS, LIMIT and QUANT_LIMIT must be at least 1"

mkdir -p "$CACHE" "$OUT"
OUT=$(cd "$OUT" && pwd)
ROOTFS=$CACHE/rootfs-arm64-$SUITE
slug() { echo "$1" | tr '+.' '__'; }
VENV_IN=/opt/edgemed-$ARM_BOARD                 # the board build's venv, as seen inside the rootfs
GATE_VENV_IN=$VENV_IN                           # the gate build's (the same when GATE_ARCH = ARM_ARCH)
[ "$GATE_ARCH" = "$ARM_ARCH" ] || GATE_VENV_IN=/opt/edgemed-$(slug "$GATE_ARCH")
STEPS=$OUT/steps.tsv
: > "$STEPS"

# Every step prints what it does and how long it took; a cached step says so and when it was built (its
# stamp holds the seconds it took then).
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
STEP_T0=0
begin() { STEP=$1; STEP_T0=$(now); say "[$STEP] $2"; }
done_step() {  # done_step STATUS NOTE
  local s; s=$(secs "$STEP_T0" "$(now)")
  printf '%s\t%s\t%s\t%s\n' "$STEP" "$1" "$s" "${2:-}" >> "$STEPS"
  say "[$STEP] $1 in ${s} s${2:+ ($2)}"
}
cached() {  # cached STAMP [FORCE_NAME]: prints the step as skipped, with the original build time
  local built; built=$(sed -n 's/^seconds=//p' "$1" | head -1)
  printf '%s\t%s\t%s\t%s\n' "$STEP" "cached" "0" "built in ${built:-?} s on $(date -r "$1" '+%F %T')" >> "$STEPS"
  say "[$STEP] cached: skipped (built in ${built:-?} s on $(date -r "$1" '+%F %T'); FORCE=${2:-$STEP} rebuilds)"
}

# ------------------------------------------------------------------------------------------------- mounts
MOUNTS=()
cleanup() {
  local i
  for (( i=${#MOUNTS[@]}-1; i>=0; i-- )); do umount -l "${MOUNTS[$i]}" 2>/dev/null || true; done
  MOUNTS=()
}
trap cleanup EXIT
bind() {  # bind SRC DEST_IN_ROOTFS [ro]
  mkdir -p "$ROOTFS$2"
  mount --bind "$1" "$ROOTFS$2"
  MOUNTS+=("$ROOTFS$2")
  [ "${3:-}" != ro ] || mount -o remount,bind,ro "$ROOTFS$2"
}
mounted_under() { findmnt -rn -o TARGET | grep -q "^$1"; }
in_arm64() {  # a command inside the rootfs under qemu-user, with a clean environment
  chroot "$ROOTFS" /usr/bin/env -i PATH="$VENV_IN/bin:/usr/bin:/bin" HOME=/root LANG=C.UTF-8 \
    QEMU_CPU="$QEMU_CPU" OMP_WAIT_POLICY=PASSIVE "$@"
}

# --------------------------------------------------------------------------------- 0. binfmt for aarch64
begin binfmt "qemu-user for aarch64 binaries (binfmt_misc)"
[ -e /proc/sys/fs/binfmt_misc/status ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc \
  || die "cannot mount binfmt_misc"
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
  command -v update-binfmts >/dev/null || die "update-binfmts not found: apt-get install binfmt-support qemu-user-static"
  update-binfmts --enable qemu-aarch64 || die "update-binfmts --enable qemu-aarch64 failed"
fi
grep -q enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 || die "binfmt qemu-aarch64 is registered but disabled"
QEMU_VERSION=$(qemu-aarch64-static --version 2>/dev/null | head -1 || echo unknown)
done_step ran "$QEMU_VERSION, QEMU_CPU=$QEMU_CPU"

# ------------------------------------------------------------------------------------------ 1. rootfs
begin rootfs "arm64 Debian $SUITE rootfs (mmdebstrap --variant=apt: python3 python3-venv libgomp1) in $ROOTFS"
if [ -z "${DEBIAN_MIRROR:-}" ]; then
  DEBIAN_MIRROR=$( { grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}';
                     grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{print $2}'; } \
                   | grep -E '/debian/?$' | head -1 || true)
  DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
fi
if forced rootfs || [ ! -f "$ROOTFS/.edgemed-built" ]; then
  mounted_under "$ROOTFS/" && die "something is still mounted under $ROOTFS; umount it first"
  rm -rf --one-file-system "$ROOTFS" "$ROOTFS.tmp"
  nice -n 19 mmdebstrap --variant=apt --arch=arm64 --include=python3,python3-venv,libgomp1 \
    "$SUITE" "$ROOTFS.tmp" "$DEBIAN_MIRROR"
  mv "$ROOTFS.tmp" "$ROOTFS"
  s=$(secs "$STEP_T0" "$(now)")
  printf 'seconds=%s\nsuite=%s\nmirror=%s\n' "$s" "$SUITE" "$DEBIAN_MIRROR" > "$ROOTFS/.edgemed-built"
  done_step ran "$(du -sh --one-file-system "$ROOTFS" | cut -f1), mirror $DEBIAN_MIRROR"
else
  cached "$ROOTFS/.edgemed-built"
fi
# /proc, /sys and /dev for everything that runs inside (psutil, edgemed's sysinfo, llama.cpp); unmounted on exit.
bind /proc /proc
bind /sys /sys ro
bind /dev /dev
PYVER=$(in_arm64 python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
GLIBC=$(in_arm64 python3 -c 'import platform; print(platform.libc_ver()[1])')
say "rootfs: Python $PYVER, glibc $GLIBC, $(in_arm64 uname -m) (uname under qemu-user)"

# ------------------------------------------------------------------------- 2. llama-cpp-python for aarch64
cat_toolchain() {
  cat <<'EOF'
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
EOF
}
build_wheel() {  # build_wheel STEP ARCH WHY: cross-compiles (or finds cached) the wheel; sets WHL
  local step=$1 arch=$2 dir args s
  dir=$CACHE/llama-cpp-python-$LLAMA_VER-$(slug "$arch")
  begin "$step" "llama-cpp-python $LLAMA_VER cross-compiled for aarch64, GGML_CPU_ARM_ARCH=$arch (GGML_NATIVE=OFF; $3)"
  args="-DCMAKE_TOOLCHAIN_FILE=$dir/aarch64-linux-gnu.cmake -DGGML_NATIVE=OFF -DGGML_CPU_ARM_ARCH=$arch"
  if forced wheel || [ ! -f "$dir/.edgemed-built" ] || ! ls "$dir"/llama_cpp_python-*linux_aarch64.whl >/dev/null 2>&1; then
    mkdir -p "$dir" "$CACHE/sdist"
    rm -f "$dir"/*.whl "$dir/.edgemed-built"
    SDIST=$REPO/.venv/opt/llama.cpp-$LLAMA_VER/sdist/llama_cpp_python-$LLAMA_VER.tar.gz  # build_llama_tools.sh's copy
    if [ ! -f "$SDIST" ]; then
      SDIST=$CACHE/sdist/llama_cpp_python-$LLAMA_VER.tar.gz
      [ -f "$SDIST" ] || "$PY" -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$LLAMA_VER" -d "$CACHE/sdist"
      [ -f "$SDIST" ] || die "pip download did not produce $SDIST"
    fi
    cat_toolchain > "$dir/aarch64-linux-gnu.cmake"
    # _PYTHON_HOST_PLATFORM makes the wheel's platform tag linux_aarch64 (llama-cpp-python is ctypes, py3-none).
    _PYTHON_HOST_PLATFORM=linux-aarch64 CMAKE_ARGS="$args" CMAKE_BUILD_PARALLEL_LEVEL=$JOBS \
      nice -n 19 "$PY" -m pip wheel --no-deps --no-binary llama-cpp-python \
        -C "build-dir=$dir/build" -w "$dir" "$SDIST" \
        > "$dir/build.log" 2>&1 || { tail -40 "$dir/build.log"; die "cross-compile failed (log: $dir/build.log)"; }
    WHL=$(ls "$dir"/llama_cpp_python-*linux_aarch64.whl 2>/dev/null | head -1)
    [ -n "$WHL" ] || die "no linux_aarch64 wheel in $dir (log: $dir/build.log)"
    s=$(secs "$STEP_T0" "$(now)")
    printf 'seconds=%s\ncmake_args=%s\nsdist=%s\n' "$s" "$args" "$SDIST" > "$dir/.edgemed-built"
    done_step ran "$(basename "$WHL"), $(du -h "$WHL" | cut -f1)"
  else
    cached "$dir/.edgemed-built" wheel
  fi
  WHL=$(ls "$dir"/llama_cpp_python-*linux_aarch64.whl | head -1)
}
build_wheel wheel "$ARM_ARCH" "the $ARM_BOARD build: info, quantized evals, bench"
BOARD_WHL=$WHL
GATE_WHL=$BOARD_WHL
if [ "$GATE_ARCH" != "$ARM_ARCH" ]; then
  build_wheel wheel-gate "$GATE_ARCH" "the gate build: gguf-f16 with f32 accumulation"
  GATE_WHL=$WHL
fi

# ------------------------------------------------------------------------------ 3. arm64 venvs, edgemed[gguf]
begin wheelhouse "aarch64 wheelhouse for 'edgemed[gguf]' (the host's pip, for the rootfs's Python)"
DIST=$CACHE/dist
rm -rf "$DIST"; mkdir -p "$DIST"
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$DIST" "$REPO" > "$DIST/build.log" 2>&1 \
  || { cat "$DIST/build.log"; die "building the edgemed wheel failed"; }
EDGEMED_WHL=$(ls "$DIST"/edgemed-*.whl | head -1)
WHEELHOUSE=$CACHE/wheelhouse-cp${PYVER/./}
rm -rf "$WHEELHOUSE"; mkdir -p "$WHEELHOUSE"
cp -f "$BOARD_WHL" "$EDGEMED_WHL" "$WHEELHOUSE/"
# Wheels for aarch64 Linux that the rootfs's glibc runs: manylinux_2_17 .. manylinux_2_<glibc minor>.
PLATFORMS=(--platform linux_aarch64 --platform manylinux2014_aarch64)
for (( m=17; m<=${GLIBC#2.}; m++ )); do PLATFORMS+=(--platform "manylinux_2_${m}_aarch64"); done
CONSTRAINTS=()
[ -f "$REPO/constraints/cpu.txt" ] && CONSTRAINTS=(-c "$REPO/constraints/cpu.txt")
"$PY" -m pip download -q --only-binary=:all: "${PLATFORMS[@]}" --python-version "$PYVER" --implementation cp \
  --abi "cp${PYVER/./}" --find-links "$WHEELHOUSE" "${CONSTRAINTS[@]}" -d "$WHEELHOUSE" \
  "$WHEELHOUSE/$(basename "$EDGEMED_WHL")[gguf]" 2> >(grep -v 'is ignored: it is neither' >&2) \
  || die "pip download of edgemed[gguf]'s aarch64 dependencies failed"
# The gate build's wheelhouse: the same wheels, its own llama-cpp-python.
GATE_WHEELHOUSE=$WHEELHOUSE
if [ "$GATE_WHL" != "$BOARD_WHL" ]; then
  GATE_WHEELHOUSE=$WHEELHOUSE-$(slug "$GATE_ARCH")
  rm -rf "$GATE_WHEELHOUSE"; mkdir -p "$GATE_WHEELHOUSE"
  for w in "$WHEELHOUSE"/*.whl; do
    case "$(basename "$w")" in llama_cpp_python-*) ;; *) cp -f "$w" "$GATE_WHEELHOUSE/";; esac
  done
  cp -f "$GATE_WHL" "$GATE_WHEELHOUSE/"
fi
done_step ran "$(ls "$WHEELHOUSE" | wc -l) wheels"

make_venv() {  # make_venv STEP VENV_IN WHEELHOUSE MOUNT: a venv is rebuilt when its dependencies change (the
  # llama-cpp-python wheel, the other wheels' names); the edgemed wheel of this working tree is reinstalled every run.
  local step=$1 venv_in=$2 house=$3 mnt=$4 venv key status s
  venv=$ROOTFS$venv_in
  begin "$step" "arm64 venv $venv_in in the rootfs: pip install 'edgemed[gguf]' (offline, from $(basename "$house"))"
  key=$( { sha256sum "$house"/llama_cpp_python-*.whl | cut -c1-64; ls "$house" | grep -v '^edgemed-'; } | sha256sum | cut -c1-16)
  bind "$house" "$mnt" ro
  if forced venv || [ "$(cat "$venv/.edgemed-key" 2>/dev/null)" != "$key" ]; then
    rm -rf --one-file-system "$venv"
    in_arm64 python3 -m venv "$venv_in"
    in_arm64 "$venv_in/bin/python" -m pip install -q --no-index --find-links "$mnt" \
      "$mnt/$(basename "$EDGEMED_WHL")[gguf]" || die "pip install 'edgemed[gguf]' in $venv_in failed"
    echo "$key" > "$venv/.edgemed-key"
    s=$(secs "$STEP_T0" "$(now)"); printf 'seconds=%s\n' "$s" > "$venv/.edgemed-built"
    status=ran
  else
    in_arm64 "$venv_in/bin/python" -m pip install -q --no-index --no-deps --force-reinstall \
      "$mnt/$(basename "$EDGEMED_WHL")" || die "reinstalling the edgemed wheel in $venv_in failed"
    status="ran (dependencies cached, built in $(sed -n 's/^seconds=//p' "$venv/.edgemed-built") s; edgemed reinstalled)"
  fi
  in_arm64 "$venv_in/bin/python" -m pip list --format=freeze > "$OUT/arm64-pip-freeze-$step.txt" 2>/dev/null
  done_step "$status" "$(tr '\n' ' ' < "$OUT/arm64-pip-freeze-$step.txt")"
  for banned in torch transformers optimum onnxruntime; do
    [ -z "$(ls -d "$venv"/lib/python*/site-packages/"$banned" 2>/dev/null)" ] || die "$banned is installed in the gguf-only venv $venv_in"
  done
}
make_venv venv "$VENV_IN" "$WHEELHOUSE" /mnt/wheelhouse
[ "$GATE_VENV_IN" = "$VENV_IN" ] || make_venv venv-gate "$GATE_VENV_IN" "$GATE_WHEELHOUSE" /mnt/wheelhouse-gate

# ------------------------------------------------------------------------------------------ 4. artifacts
begin artifacts "GGUF artifacts exported on the host"
ARTIFACTS=("$@")
if [ ${#ARTIFACTS[@]} = 0 ]; then
  FORMATS=(gguf-f16 gguf-q8_0 gguf-q4_k_m)
  ARTIFACTS=(); missing=0
  for f in "${FORMATS[@]}"; do
    ARTIFACTS+=("runs/pipeline/artifacts/$f"); [ -f "runs/pipeline/artifacts/$f/edgemed.json" ] || missing=1
  done
  if [ "$missing" = 1 ]; then
    MERGED=$("$PY" -c 'from edgemed.models import resolve_model; print(resolve_model("smollm2-135m"))')
    EXPORTS=$CACHE/exports-smollm2-135m
    ARTIFACTS=(); missing=0
    for f in "${FORMATS[@]}"; do
      ARTIFACTS+=("$EXPORTS/$f"); [ -f "$EXPORTS/$f/edgemed.json" ] || missing=1
    done
    if [ "$missing" = 1 ]; then
      say "[artifacts] runs/pipeline has not all of ${FORMATS[*]}: edgemed export $MERGED --formats $(IFS=,; echo "${FORMATS[*]}")"
      "$HOST_EDGEMED" export "$MERGED" --formats "$(IFS=,; echo "${FORMATS[*]}")" --out "$EXPORTS" --threads "$THREADS" \
        || die "edgemed export failed"
    fi
  fi
fi
NAMES=(); declare -A FORMAT
for a in "${ARTIFACTS[@]}"; do
  [ -f "$a/edgemed.json" ] || die "$a is not an artifact folder (no edgemed.json)"
  name=$(basename "$a")
  NAMES+=("$name")
  FORMAT[$name]=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1])).get("format", ""))' "$a/edgemed.json")
  case "${FORMAT[$name]}" in gguf-*) ;; *) die "$a is ${FORMAT[$name]:-of no format}, not a GGUF artifact";; esac
done
[ "${#NAMES[@]}" = "$(printf '%s\n' "${NAMES[@]}" | sort -u | wc -l)" ] || die "artifact folder names must differ: ${NAMES[*]}"
done_step ran "${ARTIFACTS[*]}"

# The arm64 evals: label|artifact|venv|questions|role. gate: gguf-f16 with the gate build, gated by MIN_AGREEMENT;
# floor: a quantized file with the board build, judged against the host's own floor; board-f16: gguf-f16 with
# the board build's fp16 arithmetic (BOARD_F16_LIMIT > 0), reported beside the gate, not gated.
RUNS=(); BENCH_NAMES=()
declare -A HOST_LIMIT
for name in "${NAMES[@]}"; do
  if [ "${FORMAT[$name]}" = gguf-f16 ]; then
    RUNS+=("$name|$name|$GATE_VENV_IN|$LIMIT|gate"); HOST_LIMIT[$name]=$LIMIT
    if [ "$BOARD_F16_LIMIT" -gt 0 ]; then
      RUNS+=("$name@$ARM_BOARD|$name|$VENV_IN|$BOARD_F16_LIMIT|board-f16")
      [ "$BOARD_F16_LIMIT" -le "$LIMIT" ] || HOST_LIMIT[$name]=$BOARD_F16_LIMIT
    fi
  else
    RUNS+=("$name|$name|$VENV_IN|$QUANT_LIMIT|floor"); HOST_LIMIT[$name]=$QUANT_LIMIT; BENCH_NAMES+=("$name")
  fi
done
# The bench runs the quantized files with the board build (f16 with fp16 arithmetic is ~250 s per question
# under emulation); only f16 given: f16 it is.
[ ${#BENCH_NAMES[@]} -gt 0 ] || BENCH_NAMES=("${NAMES[@]}")

# --------------------------------------------------------------------------- 5. edgemed inside the rootfs
rm -rf "$OUT/arm64" "$OUT/host"; mkdir -p "$OUT/arm64" "$OUT/host"
for i in "${!ARTIFACTS[@]}"; do bind "$(cd "${ARTIFACTS[$i]}" && pwd)" "/mnt/artifacts/${NAMES[$i]}" ro; done
bind "$OUT/arm64" /mnt/out
DATA_IN=$DATA
if [ "$DATA" != sample ]; then bind "$(dirname "$(readlink -f "$DATA")")" /mnt/data ro; DATA_IN=/mnt/data/$(basename "$DATA"); fi
declare -A RC

begin info "arm64: edgemed info"
set +e; in_arm64 "$VENV_IN/bin/edgemed" info > "$OUT/arm64/info.txt" 2>&1; RC[info]=$?; set -e
cat "$OUT/arm64/info.txt"
done_step "exit ${RC[info]}" "$EMULATED"

for run in "${RUNS[@]}"; do
  IFS='|' read -r label name venv_in n role <<< "$run"
  build=$ARM_ARCH; [ "$venv_in" = "$VENV_IN" ] || build=$GATE_ARCH
  begin "eval-arm64-$label" "arm64 ($role, build $build): edgemed eval $name (the first $n questions of $DATA${SPLIT:+ $SPLIT})"
  set +e
  in_arm64 "$venv_in/bin/edgemed" eval "/mnt/artifacts/$name" --data "$DATA_IN" "${SPLIT_ARGS[@]}" --limit "$n" \
    --threads "$THREADS" --no-progress --out "/mnt/out/eval-$label" > "$OUT/arm64/eval-$label.log" 2>&1
  RC[eval-$label]=$?; set -e
  tail -1 "$OUT/arm64/eval-$label.log"
  done_step "exit ${RC[eval-$label]}" "$EMULATED; $n questions, build $build"
done

begin bench-arm64 "arm64: edgemed bench --profile $BENCH_PROFILE ${BENCH_NAMES[*]} (${BENCH_LIMIT} questions; small pp/tg: emulation is slow)"
BENCH_ARGS=(--profile "$BENCH_PROFILE" --data "$DATA_IN" "${SPLIT_ARGS[@]}" --limit "$BENCH_LIMIT" -t "$THREADS"
            -p 32 -n 8 -r 2 --warmup 1 --latency-prompts 1 --gen-tokens 8 --wait-policy passive --timeout 3600)
set +e
IN_ARTIFACTS=(); for name in "${BENCH_NAMES[@]}"; do IN_ARTIFACTS+=("/mnt/artifacts/$name"); done
in_arm64 "$VENV_IN/bin/edgemed" bench "${IN_ARTIFACTS[@]}" "${BENCH_ARGS[@]}" --out /mnt/out/bench \
  > "$OUT/arm64/bench.log" 2>&1
RC[bench]=$?; set -e
tail -25 "$OUT/arm64/bench.log"
if [ -f "$OUT/arm64/bench/bench.md" ]; then  # the bench's own summary, marked before anyone reads it as a board's
  { echo "> **Timings here are $EMULATED**: edgemed bench ran in an arm64 Debian rootfs under qemu-user"
    echo "> (QEMU_CPU=$QEMU_CPU, build $ARM_ARCH) on $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), by scripts/dev/check_arm64.sh."
    echo; cat "$OUT/arm64/bench/bench.md"; } > "$OUT/arm64/bench/bench.md.tmp"
  mv "$OUT/arm64/bench/bench.md.tmp" "$OUT/arm64/bench/bench.md"
fi
done_step "exit ${RC[bench]}" "$EMULATED; ${BENCH_NAMES[*]}, build $ARM_ARCH"

# ------------------------------------------------------------------------------ 6. the host, same questions
HOST_DATA=$DATA
for i in "${!ARTIFACTS[@]}"; do
  name=${NAMES[$i]}
  begin "eval-host-$name" "host: edgemed eval $name on the same questions (the first ${HOST_LIMIT[$name]})"
  set +e
  OMP_WAIT_POLICY=PASSIVE "$HOST_EDGEMED" eval "${ARTIFACTS[$i]}" --data "$HOST_DATA" "${SPLIT_ARGS[@]}" \
    --limit "${HOST_LIMIT[$name]}" --threads "$THREADS" --no-progress --out "$OUT/host/eval-$name" \
    > "$OUT/host/eval-$name.log" 2>&1
  RC[host-$name]=$?; set -e
  done_step "exit ${RC[host-$name]}" "host timing"
done

# ------------------------------------------------- 7. the host's own floor: the same file, another valid kernel
# How far the host moves from itself when llama.cpp only switches kernels (flash attention on -> off), on the
# same questions: agreement between two platforms cannot be read without it (quantized GGUFs quantize the
# activations to 8 bits per block, so any change in rounding upstream moves the letters).
for i in "${!ARTIFACTS[@]}"; do
  name=${NAMES[$i]}
  begin "floor-host-$name" "host: $name on the same questions with flash attention off (the host's own floor)"
  set +e
  OMP_WAIT_POLICY=PASSIVE "$PY" - "${ARTIFACTS[$i]}" "$HOST_DATA" "$SPLIT" "$OUT/host/eval-$name/predictions.jsonl" \
    "$OUT/host/floor-$name.json" "$THREADS" > "$OUT/host/floor-$name.log" 2>&1 <<'PYEOF'
import json, sys
from pathlib import Path

import numpy as np

from edgemed.data import load_questions
from edgemed.prompts import get_style
from edgemed.runtimes.base import open_runtime
from edgemed.runtimes.logits import softmax_rows

art, data, split, preds_path, out, threads = sys.argv[1:7]
preds = [json.loads(line) for line in Path(preds_path).read_text().splitlines() if line.strip()]
by_id = {q.id: q for q in load_questions(data, split=split or "validation")[0]}
qs = [by_id[p["id"]] for p in preds]
probs = {}
for fa in ("auto", "off"):
    with open_runtime(art, threads=int(threads), flash_attn=fa) as rt:
        style = get_style(rt.prompt_style)
        probs[fa] = softmax_rows(rt.letter_logprobs([style.prompt(q) for q in qs]))
on, off = np.log(probs["auto"]), np.log(probs["off"])
ev = np.log(np.array([[p["probs"][k] for k in "ABCD"] for p in preds]))
d = np.abs(on - off).max(1)
same = on.argmax(1) == off.argmax(1)
doc = {"what": "host, same GGUF and questions: flash attention auto (as eval) vs off",
       "questions": len(qs), "agreement": float(same.mean()),
       "letter_logprob_abs_diff": {"max": float(d.max()), "mean": float(d.mean())},
       "per_question": {p["id"]: {"same": bool(s), "abs_diff": float(x)} for p, s, x in zip(preds, same, d)},
       "auto_reproduces_eval_max_abs_diff": float(np.abs(on - ev).max())}
Path(out).write_text(json.dumps(doc, indent=2) + "\n")
print(json.dumps({k: v for k, v in doc.items() if k != "per_question"}))
PYEOF
  RC[floor-$name]=$?; set -e
  tail -1 "$OUT/host/floor-$name.log"
  done_step "exit ${RC[floor-$name]}" "host timing"
done

# ----------------------------------------------------------------------------------------- 8. the report
begin report "compare arm64 and host predictions; write $OUT/report.json and report.md"
rc_json=$(for k in "${!RC[@]}"; do printf '"%s": %s,' "$k" "${RC[$k]}"; done)
set +e
"$PY" - "$OUT" "{${rc_json%,}}" "$MIN_AGREEMENT" "$EMULATED" "$(printf '%s\n' "${RUNS[@]}")" <<EOF
import json, math, platform, statistics, sys
from pathlib import Path

out, rcs, min_agree, emulated = Path(sys.argv[1]), json.loads(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
runs = [dict(zip(("label", "name", "venv", "limit", "role"), line.split("|"))) for line in sys.argv[5].splitlines() if line]
names = "${NAMES[*]}".split()
board_arch, gate_arch, board = "${ARM_ARCH}", "${GATE_ARCH}", "${ARM_BOARD}"
steps = [dict(zip(("step", "status", "seconds", "note"), line.split("\t")))
         for line in (out / "steps.tsv").read_text().splitlines() if line]
for s in steps:
    s["seconds"] = float(s["seconds"])
    s["timing"] = emulated if "arm64" in s["step"] or s["step"] == "info" else "wall clock on this machine"
step_seconds = {s["step"]: s["seconds"] for s in steps}


def preds(path):
    return {r["id"]: r for r in map(json.loads, path.read_text().splitlines()) if r.get("id") is not None}


def cpu():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def margin(p):  # top-2 gap in log-prob over A-D (renormalised): how close the answer is to a tie
    lp = sorted((math.log(v) for v in p.values()), reverse=True)
    return lp[0] - lp[1]


floors = {}
for name in names:
    fp = out / "host" / f"floor-{name}.json"
    floors[name] = json.loads(fp.read_text()) if fp.exists() else None

per, failures = {}, [f"{k} exited {v}" for k, v in sorted(rcs.items()) if v != 0]
for run in runs:
    label, name, role, limit = run["label"], run["name"], run["role"], int(run["limit"])
    a_path, h_path = out / "arm64" / f"eval-{label}" / "predictions.jsonl", out / "host" / f"eval-{name}" / "predictions.jsonl"
    if not (a_path.exists() and h_path.exists()):
        failures.append(f"{label}: predictions.jsonl missing ({'arm64' if not a_path.exists() else 'host'})")
        continue
    a, h = preds(a_path), preds(h_path)
    common = [i for i in h if i in a]  # the host scored the first questions, arm64 the first \`limit\` of them
    if len(common) != len(a) or len(common) != min(limit, len(h)):
        failures.append(f"{label}: arm64 scored {len(a)} questions, the host {len(h)}, {len(common)} in common")
    same = sum(a[i]["predicted"] == h[i]["predicted"] for i in common)
    n = max(len(common), 1)
    agreement = same / n
    diffs, raw, flips, margins = [], [], [], []
    for i in common:
        pa, ph = a[i]["probs"], h[i]["probs"]
        d = max(abs(math.log(pa[k]) - math.log(ph[k])) for k in ph)
        diffs.append(d)
        margins.append(margin(ph))
        ma, mh = a[i].get("letter_mass"), h[i].get("letter_mass")
        if ma and mh:  # log-prob of each letter before renormalising over A-D
            raw.append(max(abs(math.log(pa[k] * ma) - math.log(ph[k] * mh)) for k in ph))
        if a[i]["predicted"] != h[i]["predicted"]:
            flips.append({"id": i, "arm64": a[i]["predicted"], "host": h[i]["predicted"], "host_margin": margin(ph),
                          "arm64_margin": margin(pa), "abs_diff": d, "arm64_probs": pa, "host_probs": ph})
    acc = lambda p: sum(p[i]["correct"] for i in common) / n  # noqa: E731
    ra = json.loads((out / "arm64" / f"eval-{label}" / "results.json").read_text())
    floor = floors.get(name)
    fl_q = floor and {i: floor["per_question"][i] for i in common if i in floor.get("per_question", {})}
    floor_here = None
    if fl_q:  # the host's floor on exactly these questions
        fd = [v["abs_diff"] for v in fl_q.values()]
        floor_here = {"questions": len(fl_q), "agreement": sum(v["same"] for v in fl_q.values()) / len(fl_q),
                      "letter_logprob_abs_diff": {"max": max(fd), "mean": sum(fd) / len(fd)}}
    verdict = "ok"
    if role == "gate":
        if agreement < min_agree:
            verdict = "FAIL"
            failures.append(f"{label} (gate, build {gate_arch}): agreement {agreement:.3f} < {min_agree}"
                            + (f" (the host against itself, flash attention on vs off: {floor_here['agreement']:.3f})"
                               if floor_here else ""))
    elif role == "floor":
        # Clearly below the host's floor: more than two standard errors of the two proportions, plus one question.
        if floor_here:
            f = floor_here["agreement"]
            tol = 2 * math.sqrt((f * (1 - f) + agreement * (1 - agreement)) / n) + 1 / n
            if f - agreement > tol:
                verdict = "BELOW FLOOR"
                failures.append(f"{label}: agreement {agreement:.3f} is clearly below the host's own floor {f:.3f} "
                                f"(flash attention on vs off; tolerance {tol:.3f} on {n} questions)")
        else:
            verdict = "no floor"
            failures.append(f"{label}: the host's floor is missing, the agreement cannot be judged")
    else:
        verdict = "reported"
    secs = step_seconds.get(f"eval-arm64-{label}")
    per[label] = {
        "artifact": name, "role": role, "verdict": verdict,
        "build": gate_arch if run["venv"] != "${VENV_IN}" else board_arch,
        "questions": len(common), "agreement": agreement, "disagreements": flips,
        "letter_logprob_abs_diff": {"max": max(diffs, default=0.0), "mean": sum(diffs) / n,
                                    "what": "max over A-D of |log p_arm64 - log p_host|, p renormalised over A-D"},
        "letter_logprob_abs_diff_unnormalised_max": max(raw, default=None),
        "host_margin": {"median": statistics.median(margins) if margins else None,
                        "below_max_abs_diff": sum(m < max(diffs, default=0.0) for m in margins),
                        "what": "top-2 gap in log p over A-D on the host; a gap below the arm64-host |diff| can flip"},
        "accuracy": {"arm64": acc(a), "host": acc(h)},
        "arm64_runtime": ra.get("runtime", ra.get("runtime_info")),
        "host_floor": floor_here,
        "arm64_eval_seconds": secs, "arm64_seconds_per_question": secs / n if secs is not None else None,
    }

if not any(r["role"] == "gate" for r in runs):
    failures.append("no gguf-f16 artifact: the agreement gate is on gguf-f16 (the quantized files' agreement is "
                    "bounded by the host's own floor)")

arm_env = {}
for label in per:
    p = out / "arm64" / f"eval-{label}" / "results.json"
    if p.exists():
        arm_env = json.loads(p.read_text()).get("environment", {})
        break
bench = {}
bp = out / "arm64" / "bench" / "bench.json"
if bp.exists():
    b = json.loads(bp.read_text())
    for art in b.get("artifacts", []):
        tp = art.get("throughput") or {}
        lat = (art.get("latency") or {}).get("answer_ms") or {}
        bench[art["name"]] = {
            "status": art.get("status"), "failure": art.get("failure"),
            "pp_tokens_per_s": (tp.get("pp") or {}).get("avg_ts"), "tg_tokens_per_s": (tp.get("tg") or {}).get("avg_ts"),
            "answer_ms_median": lat.get("median"), "peak_rss_serving_mb": ((art.get("memory") or {}).get("peak_rss_serving_bytes") or 0) / 2**20,
            "accuracy": (art.get("accuracy") or {}).get("accuracy"),
            "kernel_path": (art.get("runtime_info") or {}).get("kernel_path"),
            "system_info": (art.get("runtime_info") or {}).get("system_info"),
            "machine_load": (art.get("machine_load") or {}).get("reason") if (art.get("machine_load") or {}).get("busy") else None,
            "timing": emulated,
        }
    bench_profiles = b.get("profiles", [])
else:
    bench_profiles = []

report = {
    "ok": not failures, "failures": failures, "min_agreement": min_agree,
    "gate": "gguf-f16 (role gate): arm64 agreement with the host >= min_agreement; quantized files (role floor): "
            "flagged only when clearly below the host's own flash-attention on/off floor on the same questions",
    "runs": per,
    "host": {"cpu": cpu(), "cores": __import__("os").cpu_count(), "machine": platform.machine()},
    "arm64": {"board": board, "qemu_cpu": "${QEMU_CPU}", "board_build": board_arch, "gate_build": gate_arch,
              "qemu": "${QEMU_VERSION}", "debian_suite": "${SUITE}", "python": "${PYVER}", "glibc": "${GLIBC}",
              "board_wheel_sha256": "$(sha256sum "$BOARD_WHL" | cut -c1-16)",
              "gate_wheel_sha256": "$(sha256sum "$GATE_WHL" | cut -c1-16)",
              "environment_reported_by_edgemed": arm_env},
    "threads": ${THREADS},
    "questions": {"data": "${DATA}", "split": "${SPLIT:-edgemed default}", "limit_f16": ${LIMIT},
                  "limit_quantized": ${QUANT_LIMIT}, "limit_board_f16": ${BOARD_F16_LIMIT}, "bench_limit": ${BENCH_LIMIT}},
    "bench_arm64": {"timing": emulated, "build": board_arch, "artifacts": bench, "profiles": bench_profiles},
    "exit_codes": rcs, "steps": steps, "timing_note": f"arm64 timings are {emulated}",
    "total_seconds": sum(s["seconds"] for s in steps),
}
(out / "report.json").write_text(json.dumps(report, indent=2) + "\n")

f = lambda x, fmt="{:.1f}": "-" if x is None else fmt.format(x)  # noqa: E731
md = [f"# arm64 check ({board}, QEMU_CPU={report['arm64']['qemu_cpu']}): {'PASS' if report['ok'] else 'FAIL'}", "",
      f"**All arm64 timings below are {emulated}.** Host: {report['host']['cpu']} ({report['host']['cores']} CPUs); "
      f"every edgemed command ran with {report['threads']} thread(s). Builds: board {board_arch}, gate {gate_arch}.", "",
      "| run | build | role | questions | arm64 vs host: agreement | max / mean \\\\|Δ log p\\\\| | host margin median (questions below max \\\\|Δ\\\\|) "
      "| host vs host (flash attention on/off): agreement | max / mean \\\\|Δ log p\\\\| | verdict | arm64 s/question |",
      "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
for label, r in per.items():
    fl = r["host_floor"] or {}
    fd = fl.get("letter_logprob_abs_diff", {})
    md.append(f"| {label} | {r['build']} | {r['role']} | {r['questions']} | {r['agreement']:.1%} | "
              f"{r['letter_logprob_abs_diff']['max']:.4f} / {r['letter_logprob_abs_diff']['mean']:.4f} | "
              f"{f(r['host_margin']['median'], '{:.3f}')} ({r['host_margin']['below_max_abs_diff']}) | "
              f"{f(fl.get('agreement'), '{:.1%}')} | {f(fd.get('max'), '{:.4f}')} / {f(fd.get('mean'), '{:.4f}')} | "
              f"{r['verdict']} | {f(r['arm64_seconds_per_question'], '{:.0f}')} |")
md += ["", "Agreement = share of questions where the arm64 and host answers (argmax over A-D) are the same; "
       "Δ log p = max over A-D of |log p_arm64 - log p_host| (renormalised over A-D); margin = the host's top-2 gap "
       "in log p. The host-vs-host columns are the host alone, the same file and questions, with llama.cpp's flash "
       "attention on (as eval runs) and off: how far two valid kernel choices already move the letters on one machine."]
gate = [r for r in per.values() if r["role"] == "gate"]
quant = [r for r in per.values() if r["role"] == "floor" and r["host_floor"]]
if gate and quant:
    g = gate[0]
    qtxt = ", ".join(f"{r['host_floor']['agreement']:.0%} of the questions for {r['artifact']} (max |Δ log p| "
                     f"{r['host_floor']['letter_logprob_abs_diff']['max']:.3f}, {r['host_floor']['questions']} questions)"
                     for r in quant)
    gf = g["host_floor"] or {}
    md += ["", f"Why the {min_agree:.0%} gate is on gguf-f16: on the host alone, the same file with flash attention on "
           f"vs off agrees with itself on {qtxt}, against {f(gf.get('agreement'), '{:.0%}')} for gguf-f16 (max |Δ log p| "
           f"{f((gf.get('letter_logprob_abs_diff') or {}).get('max'), '{:.3f}')}, {gf.get('questions')} questions), "
           f"with a median top-2 margin of {f(g['host_margin']['median'], '{:.3f}')} on the host. Quantized GGUFs "
           "quantize the activations to 8 bits per block, so any rounding change upstream flips near ties: their "
           "agreement across platforms is bounded by that floor and judged against it (flagged when more than two "
           "standard errors, plus one question, below it)."]
bf = [r for r in per.values() if r["role"] == "board-f16"]
if bf:
    r = bf[0]
    md += ["", f"gguf-f16 with the board build ({r['build']}: f16 matmuls computed in fp16 by ggml) on "
           f"{r['questions']} questions: agreement {r['agreement']:.0%}, max |Δ log p| "
           f"{r['letter_logprob_abs_diff']['max']:.4f}; reported, not gated."]
if bench:
    md += ["", f"edgemed bench in the rootfs, build {board_arch} ({emulated}):", "",
           "| artifact | status | pp tok/s | tg tok/s | answer ms (median) | kernel path | busy machine (bench's own flag) |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in bench.items():
        md.append(f"| {name} | {r['status']} | {f(r['pp_tokens_per_s'])} | {f(r['tg_tokens_per_s'])} | "
                  f"{f(r['answer_ms_median'], '{:.0f}')} | {r['kernel_path']} | {r['machine_load'] or 'no'} |")
for prof in bench_profiles:
    pr = prof.get("profile", {})
    md += ["", f"--profile {pr.get('name')} ({pr.get('description')}): the memory-bound ceiling is the profile's rough "
           "bandwidth over the weight bytes (an estimate, not a measurement); bench's 'est. decode' scales it by the "
           "fraction of copy bandwidth measured here, which under emulation is qemu's: not a board figure. Peak "
           "memory measured under emulation:", ""]
    md += [f"- {x.get('artifact')}: {x.get('note')}; memory-bound ceiling ~{f(x.get('est_max_decode_tokens_per_s'))} "
           f"tok/s (est. decode under emulation ~{f(x.get('est_decode_tokens_per_s'))}), "
           f"peak RSS {f((x.get('peak_rss_bytes') or 0) / 2**20, '{:.0f}')} MB" for x in prof.get("artifacts", [])]
md += ["", "| step | status | seconds | note |", "| --- | --- | --- | --- |"]
md += [f"| {s['step']} | {s['status']} | {s['seconds']:.0f} | {s['note']} |" for s in steps]
md += ["", f"Total: {report['total_seconds'] / 60:.0f} min (the report step excluded)."]
if failures:
    md += ["", "Failures:", *[f"- {x}" for x in failures]]
(out / "report.md").write_text("\n".join(md) + "\n")
print("\n".join(md))
sys.exit(0 if report["ok"] else 1)
EOF
RC_REPORT=$?
set -e
done_step "exit $RC_REPORT"
say "report: $OUT/report.md, $OUT/report.json"
[ "$RC_REPORT" = 0 ] || { say "FAIL"; exit 1; }
say "PASS"
