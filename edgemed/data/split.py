"""Seeded, stable train/eval split: a question's side depends only on its id and the seed."""

from __future__ import annotations

import hashlib

from edgemed.data.medmcqa import Question

# Default held-out share: training leaves these out, and eval/bench score them on single-source data.
EVAL_FRACTION = 0.2


def _bucket(seed: int, ident: str) -> float:
    digest = hashlib.sha256(f"{seed}:{ident}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_questions(
    questions: list[Question], eval_fraction: float = EVAL_FRACTION, seed: int = 0
) -> tuple[list[Question], list[Question]]:
    """(train, eval). Adding or reordering rows never moves an existing id to the other side."""
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError("eval_fraction must be between 0 and 1")
    train, evaluation = [], []
    for q in questions:
        (evaluation if _bucket(seed, q.id) < eval_fraction else train).append(q)
    return train, evaluation
