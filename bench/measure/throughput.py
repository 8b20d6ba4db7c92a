"""Fixed-length throughput, as llama-bench measures it: ``pp`` (prompt processing) and ``tg`` (text generation).

- pp: a fresh sequence of ``n_prompt`` random token ids evaluated at once; tokens/s = n_prompt / time.
- tg: ``n_gen`` single-token steps from an empty cache, each feeding a random token id (end-of-turn cannot
  stop it); tokens/s = n_gen / time. Like llama-bench's test_gen, nothing is sampled.
Each test runs ``warmup`` unmeasured times, then ``repetitions`` times. As in llama-bench, pp's warm-up is a whole
pp run and tg's a single step (llama-bench's ``test_gen(ctx, 1)``; here one prefill and one decode, so that both
of the runtime's code paths are warm). The result has llama-bench's names
(``n_prompt``, ``n_gen``, ``avg_ts``, ``stddev_ts``, ``samples_ts``, ``samples_ns``, ``avg_ns``).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np


def _result(n_prompt: int, n_gen: int, tokens: int, seconds: list[float]) -> dict[str, Any]:
    ts = [tokens / s for s in seconds]
    ns = [int(s * 1e9) for s in seconds]
    return {
        "n_prompt": n_prompt, "n_gen": n_gen,
        "avg_ns": int(statistics.fmean(ns)), "stddev_ns": int(statistics.stdev(ns)) if len(ns) > 1 else 0,
        "avg_ts": statistics.fmean(ts), "stddev_ts": statistics.stdev(ts) if len(ts) > 1 else 0.0,
        "samples_ns": ns, "samples_ts": ts,
    }


def random_tokens(vocab_size: int, n: int, seed: int) -> list[int]:
    return np.random.default_rng(seed).integers(0, vocab_size, size=n).tolist()


def prompt_processing(runtime, n_prompt: int, repetitions: int, warmup: int, seed: int = 0) -> dict[str, Any]:
    ids = random_tokens(runtime.vocab_size, n_prompt, seed)
    seconds = []
    for rep in range(warmup + repetitions):
        start = time.perf_counter()
        runtime.prefill(ids)
        elapsed = time.perf_counter() - start
        if rep >= warmup:
            seconds.append(elapsed)
    return _result(n_prompt, 0, n_prompt, seconds)


def text_generation(runtime, n_gen: int, repetitions: int, warmup: int, seed: int = 1) -> dict[str, Any]:
    ids = random_tokens(runtime.vocab_size, n_gen, seed)
    for _ in range(warmup):
        runtime.prefill(ids[:1])
        runtime.decode(ids[1])
    seconds = []
    for _ in range(repetitions):
        start = time.perf_counter()
        runtime.prefill(ids[:1])
        for token in ids[1:]:
            runtime.decode(token)
        seconds.append(time.perf_counter() - start)
    return _result(0, n_gen, n_gen, seconds)
