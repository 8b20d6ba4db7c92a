"""Numbers read from logits, the same in every runtime and every reader of them: float32 log-softmax rows (computed
in float64 for the normaliser), the A-D distribution from letter log-probabilities, and the next token picked
(greedy, or temperature and nucleus sampling)."""

from __future__ import annotations

import numpy as np

_SOFTMAX_BLOCK_BYTES = 1 << 20  # float64 rows per block: about 1 MiB, so each block's passes stay in cache


def log_softmax_rows(logits: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """float32 log-softmax over the last axis, computed in float64 for the normaliser: per row,
    float32(float64(x - max) - log(sum(exp(float64(x - max))))).

    Rows are done a block at a time (about 1 MiB of float64), each pass in place: the same operations on the
    same values as over the whole array at once, so the result is the same to the last bit (a test holds it),
    3-4x faster on a fidelity pass's per-sequence arrays (scripts/dev/fidelity_pass_cost.py). `out` (float32,
    the same shape) receives the result; it may be `logits` itself."""
    x = np.asarray(logits, dtype=np.float32)
    if out is None:
        out = np.empty(x.shape, dtype=np.float32)
    elif out.dtype != np.float32 or out.shape != x.shape or not out.flags.c_contiguous:
        raise ValueError("log_softmax_rows: out must be a C-contiguous float32 array of the logits' shape")
    if x.size == 0:
        return out
    width = x.shape[-1]
    rows, dest = x.reshape(-1, width), out.reshape(-1, width)
    block = max(1, _SOFTMAX_BLOCK_BYTES // (8 * width))
    buf = np.empty((min(block, len(rows)), width), dtype=np.float64)
    for start in range(0, len(rows), block):
        part = rows[start : start + block]
        n = len(part)
        shifted = np.subtract(part, part.max(axis=-1, keepdims=True), out=dest[start : start + n])
        wide = buf[:n]
        wide[...] = shifted
        np.exp(wide, out=wide)
        lse = np.log(wide.sum(axis=-1, keepdims=True))
        np.subtract(shifted, lse, out=wide)
        dest[start : start + n] = wide
    return out


def softmax_rows(logprobs: np.ndarray) -> np.ndarray:
    """Renormalise letter log-probs into a distribution over A-D."""
    z = logprobs - logprobs.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


def pick_token(logits: np.ndarray, temperature: float, top_p: float, rng: np.random.Generator) -> int:
    """Greedy when temperature is 0, else temperature + nucleus sampling; the same rule in every runtime."""
    if temperature <= 0:
        return int(np.argmax(logits))
    logits = np.asarray(logits, dtype=np.float64).ravel()
    z = logits / temperature
    z -= z.max()
    p = np.exp(z)
    p /= p.sum()
    if top_p < 1.0:
        order = np.argsort(-p)
        keep = np.cumsum(p[order]) - p[order] < top_p
        mask = np.zeros_like(p, dtype=bool)
        mask[order[keep]] = True
        p = np.where(mask, p, 0.0)
        p /= p.sum()
    return int(rng.choice(len(p), p=p))
