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
