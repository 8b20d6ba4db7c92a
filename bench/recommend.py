"""Pick the artifact to ship: the most accurate one that fits the constraints, and why each other one is not it."""

from __future__ import annotations

from typing import Any

from edgemed.bench.results import ArtifactResult
from edgemed.bench.units import fmt_bytes


def recommend(results: list[ArtifactResult], max_memory_bytes: int | None = None,
              max_p95_ms: float | None = None) -> dict[str, Any]:
    """Most accurate artifact within the limits (ties: closer agreement with the reference, faster p95, less memory)."""
    rejected: dict[str, list[str]] = {}
    fits: list[ArtifactResult] = []
    for r in results:
        reasons = []
        if not r.ok:
            reasons.append(f"failed to run ({r.failure.message if r.failure else 'unknown'})")
        else:
            rss = r.memory.peak_rss_bytes
            p95 = r.metric("answer_p95_ms")
            if max_memory_bytes is not None and (rss is None or rss > max_memory_bytes):
                reasons.append(f"peak memory {fmt_bytes(rss)} > {fmt_bytes(max_memory_bytes)}")
            if max_p95_ms is not None and (p95 is None or p95 > max_p95_ms):
                shown = "not measured" if p95 is None else f"{p95:.1f} ms"
                reasons.append(f"p95 latency {shown} > {max_p95_ms:g} ms")
            if r.accuracy.accuracy is None:
                reasons.append("no accuracy measured")
        if reasons:
            rejected[r.name] = reasons
        else:
            fits.append(r)
    fits.sort(key=lambda r: (-(r.accuracy.accuracy or 0.0), -(r.accuracy.agreement or 0.0),
                             r.metric("answer_p95_ms") or float("inf"), r.memory.peak_rss_bytes or 0))
    constraints = {"max_memory_bytes": max_memory_bytes, "max_p95_ms": max_p95_ms}
    if not fits:
        return {"constraints": constraints, "choice": None, "ranked": [], "rejected": rejected,
                "why": "no artifact fits the constraints"}
    best = fits[0]
    for other in fits[1:]:
        reason = f"fits, but less accurate ({other.accuracy.accuracy:.3f} vs {best.accuracy.accuracy:.3f})"
        if other.accuracy.accuracy == best.accuracy.accuracy:
            agree = other.accuracy.agreement
            reason = (f"fits, equally accurate but agrees less with the reference, or is slower or larger "
                      f"(agreement {'-' if agree is None else f'{agree:.3f}'}, "
                      f"p95 {other.metric('answer_p95_ms'):.1f} ms, peak {fmt_bytes(other.memory.peak_rss_bytes)})")
        elif best.accuracy.ci_low is not None and other.accuracy.accuracy >= best.accuracy.ci_low:
            reason += "; the difference is within the 95% interval, so consider the faster/smaller one"
        rejected[other.name] = [reason]
    p95 = best.metric("answer_p95_ms")
    why = (f"{best.name} ({best.format}) is the most accurate artifact that fits: accuracy "
           f"{best.accuracy.accuracy:.3f}, p95 {p95:.1f} ms, peak memory {fmt_bytes(best.memory.peak_rss_bytes)}")
    return {"constraints": constraints, "choice": best.name, "ranked": [r.name for r in fits],
            "rejected": rejected, "why": why}
