"""Training examples for answer-only loss: tokenization with masked prompts, and dynamic-padding batches.

Shared by training and by the merge check, so both see exactly the sequences training used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgemed.errors import EdgemedError

IGNORE = -100  # label of a position that carries no loss (prompt tokens and padding)


def encode_question(tokenizer, style, question, max_length: int | None = None) -> dict[str, list[int]] | None:
    """input_ids/attention_mask/labels for one question: labels are -100 on every prompt token.

    Prompt and target are tokenized separately (the prompt exactly as evaluators tokenize it), so the
    first trained token is the answer letter that letter scoring reads after ``Answer:``. The plain style
    has no end-of-turn marker, so the tokenizer's eos token closes the answer. Returns None when the
    example does not fit ``max_length`` (cutting it would cut the answer).
    """
    prompt_ids = list(tokenizer(style.prompt(question), add_special_tokens=True)["input_ids"])
    target_ids = list(tokenizer(style.target(question), add_special_tokens=False)["input_ids"])
    if not style.turn_end:
        if tokenizer.eos_token_id is None:
            raise EdgemedError("the plain prompt style needs a tokenizer with an eos token; pick --prompt-style")
        target_ids.append(tokenizer.eos_token_id)
    ids = prompt_ids + target_ids
    if max_length is not None and len(ids) > max_length:
        return None
    return {
        "input_ids": ids,
        "attention_mask": [1] * len(ids),
        "labels": [IGNORE] * len(prompt_ids) + target_ids,
    }


def encode_questions(tokenizer, style, questions, max_length: int) -> tuple[list[dict], list[str]]:
    """(examples, ids of questions too long for max_length)."""
    examples, too_long = [], []
    for q in questions:
        ex = encode_question(tokenizer, style, q, max_length)
        if ex is None:
            too_long.append(q.id)
        else:
            examples.append(ex)
    return examples, too_long


@dataclass
class AnswerOnlyCollator:
    """Pads a batch to its own longest example (right side): pad id, attention 0, label -100."""

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, features: list[dict[str, list[int]]]) -> dict[str, Any]:
        import torch

        longest = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            longest = (longest + m - 1) // m * m
        batch = {"input_ids": [], "attention_mask": [], "labels": []}
        for f in features:
            pad = longest - len(f["input_ids"])
            batch["input_ids"].append(list(f["input_ids"]) + [self.pad_token_id] * pad)
            batch["attention_mask"].append(list(f["attention_mask"]) + [0] * pad)
            batch["labels"].append(list(f["labels"]) + [IGNORE] * pad)
        return {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}
