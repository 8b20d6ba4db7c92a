"""Turn per-question predictions into the metrics of results.json: accuracy with its interval, subjects,
letter bias, calibration, failures (with examples), legacy rates and test-size arithmetic."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from edgemed.data.medmcqa import LETTERS
from edgemed.evaluator import metrics as m

CONFIDENT_WRONG = 0.7  # a wrong answer given with at least this probability
NEAR_MISS_MARGIN = 0.1  # gold is the runner-up and trails the chosen letter by at most this much
DIFFERENCES = (0.02, 0.05, 0.10)


def accuracy_block(correct: list[bool], confidence: float = 0.95) -> dict[str, Any]:
    k, n = int(sum(correct)), len(correct)
    lo, hi = m.wilson_interval(k, n, confidence)
    return {"n": n, "correct": k, "accuracy": k / n if n else None, "accuracy_ci": [lo, hi]}


def per_subject(preds: list[dict]) -> dict[str, dict[str, Any]] | None:
    """Accuracy per subject, largest first; None when the data has no subjects."""
    groups: dict[str, list[bool]] = defaultdict(list)
    for p in preds:
        groups[p.get("subject") or ""].append(bool(p["correct"]))
    if set(groups) == {""}:
        return None
    rows = {(s or "(none)"): accuracy_block(c) for s, c in groups.items()}
    return dict(sorted(rows.items(), key=lambda kv: (-kv[1]["n"], kv[0])))


def letter_distribution(preds: list[dict]) -> dict[str, Any]:
    """Predicted vs gold letter shares; chi-square of predicted counts against the gold shares."""
    parsed = [p for p in preds if p["predicted"] is not None]
    predicted = m.letter_counts([p["predicted"] for p in parsed])
    gold = m.letter_counts([p["gold"] for p in preds])
    n_pred, n_gold = max(len(parsed), 1), max(len(preds), 1)
    deviation = {a: predicted[a] / n_pred - gold[a] / n_gold for a in LETTERS}
    over = max(LETTERS, key=lambda a: deviation[a])
    out: dict[str, Any] = {
        "predicted": predicted,
        "gold": gold,
        "deviation": deviation,
        "max_deviation": max(abs(v) for v in deviation.values()),
        "over_predicted": over,
        "over_predicted_share": predicted[over] / n_pred,
        "majority_letter": max(LETTERS, key=lambda a: gold[a]),
        "majority_baseline": max(gold.values()) / n_gold,  # accuracy of always answering the commonest gold letter
        "test": "Pearson chi-square of predicted letter counts against the gold letter shares (df 3)",
        **m.chi_square_gof([predicted[a] for a in LETTERS], [gold[a] for a in LETTERS]),
    }
    with_probs = [p["probs"] for p in preds if p.get("probs")]
    if with_probs:
        out["mean_probs"] = {a: float(np.mean([pr[a] for pr in with_probs])) for a in LETTERS}
    return out


def confidence_of(p: dict) -> float | None:
    """Probability the model gave its chosen letter (0 for an unparseable answer; None without probs)."""
    if not p.get("probs"):
        return None
    return float(p["probs"][p["predicted"]]) if p["predicted"] else 0.0


def calibration(preds: list[dict], bins: int = 10) -> dict[str, Any] | None:
    """ECE, Brier score, reliability bins and accuracy at coverage; None when no probabilities were recorded."""
    rows = [p for p in preds if p.get("probs")]
    if not rows:
        return None
    conf = [confidence_of(p) for p in rows]
    ok = [bool(p["correct"]) for p in rows]
    probs = np.array([[p["probs"][a] for a in LETTERS] for p in rows])
    gold = [LETTERS.index(p["gold"]) for p in rows]
    return {
        "n": len(rows),
        "confidence": "probability of the chosen letter, renormalised over A-D",
        "mean_confidence": float(np.mean(conf)),
        "ece": m.expected_calibration_error(conf, ok, bins),
        "bins": m.calibration_bins(conf, ok, bins),
        "brier": m.brier_score(probs, gold),
        "accuracy_at_coverage": m.accuracy_at_coverage(conf, ok),
    }


def _example(p: dict, questions: dict[str, Any], text_len: int = 160) -> dict[str, Any]:
    q = questions.get(p["id"])
    ex: dict[str, Any] = {"id": p["id"], "gold": p["gold"], "predicted": p["predicted"]}
    if p.get("probs"):
        ex["probs"] = {a: round(p["probs"][a], 4) for a in LETTERS}
    if q is not None:
        ex["question"] = q.question if len(q.question) <= text_len else q.question[: text_len - 3] + "..."
        ex["gold_text"] = q.options[q.answer]
        if p["predicted"]:
            ex["predicted_text"] = q.options[LETTERS.index(p["predicted"])]
    if "text" in p:
        ex["text"] = p["text"]
    return ex


def failures(preds: list[dict], questions: dict[str, Any], bias: dict[str, Any], examples: int = 5) -> dict[str, Any]:
    """Wrong answers grouped by what the signals say went wrong, each with its count and examples."""
    wrong = [p for p in preds if not p["correct"]]
    confident = sorted(
        (p for p in wrong if p["predicted"] and (confidence_of(p) or 0.0) >= CONFIDENT_WRONG),
        key=lambda p: -(confidence_of(p) or 0.0),
    )
    near = []
    for p in wrong:
        if not (p.get("probs") and p["predicted"]):
            continue
        ranked = sorted(LETTERS, key=lambda a: -p["probs"][a])
        margin = p["probs"][p["predicted"]] - p["probs"][p["gold"]]
        if ranked[1] == p["gold"] and margin <= NEAR_MISS_MARGIN:
            near.append((margin, p))
    near.sort(key=lambda t: t[0])
    unparseable = [p for p in preds if p["predicted"] is None]
    over = bias["over_predicted"]
    biased = [p for p in wrong if p["predicted"] == over]
    out = {
        "wrong": len(wrong),
        "confident_wrong": {
            "rule": f"wrong letter chosen with probability >= {CONFIDENT_WRONG}",
            "count": len(confident),
            "examples": [_example(p, questions) for p in confident[:examples]],
        },
        "near_miss": {
            "rule": f"gold is the runner-up, at most {NEAR_MISS_MARGIN} below the chosen letter",
            "count": len(near),
            "examples": [_example(p, questions) | {"margin": round(mg, 4)} for mg, p in near[:examples]],
        },
        "unparseable": {
            "rule": "no answer letter under the strict parser (never counted correct)",
            "count": len(unparseable),
            "examples": [_example(p, questions) for p in unparseable[:examples]],
        },
        "position_bias": {
            "rule": "wrong answers that chose the most over-predicted letter",
            "letter": over,
            "deviation": bias["deviation"][over],
            "count": len(biased),
            "examples": [_example(p, questions) for p in biased[:examples]],
        },
    }
    return out


def legacy(preds: list[dict]) -> dict[str, Any] | None:
    """The reference notebook's substring metric, with how often it calls a wrong letter right (exact and partial
    are exclusive, as the notebook counted them)."""
    rows = [p for p in preds if "legacy_exact" in p]
    if not rows:
        return None
    n = len(rows)
    wrong = [p for p in rows if not p["correct"]]
    empty_exact = [p for p in rows if p["legacy_exact"] and not str(p.get("text") or "").strip()]
    return {
        "label": "LEGACY, UNRELIABLE: the notebook's substring judge of sampled text, kept only for comparison",
        "n": n,
        "exact_rate": sum(p["legacy_exact"] for p in rows) / n,
        "partial_rate": sum(p["legacy_partial"] for p in rows) / n,
        "no_match_rate": sum(not p["legacy_exact"] and not p["legacy_partial"] for p in rows) / n,
        "empty_judged_exact": len(empty_exact),
        "strict_letter_accuracy": sum(p["correct"] for p in rows) / n,
        "wrong_letter": len(wrong),
        "wrong_letter_judged_exact": sum(p["legacy_exact"] for p in wrong),
        "wrong_letter_judged_partial": sum(p["legacy_partial"] for p in wrong),
        "false_positive_rate_exact": sum(p["legacy_exact"] for p in wrong) / len(wrong) if wrong else 0.0,
        "false_positive_rate_partial": sum(p["legacy_partial"] for p in wrong) / len(wrong) if wrong else 0.0,
        "exact_rule": "lowercased and stripped, the gold option text is in the generated text or the generated text "
                      "in the gold text (an empty answer is exact: see empty_judged_exact)",
        "partial_rule": "not exact, and the whitespace-split word sets share at least half of the gold set's words",
    }


def test_size_plan(accuracy: float, discordant_rate: float | None = None) -> dict[str, Any]:
    """How precise this many questions can be: Wilson widths by n, and n to detect a given difference."""
    out: dict[str, Any] = {
        "at_accuracy": accuracy,
        "interval_width": m.interval_width_table(accuracy),
        "n_to_detect": [
            {"difference": d, "independent_n": _safe(m.n_to_detect_difference, accuracy, d)} for d in DIFFERENCES
        ],
        "assumptions": "two-sided alpha 0.05, power 0.8; independent = two-proportion test with n per model",
    }
    if discordant_rate is not None:
        for row in out["n_to_detect"]:
            row["paired_n"] = _safe(m.n_to_detect_paired, discordant_rate, row["difference"])
        out["discordant_rate"] = discordant_rate
        out["assumptions"] += "; paired = McNemar on the same questions at the observed discordant rate"
    return out


def _safe(fn, *args) -> int | None:
    try:
        return fn(*args)
    except ValueError:
        return None


def analyse_predictions(preds: list[dict], questions: dict[str, Any], examples: int = 5) -> dict[str, Any]:
    """All metrics of one evaluation."""
    head = accuracy_block([bool(p["correct"]) for p in preds])
    bias = letter_distribution(preds)
    out: dict[str, Any] = {
        **head,
        "chance": 0.25,
        "unparseable": sum(p["predicted"] is None for p in preds),
        "per_subject": per_subject(preds),
        "letters": bias,
        "calibration": calibration(preds),
        "failures": failures(preds, questions, bias, examples),
        "test_size": test_size_plan(head["accuracy"] or 0.0),
    }
    masses = [p["letter_mass"] for p in preds if p.get("letter_mass") is not None]
    if masses:
        out["letter_mass"] = {
            "meaning": "share of the full next-token probability on ' A'..' D' after 'Answer:'",
            "mean": float(np.mean(masses)),
            "min": float(np.min(masses)),
        }
    legacy_block = legacy(preds)
    if legacy_block:
        out["legacy"] = legacy_block
    return out
