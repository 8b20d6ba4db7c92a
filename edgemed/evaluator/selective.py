"""Selective prediction: answer only when the chosen letter's probability reaches a threshold, abstain otherwise.

The threshold is set on the questions ``eval`` scores (the evaluation side the lineage records, never a training
question), by one of two rules the user picks:

- ``target_error`` (default 0.10): the lowest threshold whose error among the answered calibration questions is
  certified at most the target: a one-sided Clopper-Pearson upper bound at confidence 1 - delta, checked at
  :data:`GRID` candidate coverages with a Bonferroni split of delta (the selective-risk bound of Geifman and
  El-Yaniv, "Selective classification for deep neural networks", 2017). Why this rule: it is distribution-free and
  finite-sample; with probability at least 1 - delta over the calibration questions, the error among answered
  questions drawn like them (out of sample) is at most the target. When no candidate passes, nothing is certified
  and the threshold answers nothing (``threshold`` None): a model near chance abstains on every question.
- ``coverage``: the threshold that answers that share of the calibration questions; its error is reported with
  its interval but not bounded.

Also here: the risk-coverage curve and its area (AURC), which bench and eval report per artifact.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgemed.evaluator.metrics import wilson_interval

GRID = tuple(round(0.05 * i, 2) for i in range(1, 21))  # candidate coverages 0.05 .. 1.0
DEFAULT_TARGET_ERROR = 0.10
DEFAULT_DELTA = 0.05
METHOD = ("Clopper-Pearson upper bound (one-sided, 1 - delta) on the error among answered calibration questions at "
          "20 candidate coverages (0.05 .. 1.0), Bonferroni-corrected; the lowest threshold whose bound is at most "
          "the target (selective-risk bound, Geifman & El-Yaniv 2017)")


def _log_binom_cdf(k: int, n: int, p: float, log_comb: np.ndarray) -> float:
    """log P(Binomial(n, p) <= k), from log C(n, i) for i = 0..k."""
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 0.0 if k >= n else -math.inf
    i = np.arange(k + 1)
    terms = log_comb + i * math.log(p) + (n - i) * math.log1p(-p)
    top = float(terms.max())
    return top + math.log(float(np.exp(terms - top).sum()))


def clopper_pearson_upper(k: int, n: int, delta: float) -> float:
    """One-sided upper confidence bound (level 1 - delta) of a binomial proportion after k of n: the p with
    P(Binomial(n, p) <= k) = delta (1.0 when n is 0 or k is n)."""
    if n <= 0 or k >= n:
        return 1.0
    i = np.arange(k + 1)
    log_comb = np.array([math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1) for j in i])
    lo, hi, target = k / n, 1.0, math.log(delta)
    for _ in range(60):  # bisection to about 1e-18
        mid = (lo + hi) / 2
        if _log_binom_cdf(k, n, mid, log_comb) > target:
            lo = mid
        else:
            hi = mid
    return hi


def risk_coverage(confidences: Sequence[float], correct: Sequence[bool]) -> dict[str, Any]:
    """The risk-coverage curve (most confident first; ties kept in input order) and its area (AURC: the mean of the
    error among the k most confident questions over k = 1..n; lower is better; a perfect ranking gives
    the least possible for its accuracy)."""
    conf = np.asarray(confidences, dtype=float)
    wrong = 1.0 - np.asarray(correct, dtype=float)
    n = len(conf)
    if n == 0:
        return {"aurc": None, "curve": []}
    order = np.argsort(-conf, kind="stable")
    risk = np.cumsum(wrong[order]) / np.arange(1, n + 1)
    error = wrong.mean()
    best = np.cumsum(np.sort(wrong)) / np.arange(1, n + 1)  # every correct answer ranked before every wrong one
    points = sorted({max(1, math.ceil(c * n)) for c in GRID})
    return {"aurc": float(risk.mean()), "aurc_optimal": float(best.mean()), "error": float(error),
            "curve": [{"coverage": k / n, "risk": float(risk[k - 1]), "threshold": float(conf[order[k - 1]])}
                      for k in points]}


def _answered(conf: np.ndarray, threshold: float | None) -> np.ndarray:
    return np.zeros(len(conf), dtype=bool) if threshold is None else conf >= threshold


def evaluate_threshold(confidences: Sequence[float], correct: Sequence[bool], threshold: float | None,
                       delta: float = DEFAULT_DELTA) -> dict[str, Any]:
    """Coverage and error among answered questions at `threshold` (None: answer nothing), with intervals."""
    conf = np.asarray(confidences, dtype=float)
    ok = np.asarray(correct, dtype=bool)
    answered = _answered(conf, threshold)
    n, k = int(answered.sum()), int((answered & ~ok).sum())
    lo, hi = wilson_interval(k, n) if n else (None, None)
    return {"n": len(conf), "answered": n, "coverage": n / len(conf) if len(conf) else None,
            "errors": k, "selective_error": k / n if n else None, "selective_error_ci": [lo, hi] if n else None,
            "selective_error_upper": clopper_pearson_upper(k, n, delta) if n else None}


def calibrate(confidences: Sequence[float], correct: Sequence[bool], target_error: float | None = None,
              coverage: float | None = None, delta: float = DEFAULT_DELTA) -> dict[str, Any]:
    """The threshold by the rule asked (see the module docstring) and what it does on the calibration questions."""
    if target_error is not None and coverage is not None:
        raise ValueError("give target_error or coverage, not both")
    if target_error is None and coverage is None:
        target_error = DEFAULT_TARGET_ERROR
    conf = np.asarray(confidences, dtype=float)
    ok = np.asarray(correct, dtype=bool)
    n = len(conf)
    order = np.argsort(-conf, kind="stable")
    rule: dict[str, Any]
    threshold: float | None = None
    if coverage is not None:
        k = max(1, math.ceil(round(coverage * n, 9))) if n else 0
        threshold = float(conf[order[k - 1]]) if k else None
        rule = {"rule": "coverage", "coverage_asked": coverage,
                "method": "the confidence of the k-th most confident calibration question, k = ceil(coverage * n); "
                          "its error is measured, not bounded"}
    else:
        per_test = delta / len(GRID)
        checked = []
        for c in GRID:
            k = max(1, math.ceil(round(c * n, 9))) if n else 0
            if not k:
                continue
            t = float(conf[order[k - 1]])
            answered = conf >= t  # ties at t are answered too
            m, e = int(answered.sum()), int((answered & ~ok).sum())
            upper = clopper_pearson_upper(e, m, per_test)
            checked.append({"coverage": m / n, "threshold": t, "errors": e, "answered": m, "upper": upper})
            if upper <= target_error and (threshold is None or t < threshold):
                threshold = t
        rule = {"rule": "target_error", "target_error": target_error, "delta": delta, "method": METHOD,
                "candidates": checked}
        if threshold is None:
            rule["note"] = ("no candidate coverage is certified at this target error: the threshold answers no "
                            "question (abstains on all)")
    return {"threshold": threshold, **rule, "calibration": evaluate_threshold(conf, ok, threshold, delta),
            "answer_rule": "answer when the chosen letter's probability (renormalised over A-D) >= threshold"}


def selective_block(predictions: list[dict[str, Any]], target_error: float | None = None,
                    coverage: float | None = None, delta: float = DEFAULT_DELTA) -> dict[str, Any] | None:
    """results.json's ``selective``: the threshold, its rule and calibration, the risk-coverage curve and AURC (None
    without letter probabilities)."""
    rows = [p for p in predictions if p.get("probs")]
    if not rows:
        return None
    conf = [p.get("confidence") or 0.0 for p in rows]
    ok = [bool(p["correct"]) for p in rows]
    return {**calibrate(conf, ok, target_error, coverage, delta), **risk_coverage(conf, ok)}


def bench_numbers(predictions: list[dict[str, Any]], target_error: float | None = None,
                  coverage: float | None = None, path: Path | None = None) -> dict[str, Any]:
    """The selective-prediction numbers bench reports per artifact (flat, for ``ArtifactResult.extra``): AURC and
    the risk-coverage curve, the threshold by the rule asked (`target_error`, default 0.10, or `coverage`; None:
    nothing certified), the share answered and the error among answered calibration questions with its Wilson
    interval, and, given `path`, the artifact's sha256 (what ``edgemed serve`` matches a threshold to)."""
    block = selective_block(predictions, target_error=target_error, coverage=coverage)
    if block is None:
        return {}
    cal = block["calibration"]
    out = {"aurc": block["aurc"], "aurc_optimal": block["aurc_optimal"], "abstain_threshold": block["threshold"],
           "abstain_rule": block["rule"], "abstain_target_error": block.get("target_error"),
           "abstain_coverage_asked": block.get("coverage_asked"), "abstain_delta": block.get("delta"),
           "answered_share": cal["coverage"], "answered_error": cal["selective_error"],
           "answered_error_low": (cal["selective_error_ci"] or [None])[0],
           "answered_error_high": (cal["selective_error_ci"] or [None, None])[1],
           "answered_error_upper": cal["selective_error_upper"], "calibration_questions": cal["n"],
           "risk_coverage": [{"coverage": p["coverage"], "risk": p["risk"]} for p in block["curve"]]}
    if path is not None:
        from edgemed.artifact_digest import artifact_sha256

        out["artifact_sha256"] = artifact_sha256(path)
    return out


def coverage_shortfall(numbers: dict[str, Any], min_coverage: float) -> str | None:
    """Why an artifact's bench numbers (:func:`bench_numbers`) do not show that it answers at least `min_coverage`
    of the questions at the error its threshold certifies; None when they do. Decided on the 95% Wilson interval of
    the coverage: shown when its lower end reaches the minimum, short when its upper end is below it, and not
    established (also against it) when the interval holds the minimum: the difference is noise."""
    share, n = numbers.get("answered_share"), numbers.get("calibration_questions")
    target = numbers.get("abstain_target_error")
    at = f"at error <= {target:g}" if target is not None else "at its threshold"
    if share is None or not n:
        return f"coverage {at} not measured (minimum {min_coverage:g})"
    if numbers.get("abstain_threshold") is None:
        return f"no threshold is certified {at}: it answers no question (minimum coverage {min_coverage:g})"
    lo, hi = wilson_interval(round(share * n), n)
    if lo >= min_coverage:
        return None
    shown = f"coverage {share:.2f} (95% {lo:.2f}-{hi:.2f}, {n} questions) {at}"
    if hi < min_coverage:
        return f"{shown} < minimum {min_coverage:g}"
    return f"{shown} is not established >= {min_coverage:g}: the interval holds the minimum"


def describe(block: dict[str, Any]) -> str:
    """One line for the console: the threshold, its rule, what it does on the calibration questions, AURC."""
    cal = block["calibration"]
    if block["rule"] == "target_error":
        rule = f"error <= {block['target_error']:g} certified at {1 - block['delta']:.0%}"
    else:
        rule = f"coverage {block['coverage_asked']:g}"
    if block["threshold"] is None:
        head = f"abstention threshold ({rule}): none certified, /v1/mcq would abstain on every question"
    else:
        err = cal["selective_error"]
        lo, hi = cal["selective_error_ci"] or (None, None)
        head = (f"abstention threshold ({rule}): answer when p >= {block['threshold']:.3f}: "
                f"{cal['answered']}/{cal['n']} answered, error {err:.3f} (95% {lo:.3f}-{hi:.3f})")
    return f"{head}; AURC {block['aurc']:.4f} (best possible {block['aurc_optimal']:.4f})"

