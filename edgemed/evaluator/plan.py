"""What one evaluation scores, and how, decided before any forward pass: the questions checked, the prompt style,
the generation options with their defaults, the batch size the format allows, and the prompts that fit the
runtime's context."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgemed.console import err_console
from edgemed.data.medmcqa import Question
from edgemed.errors import EdgemedError
from edgemed.lineage import prompt_style_for
from edgemed.prompts import get_style
from edgemed.runtimes.base import Runtime

SCORINGS = ("logprob", "generate", "legacy")
GEN_DEFAULTS: dict[str, dict[str, Any]] = {
    "generate": {"max_new_tokens": 12, "temperature": 0.0, "top_p": 1.0, "seed": 0},
    "legacy": {"max_new_tokens": 100, "temperature": 0.7, "top_p": 1.0, "seed": 0},
}


def generation_options(scoring: str, options: dict[str, Any]) -> dict[str, Any]:
    """The generation options of `scoring`: its defaults, then the non-None `options` (unknown names: TypeError)."""
    base = dict(GEN_DEFAULTS.get(scoring, {}))
    unknown = set(options) - set(GEN_DEFAULTS["generate"])
    if unknown:
        raise TypeError(f"unknown generation options {sorted(unknown)}; use {sorted(GEN_DEFAULTS['generate'])}")
    base.update({k: v for k, v in options.items() if v is not None})
    if scoring != "logprob" and int(base["max_new_tokens"]) < 1:
        raise EdgemedError("max_new_tokens must be at least 1")
    return base


@dataclass
class Plan:
    """What one evaluation scores, and how: set up once, before any forward pass."""

    scoring: str
    style: str
    style_source: str
    opts: dict[str, Any]  # generation options, defaults filled in
    batch_size: int  # what is used (1 for a format whose rows are not independent)
    asked_batch: int
    letter_rows: dict[str, np.ndarray] | None  # rows already read elsewhere (None: compute every one)
    questions: list[Question]  # those that fit the runtime's context
    prompts: list[str]
    too_long: dict[str, Any] | None  # the questions dropped for the context, counted


def checked(questions: Sequence[Question], scoring: str, batch_size: int) -> list[Question]:
    """The questions, refused (exit 2) when the scoring, the batch size or any gold answer is unusable."""
    if scoring not in SCORINGS:
        raise EdgemedError(f"unknown scoring '{scoring}'; use one of {', '.join(SCORINGS)}")
    if batch_size < 1:
        raise EdgemedError("batch size must be at least 1")
    questions = list(questions)
    if not questions:
        raise EdgemedError("no questions to evaluate")
    unlabelled = [q.id for q in questions if q.answer < 0]
    if unlabelled:
        raise EdgemedError(
            f"{len(unlabelled)} questions have no gold answer (first {unlabelled[0]}); use a labelled split"
        )
    return questions


def make_plan(runtime: Runtime, questions: list[Question], scoring: str, style: str | None, batch_size: int,
          letter_rows: dict[str, np.ndarray] | None, gen_options: dict[str, Any]) -> Plan:
    """The prompt style, generation options, batch size and prompts (those that fit the context) of one run."""
    if style is None:
        style, style_source = prompt_style_for(getattr(runtime, "path", None), runtime.chat_template)
    else:
        style_source = "given"
    prompt_style = get_style(style)
    opts = generation_options(scoring, gen_options)
    asked_batch = batch_size
    if not getattr(runtime, "rows_independent", True):  # batch partners would change answers
        batch_size, letter_rows = 1, None
    prompts = [prompt_style.prompt(q) for q in questions]
    questions, prompts, too_long = fit_context(runtime, questions, prompts,
                                                1 if scoring == "logprob" else int(opts["max_new_tokens"]))
    return Plan(scoring, style, style_source, opts, batch_size, asked_batch, letter_rows, questions, prompts,
                 too_long)


def fit_context(runtime: Runtime, questions: list[Question], prompts: list[str], new_tokens: int
                 ) -> tuple[list[Question], list[str], dict[str, Any] | None]:
    """Drop (and count) the questions whose prompt plus `new_tokens` does not fit the runtime's context, as training
    skips examples longer than --max-length; every question too long is bad input (exit 2)."""
    context = runtime.context_length
    if not context:
        return questions, prompts, None
    keep, skipped = [], []
    for q, prompt in zip(questions, prompts, strict=True):
        n = len(runtime.tokenize(prompt))
        (keep if n + new_tokens <= context else skipped).append((q, prompt, n))
    if not skipped:
        return questions, prompts, None
    record = {"count": len(skipped), "context": context, "ids": [q.id for q, _, _ in skipped],
              "longest_prompt_tokens": max(n for _, _, n in skipped)}
    if not keep:
        raise EdgemedError(f"every question is longer than the runtime's context of {context} tokens (longest "
                           f"{record['longest_prompt_tokens']}); give shorter questions or a longer-context model")
    err_console.print(f"skipped {len(skipped)} question(s) longer than the runtime's context of {context} tokens "
                      f"(ids {', '.join(record['ids'][:5])}{', ...' if len(skipped) > 5 else ''}); counted in "
                      "results.json as skipped_too_long", style="yellow", markup=False, highlight=False)
    return [q for q, _, _ in keep], [p for _, p, _ in keep], record
