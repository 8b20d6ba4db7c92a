"""Evaluate any artifact on MedMCQA questions through the Runtime interface.

Scoring modes:
- ``logprob`` (default): one forward pass per question (batched), the next-token log-probabilities of
  " A".." D" after "Answer:"; the answer is the most likely letter. Deterministic.
- ``generate``: greedy generation of a short answer, letter read by the strict parser (edgemed.evaluator.parse).
- ``legacy``: the reference notebook's method (100 sampled tokens, substring judge), kept only for comparison;
  its headline accuracy is still the strict letter parse, the substring rates are reported apart as legacy.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgemed.console import progress
from edgemed.data.medmcqa import LETTERS, Question
from edgemed.evaluator import analysis
from edgemed.evaluator.parse import legacy_match, parse_letter
from edgemed.evaluator.plan import Plan, checked, make_plan
from edgemed.prompts import stop_strings
from edgemed.runtimes.base import Runtime
from edgemed.runtimes.logits import softmax_rows


@dataclass
class EvalResult:
    """One evaluation: headline accuracy, all metrics, per-question predictions, settings and timing."""

    accuracy: float
    n: int
    metrics: dict[str, Any]
    predictions: list[dict[str, Any]]
    config: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, Any] = field(default_factory=dict)
    runtime: dict[str, Any] = field(default_factory=dict)

    @property
    def accuracy_ci(self) -> tuple[float, float]:
        lo, hi = self.metrics["accuracy_ci"]
        return lo, hi

    def to_dict(self) -> dict[str, Any]:
        """results.json body (without predictions, which go to predictions.jsonl)."""
        return {
            "accuracy": self.accuracy,
            "accuracy_ci": list(self.accuracy_ci),
            "n": self.n,
            "correct": self.metrics["correct"],
            "scoring": self.config.get("scoring"),
            "prompt_style": self.config.get("prompt_style"),
            "config": self.config,
            "runtime": self.runtime,
            "timing": self.timing,
            "metrics": self.metrics,
        }


def question_seed(seed: int, qid: str) -> int:
    """A sampling seed per question that depends only on the run seed and the question id."""
    digest = hashlib.sha256(f"{seed}:{qid}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def _probs_dict(row: np.ndarray) -> dict[str, float]:
    return {a: float(v) for a, v in zip(LETTERS, row, strict=True)}


def _letter_rows(runtime: Runtime, prompts: list[str], batch_size: int, tick,
                 given: dict[int, np.ndarray] | None = None) -> np.ndarray:
    """Letter log-probs for every prompt, batched by similar length (less padding), returned in input order;
    the rows in `given` (by prompt index) were read from another pass over the same tokens and are not recomputed."""
    given = given or {}
    out = np.zeros((len(prompts), 4))
    for i, row in given.items():
        out[i] = row
    tick(len(given))
    order = sorted((i for i in range(len(prompts)) if i not in given), key=lambda i: (len(prompts[i]), i))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        out[idx] = runtime.letter_logprobs([prompts[i] for i in idx], batch_size)
        tick(len(idx))
    return out


def tick_bar(show: bool, label: str, total: int):
    """A progress context whose value is a tick(k) callable (a no-op when `show` is off)."""
    if not show:
        return nullcontext(lambda k: None)

    class _Bar:
        def __enter__(self):
            self.p = progress(transient=True)
            self.p.__enter__()
            task = self.p.add_task(label, total=total)
            return lambda k: self.p.advance(task, k)

        def __exit__(self, *exc):
            return self.p.__exit__(*exc)

    return _Bar()


def evaluate(
    runtime: Runtime,
    questions: Sequence[Question],
    scoring: str = "logprob",
    style: str | None = None,
    batch_size: int = 8,
    show_progress: bool = True,
    examples: int = 5,
    letter_probs: bool = True,
    letter_rows: dict[str, np.ndarray] | None = None,
    **gen_options: Any,
) -> EvalResult:
    """Score every question; see the module docstring for the modes.

    gen_options (generate/legacy): max_new_tokens, temperature, top_p, seed. With letter_probs (default) the
    generate/legacy modes also record the A-D distribution after "Answer:" for calibration and comparison.
    letter_rows: the letter log-probs of some questions (by id) already read from a pass over the same tokens
    (the bench's fidelity pass scores each question with its answer; the row after the prompt is this one).
    """
    questions = checked(questions, scoring, batch_size)
    plan = make_plan(runtime, questions, scoring, style, batch_size, letter_rows, gen_options)
    start = time.perf_counter()
    preds: list[dict[str, Any]] = [{"id": q.id, "gold": q.gold_letter, "subject": q.subject} for q in plan.questions]
    timing: dict[str, Any] = {}
    steps = len(plan.questions) * (2 if scoring != "logprob" and letter_probs else 1)
    with tick_bar(show_progress, f"eval {scoring}", steps) as tick:
        if scoring == "logprob" or letter_probs:
            timing.update(_letter_pass(runtime, plan, preds, tick))
        if scoring != "logprob":
            timing.update(_generation_pass(runtime, plan, preds, tick))
    total = time.perf_counter() - start
    timing.update(total_s=total, questions_per_s=len(plan.questions) / total if total > 0 else None)
    return _result(runtime, plan, preds, timing, examples, letter_probs)


def _letter_pass(runtime: Runtime, plan: Plan, preds: list[dict[str, Any]], tick) -> dict[str, Any]:
    """Record each question's A-D distribution (and, in logprob scoring, its answer); return the pass's timing."""
    t0 = time.perf_counter()
    shared = plan.letter_rows
    given = {i: shared[q.id] for i, q in enumerate(plan.questions) if shared and q.id in shared}
    lp = _letter_rows(runtime, plan.prompts, plan.batch_size, tick, given)
    timing: dict[str, Any] = {"letter_pass_s": time.perf_counter() - t0}
    if shared is not None:
        timing["letter_rows_shared"] = len(given)
    with np.errstate(invalid="ignore"):
        probs = softmax_rows(lp)
    mass = np.exp(lp).sum(axis=1)
    for p, row, m in zip(preds, probs, mass, strict=True):
        valid = bool(np.isfinite(row).all())  # NaN/inf log-probs: a broken artifact, never a guess
        p["probs"] = _probs_dict(row) if valid else None
        p["letter_mass"] = float(m) if valid else None
        if plan.scoring == "logprob":
            p["predicted"] = LETTERS[int(np.argmax(row))] if valid else None
    timing["invalid_logprob_rows"] = int(sum(p["probs"] is None for p in preds))
    return timing


def _generation_pass(runtime: Runtime, plan: Plan, preds: list[dict[str, Any]], tick) -> dict[str, Any]:
    """Generate each answer and read its letter (legacy: also the substring judge); return the pass's timing."""
    opts, stop = plan.opts, stop_strings(plan.style)
    t0 = time.perf_counter()
    new_tokens = 0
    for q, prompt, p in zip(plan.questions, plan.prompts, preds, strict=True):
        g = runtime.generate(
            prompt,
            max_new_tokens=int(opts["max_new_tokens"]),
            temperature=float(opts["temperature"]),
            top_p=float(opts["top_p"]),
            seed=question_seed(int(opts["seed"]), q.id),
            stop=stop,
        )
        p["text"] = g.text
        p["new_tokens"] = g.new_tokens
        p["predicted"] = parse_letter(g.text, q.options)
        new_tokens += g.new_tokens
        if plan.scoring == "legacy":
            p["legacy_exact"], p["legacy_partial"] = legacy_match(g.text, q.options[q.answer])
        tick(1)
    return {"generation_s": time.perf_counter() - t0, "new_tokens_per_question": new_tokens / len(plan.questions)}


def _result(runtime: Runtime, plan: Plan, preds: list[dict[str, Any]], timing: dict[str, Any], examples: int,
            letter_probs: bool) -> EvalResult:
    """Mark each prediction, compute the metrics and record the settings used."""
    for p in preds:
        p["correct"] = p["predicted"] is not None and p["predicted"] == p["gold"]
        if p.get("probs"):
            p["confidence"] = analysis.confidence_of(p)
    by_id = {q.id: q for q in plan.questions}
    metrics = analysis.analyse_predictions(_ordered(preds), by_id, examples)
    config = {
        "scoring": plan.scoring,
        "prompt_style": plan.style,
        "prompt_style_source": plan.style_source,
        "batch_size": plan.batch_size,
        **({"batch_size_asked": plan.asked_batch, "batch_note": "this format quantizes activations over the whole "
            "input: scored one question per pass, the prompt alone"} if plan.batch_size != plan.asked_batch else {}),
        "letters": [f" {a}" for a in LETTERS],
    }
    if plan.scoring != "logprob":
        config["generation"] = plan.opts | {"stop": stop_strings(plan.style), "letter_probs": letter_probs}
    if plan.scoring == "legacy":
        config["note"] = "legacy: notebook method (sampled text, substring judge); rates are NOT reliable accuracy"
    if plan.too_long:
        config["skipped_too_long"] = plan.too_long
    return EvalResult(
        accuracy=metrics["accuracy"],
        n=metrics["n"],
        metrics=metrics,
        predictions=_ordered(preds),
        config=config,
        timing=timing,
        runtime=_info(runtime),
    )


_KEY_ORDER = ("id", "gold", "predicted", "correct", "probs", "confidence", "letter_mass", "subject", "text",
              "new_tokens", "legacy_exact", "legacy_partial")


def _ordered(preds: list[dict]) -> list[dict]:
    return [{k: p.get(k) for k in _KEY_ORDER if k in p or k == "probs"} for p in preds]


def _info(runtime: Runtime) -> dict[str, Any]:
    try:
        return dict(runtime.info())
    except Exception as exc:  # info is descriptive only; never lose an evaluation over it
        return {"runtime": getattr(runtime, "name", "?"), "info_error": str(exc)}
