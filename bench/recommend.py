"""Pick the artifact to ship, on differences the bench's own statistics call real.

1. Out: an artifact that failed, did not pass a check of the run (a budget, --baseline, the A/B gate), breaks a
   constraint (peak memory, p95 latency, mean KL divergence, a minimum coverage at the certified error, decided
   on its interval), or
   answers significantly worse than the reference (exact McNemar test, paired on the same questions, p < 0.05,
   accuracy lower). An accuracy difference the test calls noise decides nothing.
2. Among the rest, minimise the declared objective (``prefer``): memory (peak RSS, then latency), latency
   (p95, then memory) or size (on disk, then memory). Two values closer than their noise are a tie and the next
   key decides: memory and size within 2%; latencies whose medians differ by less than twice the standard error
   of the difference. The last tie-break is the lower KL divergence, then the name.
Every other artifact's line names the measured number that decided against it.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from typing import Any

from edgemed.bench.results import ArtifactResult, tail_latency
from edgemed.fsutil import fmt_bytes

ALPHA = 0.05
SIZE_TIE = 0.02


@dataclass
class Constraints:
    max_memory_bytes: int | None = None
    max_p95_ms: float | None = None
    max_kld: float | None = None
    min_coverage: float | None = None  # share answered at the certified error (selective prediction)
    prefer: str = "memory"


def _ms(r: ArtifactResult) -> str:
    s = r.latency.answer_ms
    return f"p95 {s['p95']:.1f} ms" if s.get("p95") is not None else f"max {s.get('max') or 0:.1f} ms (n<20)"


def _excluded(r: ArtifactResult, ref: ArtifactResult | None, c: Constraints) -> list[str]:
    if not r.ok:
        return [f"failed to run ({r.failure.message if r.failure else 'unknown'})"]
    reasons = []
    rss = r.memory.peak_rss_bytes
    if c.max_memory_bytes is not None and (rss is None or rss > c.max_memory_bytes):
        reasons.append(f"peak memory {fmt_bytes(rss)} > limit {fmt_bytes(c.max_memory_bytes)}")
    lat = tail_latency(r.latency.answer_ms)
    if c.max_p95_ms is not None and (lat is None or lat > c.max_p95_ms):
        shown = "not measured" if lat is None else _ms(r)
        reasons.append(f"answer latency {shown} > limit {c.max_p95_ms:g} ms")
    kld = (r.fidelity or {}).get("kld_mean")
    if c.max_kld is not None and (kld is None or kld > c.max_kld):
        shown = "not measured" if kld is None else f"{kld:.4f}"
        reasons.append(f"mean KL divergence {shown} > limit {c.max_kld:g}")
    if c.min_coverage is not None:
        from edgemed.evaluator.selective import coverage_shortfall

        short = coverage_shortfall(r.extra, c.min_coverage)
        reasons += [short] if short else []
    acc = r.accuracy
    if ref is not None and r.name != ref.name and acc.mcnemar_p is not None and acc.mcnemar_p < ALPHA \
            and (acc.accuracy_diff or 0) < 0:
        reasons.append(f"significantly less accurate than {ref.name}: {acc.accuracy:.3f} vs "
                       f"{ref.accuracy.accuracy:.3f} (exact McNemar p = {acc.mcnemar_p:.3g} < {ALPHA})")
    if acc.accuracy is None:
        reasons.append("no accuracy measured")
    return reasons


def _latency_cmp(a: ArtifactResult, b: ArtifactResult) -> tuple[int, str]:
    sa, sb = a.latency.answer_ms, b.latency.answer_ms
    ma, mb = sa.get("median"), sb.get("median")
    if ma is None or mb is None:
        return 0, "latency not measured"
    se = math.sqrt((sa.get("stdev") or 0) ** 2 / max(sa.get("count") or 1, 1)
                   + (sb.get("stdev") or 0) ** 2 / max(sb.get("count") or 1, 1))
    if abs(ma - mb) <= 2 * se:
        return 0, f"median answer latency {ma:.1f} vs {mb:.1f} ms is within noise"
    return (-1 if ma < mb else 1), f"median answer latency {ma:.1f} ms vs {mb:.1f} ms"


def _amount_cmp(va: float | None, vb: float | None, what: str) -> tuple[int, str]:
    if va is None or vb is None:
        return 0, f"{what} not measured"
    if abs(va - vb) <= SIZE_TIE * max(va, vb):
        return 0, f"{what} {fmt_bytes(va)} vs {fmt_bytes(vb)} is within {SIZE_TIE:.0%}"
    return (-1 if va < vb else 1), f"{what} {fmt_bytes(va)} vs {fmt_bytes(vb)}"


def _kld_cmp(a: ArtifactResult, b: ArtifactResult) -> tuple[int, str]:
    fa, fb = a.fidelity or {}, b.fidelity or {}
    if fa.get("kld_ci") is None or fb.get("kld_ci") is None:
        return 0, "KL divergence not measured"
    if fa["kld_ci"][1] < fb["kld_ci"][0]:
        return -1, f"mean KLD {fa['kld_mean']:.4f} vs {fb['kld_mean']:.4f}"
    if fb["kld_ci"][1] < fa["kld_ci"][0]:
        return 1, f"mean KLD {fa['kld_mean']:.4f} vs {fb['kld_mean']:.4f}"
    return 0, "KL divergence intervals overlap"


def _keys(prefer: str):
    memory = ("peak memory", lambda a, b: _amount_cmp(a.memory.peak_rss_bytes, b.memory.peak_rss_bytes, "peak memory"))
    size = ("size", lambda a, b: _amount_cmp(a.size_bytes, b.size_bytes, "size on disk"))
    latency = ("latency", _latency_cmp)
    fidelity = ("fidelity", _kld_cmp)
    order = {"memory": (memory, latency), "latency": (latency, memory), "size": (size, memory)}[prefer]
    return [*order, fidelity]


def decide(a: ArtifactResult, b: ArtifactResult, prefer: str) -> tuple[int, str]:
    """(-1 if a is preferred, 1 if b, 0 if nothing measured tells them apart; the deciding number)."""
    notes = []
    for _, cmp in _keys(prefer):
        sign, why = cmp(a, b)
        if sign:
            return sign, "; ".join([*notes, why])
        notes.append(why)
    return (-1 if a.name < b.name else 1), "; ".join([*notes, "tied on every measure: by name"])


def recommend(results: list[ArtifactResult], ref: ArtifactResult | None, c: Constraints,
              broken: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """The artifact to ship (module doc). `broken`: per artifact, the checks it did not pass (budgets, --baseline,
    A/B): such an artifact is never the choice, as it fails the run."""
    rejected: dict[str, list[str]] = {}
    fits: list[ArtifactResult] = []
    for r in results:
        reasons = _excluded(r, ref, c) + [f"did not pass {why}" for why in (broken or {}).get(r.name, [])]
        if reasons:
            rejected[r.name] = reasons
        else:
            fits.append(r)
    base = {"constraints": asdict(c), "prefer": c.prefer, "alpha": ALPHA,
            "reference": ref.name if ref else None}
    if not fits:
        return {**base, "choice": None, "ranked": [], "rejected": rejected,
                "why": "no artifact fits the constraints and is as accurate as the reference"}
    ranked = sorted(fits, key=functools.cmp_to_key(lambda a, b: decide(a, b, c.prefer)[0]))
    best = ranked[0]
    for other in ranked[1:]:
        _, why = decide(best, other, c.prefer)
        rejected[other.name] = [f"fits, but {best.name} is preferred ({c.prefer} first): {why}"]
    note = ""
    if ref is None:
        note = "; no reference ran, so accuracy was not tested against one"
    busy = [r.name for r in ranked if r.busy]
    if busy:
        note += f"; measured on a busy machine: {', '.join(busy)} (timings not comparable)"
    if c.min_coverage is not None:  # it passed the constraint: both numbers are there
        note = (f"; answers {best.extra['answered_share']:.0%} of the questions at error <= "
                f"{best.extra['abstain_target_error']:g} (minimum {c.min_coverage:g})") + note
    kld = (best.fidelity or {}).get("kld_mean")
    why = (f"{best.name} ({best.format}): least {c.prefer} among the artifacts not significantly less accurate "
           f"than {ref.name if ref else 'the reference'} within the constraints: peak memory "
           f"{fmt_bytes(best.memory.peak_rss_bytes)}, {_ms(best)}, size {fmt_bytes(best.size_bytes)}, "
           f"accuracy {best.accuracy.accuracy:.3f}" + (f", mean KLD {kld:.4f}" if kld is not None else "") + note)
    return {**base, "choice": best.name, "ranked": [r.name for r in ranked], "rejected": rejected, "why": why}
