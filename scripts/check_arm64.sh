#!/usr/bin/env bash
# Raspberry-class proof under emulation (issue 13). NOT part of CI: it needs root, qemu-user and ~30-40 min
# the first time (the rootfs and the wheel are cached; later runs take the eval/bench time only).
#
# 1. arm64 Debian rootfs (mmdebstrap, minimal: python3, python3-venv, libgomp1), cached.
# 2. llama-cpp-python (the version in .venv) cross-compiled on the host for aarch64 with GGML_NATIVE=OFF and
#    an explicit GGML_CPU_ARM_ARCH for the board (-mcpu=native would read the host's x86 CPU), cached.
# 3. an arm64 venv in the rootfs with the edgemed wheel and ONLY its `gguf` extra (pip inside the rootfs,
#    offline, from a wheelhouse the host's pip fetched for aarch64).
# 4. inside the rootfs under qemu-user (QEMU_CPU = the board's core): `edgemed info`, `edgemed eval` of each
#    GGUF artifact, `edgemed bench --profile BOARD`.
# 5. the host's `edgemed eval` of the same GGUF files on the same questions; the letter predictions and
#    letter log-probs compared; beside them the host's own floor: the same file and questions on the host with
#    llama.cpp's flash attention off instead of on (another valid kernel); OUT/report.json and report.md.
# Exit 0 only when info, eval and bench exit 0 inside the rootfs and, for every artifact, the arm64 answers agree
# with the host's on at least MIN_AGREEMENT of the questions. Timings measured under emulation are not board
# numbers and are labelled so wherever this script writes them.
#
#   usage: sudo scripts/check_arm64.sh [GGUF_ARTIFACT ...]
#          (default: runs/pipeline/artifacts/gguf-q8_0 and gguf-q4_k_m; exported from the embedded
#          SmolLM2-135M with the host's edgemed when missing)
#   env:   ARM_BOARD      rpi5 (default: Cortex-A76, armv8.2-a+dotprod+fp16) | rpi4 (Cortex-A72, armv8-a)
#          ARM_ARCH       override GGML_CPU_ARM_ARCH (-march); QEMU_CPU: override the emulated core
#          BENCH_PROFILE  profile for `edgemed bench --profile` (default: the board)
#          EDGEMED_ARM64_CACHE  cache folder (default ~/.cache/edgemed-arm64)
#          OUT            output folder (default runs/arm64-BOARD)
#          DATA, SPLIT, LIMIT   questions of the eval comparison (default: ../shared/data/medmcqa/validation.jsonl,
#                         real MedMCQA questions the pipeline never trained on, when present, else edgemed's
#                         default data; SPLIT passed on only when set; LIMIT default 50)
#          BENCH_LIMIT    questions of the bench's accuracy/fidelity pass (default 8)
#          MIN_AGREEMENT  default 0.98; DEBIAN_SUITE default stable; DEBIAN_MIRROR default: apt's own
#          JOBS           compile jobs (default 2); FORCE=rootfs,wheel,venv rebuilds those cached steps
# Needs (Debian host, root): apt-get install mmdebstrap qemu-user-static binfmt-support crossbuild-essential-arm64
set -euo pipefail
cd "$(dirname "$0")/.."
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
JOBS=${JOBS:-2}
FORCE=${FORCE:-}
LIMIT=${LIMIT:-50}
BENCH_LIMIT=${BENCH_LIMIT:-8}
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

mkdir -p "$CACHE" "$OUT"
OUT=$(cd "$OUT" && pwd)
ROOTFS=$CACHE/rootfs-arm64-$SUITE
ARCH_SLUG=$(echo "$ARM_ARCH" | tr '+.' '__')
WHEEL_DIR=$CACHE/llama-cpp-python-$LLAMA_VER-$ARCH_SLUG
VENV_IN=/opt/edgemed-$ARM_BOARD                 # the venv, as seen inside the rootfs
VENV=$ROOTFS$VENV_IN
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
cached() {  # cached STAMP: prints the step as skipped, with the original build time
  local built; built=$(sed -n 's/^seconds=//p' "$1" | head -1)
  printf '%s\t%s\t%s\t%s\n' "$STEP" "cached" "0" "built in ${built:-?} s on $(date -r "$1" '+%F %T')" >> "$STEPS"
  say "[$STEP] cached: skipped (built in ${built:-?} s on $(date -r "$1" '+%F %T'); FORCE=$STEP rebuilds)"
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
begin wheel "llama-cpp-python $LLAMA_VER cross-compiled for aarch64, GGML_CPU_ARM_ARCH=$ARM_ARCH (GGML_NATIVE=OFF)"
CMAKE_ARGS_ARM="-DCMAKE_TOOLCHAIN_FILE=$WHEEL_DIR/aarch64-linux-gnu.cmake -DGGML_NATIVE=OFF -DGGML_CPU_ARM_ARCH=$ARM_ARCH"
if forced wheel || [ ! -f "$WHEEL_DIR/.edgemed-built" ] || ! ls "$WHEEL_DIR"/llama_cpp_python-*linux_aarch64.whl >/dev/null 2>&1; then
  mkdir -p "$WHEEL_DIR" "$CACHE/sdist"
  rm -f "$WHEEL_DIR"/*.whl "$WHEEL_DIR/.edgemed-built"
  SDIST=$REPO/.venv/opt/llama.cpp-$LLAMA_VER/sdist/llama_cpp_python-$LLAMA_VER.tar.gz  # build_llama_tools.sh's copy
  if [ ! -f "$SDIST" ]; then
    SDIST=$CACHE/sdist/llama_cpp_python-$LLAMA_VER.tar.gz
    [ -f "$SDIST" ] || "$PY" -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$LLAMA_VER" -d "$CACHE/sdist"
    [ -f "$SDIST" ] || die "pip download did not produce $SDIST"
  fi
  cat > "$WHEEL_DIR/aarch64-linux-gnu.cmake" <<'EOF'
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
  # _PYTHON_HOST_PLATFORM makes the wheel's platform tag linux_aarch64 (llama-cpp-python is ctypes, py3-none).
  _PYTHON_HOST_PLATFORM=linux-aarch64 CMAKE_ARGS="$CMAKE_ARGS_ARM" CMAKE_BUILD_PARALLEL_LEVEL=$JOBS \
    nice -n 19 "$PY" -m pip wheel --no-deps --no-binary llama-cpp-python \
      -C "build-dir=$WHEEL_DIR/build" -w "$WHEEL_DIR" "$SDIST" \
      > "$WHEEL_DIR/build.log" 2>&1 || { tail -40 "$WHEEL_DIR/build.log"; die "cross-compile failed (log: $WHEEL_DIR/build.log)"; }
  WHL=$(ls "$WHEEL_DIR"/llama_cpp_python-*linux_aarch64.whl 2>/dev/null | head -1)
  [ -n "$WHL" ] || die "no linux_aarch64 wheel in $WHEEL_DIR (log: $WHEEL_DIR/build.log)"
  s=$(secs "$STEP_T0" "$(now)")
  printf 'seconds=%s\ncmake_args=%s\nsdist=%s\n' "$s" "$CMAKE_ARGS_ARM" "$SDIST" > "$WHEEL_DIR/.edgemed-built"
  done_step ran "$(basename "$WHL"), $(du -h "$WHL" | cut -f1)"
else
  cached "$WHEEL_DIR/.edgemed-built"
fi
WHL=$(ls "$WHEEL_DIR"/llama_cpp_python-*linux_aarch64.whl | head -1)

# ------------------------------------------------------------------------------ 3. arm64 venv, edgemed[gguf]
begin venv "arm64 venv $VENV_IN in the rootfs: pip install 'edgemed[gguf]' (offline, from an aarch64 wheelhouse)"
DIST=$CACHE/dist
rm -rf "$DIST"; mkdir -p "$DIST"
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$DIST" "$REPO" > "$DIST/build.log" 2>&1 \
  || { cat "$DIST/build.log"; die "building the edgemed wheel failed"; }
EDGEMED_WHL=$(ls "$DIST"/edgemed-*.whl | head -1)
WHEELHOUSE=$CACHE/wheelhouse-cp${PYVER/./}
rm -rf "$WHEELHOUSE"; mkdir -p "$WHEELHOUSE"
cp -f "$WHL" "$EDGEMED_WHL" "$WHEELHOUSE/"
# Wheels for aarch64 Linux that the rootfs's glibc runs: manylinux_2_17 .. manylinux_2_<glibc minor>.
PLATFORMS=(--platform linux_aarch64 --platform manylinux2014_aarch64)
for (( m=17; m<=${GLIBC#2.}; m++ )); do PLATFORMS+=(--platform "manylinux_2_${m}_aarch64"); done
CONSTRAINTS=()
[ -f "$REPO/constraints/cpu.txt" ] && CONSTRAINTS=(-c "$REPO/constraints/cpu.txt")
"$PY" -m pip download -q --only-binary=:all: "${PLATFORMS[@]}" --python-version "$PYVER" --implementation cp \
  --abi "cp${PYVER/./}" --find-links "$WHEELHOUSE" "${CONSTRAINTS[@]}" -d "$WHEELHOUSE" \
  "$WHEELHOUSE/$(basename "$EDGEMED_WHL")[gguf]" 2> >(grep -v 'is ignored: it is neither' >&2) \
  || die "pip download of edgemed[gguf]'s aarch64 dependencies failed"
# The venv is rebuilt when its dependencies change (the llama-cpp-python wheel, the other wheels' names); the
# edgemed wheel of this working tree is reinstalled every run.
KEY=$( { sha256sum "$WHL" | cut -c1-64; ls "$WHEELHOUSE" | grep -v '^edgemed-'; } | sha256sum | cut -c1-16)
bind "$WHEELHOUSE" /mnt/wheelhouse ro
if forced venv || [ "$(cat "$VENV/.edgemed-key" 2>/dev/null)" != "$KEY" ]; then
  rm -rf --one-file-system "$VENV"
  in_arm64 python3 -m venv "$VENV_IN"
  in_arm64 "$VENV_IN/bin/python" -m pip install -q --no-index --find-links /mnt/wheelhouse \
    "/mnt/wheelhouse/$(basename "$EDGEMED_WHL")[gguf]" || die "pip install 'edgemed[gguf]' in the arm64 venv failed"
  echo "$KEY" > "$VENV/.edgemed-key"
  s=$(secs "$STEP_T0" "$(now)"); printf 'seconds=%s\n' "$s" > "$VENV/.edgemed-built"
  VENV_STATUS=ran
else
  in_arm64 "$VENV_IN/bin/python" -m pip install -q --no-index --no-deps --force-reinstall \
    "/mnt/wheelhouse/$(basename "$EDGEMED_WHL")" || die "reinstalling the edgemed wheel in the arm64 venv failed"
  VENV_STATUS="ran (dependencies cached, built in $(sed -n 's/^seconds=//p' "$VENV/.edgemed-built") s; edgemed reinstalled)"
fi
in_arm64 "$VENV_IN/bin/python" -m pip list --format=freeze > "$OUT/arm64-pip-freeze.txt" 2>/dev/null
done_step "$VENV_STATUS" "$(tr '\n' ' ' < "$OUT/arm64-pip-freeze.txt")"
for banned in torch transformers optimum onnxruntime; do
  [ -z "$(ls -d "$VENV"/lib/python*/site-packages/"$banned" 2>/dev/null)" ] || die "$banned is installed in the gguf-only venv"
done

# ------------------------------------------------------------------------------------------ 4. artifacts
begin artifacts "GGUF artifacts exported on the host"
ARTIFACTS=("$@")
if [ ${#ARTIFACTS[@]} = 0 ]; then
  ARTIFACTS=(runs/pipeline/artifacts/gguf-q8_0 runs/pipeline/artifacts/gguf-q4_k_m)
  if [ ! -f "${ARTIFACTS[0]}/edgemed.json" ] || [ ! -f "${ARTIFACTS[1]}/edgemed.json" ]; then
    MERGED=$("$PY" -c 'from edgemed.models import resolve_model; print(resolve_model("smollm2-135m"))')
    EXPORTS=$CACHE/exports-smollm2-135m
    say "[artifacts] runs/pipeline has no GGUF artifacts: edgemed export $MERGED --formats gguf-q8_0,gguf-q4_k_m"
    "$HOST_EDGEMED" export "$MERGED" --formats gguf-q8_0,gguf-q4_k_m --out "$EXPORTS" || die "edgemed export failed"
    ARTIFACTS=("$EXPORTS/gguf-q8_0" "$EXPORTS/gguf-q4_k_m")
  fi
fi
NAMES=()
for a in "${ARTIFACTS[@]}"; do
  [ -f "$a/edgemed.json" ] || die "$a is not an artifact folder (no edgemed.json)"
  NAMES+=("$(basename "$a")")
done
done_step ran "${ARTIFACTS[*]}"

# --------------------------------------------------------------------------- 5. edgemed inside the rootfs
rm -rf "$OUT/arm64" "$OUT/host"; mkdir -p "$OUT/arm64" "$OUT/host"
for i in "${!ARTIFACTS[@]}"; do bind "$(cd "${ARTIFACTS[$i]}" && pwd)" "/mnt/artifacts/${NAMES[$i]}" ro; done
bind "$OUT/arm64" /mnt/out
DATA_IN=$DATA
if [ "$DATA" != sample ]; then bind "$(dirname "$(readlink -f "$DATA")")" /mnt/data ro; DATA_IN=/mnt/data/$(basename "$DATA"); fi
EVAL_ARGS=(--data "$DATA_IN" "${SPLIT_ARGS[@]}" --limit "$LIMIT" --threads 2 --no-progress)
declare -A RC

begin info "arm64: edgemed info"
set +e; in_arm64 edgemed info > "$OUT/arm64/info.txt" 2>&1; RC[info]=$?; set -e
cat "$OUT/arm64/info.txt"
done_step "exit ${RC[info]}" "$EMULATED"

for name in "${NAMES[@]}"; do
  begin "eval-arm64-$name" "arm64: edgemed eval $name (at most ${LIMIT} questions of $DATA${SPLIT:+ $SPLIT})"
  set +e
  in_arm64 edgemed eval "/mnt/artifacts/$name" "${EVAL_ARGS[@]}" --out "/mnt/out/eval-$name" \
    > "$OUT/arm64/eval-$name.log" 2>&1
  RC[eval-$name]=$?; set -e
  tail -3 "$OUT/arm64/eval-$name.log"
  done_step "exit ${RC[eval-$name]}" "$EMULATED"
done

begin bench-arm64 "arm64: edgemed bench --profile $BENCH_PROFILE (${BENCH_LIMIT} questions; small pp/tg: emulation is slow)"
BENCH_ARGS=(--profile "$BENCH_PROFILE" --data "$DATA_IN" "${SPLIT_ARGS[@]}" --limit "$BENCH_LIMIT" -t 2
            -p 32 -n 8 -r 2 --warmup 1 --latency-prompts 2 --gen-tokens 8 --wait-policy passive --timeout 3600)
set +e
IN_ARTIFACTS=(); for name in "${NAMES[@]}"; do IN_ARTIFACTS+=("/mnt/artifacts/$name"); done
in_arm64 edgemed bench "${IN_ARTIFACTS[@]}" "${BENCH_ARGS[@]}" --out /mnt/out/bench \
  > "$OUT/arm64/bench.log" 2>&1
RC[bench]=$?; set -e
tail -25 "$OUT/arm64/bench.log"
if [ -f "$OUT/arm64/bench/bench.md" ]; then  # the bench's own summary, marked before anyone reads it as a board's
  { echo "> **Timings here are $EMULATED**: edgemed bench ran in an arm64 Debian rootfs under qemu-user"
    echo "> (QEMU_CPU=$QEMU_CPU) on $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), by scripts/check_arm64.sh."
    echo; cat "$OUT/arm64/bench/bench.md"; } > "$OUT/arm64/bench/bench.md.tmp"
  mv "$OUT/arm64/bench/bench.md.tmp" "$OUT/arm64/bench/bench.md"
fi
done_step "exit ${RC[bench]}" "$EMULATED"

# ------------------------------------------------------------------------------ 6. the host, same questions
HOST_DATA=$DATA
for i in "${!ARTIFACTS[@]}"; do
  name=${NAMES[$i]}
  begin "eval-host-$name" "host: edgemed eval $name on the same questions"
  set +e
  OMP_WAIT_POLICY=PASSIVE "$HOST_EDGEMED" eval "${ARTIFACTS[$i]}" --data "$HOST_DATA" "${SPLIT_ARGS[@]}" --limit "$LIMIT" \
    --threads 2 --no-progress --out "$OUT/host/eval-$name" > "$OUT/host/eval-$name.log" 2>&1
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
    "$OUT/host/floor-$name.json" > "$OUT/host/floor-$name.log" 2>&1 <<'PYEOF'
import json, sys
from pathlib import Path

import numpy as np

from edgemed.data import load_questions
from edgemed.prompts import get_style
from edgemed.runtimes.base import open_runtime, softmax_rows

art, data, split, preds_path, out = sys.argv[1:6]
preds = [json.loads(line) for line in Path(preds_path).read_text().splitlines() if line.strip()]
by_id = {q.id: q for q in load_questions(data, split=split or "validation")[0]}
qs = [by_id[p["id"]] for p in preds]
probs = {}
for fa in ("auto", "off"):
    with open_runtime(art, threads=2, flash_attn=fa) as rt:
        style = get_style(rt.prompt_style)
        probs[fa] = softmax_rows(rt.letter_logprobs([style.prompt(q) for q in qs]))
on, off = np.log(probs["auto"]), np.log(probs["off"])
ev = np.log(np.array([[p["probs"][k] for k in "ABCD"] for p in preds]))
d = np.abs(on - off).max(1)
doc = {"what": "host, same GGUF and questions: flash attention auto (as eval) vs off",
       "questions": len(qs), "agreement": float((on.argmax(1) == off.argmax(1)).mean()),
       "letter_logprob_abs_diff": {"max": float(d.max()), "mean": float(d.mean())},
       "auto_reproduces_eval_max_abs_diff": float(np.abs(on - ev).max())}
Path(out).write_text(json.dumps(doc, indent=2) + "\n")
print(json.dumps(doc))
PYEOF
  RC[floor-$name]=$?; set -e
  tail -1 "$OUT/host/floor-$name.log"
  done_step "exit ${RC[floor-$name]}" "host timing"
done

# ----------------------------------------------------------------------------------------- 8. the report
begin report "compare arm64 and host predictions; write $OUT/report.json and report.md"
rc_json=$(for k in "${!RC[@]}"; do printf '"%s": %s,' "$k" "${RC[$k]}"; done)
set +e
"$PY" - "$OUT" "{${rc_json%,}}" "$MIN_AGREEMENT" "$EMULATED" <<EOF
import json, math, platform, sys
from pathlib import Path

out, rcs, min_agree, emulated = Path(sys.argv[1]), json.loads(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
names = "${NAMES[*]}".split()
steps = [dict(zip(("step", "status", "seconds", "note"), line.split("\t")))
         for line in (out / "steps.tsv").read_text().splitlines() if line]
for s in steps:
    s["seconds"] = float(s["seconds"])
    s["timing"] = emulated if "arm64" in s["step"] or s["step"] == "info" else "wall clock on this machine"


def preds(path):
    return {r["id"]: r for r in map(json.loads, path.read_text().splitlines()) if r.get("id") is not None}


def cpu():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


per, total, agree, max_d, sum_d, n_d, max_raw = {}, 0, 0, 0.0, 0.0, 0, 0.0
failures = [f"{k} exited {v}" for k, v in sorted(rcs.items()) if v != 0]
for name in names:
    a_path, h_path = out / "arm64" / f"eval-{name}" / "predictions.jsonl", out / "host" / f"eval-{name}" / "predictions.jsonl"
    if not (a_path.exists() and h_path.exists()):
        failures.append(f"{name}: predictions.jsonl missing ({'arm64' if not a_path.exists() else 'host'})")
        continue
    a, h = preds(a_path), preds(h_path)
    common = sorted(set(a) & set(h))
    if len(common) != len(a) or len(common) != len(h):
        failures.append(f"{name}: arm64 scored {len(a)} questions, the host {len(h)}, {len(common)} in common")
    same = sum(a[i]["predicted"] == h[i]["predicted"] for i in common)
    diffs, raw, flips = [], [], []
    for i in common:
        pa, ph = a[i]["probs"], h[i]["probs"]
        d = max(abs(math.log(pa[k]) - math.log(ph[k])) for k in ph)
        diffs.append(d)
        ma, mh = a[i].get("letter_mass"), h[i].get("letter_mass")
        if ma and mh:  # log-prob of each letter before renormalising over A-D
            raw.append(max(abs(math.log(pa[k] * ma) - math.log(ph[k] * mh)) for k in ph))
        if a[i]["predicted"] != h[i]["predicted"]:
            flips.append({"id": i, "arm64": a[i]["predicted"], "host": h[i]["predicted"],
                          "arm64_probs": pa, "host_probs": ph})
    acc = lambda p: sum(p[i]["correct"] for i in common) / max(len(common), 1)  # noqa: E731
    ra = json.loads((out / "arm64" / f"eval-{name}" / "results.json").read_text())
    fp = out / "host" / f"floor-{name}.json"
    floor = json.loads(fp.read_text()) if fp.exists() else None
    if same / max(len(common), 1) < min_agree:
        failures.append(f"{name}: agreement {same / max(len(common), 1):.3f} < {min_agree}"
                        + (f" (the host against itself, flash attention on vs off: {floor['agreement']:.3f})"
                           if floor else ""))
    per[name] = {
        "questions": len(common), "agreement": same / max(len(common), 1), "disagreements": flips,
        "letter_logprob_abs_diff": {"max": max(diffs, default=0.0), "mean": sum(diffs) / max(len(diffs), 1),
                                    "what": "max over A-D of |log p_arm64 - log p_host|, p renormalised over A-D"},
        "letter_logprob_abs_diff_unnormalised_max": max(raw, default=None),
        "accuracy": {"arm64": acc(a), "host": acc(h)},
        "arm64_runtime": ra.get("runtime", ra.get("runtime_info")),
        "host_floor": floor,
    }
    total += len(common); agree += same; max_d = max(max_d, *diffs) if diffs else max_d
    sum_d += sum(diffs); n_d += len(diffs); max_raw = max([max_raw, *raw])

agreement = agree / total if total else 0.0
if not total:
    failures.append("no question was compared")

arm_env = {}
for name in names:
    p = out / "arm64" / f"eval-{name}" / "results.json"
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
            "timing": emulated,
        }
    bench_profiles = b.get("profiles", [])
else:
    bench_profiles = []

report = {
    "ok": not failures, "failures": failures,
    "agreement": agreement, "questions_compared": total, "min_agreement": min_agree,
    "letter_logprob_abs_diff_max": max_d, "letter_logprob_abs_diff_mean": sum_d / max(n_d, 1),
    "letter_logprob_abs_diff_unnormalised_max": max_raw,
    "artifacts": per,
    "host": {"cpu": cpu(), "cores": __import__("os").cpu_count(), "machine": platform.machine()},
    "arm64": {"board": "${ARM_BOARD}", "qemu_cpu": "${QEMU_CPU}", "ggml_cpu_arm_arch": "${ARM_ARCH}",
              "qemu": "${QEMU_VERSION}", "debian_suite": "${SUITE}", "python": "${PYVER}", "glibc": "${GLIBC}",
              "wheel": "$(basename "$WHL")", "environment_reported_by_edgemed": arm_env},
    "questions": {"data": "${DATA}", "split": "${SPLIT:-edgemed default}", "limit": ${LIMIT}, "bench_limit": ${BENCH_LIMIT}},
    "bench_arm64": {"timing": emulated, "artifacts": bench, "profiles": bench_profiles},
    "exit_codes": rcs, "steps": steps, "timing_note": f"arm64 timings are {emulated}",
}
(out / "report.json").write_text(json.dumps(report, indent=2) + "\n")

f = lambda x, fmt="{:.1f}": "-" if x is None else fmt.format(x)  # noqa: E731
md = [f"# arm64 check ({report['arm64']['board']}, QEMU_CPU={report['arm64']['qemu_cpu']}): "
      f"{'PASS' if report['ok'] else 'FAIL'}", "",
      f"**All arm64 timings below are {emulated}.** Host: {report['host']['cpu']} ({report['host']['cores']} CPUs).", "",
      f"Agreement arm64 vs host (same GGUF, same questions): **{agreement:.1%}** of {total} "
      f"(threshold {min_agree:.0%} per artifact); letter log-prob |diff| max {max_d:.4f}, mean {report['letter_logprob_abs_diff_mean']:.4f} "
      f"(renormalised over A-D; unnormalised max {max_raw:.4f}).", "",
      "| artifact | questions | arm64 vs host: agreement | max / mean \\|Δ log p\\| | host vs host (flash attention "
      "on/off): agreement | max / mean \\|Δ log p\\| | accuracy arm64 / host |",
      "| --- | --- | --- | --- | --- | --- | --- |"]
for name, r in per.items():
    fl = r["host_floor"] or {}
    fd = fl.get("letter_logprob_abs_diff", {})
    md.append(f"| {name} | {r['questions']} | {r['agreement']:.1%} | {r['letter_logprob_abs_diff']['max']:.4f} / "
              f"{r['letter_logprob_abs_diff']['mean']:.4f} | {f(fl.get('agreement'), '{:.1%}')} | "
              f"{f(fd.get('max'), '{:.4f}')} / {f(fd.get('mean'), '{:.4f}')} | "
              f"{r['accuracy']['arm64']:.1%} / {r['accuracy']['host']:.1%} |")
md += ["", "Agreement = share of questions where the arm64 and host answers (argmax over A-D) are the same; "
       "Δ log p = max over A-D of |log p_arm64 - log p_host| (renormalised over A-D). The host-vs-host columns "
       "are the host alone, the same file and questions, with llama.cpp's flash attention on (as eval runs) "
       "and off: how far two valid kernel choices already move the letters on one machine."]
if bench:
    md += ["", f"edgemed bench in the rootfs ({emulated}):", "",
           "| artifact | status | pp tok/s | tg tok/s | answer ms (median) | kernel path |", "| --- | --- | --- | --- | --- | --- |"]
    for name, r in bench.items():
        md.append(f"| {name} | {r['status']} | {f(r['pp_tokens_per_s'])} | {f(r['tg_tokens_per_s'])} | "
                  f"{f(r['answer_ms_median'], '{:.0f}')} | {r['kernel_path']} |")
for prof in bench_profiles:
    pr = prof.get("profile", {})
    md += ["", f"--profile {pr.get('name')} ({pr.get('description')}): estimates from bench/profiles.toml's rough "
           "board figures (bandwidth / weight bytes), not measurements; peak memory measured under emulation:", ""]
    md += [f"- {x.get('artifact')}: {x.get('note')}; est. decode ~{f(x.get('est_decode_tokens_per_s'))} tok/s, "
           f"peak RSS {f((x.get('peak_rss_bytes') or 0) / 2**20, '{:.0f}')} MB" for x in prof.get("artifacts", [])]
md += ["", "| step | status | seconds | note |", "| --- | --- | --- | --- |"]
md += [f"| {s['step']} | {s['status']} | {s['seconds']:.0f} | {s['note']} |" for s in steps]
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
