"""Two bench runs paired artifact by artifact: loading, deltas (for ``edgemed report``) and regressions (for
``edgemed bench --baseline``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from edgemed.bench.gate.budget import Check
from edgemed.bench.metrics import METRICS, format_value, regression_metrics
from edgemed.bench.results import ArtifactResult
from edgemed.errors import EdgemedError

Z95 = 1.959963984540054
NOISE_Z = 2.0  # a change within twice the standard error of the difference is noise


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
    if not isinstance(data, dict):
        raise EdgemedError(f"{label}{path} is not a bench run (a JSON object); give a bench.json written by "
                           "'edgemed bench'")
    check_schema(data, f"{label}{path}")
    if not isinstance(data.get("artifacts"), list):
        raise EdgemedError(f"{label}{path} has no 'artifacts' list; give a bench.json written by 'edgemed bench'")
    not_measured: list[str] = []
    for n, a in enumerate(data["artifacts"]):
        if not isinstance(a, dict):
            raise EdgemedError(f"{label}{path}: artifacts[{n}] is not an object; re-run 'edgemed bench'")
        for key in ("name", "format", "runtime"):
            if not isinstance(a.get(key), str) or not a.get(key):
                raise EdgemedError(f"{label}{path}: artifacts[{n}].{key} is {a.get(key)!r}, not a name; re-run "
                                   "'edgemed bench'")
        if a.get("failure") is not None and not isinstance(a["failure"], dict):
            raise EdgemedError(f"{label}{path}: artifacts[{n}].failure is {type(a['failure']).__name__}, not a record; "
                               "re-run 'edgemed bench'")
        if a.get("status", "ok") not in ("ok", "failed"):
            raise EdgemedError(f"{label}{path}: artifacts[{n}].status is {a.get('status')!r} (ok or failed); re-run "
                               "'edgemed bench'")
        not_measured += [f"{a['name']}: {where}" for where in clean_numbers(a, ArtifactResult)]
    try:
        results = [ArtifactResult.from_dict(a) for a in data["artifacts"]]
    except (TypeError, KeyError, ValueError, AttributeError) as exc:
        raise EdgemedError(f"{label}{path}: an artifact entry is malformed ({exc}); re-run 'edgemed bench'") from None
    if not_measured:
        data["not_measured"] = not_measured
    return data, results


def check_schema(data: dict[str, Any], where: Any) -> None:
    """A bench.json of a schema this edgemed reads (the bench's own SCHEMA or older); a newer one is refused by its
    number, before its shape is looked at (a newer schema may move things)."""
    from edgemed.bench.results import SCHEMA

    schema = data.get("schema", 1)
    if isinstance(schema, bool) or not isinstance(schema, int) or schema < 1:
        raise EdgemedError(f"{where}: 'schema' is {schema!r}, not a bench.json schema version; give a bench.json "
                           "written by 'edgemed bench'")
    if schema > SCHEMA:
        raise EdgemedError(f"{where}: bench.json schema {schema} is newer than this edgemed reads ({SCHEMA}); "
                           "upgrade edgemed, or report it with the version that wrote it")


_NUMBER_KEYS = frozenset({"mean", "median", "p50", "p90", "p95", "p99", "min", "max", "stdev", "std", "avg_ts",
                          "stddev_ts", "avg_ns", "stddev_ns", "kld_mean", "kld_median", "kld_p90", "kld_p99",
                          "kld_max", "top1_agreement", "ppl_ratio", "other_cores_mean", "count", "tokens",
                          "sequences", "n_prompt", "n_gen"})
_SKIP_KEYS = frozenset({"predictions", "earlier_attempts", "timing_runs", "runtime_info", "weights", "failure",
                        "phases_s"})


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def clean_numbers(entry: dict[str, Any], cls: type, where: str = "") -> list[str]:
    """Replace, in place, every value of a bench.json artifact entry that is not a finite number where a number
    goes (NaN, infinity, text, a wrong type) by None (a list of numbers: by what remains finite; a record that is no
    object: by an empty one), so it shows as "not measured" instead of a wrong figure or a crash. Where a number
    goes: a field typed as a number on the result records, and, inside their free-form summaries, the keys the
    metrics read (``_NUMBER_KEYS``, ``*_bytes``, ``*_ms``, ``*_s``) and any float. Returns where each one was."""
    import dataclasses
    import types
    import typing

    hints = typing.get_type_hints(cls) if dataclasses.is_dataclass(cls) else {}
    found: list[str] = []
    for key in list(entry):
        value, here = entry[key], f"{where}{key}"
        if key in _SKIP_KEYS:
            continue
        hint = hints.get(key)
        union = typing.get_origin(hint) in (typing.Union, types.UnionType)
        kinds = [k for k in (typing.get_args(hint) if union else (hint,)) if k is not type(None)] if hint else []
        record = next((k for k in kinds if isinstance(k, type) and dataclasses.is_dataclass(k)), None)
        free = any(k is dict or typing.get_origin(k) is dict for k in kinds)
        numeric = all(k in (int, float) for k in kinds) if kinds else (
            key in _NUMBER_KEYS or key.endswith(("_bytes", "_ms", "_s", "_gbps")))
        optional = union and type(None) in typing.get_args(hint)
        if value is None and (optional or not (record is not None or free)):
            continue  # not measured, as the result records say it
        if record is not None or free:
            if isinstance(value, dict):
                found += clean_numbers(value, record or dict, f"{here}.")
            else:
                entry[key] = None if optional else {}
                found.append(f"{here} ({type(value).__name__}, not a record)")
        elif not kinds and key.startswith("samples") and not isinstance(value, list | dict):
            entry[key] = []
            found.append(f"{here} ({value!r}, not a list of samples)")
        elif kinds and not numeric:
            continue  # a name, a list of records: not a measured number
        elif not kinds and key.endswith("_ci"):
            if not (isinstance(value, list) and len(value) == 2 and all(_number(v) for v in value)):
                entry[key] = None
                found.append(f"{here} ({value!r}, not an interval of two numbers)")
        elif isinstance(value, dict) and not numeric:
            found += clean_numbers(value, dict, f"{here}.")
        elif isinstance(value, list) and not numeric:
            if (key.endswith("_ci") or key.startswith("samples") or any(isinstance(v, float) for v in value)) \
                    and not all(_number(v) for v in value):
                entry[key] = None if key.endswith("_ci") else [v for v in value if _number(v)]
                found.append(f"{here} (a value that is not a finite number)")
        elif (numeric or isinstance(value, float)) and not _number(value):
            entry[key] = None
            found.append(f"{here} ({value!r})")
    return found


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


def standard_error(r: ArtifactResult, key: str, summary: bool = False) -> float | None:
    """A metric's standard error from its 95% interval (:attr:`Metric.interval`, the one the budgets are decided
    on): half its width over 1.96; with `summary`, the metric's own ``stderr`` (from the run's summary) where it
    has one. None where the run holds no spread for it."""
    metric = METRICS[key]
    try:
        if summary and metric.stderr is not None:
            return metric.stderr(r) if r.ok else None
        ci = metric.interval(r) if metric.interval is not None and r.ok else None
    except (TypeError, AttributeError, KeyError, IndexError, ValueError, ZeroDivisionError):
        return None
    return (ci[1] - ci[0]) / (2 * Z95) if ci is not None and all(math.isfinite(x) for x in ci) else None


def noise_band(before: ArtifactResult, after: ArtifactResult, key: str, tolerance: float,
               summary: bool = False) -> float | None:
    """How far a metric may move between two runs and still count as unchanged: the larger of `tolerance` times the
    earlier value and :data:`NOISE_Z` standard errors of the difference (:func:`standard_error` of both runs);
    None where either run did not measure it."""
    b = before.metric(key) if before.ok else None
    if b is None or (after.metric(key) if after.ok else None) is None:
        return None
    ses = [standard_error(x, key, summary) for x in (before, after)]
    return max(tolerance * abs(b), NOISE_Z * math.sqrt(sum(s * s for s in ses if s is not None)))


def regressions(before: list[ArtifactResult], after: list[ArtifactResult], tolerance: float,
                source: str) -> list[Check]:
    """A Check per artifact x regression metric (:func:`edgemed.bench.metrics.regression_metrics`), decided on the
    runs' intervals: ``fail`` (regressed) when the change goes the bad way beyond the tolerance and beyond the noise
    band (:func:`noise_band`), ``inconclusive`` when it is beyond the tolerance but within the noise (counted as
    ``--inconclusive`` says: only timing budgets get more runs), ``pass`` when it stays within the tolerance."""
    checks: list[Check] = []
    for b, a in pair(before, after):
        if a is None or b is None:
            continue  # a new artifact has nothing to regress from
        if not a.ok:
            reason = a.failure.message if a.failure else "failed"
            checks.append(Check(a.name, a.format, "baseline", None, None, False, f"not measured: {reason}", source))
            continue
        for key in regression_metrics():
            d = deltas(b, a, (key,))[key]
            if d["relative"] is not None:
                checks.append(_regression(b, a, key, d, tolerance, source))
    return checks


def _regression(b: ArtifactResult, a: ArtifactResult, key: str, d: dict[str, Any], tolerance: float,
                source: str) -> Check:
    metric = METRICS[key]
    up_is_bad = metric.better == "min"
    worse_by = d["change"] if up_is_bad else -d["change"]
    band = noise_band(b, a, key, tolerance)
    verdict = "pass" if worse_by <= tolerance * abs(d["before"]) else "fail" if worse_by > band else "inconclusive"
    busy = metric.timing and (a.busy or b.busy)
    text = (f"{metric.label} {format_value(key, d['before'])} -> {format_value(key, d['after'])} "
            f"({d['relative']:+.1%}, tolerance {tolerance:.0%}, noise band ±{format_value(key, band)})")
    if verdict == "fail":
        text = "regressed: " + text
    elif verdict == "inconclusive":
        text += ": beyond the tolerance, within the noise of the two runs' 95% intervals"
    if busy:
        text += "; measured on a busy machine: not comparable with a quiet run"
    try:
        ci = metric.interval(a) if metric.interval is not None else None
    except (TypeError, AttributeError, KeyError, IndexError, ValueError, ZeroDivisionError):
        ci = None
    limit = d["before"] * (1 + tolerance if up_is_bad else 1 - tolerance)
    return Check(a.name, a.format, f"baseline:{key}", limit, d["after"], verdict == "pass", text, source,
                 verdict=verdict, low=ci[0] if ci else None, high=ci[1] if ci else None,
                 interval_rule=f"a change beyond the tolerance and beyond {NOISE_Z:g} standard errors of the "
                               f"difference regresses; each run's from its {metric.interval_rule}",
                 busy=busy)
