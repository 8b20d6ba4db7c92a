"""Fidelity to the reference: KL divergence, top-1 agreement and perplexity, token by token (llama-perplexity
``--kl-divergence`` for every format, through edgemed's runtimes).

The reference artifact's worker runs first and stores, for every scored position, its top-k log-probs (indices
and values), ``TAIL_SAMPLES`` tokens drawn from the rest of its distribution (indices and log-probs), and the
log-prob of the actual next token: (k + 64) x 8 bytes per token whatever the vocabulary (about 8.5 KiB for
k = 1024; a 128k-vocabulary model costs the same). Every other worker memory-maps that folder and compares its
own full log-softmax row with it.

KL(reference || artifact) = sum over the top-k of p (log p - log q), exact, plus the rest's share
sum_rest p (log p - log q) = r * E[log p - log q] over tokens drawn from the rest in proportion to p (r = the
reference's mass outside the top-k), estimated without bias from the stored draws. The exact KL over {each
top-k token, the rest as one bucket}, a lower bound of the true value, is reported too
(``kld_topk_bound_mean``). Against llama-perplexity's full-vocabulary KLD on the same 4080 tokens (16 x 512,
SmolLM2, q8_0 and q4_k_m vs f16) the bound alone was 5% low with k = 1024 (``tail_mass`` 0.029) and 0.5% low
with k = 16384; scripts/dev/crosscheck_kld.py prints the comparison with the tail draws.

What is scored: with the default text (the evaluation questions, each as prompt + answer in the model's prompt
style), every next-token prediction of each sequence. With ``--fidelity-text`` the file is tokenized whole,
cut into chunks of ``ctx`` tokens and, as llama-perplexity does, only the second half of each chunk is scored
(the first half is context).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgemed.bench.measure.stats import percentile
from edgemed.errors import EdgemedError

META = "meta.json"
TAIL_SAMPLES = 64


@dataclass
class Sequence:
    """One fresh sequence and the rows [first, last) of it that are scored (row i predicts token i+1). A question's
    sequence (prompt + answer) also names the question and the row after its prompt, where the letter log-probs
    that eval scores sit (None when the prompt's tokens are not a prefix of the sequence's)."""

    ids: list[int]
    first: int
    last: int
    question: str | None = None
    answer_row: int | None = None


def question_sequences(runtime, questions, style: str) -> list[Sequence]:
    from edgemed.prompts import get_style

    st = get_style(style)
    seqs = []
    ctx = runtime.context_length
    for q in questions:
        prompt = runtime.tokenize(st.prompt(q))
        ids = runtime.tokenize(st.prompt(q) + st.target(q))
        if len(ids) >= 2 and (not ctx or len(ids) <= ctx):  # longer than the context: skipped, as in scoring
            row = len(prompt) - 1 if 0 < len(prompt) < len(ids) and ids[: len(prompt)] == prompt else None
            seqs.append(Sequence(ids, 0, len(ids) - 1, q.id, row))
    return seqs


def text_sequences(runtime, text: str, ctx: int, chunks: int | None) -> list[Sequence]:
    """llama-perplexity's chunking: the text tokenized whole, `ctx`-token chunks, the second half of each scored."""
    tokens = runtime.tokenize(text)
    n = len(tokens) // ctx
    if chunks is not None:
        n = min(n, chunks)
    if n < 1:
        raise EdgemedError(
            f"--fidelity-text has {len(tokens)} tokens, fewer than one chunk of --fidelity-ctx {ctx}; "
            "give a longer text or a smaller --fidelity-ctx"
        )
    first = ctx // 2
    return [Sequence(tokens[i * ctx : (i + 1) * ctx], first, ctx - 1) for i in range(n)]


def build_sequences(runtime, config, questions, style: str) -> list[Sequence]:
    if config.fidelity_text is not None:
        try:
            text = Path(config.fidelity_text).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise EdgemedError(f"--fidelity-text {config.fidelity_text} cannot be read ({exc}); "
                               "give a UTF-8 plain-text file") from None
        return text_sequences(runtime, text, config.fidelity_ctx, config.fidelity_chunks)
    return question_sequences(runtime, questions, style)


def _top_k(lp: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, values) of each row's k largest log-probs, largest first."""
    k = min(k, lp.shape[1])
    idx = np.argpartition(-lp, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(lp, idx, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    return np.take_along_axis(idx, order, axis=1).astype(np.int32), np.take_along_axis(vals, order, axis=1)


def _tail_draws(lp: np.ndarray, top_idx: np.ndarray, rng: np.random.Generator,
                n: int = TAIL_SAMPLES, block: int = 32) -> np.ndarray:
    """Per row, `n` token ids drawn (with replacement) from the tokens outside `top_idx`, in proportion to p."""
    out = np.zeros((len(lp), n), dtype=np.int32)
    for start in range(0, len(lp), block):
        p = np.exp(lp[start : start + block].astype(np.float64))
        np.put_along_axis(p, top_idx[start : start + block].astype(np.int64), 0.0, axis=1)
        cum = np.cumsum(p, axis=1)
        for j, row in enumerate(cum):
            if row[-1] > 0:
                u = rng.random(n) * row[-1]
                out[start + j] = np.minimum(np.searchsorted(row, u, side="right"), len(row) - 1)
    return out


def save_reference(runtime, sequences: list[Sequence], folder: Path, top_k: int, on_progress=None,
                   on_rows=None) -> dict[str, Any]:
    """Run the reference over `sequences`; store its top-k, tail draws and target log-probs under `folder`
    (memory-mapped: bounded memory whatever the number of tokens). Returns the meta record with ``self``: the
    reference's own fidelity summary (KLD 0, its perplexity), read from this very pass. `on_rows(n, lp)` sees
    each sequence's full log-prob rows (eval reads its letters there: one forward pass for both)."""
    from edgemed.fsutil import atomic_write_json

    folder.mkdir(parents=True, exist_ok=True)
    rows = sum(s.last - s.first for s in sequences)
    k = min(top_k, runtime.vocab_size)
    idx = np.lib.format.open_memmap(folder / "topk_idx.npy", mode="w+", dtype=np.int32, shape=(rows, k))
    val = np.lib.format.open_memmap(folder / "topk_logp.npy", mode="w+", dtype=np.float32, shape=(rows, k))
    shape = (rows, TAIL_SAMPLES)
    tidx = np.lib.format.open_memmap(folder / "tail_idx.npy", mode="w+", dtype=np.int32, shape=shape)
    tval = np.lib.format.open_memmap(folder / "tail_logp.npy", mode="w+", dtype=np.float32, shape=shape)
    target = np.empty(rows, dtype=np.float32)
    seq_of_row = np.empty(rows, dtype=np.int32)
    at = 0
    same = np.empty(rows, dtype=bool)
    for n, s in enumerate(sequences):
        full = runtime.sequence_logprobs(s.ids)
        if on_rows:
            on_rows(n, full)
        lp = full[s.first : s.last]
        i, v = _top_k(lp, k)
        m = len(lp)
        idx[at : at + m], val[at : at + m] = i, v
        draws = _tail_draws(lp, i, np.random.default_rng(n))
        tidx[at : at + m], tval[at : at + m] = draws, np.take_along_axis(lp, draws.astype(np.int64), axis=1)
        target[at : at + m] = lp[np.arange(m), s.ids[s.first + 1 : s.last + 1]]
        seq_of_row[at : at + m] = n
        same[at : at + m] = lp.argmax(axis=1) == i[:, 0]
        at += m
        if on_progress:
            on_progress(n + 1, len(sequences))
    for arr in (idx, val, tidx, tval):
        arr.flush()
    del idx, val, tidx, tval
    np.save(folder / "target_logp.npy", target)
    np.save(folder / "seq_of_row.npy", seq_of_row)
    meta = {"rows": rows, "top_k": k, "tail_samples": TAIL_SAMPLES, "vocab_size": runtime.vocab_size,
            "sequences": [asdict(s) for s in sequences]}
    atomic_write_json(folder / META, meta)
    # against itself every stored value is its own: KL terms are exactly 0 (what a second pass computed before)
    zeros = np.zeros(rows)
    tail_mass = np.clip(1.0 - np.exp(np.load(folder / "topk_logp.npy", mmap_mode="r").astype(np.float64)).sum(1),
                        0.0, 1.0)
    own = fidelity_summary(zeros, same, target.astype(np.float64), target.astype(np.float64), seq_of_row, k,
                           float(tail_mass.mean()) if rows else 0.0)
    own.update(kld_topk_bound_mean=0.0, tail_samples=TAIL_SAMPLES)
    return {**meta, "self": own}


def load_reference(folder: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    meta = json.loads((folder / META).read_text(encoding="utf-8"))
    arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False)
              for name in ("topk_idx", "topk_logp", "tail_idx", "tail_logp", "target_logp", "seq_of_row")}
    return meta, arrays


def token_divergence(lq: np.ndarray, ref_idx: np.ndarray, ref_lp: np.ndarray, tail_idx: np.ndarray | None = None,
                     tail_lp: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row (KL estimate, its top-k lower bound, the reference's mass outside its top-k) of KL(p || q);
    lq are the artifact's full log-probs.

    The bound is the exact KL over {each of the reference's top-k tokens, the rest as one bucket}; the estimate
    replaces the bucket's term by r x the mean of (log p - log q) over the tail draws: unbiased, so its mean over
    tokens converges to the full-vocabulary mean (one token's value carries sampling noise of the order of r).
    Without draws the estimate is the bound."""
    p = np.exp(ref_lp.astype(np.float64))
    lq_top = np.take_along_axis(lq, ref_idx.astype(np.int64), axis=1).astype(np.float64)
    kl_top = (p * (ref_lp - lq_top)).sum(axis=1)
    r = np.clip(1.0 - p.sum(axis=1), 0.0, 1.0)
    q_rest = np.clip(1.0 - np.exp(lq_top).sum(axis=1), 1e-30, 1.0)
    bucket = np.where(r > 1e-12, r * (np.log(np.maximum(r, 1e-30)) - np.log(q_rest)), 0.0)
    bound = np.maximum(kl_top + bucket, 0.0)
    if tail_idx is None or tail_lp is None:
        return bound, bound, r
    lq_tail = np.take_along_axis(lq, tail_idx.astype(np.int64), axis=1).astype(np.float64)
    tail = r * (tail_lp.astype(np.float64) - lq_tail).mean(axis=1)
    return kl_top + tail, bound, r


def reference_sequences(folder: Path) -> list[Sequence]:
    """The sequences the stored reference scored (an older store has no question/answer_row fields)."""
    meta = json.loads((folder / META).read_text(encoding="utf-8"))
    known = set(Sequence.__dataclass_fields__)
    return [Sequence(**{k: v for k, v in s.items() if k in known}) for s in meta["sequences"]]


def compare_with_reference(runtime, folder: Path, on_progress=None, on_rows=None) -> dict[str, Any]:
    """This runtime's fidelity to the stored reference, over the very token ids the reference scored;
    `on_rows(n, lp)` sees each sequence's full log-prob rows, as in :func:`save_reference`."""
    meta, ref = load_reference(folder)
    if meta["vocab_size"] != runtime.vocab_size:
        raise EdgemedError(
            f"the reference has a vocabulary of {meta['vocab_size']} tokens, this artifact {runtime.vocab_size}: "
            "fidelity compares artifacts of one model only"
        )
    kld, bound, same, lq_target, tail = [], [], [], [], []
    at = 0
    seqs = meta["sequences"]
    for n, s in enumerate(seqs):
        full = runtime.sequence_logprobs(s["ids"])
        if on_rows:
            on_rows(n, full)
        lp = full[s["first"] : s["last"]]
        m = len(lp)
        ref_lp = np.asarray(ref["topk_logp"][at : at + m])
        est, low, outside = token_divergence(lp, ref["topk_idx"][at : at + m], ref_lp, ref["tail_idx"][at : at + m],
                                             ref["tail_logp"][at : at + m])
        kld.append(est)
        bound.append(low)
        tail.append(outside)
        same.append(lp.argmax(axis=1) == ref["topk_idx"][at : at + m, 0])
        lq_target.append(lp[np.arange(m), s["ids"][s["first"] + 1 : s["last"] + 1]].astype(np.float64))
        at += m
        if on_progress:
            on_progress(n + 1, len(seqs))
    out = fidelity_summary(np.concatenate(kld), np.concatenate(same), np.concatenate(lq_target),
                           np.asarray(ref["target_logp"], dtype=np.float64), np.asarray(ref["seq_of_row"]),
                           meta["top_k"], float(np.concatenate(tail).mean()))
    out["kld_topk_bound_mean"] = float(np.concatenate(bound).mean())
    out["tail_samples"] = meta["tail_samples"]
    return out


def _cluster_ci(values: np.ndarray, clusters: np.ndarray) -> tuple[float, float]:
    """95% interval of the mean with a cluster-robust standard error (tokens of one sequence are not independent)."""
    mean = float(values.mean())
    groups = np.unique(clusters)
    if len(groups) < 2:
        se = float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else 0.0
    else:
        sums = np.bincount(np.searchsorted(groups, clusters), weights=values - mean)
        g = len(groups)
        se = math.sqrt(g / (g - 1) * float((sums ** 2).sum())) / len(values)
    return mean - 1.96 * se, mean + 1.96 * se


def fidelity_summary(kld: np.ndarray, same: np.ndarray, lq_target: np.ndarray, lp_target: np.ndarray,
              seq_of_row: np.ndarray, top_k: int, tail_mass: float) -> dict[str, Any]:
    """The ``fidelity`` object of bench.json."""
    from edgemed.evaluator.metrics import wilson_interval

    n = len(kld)
    ppl = math.exp(-float(lq_target.mean()))
    ppl_ref = math.exp(-float(lp_target.mean()))
    ln_ratio = lq_target - lp_target  # per-token log-likelihood change; -mean = ln(ppl / ppl_ref)
    lo, hi = _cluster_ci(-ln_ratio, seq_of_row)
    k = int(same.sum())
    return {
        "tokens": n,
        "sequences": int(len(np.unique(seq_of_row))),
        "kld_mean": float(kld.mean()),
        "kld_ci": list(_cluster_ci(kld, seq_of_row)),
        "kld_ci_method": "95%, cluster-robust standard error over sequences",
        "kld_median": percentile(kld, 50),
        "kld_p90": percentile(kld, 90),
        "kld_p99": percentile(kld, 99),
        "kld_max": float(kld.max()),
        "top1_agreement": k / n,
        "top1_agreement_ci": list(wilson_interval(k, n)),
        "ppl": ppl,
        "ppl_reference": ppl_ref,
        "ppl_ratio": ppl / ppl_ref,
        "ln_ppl_ratio_ci": [lo, hi],
        "top_k": top_k,
        "tail_mass": tail_mass,
        "method": "exact KL over the reference's top-k tokens + the rest's share estimated from 64 tokens drawn "
                  "from it in proportion to p (unbiased); kld_topk_bound_mean is the top-k + one-bucket lower bound",
    }
