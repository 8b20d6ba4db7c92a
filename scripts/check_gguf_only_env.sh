#!/usr/bin/env bash
# Prove a GGUF artifact runs with ONLY the `gguf` extra: a throwaway venv with `pip install -e '.[gguf]'`
# (no torch, no transformers), then open the artifact through edgemed's runtime interface and score
# letters on bundled sample questions.
#   usage: scripts/check_gguf_only_env.sh GGUF_ARTIFACT [N_QUESTIONS]
#   env:   KEEP_VENV=1 keeps the venv (printed path); PYTHON picks the interpreter (default python3)
# llama-cpp-python comes from pip's wheel cache when it was built before (else it compiles, ~4 min).
set -euo pipefail
cd "$(dirname "$0")/.."
ARTIFACT=${1:?usage: scripts/check_gguf_only_env.sh GGUF_ARTIFACT [N_QUESTIONS]}
N=${2:-20}
PY=${PYTHON:-python3}
VENV=$(mktemp -d "${TMPDIR:-/tmp}/edgemed-gguf-only.XXXXXX")
[ "${KEEP_VENV:-0}" = 1 ] || trap 'rm -rf "$VENV"' EXIT
export PIP_DISABLE_PIP_VERSION_CHECK=1

t0=$(date +%s)
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q -c constraints/cpu.txt -e '.[gguf]' 2> >(grep -v 'is ignored: it is neither' >&2)
echo "check: venv $VENV built in $(( $(date +%s) - t0 )) s"
echo "check: installed: $("$VENV/bin/python" -m pip list --format=freeze 2>/dev/null | tr '\n' ' ')"

"$VENV/bin/python" - "$ARTIFACT" "$N" <<'EOF'
import importlib.util, json, sys, time

for banned in ("torch", "transformers"):
    if importlib.util.find_spec(banned) is not None:
        sys.exit(f"check: FAIL: {banned} is installed in the gguf-only venv")

from edgemed.data import load_questions
from edgemed.prompts import get_style
from edgemed.runtimes.base import open_runtime, softmax_rows

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
    "decode_tokens_per_s": gen.decode_tokens_per_s, "seconds": round(time.perf_counter() - t, 2),
    "torch_or_transformers_loaded": loaded,
}, indent=2))
if loaded:
    sys.exit("check: FAIL: torch/transformers got imported")
print("check: OK: GGUF artifact scored with only edgemed[gguf] installed")
EOF

# The same through the CLI users run: `edgemed eval` on the artifact, still without torch/transformers.
echo "check: edgemed eval in the gguf-only venv"
OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE} "$VENV/bin/edgemed" eval "$ARTIFACT" --data sample --limit "$N" \
  --out "$VENV/eval" --no-progress
echo "check: OK: edgemed eval ran with only edgemed[gguf] installed"
