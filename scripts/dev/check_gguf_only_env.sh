#!/usr/bin/env bash
# Prove the board path: a throwaway venv with ONLY `pip install -e '.[gguf]'` (no torch, no transformers).
# 1. open a GGUF artifact through edgemed's runtime interface and score letters on bundled sample questions;
# 2. run EVERY command there (info, data check, eval of the GGUF, eval of an hf folder and of a model alias, train,
#    merge, export, bench of the GGUF, report, pipeline, and --help of each): each must exit 0 (works) or 2 (one
#    line naming the extra to install, no traceback); those a board needs must exit 0. Prints command -> exit code.
#   usage: scripts/dev/check_gguf_only_env.sh GGUF_ARTIFACT [N_QUESTIONS]
#   env:   KEEP_VENV=1 keeps the venv (printed path); PYTHON picks the interpreter (default python3);
#          VENV=DIR reuses an existing gguf-only venv instead of building one
# llama-cpp-python comes from pip's wheel cache when it was built before (else it compiles, ~4 min).
set -euo pipefail
cd "$(dirname "$0")/../.."  # the repo root (this script is scripts/dev/)
ARTIFACT=${1:?usage: scripts/dev/check_gguf_only_env.sh GGUF_ARTIFACT [N_QUESTIONS]}
N=${2:-20}
PY=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1
if [ -n "${VENV:-}" ]; then
  REUSED=1
  echo "check: reusing venv $VENV"
else
  VENV=$(mktemp -d "${TMPDIR:-/tmp}/edgemed-gguf-only.XXXXXX")
  [ "${KEEP_VENV:-0}" = 1 ] || trap 'rm -rf "$VENV"' EXIT
  t0=$(date +%s)
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q -c constraints/cpu.txt -e '.[gguf]' 2> >(grep -v 'is ignored: it is neither' >&2)
  echo "check: venv $VENV built in $(( $(date +%s) - t0 )) s"
fi
echo "check: installed: $("$VENV/bin/python" -m pip list --format=freeze 2>/dev/null | tr '\n' ' ')"

"$VENV/bin/python" - "$ARTIFACT" "$N" <<'EOF'
import importlib.util, json, sys, time

for banned in ("torch", "transformers"):
    if importlib.util.find_spec(banned) is not None:
        sys.exit(f"check: FAIL: {banned} is installed in the gguf-only venv")

from edgemed.data import load_questions
from edgemed.prompts import get_style
from edgemed.runtimes.base import open_runtime
from edgemed.runtimes.logits import softmax_rows

path, n = sys.argv[1], int(sys.argv[2])
questions = load_questions("sample")[0][:n]
t = time.perf_counter()
with open_runtime(path, threads=None) as rt:
    style = get_style(rt.prompt_style)
    lp = rt.letter_logprobs([style.prompt(q) for q in questions])
    gen = rt.generate(style.prompt(questions[0]), max_new_tokens=8)
    info = rt.info()
pred = softmax_rows(lp).argmax(1)
acc = float((pred == [q.answer for q in questions]).mean())
loaded = sorted({m.split(".")[0] for m in sys.modules} & {"torch", "transformers"})
print(json.dumps({
    "artifact": path, "runtime": info["runtime"], "kernel_path": info["kernel_path"], "prompt_style": style.name,
    "questions": len(questions), "accuracy": round(acc, 3), "first_answer": gen.text,
    "decode_tokens_per_s": (gen.new_tokens - 1) / gen.decode_s if gen.new_tokens > 1 and gen.decode_s > 0 else None,
    "seconds": round(time.perf_counter() - t, 2),
    "torch_or_transformers_loaded": loaded,
}, indent=2))
if loaded:
    sys.exit("check: FAIL: torch/transformers got imported")
print("check: OK: GGUF artifact scored with only edgemed[gguf] installed")
EOF

# 2. Every command through the CLI users run, still without torch/transformers.
WORK=$(mktemp -d "${TMPDIR:-/tmp}/edgemed-gguf-only-cmds.XXXXXX")
trap 'rm -rf "$WORK"; [ "${KEEP_VENV:-0}" = 1 ] || [ -n "${REUSED:-}" ] || rm -rf "$VENV"' EXIT
mkdir -p "$WORK/hf-folder" "$WORK/cache"
echo '{"model_type": "llama"}' > "$WORK/hf-folder/config.json"  # an hf model folder: needs the train extra
export EDGEMED_CACHE="$WORK/cache"  # empty: a model alias would have to be built (with transformers)
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
ED="$VENV/bin/edgemed"
SMALL=(--limit "$N" -r 1 -p 32 -n 8 --latency-prompts 1 --warmup 0)
ROWS=()
FAILED=0
# run EXPECTED NAME ARGS...: EXPECTED is 0 (must work) or "0|2" (works, or exits 2 naming an extra)
run() {
  local expect=$1 name=$2; shift 2
  local rc=0
  "$ED" "$@" >"$WORK/out.txt" 2>"$WORK/err.txt" || rc=$?
  local verdict=ok
  if [ "$rc" != 0 ] && [ "$rc" != 2 ]; then verdict="FAIL (exit $rc)"
  elif [ "$expect" = 0 ] && [ "$rc" != 0 ]; then verdict="FAIL (must work here)"
  elif grep -q Traceback "$WORK/out.txt" "$WORK/err.txt"; then verdict="FAIL (traceback)"
  elif [ "$rc" = 2 ] && ! tail -n 1 "$WORK/err.txt" | grep -q "^edgemed .*error: .*edgemed\["; then
    verdict="FAIL (exit 2 without a last line naming the extra)"
  fi
  local why=""
  [ "$rc" = 2 ] && why=$(tail -n 1 "$WORK/err.txt" | sed "s/^edgemed [a-z ]*: error: //")
  [ "$verdict" = ok ] || { FAILED=1; echo "--- $name"; tail -n 5 "$WORK/err.txt"; }
  ROWS+=("$(printf '%-34s %4s  %-6s %s' "$name" "$rc" "${verdict%% *}" "$why")")
}
echo "check: every command in the gguf-only venv"
run 0 "edgemed --help" --help
for c in info "data check" train merge export eval bench report pipeline; do
  # shellcheck disable=SC2086
  run 0 "$c --help" $c --help
done
run 0 "info" info --out "$WORK/info"
run 0 "data check sample" data check sample --out "$WORK/check"
printf 'PAR1' > "$WORK/rows.parquet"
run "0|2" "data check a .parquet file" data check "$WORK/rows.parquet"
run 0 "eval GGUF" eval "$ARTIFACT" --data sample --limit "$N" --out "$WORK/eval" --no-progress
run "0|2" "eval hf folder" eval "$WORK/hf-folder" --limit "$N" --no-progress
run "0|2" "eval model alias tiny-random" eval tiny-random --limit "$N" --no-progress
run "0|2" "train tiny-random" train --model tiny-random --max-steps 1 --out "$WORK/train"
run "0|2" "merge" merge --adapter "$WORK/train" --out "$WORK/merged"
run "0|2" "export" export "$WORK/hf-folder" --out "$WORK/exports"
run 0 "bench GGUF (--profile rpi5)" bench "$ARTIFACT" "${SMALL[@]}" --profile rpi5 --out "$WORK/bench"
run 0 "report bench vs itself" report "$WORK/bench" "$WORK/bench"
run "0|2" "pipeline tiny-random" pipeline --model tiny-random --max-steps 1 --out "$WORK/pipeline"
printf '%-34s %4s  %-6s %s\n' command exit check "message (exit 2)"
printf '%s\n' "${ROWS[@]}"
if [ "$FAILED" != 0 ]; then
  echo "check: FAIL: a command in the gguf-only venv exited other than 0/2, or did not say what to install"
  exit 1
fi
echo "check: OK: every command exits 0 or 2 (naming the extra) with only edgemed[gguf] installed"
