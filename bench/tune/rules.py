"""The decisions of ``edgemed tune``, as pure functions of measured numbers: never on a difference its own
statistics call noise.

- A budget on a measured mean (KL divergence, top-1 agreement) is decided by the 95% interval: *within* when the
  whole interval is on the right side, *outside* when the whole interval is on the wrong side, else it
  *straddles*, and stage 1 measures more tokens (up to all of them; still straddling then: not shown within).
- A candidate is *dominated* when another one that broke no budget is no larger and its KL divergence interval
  lies wholly below this one's (so the other is better on both, beyond noise). Applied when the objective is size
  (any runtime) or memory (within one runtime: there memory follows the weights; across engines it does not);
  never for latency or tg, which size and KLD do not decide.
- Stage 2 applies the bench's own rules (edgemed.bench.recommend: peak memory, p95, accuracy not significantly
  below the reference by exact McNemar) plus the interval rules above, the size budget and tg.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from edgemed.fsutil import fmt_bytes

WITHIN, OUTSIDE, STRADDLES = "within", "outside", "straddles"
SIZE_TIE = 0.02  # as bench.recommend: sizes and memory within 2% are a tie


def cluster_interval(values: np.ndarray, clusters: np.ndarray) -> tuple[float, float]:
    """95% interval of the mean of `values` with a cluster-robust standard error (one cluster per sequence)."""
    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean())
    groups, index = np.unique(clusters, return_inverse=True)
    if len(groups) < 2:
        se = float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else 0.0
    else:
        sums = np.bincount(index, weights=values - mean)
        g = len(groups)
        se = math.sqrt(g / (g - 1) * float((sums ** 2).sum())) / len(values)
    return mean - 1.96 * se, mean + 1.96 * se


def upper_budget(interval: tuple[float, float], limit: float) -> str:
    """A budget the value must not exceed (KL divergence)."""
    lo, hi = interval
    return WITHIN if hi <= limit else OUTSIDE if lo > limit else STRADDLES


def lower_budget(interval: tuple[float, float], limit: float) -> str:
    """A budget the value must reach (top-1 agreement)."""
    lo, hi = interval
    return WITHIN if lo >= limit else OUTSIDE if hi < limit else STRADDLES


def stage1_verdicts(m: dict[str, Any], budgets: dict[str, Any]) -> dict[str, str]:
    """Per budget stage 1 can judge ({'max_kld': within|outside|straddles, ...}) from one measurement `m`
    (``kld_ci``, ``top1_ci``, ``size_bytes``)."""
    out: dict[str, str] = {}
    if budgets.get("max_kld") is not None:
        out["max_kld"] = upper_budget(tuple(m["kld_ci"]), budgets["max_kld"])
    if budgets.get("min_top1_agreement") is not None:
        out["min_top1_agreement"] = lower_budget(tuple(m["top1_ci"]), budgets["min_top1_agreement"])
    if budgets.get("max_size_bytes") is not None and m.get("size_bytes") is not None:
        out["max_size"] = WITHIN if m["size_bytes"] <= budgets["max_size_bytes"] else OUTSIDE
    return out


def describe_break(name: str, m: dict[str, Any], budgets: dict[str, Any]) -> str:
    """One phrase naming the budget and the number that broke (or did not clear) it."""
    if name == "max_kld":
        lo, hi = m["kld_ci"]
        return f"mean KLD {m['kld_mean']:.4f} [{lo:.4f}-{hi:.4f}] vs budget {budgets['max_kld']:g}"
    if name == "min_top1_agreement":
        lo, hi = m["top1_ci"]
        return f"top-1 agreement {m['top1']:.3f} [{lo:.3f}-{hi:.3f}] vs budget {budgets['min_top1_agreement']:g}"
    if name == "max_size":
        return f"size {fmt_bytes(m['size_bytes'])} > budget {fmt_bytes(budgets['max_size_bytes'])}"
    return name


def dominates(a: dict[str, Any], b: dict[str, Any], objective: str) -> bool:
    """Is candidate `a` (no budget broken) at least as small as `b` with a KLD interval wholly below b's?"""
    if a is b or "kld_ci" not in a or "kld_ci" not in b or objective not in ("size", "memory"):
        return False
    if objective == "memory" and a["runtime"] != b["runtime"]:
        return False
    return a["size_bytes"] <= b["size_bytes"] and a["kld_ci"][1] < b["kld_ci"][0]


def dominator(c: dict[str, Any], others: list[dict[str, Any]], objective: str) -> dict[str, Any] | None:
    """The smallest live candidate that dominates `c`, if any."""
    beats = [o for o in others if o.get("alive") and dominates(o, c, objective)]
    return min(beats, key=lambda o: (o["size_bytes"], o["kld_mean"]), default=None)


def stage2_breaks(r: dict[str, Any], budgets: dict[str, Any], rejected: list[str]) -> list[str]:
    """The budgets a fully benched candidate breaks or does not clear: the bench's own exclusions (`rejected`, from
    edgemed.bench.recommend) plus the interval rules, the size budget and tg."""
    out = [why for why in rejected if not why.startswith("fits, but")]
    fid = r.get("fidelity") or {}
    if budgets.get("max_kld") is not None:
        ci = fid.get("kld_ci")
        if ci is None:
            out.append("KL divergence not measured")
        elif upper_budget(tuple(ci), budgets["max_kld"]) != WITHIN:
            out.append(f"mean KLD {fid['kld_mean']:.4f} [{ci[0]:.4f}-{ci[1]:.4f}]: interval not within budget "
                       f"{budgets['max_kld']:g}")
    if budgets.get("min_top1_agreement") is not None:
        ci = fid.get("top1_cluster_ci") or fid.get("top1_agreement_ci")
        if ci is None or lower_budget(tuple(ci), budgets["min_top1_agreement"]) != WITHIN:
            out.append(f"top-1 agreement {fid.get('top1_agreement', float('nan')):.3f} interval not within budget "
                       f"{budgets['min_top1_agreement']:g}")
    if budgets.get("max_size_bytes") is not None and (r.get("size_bytes") or 0) > budgets["max_size_bytes"]:
        out.append(f"size {fmt_bytes(r.get('size_bytes'))} > budget {fmt_bytes(budgets['max_size_bytes'])}")
    if budgets.get("min_tg") is not None:
        tg = ((r.get("throughput") or {}).get("tg") or {}).get("avg_ts")
        if tg is None or tg < budgets["min_tg"]:
            out.append(f"tg {'not measured' if tg is None else f'{tg:.1f} t/s'} < budget {budgets['min_tg']:g} t/s")
    return out


def objective_value(r: dict[str, Any], objective: str) -> float | None:
    """The number the objective minimises for a benched candidate (tg negated)."""
    if objective == "size":
        return r.get("size_bytes")
    if objective == "memory":
        return (r.get("memory") or {}).get("peak_rss_bytes")
    if objective == "latency":
        lat = (r.get("latency") or {}).get("answer_ms") or {}
        return lat.get("p95") if lat.get("p95") is not None else lat.get("max")
    tg = ((r.get("throughput") or {}).get("tg") or {}).get("avg_ts")
    return -tg if tg is not None else None


def cannot_beat(lower_bound: float | None, best_value: float | None, objective: str) -> bool:
    """Stage 2 stops for a candidate whose objective cannot come within a tie of the best's: for size its size,
    for memory its weight bytes (a process that serves a model maps all of it). No bound for latency or tg."""
    if objective not in ("size", "memory") or lower_bound is None or best_value is None:
        return False
    return lower_bound > best_value * (1 + SIZE_TIE)


def tg_rank_key(r: dict[str, Any]) -> tuple[float, float]:
    tg = ((r.get("throughput") or {}).get("tg") or {})
    return (-(tg.get("avg_ts") or 0.0), r.get("size_bytes") or 0)


def tg_tie(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two tg measurements within twice the standard error of their difference (llama-bench's stddev / sqrt n)."""
    ta, tb = ((a.get("throughput") or {}).get("tg") or {}), ((b.get("throughput") or {}).get("tg") or {})
    if ta.get("avg_ts") is None or tb.get("avg_ts") is None:
        return True
    na, nb = max(len(ta.get("samples_ts") or []), 1), max(len(tb.get("samples_ts") or []), 1)
    se = math.sqrt((ta.get("stddev_ts") or 0) ** 2 / na + (tb.get("stddev_ts") or 0) ** 2 / nb)
    return abs(ta["avg_ts"] - tb["avg_ts"]) <= 2 * se


def distance(m: dict[str, Any], budgets: dict[str, Any]) -> float:
    """How far a candidate is from the stage-1 budgets (0 = meets them): the largest relative shortfall, for
    naming the nearest candidates when none meets the budget."""
    gaps = [0.0]
    if budgets.get("max_kld") is not None and m.get("kld_ci"):
        gaps.append(max(0.0, m["kld_ci"][1] - budgets["max_kld"]) / max(budgets["max_kld"], 1e-12))
    if budgets.get("min_top1_agreement") is not None and m.get("top1_ci"):
        gaps.append(max(0.0, budgets["min_top1_agreement"] - m["top1_ci"][0]))
    if budgets.get("max_size_bytes") is not None and m.get("size_bytes"):
        gaps.append(max(0.0, m["size_bytes"] / budgets["max_size_bytes"] - 1))
    return max(gaps)
