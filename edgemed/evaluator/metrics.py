"""Statistics for multiple-choice evaluation: pure math/numpy, no scipy.

Every function here is checked in tests/test_metrics.py against hand-computed values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np

DEFAULT_COVERAGES = (1.0, 0.8, 0.6, 0.4, 0.2)
DEFAULT_SIZES = (50, 100, 200, 500, 1000, 2000, 5000)


def z_value(confidence: float = 0.95) -> float:
    """Two-sided normal quantile, e.g. 1.959964 for 95%."""
    if not 0.0 < confidence < 1.0:
        raise ValueError("confidence must be between 0 and 1")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials; (0, 1) when n is 0."""
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= k <= n:
        raise ValueError(f"k={k} must lie in 0..n={n}")
    z = z_value(confidence)
    p = k / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # the interval always holds p: at k = 0 (or n) rounding left center - half a hair above 0 (below 1)
    return min(p, max(0.0, center - half)), max(p, min(1.0, center + half))


def wilson_width(p: float, n: int, confidence: float = 0.95) -> float:
    """Width of the Wilson interval at observed proportion p with n questions (k may be fractional)."""
    z = z_value(confidence)
    denom = 1 + z * z / n
    return 2 * z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom


def mcnemar_exact(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value: binomial test of b vs c discordant pairs at p=1/2."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def chi2_sf(x: float, df: int) -> float:
    """Survival function of the chi-square distribution (closed forms; any positive integer df)."""
    if x <= 0:
        return 1.0
    if df % 2 == 0:  # P = exp(-x/2) * sum_{i<df/2} (x/2)^i / i!
        term, total = 1.0, 1.0
        for i in range(1, df // 2):
            term *= (x / 2) / i
            total += term
        return min(1.0, math.exp(-x / 2) * total)
    # odd df: erfc(sqrt(x/2)) + sqrt(2x/pi) e^{-x/2} * sum of x^i / (3*5*...*(2i+1))
    total = math.erfc(math.sqrt(x / 2))
    term = math.sqrt(2 * x / math.pi) * math.exp(-x / 2)
    for i in range(1, (df + 1) // 2):
        total += term
        term *= x / (2 * i + 1)
    return min(1.0, total)


def chi_square_gof(observed: Sequence[float], expected_share: Sequence[float]) -> dict[str, float | int | None]:
    """Pearson chi-square goodness of fit of counts against expected shares (cells with zero expectation dropped)."""
    obs = np.asarray(observed, dtype=float)
    share = np.asarray(expected_share, dtype=float)
    total = obs.sum()
    if total <= 0 or share.sum() <= 0:
        return {"chi2": None, "df": 0, "p_value": None}
    exp = share / share.sum() * total
    keep = exp > 0
    stat = float(((obs[keep] - exp[keep]) ** 2 / exp[keep]).sum())
    df = int(keep.sum()) - 1
    return {"chi2": stat, "df": df, "p_value": chi2_sf(stat, df) if df > 0 else None}


def kl_divergence(p: np.ndarray, q: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Row-wise KL(p || q) in nats for distributions in the last axis (q clipped at eps)."""
    p = np.asarray(p, dtype=float)
    q = np.clip(np.asarray(q, dtype=float), eps, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * (np.log(np.clip(p, eps, None)) - np.log(q)), 0.0)
    return terms.sum(axis=-1)


def expected_calibration_error(
    confidences: Sequence[float], correct: Sequence[bool], bins: int = 10
) -> float:
    """ECE: sum over equal-width confidence bins of (bin share) * |accuracy - mean confidence|.

    Bins are (0, 0.1], (0.1, 0.2], ... (0.9, 1.0]; a confidence of exactly 0 goes in the first bin.
    """
    return float(sum(row["weight"] * row["gap"] for row in calibration_bins(confidences, correct, bins)))


def calibration_bins(confidences: Sequence[float], correct: Sequence[bool], bins: int = 10) -> list[dict]:
    """Reliability table: one row per non-empty bin (lo, hi, n, weight, confidence, accuracy, gap)."""
    conf = np.asarray(confidences, dtype=float)
    ok = np.asarray(correct, dtype=float)
    if conf.shape != ok.shape:
        raise ValueError("confidences and correct must have the same length")
    n = len(conf)
    if n == 0:
        return []
    index = np.clip(np.ceil(np.round(conf * bins, 9)).astype(int) - 1, 0, bins - 1)  # round: 0.7*10 is 7.000...1
    rows = []
    for b in range(bins):
        mask = index == b
        if not mask.any():
            continue
        acc, mean_conf = float(ok[mask].mean()), float(conf[mask].mean())
        rows.append(
            {
                "lo": b / bins,
                "hi": (b + 1) / bins,
                "n": int(mask.sum()),
                "weight": float(mask.sum() / n),
                "confidence": mean_conf,
                "accuracy": acc,
                "gap": abs(acc - mean_conf),
            }
        )
    return rows


def brier_score(probs: np.ndarray, gold: Sequence[int]) -> float:
    """Mean multi-class Brier score: sum over letters of (p - onehot)^2, averaged over questions."""
    probs = np.asarray(probs, dtype=float)
    if len(probs) == 0:
        return float("nan")
    onehot = np.zeros_like(probs)
    onehot[np.arange(len(probs)), np.asarray(gold)] = 1.0
    return float(((probs - onehot) ** 2).sum(axis=1).mean())


def accuracy_at_coverage(
    confidences: Sequence[float], correct: Sequence[bool], coverages: Sequence[float] = DEFAULT_COVERAGES
) -> list[dict]:
    """Answer only the most confident questions: for each coverage c, accuracy on the top ceil(c*n).

    Ties in confidence are broken by the original order (stable sort), so the result is deterministic.
    Each row: coverage asked, n answered, accuracy, and the confidence threshold (lowest answered confidence).
    """
    conf = np.asarray(confidences, dtype=float)
    ok = np.asarray(correct, dtype=float)
    order = np.argsort(-conf, kind="stable")
    rows = []
    for c in coverages:
        if not 0.0 < c <= 1.0:
            raise ValueError(f"coverage {c} must be in (0, 1]")
        k = math.ceil(round(c * len(conf), 9))
        if k == 0:
            rows.append({"coverage": c, "n": 0, "accuracy": None, "threshold": None})
            continue
        chosen = order[:k]
        rows.append(
            {
                "coverage": c,
                "n": int(k),
                "accuracy": float(ok[chosen].mean()),
                "threshold": float(conf[chosen].min()),
            }
        )
    return rows


def interval_width_table(
    accuracy: float, sizes: Sequence[int] = DEFAULT_SIZES, confidence: float = 0.95
) -> list[dict]:
    """Wilson interval (and its width) at the observed accuracy for each test-set size."""
    rows = []
    for n in sizes:
        z = z_value(confidence)
        denom = 1 + z * z / n
        center = (accuracy + z * z / (2 * n)) / denom
        half = wilson_width(accuracy, n, confidence) / 2
        rows.append({"n": int(n), "lo": max(0.0, center - half), "hi": min(1.0, center + half), "width": 2 * half})
    return rows


def n_to_detect_difference(
    accuracy: float, difference: float, alpha: float = 0.05, power: float = 0.8
) -> int:
    """Questions per model to detect an accuracy change of `difference` between two independent samples.

    Classic two-proportion sample size: n = (z_a sqrt(2 pbar qbar) + z_b sqrt(p1 q1 + p2 q2))^2 / d^2.
    """
    if difference == 0:
        raise ValueError("difference must be non-zero")
    p1 = accuracy
    p2 = min(max(accuracy + difference, 0.0), 1.0)
    d = abs(p2 - p1)
    if d == 0:
        raise ValueError("accuracy + difference leaves [0, 1]")
    za, zb = z_value(1 - alpha), NormalDist().inv_cdf(power)
    pbar = (p1 + p2) / 2
    num = za * math.sqrt(2 * pbar * (1 - pbar)) + zb * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return math.ceil(num * num / (d * d))


def n_to_detect_paired(discordant_rate: float, difference: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Questions to detect `difference` with McNemar's test when a share `discordant_rate` of answers differ.

    Connor (1987): n = (z_a sqrt(pd) + z_b sqrt(pd - d^2))^2 / d^2, with pd the discordant share.
    """
    d = abs(difference)
    if d == 0:
        raise ValueError("difference must be non-zero")
    if discordant_rate < d:
        raise ValueError("the discordant rate must be at least the difference")
    za, zb = z_value(1 - alpha), NormalDist().inv_cdf(power)
    num = za * math.sqrt(discordant_rate) + zb * math.sqrt(max(discordant_rate - d * d, 0.0))
    return math.ceil(num * num / (d * d))


def letter_counts(letters: Sequence[str | None], alphabet: Sequence[str] = ("A", "B", "C", "D")) -> dict[str, int]:
    return {a: sum(1 for x in letters if x == a) for a in alphabet}
