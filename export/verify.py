"""Verify an exported artifact against the merged model it came from.

The artifact is loaded by ITS OWN runtime (``open_runtime``) in a subprocess, so a native crash (llama.cpp,
onnxruntime, bitsandbytes kernels) fails that format's verification instead of the whole export. During an export
run the subprocesses of transformers artifacts are forked by one server that imported torch, transformers and
bitsandbytes once (``edgemed.process.forkserver``: 2-3 s per format instead of 11-13 s on 2 cores). Checks:

1. token parity: the verification prompts and a probe with digits, punctuation, non-ASCII text and the
   prompt style's special markers tokenize to the SAME ids as in transformers, and ' A'..' D' are the same
   single tokens (a GGUF written with the wrong pre-tokenizer fails here);
2. letter log-probs: ``Runtime.letter_logprobs`` (log-softmax over the vocabulary) on the prompts vs the merged
   model (transformers, fp32); max |delta| (both floored at ``LOGPROB_FLOOR``) must be within the format's
   tolerance (``FormatSpec.tolerance``). Also recorded: the delta unfloored, the delta of the A-D
   distribution renormalised over the four letters (what accuracy depends on), and top-letter agreement;
3. it decodes: at least one generated token (a load-only check hides kernels that crash on first decode).

Tolerances (max |delta log p| over 6 prompts x 4 letters; registry.FORMATS). "measured" is SmolLM2-135M-Instruct
fine-tuned on MedMCQA (merged) / the base model, on this suite; tolerances leave ~1.5-2x headroom over the
worse of the two. A broken export (wrong weights or tokenizer) lands far beyond them; quality is the bench's job.

=============  =========  ==============  ======================================================
format         tolerance  measured        why
=============  =========  ==============  ======================================================
hf             1e-4       0 / 0           the same weights; only reduction order could differ
bnb-int8       0.75       0.20 / 0.42     LLM.int8: int8 weights AND activations (fp outliers)
bnb-nf4        2.5        0.98 / 1.37     4-bit NormalFloat weights, double-quantized scales
onnx           1e-3       2e-5 / 2e-5     fp32 graph; onnxruntime fuses and reorders ops
onnx-int8      1.0        0.48 / 0.50     int8 weights, per-tensor dynamic activations; MLP
                                          down_proj kept fp32 (4.0 nats when quantized too);
                                          merged: 0.64 s8 on VNNI, 0.70 U8U8 (--int8-isa avx2),
                                          0.85 7-bit s8 (reduce_range), 6.21 s8 on AVX2 (saturated)
gguf-f16       0.05       0.005 / 0.006   fp16 weights, fp32 compute
gguf-q8_0      0.2        0.10 / 0.11     8-bit blocks of 32
gguf-q4_k_m    2.0        0.59 / 1.29     4/6-bit K-quants (legacy types where width % 256 != 0)
onnx-int4      3.0        2.00 / 1.15     MatMulNBits int4 RTN, symmetric blocks of 32, int8
                                          compute (acc. level 4), lm_head int4; asymmetric 1.35,
                                          acc. level 1 1.74, lm_head fp32 1.88 (merged)
openvino-int8  0.4        0.22 / 0.14     NNCF int8_asym per channel, stateful, u8 KV cache
openvino-int4  2.5        1.13 / 1.21     NNCF int4_asym groups of 128 (64 where 576 wide),
                                          int8 embedding/lm_head; -awq: - / 1.05
gguf-<other>   by family  -               edgemed.registry.GGUF_TOLERANCE_BY_PREFIX
=============  =========  ==============  ======================================================
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

N_QUESTIONS = 6
# Letters below e**-12 (6e-6) in both models count as equal: quantization noise on letters the model never
# picks would otherwise decide verification (a fine-tuned model puts the other letters far down the tail).
LOGPROB_FLOOR = -12.0
PROBE = "Dose 12.5 mg/kg q8h; 37.5°C, pH 7.40 (n=1024) — naïve β-blocker, 2x/day?"
WORKER_TIMEOUT_S = 900
# OpenMP threads that spin while waiting make llama.cpp ~100x slower on an oversubscribed CPU; timing is not
# what verification measures, so its worker waits passively unless the caller set a policy.


def verification_prompts(style: str, n: int = N_QUESTIONS) -> list[str]:
    """Prompts for `n` bundled sample questions spread over the file (fixed, so runs compare)."""
    from edgemed.data import load_questions
    from edgemed.prompts import get_style

    questions, _ = load_questions("sample", limit=None)
    step = max(len(questions) // n, 1)
    picked = [questions[i * step] for i in range(n)]
    return [get_style(style).prompt(q) for q in picked]


def probe_texts(style: str) -> list[str]:
    """Texts whose tokenization must match exactly: digits, punctuation, non-ASCII, the style's markers."""
    from edgemed.prompts import get_style

    s = get_style(style)
    return [PROBE, s.prompt_around(PROBE) + " C" + s.turn_end]


@dataclass
class Reference:
    """The merged model's answers on the verification prompts."""

    style: str
    prompts: list[str]
    probes: list[str]
    letter_logprobs: np.ndarray
    token_ids: list[list[int]]
    letter_ids: list[int]

    @classmethod
    def compute(cls, merged: Path, style: str, threads: int | None = None) -> Reference:
        from edgemed.runtimes.hf import TransformersRuntime

        prompts, probes = verification_prompts(style), probe_texts(style)
        with TransformersRuntime(merged, threads=threads, device="cpu", dtype="float32") as rt:
            return cls(
                style=style,
                prompts=prompts,
                probes=probes,
                letter_logprobs=rt.letter_logprobs(prompts),
                token_ids=[rt.tokenize(t) for t in prompts + probes],
                letter_ids=list(rt.letter_ids),
            )


def _worker_env() -> dict[str, str]:
    return {"OMP_WAIT_POLICY": "PASSIVE", **os.environ, "PYTHONWARNINGS": "ignore"}


# What a transformers artifact's worker imports (bitsandbytes only where its extra is installed): a worker forked
# by the fork server starts with them imported.
TRANSFORMERS_PRELOAD = ["edgemed.export.verify", "edgemed.runtimes.hf", "edgemed.models",
                        "transformers.models.auto.modeling_auto", "transformers.models.auto.tokenization_auto",
                        "transformers.models.llama.modeling_llama", "bitsandbytes"]


def transformers_workers(folder: Path):
    """A fork server for the workers of transformers artifacts (hf, bnb-*): it imports torch, transformers and
    bitsandbytes once (starting now, beside the caller's work) instead of each worker importing them afresh.
    Pass it to :func:`verify` for those artifacts only: every other runtime's worker stays a fresh process."""
    from edgemed.process.forkserver import ForkServer

    return ForkServer(TRANSFORMERS_PRELOAD, Path(folder) / "forkserver.log", env=_worker_env())


def run_worker(artifact: Path, texts: dict[str, Any], threads: int | None, server=None) -> dict[str, Any]:
    """Load `artifact` with its runtime in a child process (forked by `server`, a :func:`transformers_workers`,
    when given and able) and collect what verification compares."""
    from edgemed.process.child import python_module, run_child

    with tempfile.TemporaryDirectory(prefix="edgemed-verify-") as tmp:
        req, res = Path(tmp) / "request.json", Path(tmp) / "result.json"
        req.write_text(json.dumps({"artifact": str(artifact), "threads": threads, **texts}))
        outcome = None
        if server is not None:
            outcome = server.run("edgemed.export.verify:main", [str(req), str(res)], Path(tmp) / "log",
                                  timeout_s=WORKER_TIMEOUT_S)
        if outcome is None:  # no server, or it could not take the job: a fresh process
            outcome = run_child(python_module("edgemed.export.verify", str(req), str(res)), Path(tmp) / "log",
                                timeout_s=WORKER_TIMEOUT_S, env=_worker_env())
        if outcome.timed_out:
            return {"error": f"the runtime did not finish the verification prompts within {WORKER_TIMEOUT_S} s"}
        if not outcome.ok or not res.is_file():
            return {"error": outcome.said_of("the runtime") if outcome.signal is not None else outcome.why()}
        return json.loads(res.read_text())


def verify(artifact: Path, ref: Reference, tolerance: float, threads: int | None = None,
           server=None) -> dict[str, Any]:
    """Compare the artifact with the reference; ``passed`` says whether it may be shipped. `server`: a
    :func:`transformers_workers` to fork the worker of a transformers artifact."""
    got = run_worker(artifact, {"prompts": ref.prompts, "probes": ref.probes}, threads, server)
    result: dict[str, Any] = {"tolerance": tolerance, "prompts": len(ref.prompts), "prompt_style": ref.style}
    if "error" in got:
        return {**result, "passed": False, "error": got["error"]}
    mismatch = None
    for i, (want, have) in enumerate(zip(ref.token_ids, got["token_ids"], strict=True)):
        if want != have:
            diff = (j for j, (a, b) in enumerate(zip(want, have, strict=False)) if a != b)
            pos = next(diff, min(len(want), len(have)))
            mismatch = {"text": i, "position": pos, "expected": want[pos:pos + 6], "got": have[pos:pos + 6]}
            break
    from edgemed.runtimes.logits import softmax_rows

    lp = np.asarray(got["letter_logprobs"], dtype=np.float64)
    raw = np.abs(lp - ref.letter_logprobs)
    delta = np.abs(np.maximum(lp, LOGPROB_FLOOR) - np.maximum(ref.letter_logprobs, LOGPROB_FLOOR))
    choice = np.abs(np.log(softmax_rows(lp)) - np.log(softmax_rows(ref.letter_logprobs)))
    parity = mismatch is None and got["letter_ids"] == ref.letter_ids
    result.update(
        max_abs_delta=float(delta.max()),
        mean_abs_delta=float(delta.mean()),
        max_abs_delta_unfloored=float(raw.max()),
        max_abs_delta_choice=float(choice.max()),
        top_letter_agreement=float((lp.argmax(1) == ref.letter_logprobs.argmax(1)).mean()),
        token_parity=parity,
        tokens_checked=sum(len(t) for t in ref.token_ids),
        decoded_tokens=got["decoded_tokens"],
        runtime=json.loads(json.dumps(got["info"]).replace(str(artifact) + "/", "")),
    )
    problems = []
    if mismatch is not None:
        result["token_mismatch"] = mismatch
        problems.append(f"token ids differ from transformers (text {mismatch['text']} at {mismatch['position']})")
    elif got["letter_ids"] != ref.letter_ids:
        problems.append(f"letter token ids {got['letter_ids']} differ from transformers' {ref.letter_ids}")
    if not delta.max() <= tolerance:
        problems.append(f"max |delta log p| {delta.max():.4g} > tolerance {tolerance:g}")
    if got["decoded_tokens"] < 1:
        problems.append("generated no token")
    result["passed"] = not problems
    if problems:
        result["error"] = "; ".join(problems)
    return result


def _worker(req_path: str, res_path: str) -> int:
    """Subprocess side: open the artifact with its own runtime, score, tokenize, decode."""
    from edgemed.runtimes.base import open_runtime

    req = json.loads(Path(req_path).read_text())
    with open_runtime(Path(req["artifact"]), threads=req["threads"], device="cpu") as rt:
        lp = rt.letter_logprobs(req["prompts"])
        ids = [rt.tokenize(t) for t in req["prompts"] + req["probes"]]
        gen = rt.generate(req["prompts"][0], max_new_tokens=2)
        out = {
            "letter_logprobs": lp.tolist(),
            "token_ids": ids,
            "letter_ids": list(rt.letter_ids),
            "decoded_tokens": gen.new_tokens,
            "info": rt.info(),
        }
    Path(res_path).write_text(json.dumps(out, default=str))
    return 0


def main(req_path: str, res_path: str) -> int:
    """The worker's entry point, in a fresh process (``python -m``) or a child of the fork server."""
    from edgemed.errors import EdgemedError

    try:
        return _worker(req_path, res_path)
    except EdgemedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
