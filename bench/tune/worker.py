"""Stage 1 of ``edgemed tune``, in a process of its own: ``python -m edgemed.bench.tune.worker JOB.json``.

``store``: the reference artifact's top-k log-probs over the fidelity sequences (edgemed.bench.measure.fidelity's
``save_reference``, written into a temp folder and renamed into place). ``compare``: one candidate over a chosen
subset of those sequences, the per-token KL divergence (``token_divergence``), top-1 match and target log-prob
written to an .npz, so the parent can grow the subset without measuring a sequence twice.
Exit codes: 0 done, 2 an EdgemedError (message on stderr), 3 any other error.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Any

import numpy as np


def store(job: dict[str, Any], runtime) -> None:
    from edgemed.bench.measure.fidelity import question_sequences, save_reference
    from edgemed.data.medmcqa import Question
    from edgemed.fsutil import atomic_dir, atomic_write_json
    from edgemed.lineage import prompt_style_for

    questions = [Question(**{**q, "options": tuple(q["options"])}) for q in job["questions"]]
    style, _ = prompt_style_for(Path(job["artifact"]), runtime.chat_template)  # as the bench's reference does
    seqs = question_sequences(runtime, questions, style)
    with atomic_dir(Path(job["reference"]), force=True) as tmp:
        meta = save_reference(runtime, seqs, tmp, job["top_k"])
        atomic_write_json(tmp / "self.json", meta["self"])


def compare(job: dict[str, Any], runtime) -> None:
    from edgemed.bench.measure.fidelity import load_reference, token_divergence
    from edgemed.errors import EdgemedError

    meta, ref = load_reference(Path(job["reference"]))
    if meta["vocab_size"] != runtime.vocab_size:
        raise EdgemedError(f"the reference has a vocabulary of {meta['vocab_size']} tokens, this artifact "
                           f"{runtime.vocab_size}: fidelity compares artifacts of one model only")
    seqs = meta["sequences"]
    starts = np.concatenate([[0], np.cumsum([s["last"] - s["first"] for s in seqs])]).astype(np.int64)
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("seq", "row", "kld", "bound", "same", "lq_target", "tail")}
    for n in job["sequences"]:
        s = seqs[n]
        lp = runtime.sequence_logprobs(s["ids"])[s["first"] : s["last"]]
        a, m = int(starts[n]), len(lp)
        idx = np.asarray(ref["topk_idx"][a : a + m])
        est, low, outside = token_divergence(lp, idx, np.asarray(ref["topk_logp"][a : a + m]),
                                             ref["tail_idx"][a : a + m], ref["tail_logp"][a : a + m])
        cols["seq"].append(np.full(m, n, dtype=np.int32))
        cols["row"].append(np.arange(a, a + m, dtype=np.int64))
        cols["kld"].append(est)
        cols["bound"].append(low)
        cols["tail"].append(outside)
        cols["same"].append(lp.argmax(axis=1) == idx[:, 0])
        cols["lq_target"].append(lp[np.arange(m), s["ids"][s["first"] + 1 : s["last"] + 1]].astype(np.float64))
        print(f"[tune] sequence {len(cols['seq'])}/{len(job['sequences'])}", file=sys.stderr, flush=True)
    out = Path(job["rows"])
    tmp = out.with_name(f".{out.name}.tmp.npz")
    np.savez(tmp, **{k: np.concatenate(v) if v else np.zeros(0) for k, v in cols.items()})
    tmp.replace(out)


def run(job: dict[str, Any]) -> None:
    from edgemed.runtimes.base import open_runtime

    runtime = open_runtime(Path(job["artifact"]), threads=job["threads"], device="cpu", requested_device="cpu",
                           **job.get("options", {}))
    try:
        (store if job["mode"] == "store" else compare)(job, runtime)
    finally:
        runtime.close()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m edgemed.bench.tune.worker JOB.json", file=sys.stderr)
        return 2
    from edgemed.errors import EdgemedError

    try:
        run(json.loads(Path(argv[0]).read_text(encoding="utf-8")))
    except EdgemedError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    except Exception as exc:  # noqa: BLE001 - reported to the parent as this candidate's failure
        traceback.print_exc()
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
