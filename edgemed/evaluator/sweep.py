"""Generation-parameter sweep: accuracy, answer consistency across repeats and time per question, for each
(temperature, max_new_tokens) cell. Options are checked by :func:`check_sweep` before any scoring starts."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgemed.data.medmcqa import Question
from edgemed.errors import EdgemedError
from edgemed.evaluator.parse import parse_letter
from edgemed.evaluator.run import question_seed, tick_bar
from edgemed.lineage import prompt_style_for
from edgemed.prompts import get_style, stop_strings
from edgemed.runtimes.base import Runtime


def check_sweep(temperatures: Sequence[float], max_new_tokens: Sequence[int], repeats: int) -> None:
    """EdgemedError (exit 2) naming the flag for any sweep option out of range."""
    if repeats < 1:
        raise EdgemedError(f"--sweep-repeats must be at least 1, not {repeats}")
    if not temperatures or not max_new_tokens:
        raise EdgemedError("--sweep-temperatures and --sweep-max-new-tokens need at least one value each")
    if any(not (math.isfinite(t) and t >= 0) for t in temperatures):
        raise EdgemedError(f"--sweep-temperatures must be finite and >= 0, got {list(temperatures)}")
    if any(int(k) < 1 for k in max_new_tokens):
        raise EdgemedError(f"--sweep-max-new-tokens must be at least 1, got {list(max_new_tokens)}")


def sweep(
    runtime: Runtime,
    questions: Sequence[Question],
    temperatures: Sequence[float] = (0.0, 0.3, 0.7, 1.0),
    max_new_tokens: Sequence[int] = (8, 32),
    repeats: int = 3,
    style: str | None = None,
    top_p: float = 1.0,
    seed: int = 0,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Generation-parameter sweep: accuracy, answer consistency across repeats and time per question.

    Each (temperature, max_new_tokens) cell generates every question `repeats` times with different seeds
    (repeat r uses seed + r). Consistency is the share of questions whose parsed letter (None included) is
    identical in all repeats; at temperature 0 it checks that greedy decoding is deterministic.
    """
    check_sweep(temperatures, max_new_tokens, repeats)
    questions = list(questions)
    if style is None:
        style = prompt_style_for(getattr(runtime, "path", None), runtime.chat_template)[0]
    prompt_style = get_style(style)
    prompts = [prompt_style.prompt(q) for q in questions]
    stop = stop_strings(style)
    cells = [(float(t), int(k)) for t in temperatures for k in max_new_tokens]
    rows = []
    with tick_bar(show_progress, "sweep", len(cells) * repeats * len(questions)) as tick:
        for temp, k in cells:
            letters: list[list[str | None]] = []
            accs, seconds, tokens = [], 0.0, 0
            for r in range(repeats):
                got = []
                for q, prompt in zip(questions, prompts, strict=True):
                    g = runtime.generate(prompt, max_new_tokens=k, temperature=temp, top_p=top_p,
                                         seed=question_seed(seed + r, q.id), stop=stop)
                    seconds += g.total_s
                    tokens += g.new_tokens
                    got.append(parse_letter(g.text, q.options))
                    tick(1)
                letters.append(got)
                accs.append(sum(g == q.gold_letter for g, q in zip(got, questions, strict=True)) / len(questions))
            consistent = sum(len({rep[i] for rep in letters}) == 1 for i in range(len(questions)))
            unparsed = sum(x is None for rep in letters for x in rep)
            runs = repeats * len(questions)
            rows.append(
                {
                    "temperature": temp,
                    "max_new_tokens": k,
                    "repeats": repeats,
                    "accuracy_mean": float(np.mean(accs)),
                    "accuracy_min": float(min(accs)),
                    "accuracy_max": float(max(accs)),
                    "accuracy_per_repeat": accs,
                    "consistency": consistent / len(questions),
                    "unparseable_rate": unparsed / runs,
                    "s_per_question": seconds / runs,
                    "new_tokens_per_question": tokens / runs,
                }
            )
    return {
        "n": len(questions),
        "prompt_style": style,
        "top_p": top_p,
        "seed": seed,
        "consistency_rule": "share of questions whose strictly parsed letter is identical in every repeat",
        "rows": rows,
    }
