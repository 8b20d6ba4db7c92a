"""Fidelity to the reference: KL divergence, top-1 agreement and perplexity, token by token (llama-perplexity
``--kl-divergence`` for every format, through edgemed's runtimes).

The reference artifact's worker runs first and stores, for every scored position, its top-k log-probs (indices
and values), the log-prob of the actual next token and nothing else: k x 8 bytes per token whatever the
vocabulary (1024 x 8 = 8 KiB; a 128k-vocabulary model costs the same). Every other worker memory-maps that
folder and compares its own full log-softmax row with it.

KL(reference || artifact) is computed over the partition {each of the reference's top-k tokens, everything
else}: ``sum_topk p (log p - log q) + r (log r - log q_rest)`` with r and q_rest the two distributions' mass
outside that set. It is exact when r = 0 and never above the full-vocabulary KL; the difference is
``r * KL(p_rest || q_rest)``. ``tail_mass`` (the mean r) is reported with every figure so the bound is visible.

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

from edgemed.bench.stats import percentile
from edgemed.errors import EdgemedError

META = "meta.json"


@dataclass
class Sequence:
    """One fresh sequence and the rows [first, last) of it that are scored (row i predicts token i+1)."""

    ids: list[int]
    first: int
    last: int


def question_sequences(runtime, questions, style: str) -> list[Sequence]:
    from edgemed.prompts import get_style

    st = get_style(style)
    seqs = []
    for q in questions:
        ids = runtime.tokenize(st.prompt(q) + st.target(q))
        if len(ids) >= 2:
            seqs.append(Sequence(ids, 0, len(ids) - 1))
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


def save_reference(runtime, sequences: list[Sequence], folder: Path, top_k: int, on_progress=None) -> dict[str, Any]:
    """Run the reference over `sequences`; store its top-k and target log-probs under `folder` (bounded memory)."""
    from edgemed.fsutil import atomic_write_json

    folder.mkdir(parents=True, exist_ok=True)
    rows = sum(s.last - s.first for s in sequences)
    k = min(top_k, runtime.vocab_size)
    idx = np.lib.format.open_memmap(folder / "topk_idx.npy", mode="w+", dtype=np.int32, shape=(rows, k))
    val = np.lib.format.open_memmap(folder / "topk_logp.npy", mode="w+", dtype=np.float32, shape=(rows, k))
    target = np.empty(rows, dtype=np.float32)
    seq_of_row = np.empty(rows, dtype=np.int32)
    at = 0
    for n, s in enumerate(sequences):
        lp = runtime.sequence_logprobs(s.ids)[s.first : s.last]
        i, v = _top_k(lp, k)
        m = len(lp)
        idx[at : at + m], val[at : at + m] = i, v
        target[at : at + m] = lp[np.arange(m), s.ids[s.first + 1 : s.last + 1]]
        seq_of_row[at : at + m] = n
        at += m
        if on_progress:
            on_progress(n + 1, len(sequences))
    idx.flush()
    val.flush()
    del idx, val
    np.save(folder / "target_logp.npy", target)
    np.save(folder / "seq_of_row.npy", seq_of_row)
    meta = {"rows": rows, "top_k": k, "vocab_size": runtime.vocab_size,
            "sequences": [asdict(s) for s in sequences]}
    atomic_write_json(folder / META, meta)
    return meta


def load_reference(folder: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    meta = json.loads((folder / META).read_text(encoding="utf-8"))
    arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False)
              for name in ("topk_idx", "topk_logp", "target_logp", "seq_of_row")}
    return meta, arrays


def token_divergence(lq: np.ndarray, ref_idx: np.ndarray, ref_lp: np.ndarray) -> np.ndarray:
    """Per-row KL(p || q) over {the reference's top-k tokens, the rest}; lq are the artifact's full log-probs."""
    p = np.exp(ref_lp.astype(np.float64))
    lq_top = np.take_along_axis(lq, ref_idx.astype(np.int64), axis=1).astype(np.float64)
    kl = (p * (ref_lp - lq_top)).sum(axis=1)
    r = np.clip(1.0 - p.sum(axis=1), 0.0, 1.0)
    q_rest = np.clip(1.0 - np.exp(lq_top).sum(axis=1), 1e-30, 1.0)
    tail = np.where(r > 1e-12, r * (np.log(np.maximum(r, 1e-30)) - np.log(q_rest)), 0.0)
    return np.maximum(kl + tail, 0.0)


def compare_with_reference(runtime, folder: Path, on_progress=None) -> dict[str, Any]:
    """This runtime's fidelity to the stored reference, over the very token ids the reference scored."""
    meta, ref = load_reference(folder)
    if meta["vocab_size"] != runtime.vocab_size:
        raise EdgemedError(
            f"the reference has a vocabulary of {meta['vocab_size']} tokens, this artifact {runtime.vocab_size}: "
            "fidelity compares artifacts of one model only"
        )
    kld, same, lq_target, tail = [], [], [], []
    at = 0
    seqs = meta["sequences"]
    for n, s in enumerate(seqs):
        lp = runtime.sequence_logprobs(s["ids"])[s["first"] : s["last"]]
        m = len(lp)
        ref_lp = np.asarray(ref["topk_logp"][at : at + m])
        kld.append(token_divergence(lp, ref["topk_idx"][at : at + m], ref_lp))
        tail.append(np.clip(1.0 - np.exp(ref_lp.astype(np.float64)).sum(axis=1), 0.0, 1.0))
        same.append(lp.argmax(axis=1) == ref["topk_idx"][at : at + m, 0])
        lq_target.append(lp[np.arange(m), s["ids"][s["first"] + 1 : s["last"] + 1]].astype(np.float64))
        at += m
        if on_progress:
            on_progress(n + 1, len(seqs))
    return fidelity_summary(np.concatenate(kld), np.concatenate(same), np.concatenate(lq_target),
                     np.asarray(ref["target_logp"], dtype=np.float64), np.asarray(ref["seq_of_row"]),
                     meta["top_k"], float(np.concatenate(tail).mean()))


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
        "method": "KL over the reference's top-k tokens plus one bucket for the rest (a lower bound of the "
                  "full-vocabulary KL, short of it by tail_mass x the KL within the rest)",
    }
