"""Training data: the train/eval questions of a run, their encoding, and the data order (a length-grouped
sampler that is a pure function of (seed, epoch)).

Batches are padded to their own longest example, so a batch that mixes a short and a long question
pays for padding. Grouping questions of similar length into the same batch removes most of it
(MedMCQA on SmolLM2: 124 -> ~101 tokens per row at batch 4, where the real mean is 101).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from edgemed.console import err_console
from edgemed.errors import EdgemedError

if TYPE_CHECKING:
    from edgemed.train.config import TrainConfig


def load_splits(data: str, config: TrainConfig) -> tuple[list, list, dict[str, Any], dict[str, Any]]:
    """(train questions, eval questions, data record, eval record)."""
    from edgemed.data import load_questions, split_questions
    from edgemed.lineage import questions_sha256, source_name

    questions, problems = load_questions(
        data, "train", cop_base=config.cop_base, skip_bad=config.skip_bad_rows, limit=config.limit
    )
    data_rec = {"source": source_name(data), "split": "train", "cop_base": config.cop_base, "limit": config.limit,
                "skip_bad_rows": config.skip_bad_rows, "bad_rows_skipped": len({p.row for p in problems}),
                "questions": len(questions), "sha256": questions_sha256(questions)}
    if config.eval_data:
        eval_qs, eval_problems = load_questions(
            config.eval_data, "validation", cop_base=config.cop_base, skip_bad=config.skip_bad_rows
        )
        held = {q.id for q in eval_qs}
        overlap = [q.id for q in questions if q.id in held]
        train_qs = [q for q in questions if q.id not in held]
        eval_rec = {"mode": "separate", "source": source_name(config.eval_data), "split": "validation",
                    "seed": None, "fraction": None, "sha256": questions_sha256(eval_qs),
                    "bad_rows_skipped": len({p.row for p in eval_problems}), "dropped_from_train": len(overlap)}
        if overlap:
            err_console.print(f"[yellow]{len(overlap)} training questions share ids with --eval-data; not trained on")
    else:
        train_qs, eval_qs = split_questions(questions, config.eval_fraction, config.seed)
        eval_rec = {"mode": "split", "source": data_rec["source"], "split": "train", "seed": config.seed,
                    "fraction": config.eval_fraction, "sha256": data_rec["sha256"]}
    if not train_qs:
        raise EdgemedError(f"no training questions left in '{data}' after holding out eval questions")
    if not eval_qs:
        raise EdgemedError(
            f"the eval split of '{data}' is empty; raise --eval-fraction, drop --limit or pass --eval-data"
        )
    eval_rec.update(limit=config.eval_limit, questions=len(eval_qs))
    assert not {q.id for q in train_qs} & {q.id for q in eval_qs}, "train and eval questions overlap"
    return train_qs, eval_qs, data_rec, eval_rec


def encode_splits(tokenizer: Any, style: Any, train_qs: list, eval_qs: list, config: TrainConfig,
                  main: bool = True) -> tuple[list, list, list, dict[str, int]]:
    """(train examples, eval examples, the eval questions the loss is computed on, example counts).

    Questions longer than --max-length are skipped and counted (never cut); when none is left, exit 2."""
    from edgemed.batching import encode_questions

    train_ex, long_train = encode_questions(tokenizer, style, train_qs, config.max_length)
    loss_qs = eval_qs[: config.eval_limit] if config.eval_limit else eval_qs
    eval_ex, long_eval = encode_questions(tokenizer, style, loss_qs, config.max_length)
    if not train_ex or not eval_ex:
        raise EdgemedError(f"every {'training' if not train_ex else 'eval'} question is longer than "
                           f"--max-length {config.max_length} tokens; raise --max-length")
    if (long_train or long_eval) and main:
        err_console.print(f"[yellow]skipped {len(long_train)} train / {len(long_eval)} eval questions longer than "
                          f"--max-length {config.max_length}")
    counts = {"train": len(train_ex), "eval": len(eval_ex), "too_long_train": len(long_train),
              "too_long_eval": len(long_eval)}
    return train_ex, eval_ex, loss_qs, counts


MEGABATCH = 50  # batches per sorted group (as the transformers LengthGroupedSampler)


def length_grouped_order(lengths: Sequence[int], batch_size: int, seed: int, epoch: int = 0,
                         megabatch: int = MEGABATCH) -> list[int]:
    """Every index of `lengths` exactly once, in batches of similar length.

    The indices are shuffled with a generator seeded by (seed, epoch), cut into groups of
    ``megabatch * batch_size``, each group is sorted by length (longest first, ties by index) and cut
    into batches of `batch_size`; the full batches are then shuffled with the same generator and the
    one partial batch (if any) stays last, so that a DataLoader cutting the list every `batch_size`
    indices sees exactly these batches. Same arguments, same order: a resumed run skips the batches
    it has already trained on and sees the rest in the original order.
    """
    import torch

    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    n = len(lengths)
    gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    perm = torch.randperm(n, generator=gen).tolist()
    size = megabatch * batch_size
    batches: list[list[int]] = []
    for start in range(0, n, size):
        group = sorted(perm[start:start + size], key=lambda i: (-lengths[i], i))
        batches += [group[j:j + batch_size] for j in range(0, len(group), batch_size)]
    full = [b for b in batches if len(b) == batch_size]
    partial = [b for b in batches if len(b) != batch_size]  # at most one: only the last group can be short
    order = torch.randperm(len(full), generator=gen).tolist()
    return [i for k in order for i in full[k]] + [i for b in partial for i in b]


class LengthGroupedSampler:
    """A torch Sampler over :func:`length_grouped_order`; ``set_epoch`` (called by the Trainer) reshuffles."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int, megabatch: int = MEGABATCH):
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.megabatch = megabatch
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        return iter(length_grouped_order(self.lengths, self.batch_size, self.seed, self.epoch, self.megabatch))
