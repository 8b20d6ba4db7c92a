"""Summary statistics of timing samples: median, percentiles, spread (llama-bench / optimum-benchmark style)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation between order statistics (numpy's default)."""
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile q must be within 0..100, got {q}")
    xs = sorted(float(v) for v in values if v is not None and not math.isnan(v))
    if not xs:
        return None
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def stdev(values: Sequence[float]) -> float | None:
    """Sample standard deviation (n - 1); 0 for a single sample, None for none."""
    xs = [float(v) for v in values if v is not None]
    if not xs:
        return None
    if len(xs) == 1:
        return 0.0
    mean = sum(xs) / len(xs)
    return math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))


MIN_SAMPLES_P95 = 20  # below this the "p95" is the maximum or an interpolation next to it: report max instead


def factor_for_p95(n: int) -> int:
    """The other factor of the answer-latency count (latency prompts x repetitions) that, with `n` as one, gives
    MIN_SAMPLES_P95 samples: the fewest latency prompts for `n` repetitions, or repetitions for `n` prompts."""
    return -(-MIN_SAMPLES_P95 // max(n, 1))
MIN_SAMPLES_P90 = 10


def summarize(values: Sequence[float | None], scale: float = 1.0) -> dict[str, Any]:
    """count, mean, median, p90, p95, min, max, stdev of the non-missing samples, each times `scale`.

    p95 is None below 20 samples and p90 below 10 (a tail percentile of fewer samples is just the maximum).
    """
    xs = [float(v) * scale for v in values if v is not None]
    if not xs:
        return {"count": 0, "mean": None, "median": None, "p90": None, "p95": None,
                "min": None, "max": None, "stdev": None}
    return {
        "count": len(xs),
        "mean": sum(xs) / len(xs),
        "median": percentile(xs, 50),
        "p90": percentile(xs, 90) if len(xs) >= MIN_SAMPLES_P90 else None,
        "p95": percentile(xs, 95) if len(xs) >= MIN_SAMPLES_P95 else None,
        "min": min(xs),
        "max": max(xs),
        "stdev": stdev(xs),
    }


# --- intervals for budget verdicts (95%, two-sided) -------------------------------------------------------------
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df: int) -> float:
    """Student's t quantile 0.975 (a two-sided 95% interval) for `df` degrees of freedom: the table to 30, then
    the Cornish-Fisher expansion (error < 1e-3)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be at least 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


def mean_interval(values: Sequence[float]) -> tuple[float, float] | None:
    """95% t interval of the mean of independent repetitions; None below 2 samples (no spread is known)."""
    xs = [float(v) for v in values if v is not None and not math.isnan(v)]
    if len(xs) < 2:
        return None
    mean = sum(xs) / len(xs)
    half = t975(len(xs) - 1) * (stdev(xs) or 0.0) / math.sqrt(len(xs))
    return mean - half, mean + half


def _binom_cdf(k: int, n: int, p: float) -> float:
    """P(Binomial(n, p) <= k)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    log_p, log_q = math.log(p), math.log1p(-p)
    return min(1.0, sum(math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
                                 + i * log_p + (n - i) * log_q) for i in range(k + 1)))


def quantile_interval(values: Sequence[float], q: float) -> tuple[float, float] | None:
    """Distribution-free 95% interval of the q-quantile (0 < q < 1) from order statistics: the k-th smallest sample
    lies below the quantile with probability P(Binomial(n, q) >= k). Each end is the tightest order statistic with
    at most 2.5% on its side; where the samples are too few for that (a p95 from fewer than 72 samples), the end is
    the sample's extreme, which then covers less than 97.5% on that side. None for no samples."""
    xs = sorted(float(v) for v in values if v is not None and not math.isnan(v))
    n = len(xs)
    if not n:
        return None
    lo = 1  # the largest k with P(Binomial(n, q) >= k) >= 0.975
    for k in range(1, n + 1):
        if 1.0 - _binom_cdf(k - 1, n, q) >= 0.975:
            lo = k
    hi = n  # the smallest u with P(Binomial(n, q) <= u - 1) >= 0.975
    for u in range(1, n + 1):
        if _binom_cdf(u - 1, n, q) >= 0.975:
            hi = u
            break
    return xs[lo - 1], xs[hi - 1]
