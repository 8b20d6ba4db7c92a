#!/usr/bin/env python
"""Where a bench fidelity pass spends its time: the engine's forward passes vs edgemed's log-softmax.

Runs one artifact's ``sequence_logprobs`` over the sequences a bench run's stored reference scored (the default
pipeline: the 53 held-out questions with their answers), then times, on the very rows it returned, the blocked
in-place ``log_softmax_rows`` the runtimes use and the whole-array formula it replaced, and checks that the two
agree bit for bit. The engine's own share is the pass minus the log-softmax (for transformers artifacts, which
normalise with torch, the log-softmax is inside the pass and the figure is only the comparison).

Usage:
    python scripts/dev/fidelity_pass_cost.py runs/pipeline/artifacts/gguf-q8_0 \\
        --reference runs/pipeline/bench/work/reference-fidelity --threads 2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def whole_array(x: np.ndarray) -> np.ndarray:
    """The formula over the whole array at once (what log_softmax_rows computed before it went by blocks)."""
    x = np.asarray(x, dtype=np.float32)
    m = x.max(axis=-1, keepdims=True)
    lse = np.log(np.exp((x - m).astype(np.float64)).sum(axis=-1, keepdims=True))
    return (x - m - lse).astype(np.float32)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifact", type=Path)
    ap.add_argument("--reference", type=Path, required=True, help="a bench run's work/reference-fidelity folder")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--limit", type=int, default=None, help="only the first N sequences")
    args = ap.parse_args()

    from edgemed.bench.measure.fidelity import reference_sequences
    from edgemed.runtimes.base import open_runtime
    from edgemed.runtimes.logits import log_softmax_rows
    from edgemed.sysinfo import cpu_flags

    seqs = reference_sequences(args.reference)[: args.limit]
    runtime = open_runtime(args.artifact, threads=args.threads, device="cpu")
    passes = new = old = 0.0
    same = True
    tokens = 0
    for s in seqs:
        t = time.perf_counter()
        rows = runtime.sequence_logprobs(s.ids)
        passes += time.perf_counter() - t
        tokens += len(s.ids)
        t = time.perf_counter()
        a = log_softmax_rows(rows)
        new += time.perf_counter() - t
        t = time.perf_counter()
        b = whole_array(rows)
        old += time.perf_counter() - t
        same = same and bool(np.array_equal(a, b, equal_nan=True))
    runtime.close()
    normalises_in_numpy = runtime.name != "transformers"
    out = {
        "artifact": str(args.artifact), "runtime": runtime.name, "threads": args.threads,
        "sequences": len(seqs), "tokens": tokens, "vocabulary": int(rows.shape[1]),
        "pass_s": round(passes, 3),
        "log_softmax_blocked_s": round(new, 3), "log_softmax_whole_array_s": round(old, 3),
        "engine_s": round(passes - new, 3) if normalises_in_numpy else None,
        "pass_with_whole_array_s": round(passes - new + old, 3) if normalises_in_numpy else None,
        "bit_identical": same,
        "cpu_flags": sorted(f for f in cpu_flags() if f.startswith(("avx512_vnni", "avx512_bf16", "amx", "avx2"))),
    }
    print(json.dumps(out, indent=2))
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
