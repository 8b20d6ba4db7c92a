"""Two bench runs paired artifact by artifact: loading, deltas (for ``edgemed report``) and regressions (for
``edgemed bench --baseline``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgemed.bench.budget import Check
from edgemed.bench.results import METRICS, ArtifactResult, format_value
from edgemed.errors import EdgemedError

# metric -> the direction that is a regression
REGRESSION_METRICS: dict[str, str] = {
    "answer_p95_ms": "up",
    "ttft_ms": "up",
    "tpot_ms": "up",
    "decode_tps": "down",
    "prefill_tps": "down",
    "peak_rss_mb": "up",
    "accuracy": "down",
}


def load_run(path: Path, flag: str = "") -> tuple[dict[str, Any], list[ArtifactResult]]:
    """A bench.json written by ``edgemed bench``: (the whole document, its artifact results). `flag` (e.g.
    ``--baseline``) prefixes every error message."""
    from edgemed.fsutil import read_json, require_regular_file

    label = f"{flag} " if flag else ""
    path = require_regular_file(Path(path), f"{label}bench run".strip())
    if path.is_dir():
        path = path / "bench.json"
    try:
        data = read_json(path, "bench run", "give a bench.json written by 'edgemed bench'")
    except EdgemedError as exc:
        raise EdgemedError(f"{label}{exc}") from None  # e.g. "--baseline X is corrupt: the bench run is not JSON"
    if not isinstance(data, dict) or not isinstance(data.get("artifacts"), list):
        raise EdgemedError(f"{label}{path} has no 'artifacts' list; give a bench.json written by 'edgemed bench'")
    try:
        results = [ArtifactResult.from_dict(a) for a in data["artifacts"]]
    except (TypeError, KeyError, ValueError, AttributeError) as exc:
        raise EdgemedError(f"{label}{path}: an artifact entry is malformed ({exc}); re-run 'edgemed bench'") from None
    return data, results


def pair(before: list[ArtifactResult], after: list[ArtifactResult]) -> list[tuple[ArtifactResult | None,
                                                                                  ArtifactResult | None]]:
    """Match artifacts by name, then by format where exactly one unmatched artifact on each side has it."""
    left = {r.name: r for r in before}
    matched = [(left.pop(r.name), r) for r in after if r.name in left]
    rest = [r for r in after if all(r is not a for _, a in matched)]
    pairs: list[tuple[ArtifactResult | None, ArtifactResult | None]] = list(matched)
    for r in rest:
        same_before = [b for b in left.values() if b.format == r.format]
        same_after = [a for a in rest if a.format == r.format]
        if len(same_before) == 1 and len(same_after) == 1:
            pairs.append((left.pop(same_before[0].name), r))
        else:
            pairs.append((None, r))
    pairs.extend((b, None) for b in left.values())
    return pairs


def deltas(before: ArtifactResult | None, after: ArtifactResult | None,
           metrics: tuple[str, ...] = tuple(METRICS)) -> dict[str, dict[str, Any]]:
    """metric -> before, after, change (absolute), relative (change / |before|)."""
    out: dict[str, dict[str, Any]] = {}
    for key in metrics:
        b = before.metric(key) if before and before.ok else None
        a = after.metric(key) if after and after.ok else None
        change = a - b if a is not None and b is not None else None
        rel = change / abs(b) if change is not None and b else None
        out[key] = {"before": b, "after": a, "change": change, "relative": rel}
    return out


def regressions(before: list[ArtifactResult], after: list[ArtifactResult], tolerance: float,
                source: str) -> list[Check]:
    """A Check per artifact x regression metric: fails when the change goes the bad way by more than `tolerance`."""
    checks: list[Check] = []
    for b, a in pair(before, after):
        if a is None:
            continue
        if b is None:
            continue  # new artifact: nothing to regress from
        if not a.ok:
            reason = a.failure.message if a.failure else "failed"
            checks.append(Check(a.name, a.format, "baseline", None, None, False, f"not measured: {reason}", source))
            continue
        for key, bad in REGRESSION_METRICS.items():
            d = deltas(b, a, (key,))[key]
            if d["relative"] is None:
                continue
            worse = d["relative"] > tolerance if bad == "up" else d["relative"] < -tolerance
            limit = d["before"] * (1 + tolerance if bad == "up" else 1 - tolerance)
            label = METRICS[key].label
            text = (f"{label} {format_value(key, d['before'])} -> {format_value(key, d['after'])} "
                    f"({d['relative']:+.1%}, tolerance {tolerance:.0%})")
            checks.append(Check(a.name, a.format, f"baseline:{key}", limit, d["after"], not worse,
                                ("regressed: " if worse else "") + text, source))
    return checks
