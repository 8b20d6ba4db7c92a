"""CI budgets from a TOML file: a ``[default]`` table and ``[format.NAME]`` tables that override it.

Example::

    [default]
    max_p95_ms = 800
    max_peak_rss_mb = 2000

    [format.gguf-q4_k_m]
    max_accuracy_drop = 0.05

Every error names the file, the line and the fix (exit 2); a broken budget is a failed :class:`Check` (exit 1).
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgemed.bench.gate.check import INCONCLUSIVE_POLICIES, VERDICTS, Check, verdict
from edgemed.bench.results import METRICS, ArtifactResult, format_value
from edgemed.errors import EdgemedError


@dataclass(frozen=True)
class BudgetKey:
    metric: str  # a key of results.METRICS
    limit: str  # "max": measured must be <= limit; "min": >=
    what: str
    low: float = 0.0
    high: float | None = None


def budget_keys() -> dict[str, BudgetKey]:
    """Every metric that declares a budget key (results.METRICS)."""
    return {m.budget: BudgetKey(m.key, m.budget.partition("_")[0], m.what, *m.bounds)
            for m in METRICS.values() if m.budget}


def deprecated_keys() -> dict[str, str]:
    """Earlier spellings of budget keys, still read (with a warning) for one release: old -> current."""
    return {old: m.budget for m in METRICS.values() if m.budget for old in m.deprecated_budgets}


@dataclass
class Budgets:
    path: str
    default: dict[str, float] = field(default_factory=dict)
    formats: dict[str, dict[str, float]] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)  # "table.key" -> line
    flags: dict[str, tuple[float, str]] = field(default_factory=dict)  # key -> (limit, flag): every format, last

    def for_format(self, fmt: str) -> dict[str, float]:
        return {**self.default, **self.formats.get(fmt, {}), **{k: v for k, (v, _) in self.flags.items()}}

    def line_of(self, fmt: str, key: str) -> int | None:
        return self.lines.get(f"format.{fmt}.{key}") if key in self.formats.get(fmt, {}) else \
            self.lines.get(f"default.{key}")

    def source_of(self, fmt: str, key: str) -> str:
        """Where a format's limit was set: 'budgets.toml:4' or the command-line flag."""
        if key in self.flags:
            return self.flags[key][1]
        line = self.line_of(fmt, key)
        return f"{self.path}:{line}" if line else self.path

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "default": self.default, "formats": self.formats,
                "flags": {k: {"limit": v, "flag": f} for k, (v, f) in self.flags.items()}}


def tomllib_module():
    """tomllib (Python 3.11+), else the tomli backport."""
    try:
        import tomllib
    except ImportError:  # Python 3.10: tomli is a base dependency there (pyproject marker)
        try:
            import tomli as tomllib
        except ImportError:
            raise EdgemedError("reading TOML (--budget, --profile) on Python 3.10 needs tomli, a dependency of "
                               "edgemed there: pip install tomli (or reinstall edgemed)") from None
    return tomllib


def _load_toml(text: str, path: Path) -> dict[str, Any]:
    tomllib = tomllib_module()
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise EdgemedError(f"{path}: not valid TOML: {exc}; fix that line") from None
    except RecursionError:
        raise EdgemedError(f"{path}: TOML nested too deeply to hold budgets; give flat [default] and "
                           "[format.NAME] tables") from None


def _key_lines(text: str) -> dict[str, int]:
    """'table.key' -> 1-based line for each `key = value` line (tables from their [headers])."""
    lines: dict[str, int] = {}
    table = ""
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        header = re.fullmatch(r"\[\s*([^\[\]]+?)\s*\]", line)
        if header:
            table = ".".join(part.strip().strip("\"'") for part in header.group(1).split("."))
            lines.setdefault(table, number)
            continue
        m = re.match(r"([A-Za-z0-9_\-\"'.]+)\s*=", line)
        if m:
            key = ".".join(p.strip().strip("\"'") for p in m.group(1).split("."))
            for spelled in dict.fromkeys((key, deprecated_keys().get(key, key))):  # also under the current spelling
                lines.setdefault(f"{table}.{spelled}" if table else spelled, number)
    return lines


def _hint(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def load_budgets(path: Path) -> Budgets:
    """Parse and validate a budgets file; raises EdgemedError naming the file, line and key."""
    from edgemed.fsutil import require_regular_file
    from edgemed.registry import FORMATS

    path = require_regular_file(Path(path), "budget file")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EdgemedError(f"budget file {path} does not exist; give a TOML file like examples/budgets.toml") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EdgemedError(f"budget file {path} cannot be read ({exc}); give a UTF-8 TOML file") from None
    data = _load_toml(text, path)
    if not data:
        raise EdgemedError(f"budget file {path} holds no budgets; add a [default] table or [format.NAME] tables "
                           "(see examples/budgets.toml), or drop --budget")
    lines = _key_lines(text)
    budgets = Budgets(path=str(path), lines=lines)

    def where(dotted: str) -> str:
        line = lines.get(dotted)
        return f"{path}:{line}" if line else str(path)

    for top, value in data.items():
        if top == "default":
            if not isinstance(value, dict):
                raise EdgemedError(f"{where(top)}: 'default' must be a table: write it as [default]")
            budgets.default = _table(value, "default", where)
        elif top == "format":
            if not isinstance(value, dict):
                raise EdgemedError(f"{where(top)}: 'format' must hold tables: write [format.NAME]")
            for fmt, table in value.items():
                dotted = f"format.{fmt}"
                if fmt not in FORMATS:
                    raise EdgemedError(
                        f"{where(dotted)}: unknown format '{fmt}' in [format.{fmt}]{_hint(fmt, list(FORMATS))}; "
                        f"known formats: {', '.join(FORMATS)}"
                    )
                if not isinstance(table, dict):
                    raise EdgemedError(f"{where(dotted)}: format.{fmt} must be a table: write [format.{fmt}]")
                budgets.formats[fmt] = _table(table, dotted, where)
        else:
            raise EdgemedError(
                f"{where(top)}: unknown table or key '{top}'{_hint(top, ['default', 'format'])}; "
                "a budget file has a [default] table and [format.NAME] tables"
            )
    return budgets


def _table(table: dict[str, Any], name: str, where) -> dict[str, float]:
    out: dict[str, float] = {}
    for written, value in table.items():
        dotted = f"{name}.{written}"
        key = deprecated_keys().get(written, written)
        if key != written:
            import sys

            print(f"warning: {where(dotted)}: budget key '{written}' is deprecated and will be removed in the next "
                  f"release; write {key} (the same limit, spelled like the command-line flag)", file=sys.stderr)
            if key in table:
                raise EdgemedError(f"{where(dotted)}: [{name}] sets both '{written}' and '{key}'; keep only {key}")
        spec = budget_keys().get(key)
        if spec is None:
            raise EdgemedError(
                f"{where(dotted)}: unknown budget key '{written}' in [{name}]{_hint(written, list(budget_keys()))}; "
                f"known keys: {', '.join(budget_keys())}"
            )
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise EdgemedError(
                f"{where(dotted)}: budget '{written}' in [{name}] must be a number, got {type(value).__name__} "
                f"{value!r}; write e.g. {key} = {0.5 if spec.high == 1.0 else 100}"
            )
        if not math.isfinite(value) or value < spec.low or (spec.high is not None and value > spec.high):
            bounds = f"between {spec.low:g} and {spec.high:g}" if spec.high is not None else f">= {spec.low:g}"
            raise EdgemedError(f"{where(dotted)}: budget '{written}' in [{name}] is {value}, it must be {bounds}")
        out[key] = float(value)
    return out


def check_budgets(budgets: Budgets, results: list[ArtifactResult], reference: ArtifactResult | None,
                  runs: dict[str, list[ArtifactResult]] | None = None) -> list[Check]:
    """One Check per artifact x budget that applies to its format, decided on the metric's interval (see
    :class:`edgemed.bench.results.Metric`), or for a timing on the runs of it `runs` holds (name -> every run,
    the bench's own first: :mod:`edgemed.bench.gate.runs`); an inconclusive check is left for the caller to rerun
    or settle."""
    checks: list[Check] = []
    for r in results:
        for key, limit in budgets.for_format(r.format).items():
            checks.append(check_one(r, key, limit, budgets.source_of(r.format, key), reference,
                                    (runs or {}).get(r.name)))
    return checks


def check_one(r: ArtifactResult, key: str, limit: float, source: str, reference: ArtifactResult | None,
              runs: list[ArtifactResult] | None = None) -> Check:
    """One budget on one artifact: the metric's point value, its interval and the verdict they give; a timing
    measured in two runs or more is decided on their mean and its interval over the runs."""
    spec = budget_keys()[key]
    metric = METRICS[spec.metric]
    if not r.ok:
        reason = r.failure.message if r.failure else "failed"
        return Check(r.name, r.format, key, limit, None, False, f"not measured: {reason}", source)
    if spec.metric == "accuracy_drop" and reference is not None and reference.name == r.name:
        return Check(r.name, r.format, key, limit, 0.0, True, "is the reference", source, low=0.0, high=0.0,
                     interval_rule="the reference itself")
    value = r.metric(spec.metric)
    if value is None:
        why = "not measured"
        if spec.metric == "accuracy_drop":
            why = "no reference artifact measured" if reference is None else f"not compared with {reference.name}"
        if spec.metric == "answer_p95_ms" and r.latency.answer_ms.get("count"):
            why = (f"fewer than 20 samples ({r.latency.answer_ms['count']}), so no p95; raise "
                   "--repetitions or --latency-prompts")
        return Check(r.name, r.format, key, limit, None, False, f"{spec.what}: {why}", source)
    from edgemed.bench.gate.runs import pooled

    pool = pooled(spec.metric, runs) if metric.timing and runs and len(runs) > 1 else None
    rule, busy_runs = metric.interval_rule, [r] if r.busy else []
    if pool is not None:
        value, low, high, rule, busy_runs = pool.value, pool.low, pool.high, pool.rule, pool.busy
    elif metric.interval is None:
        low = high = value
    else:
        bounds = metric.interval(r)
        low, high = bounds if bounds is not None else (-math.inf, math.inf)
    decided = verdict(spec.limit, limit, low, high)
    busy = metric.timing and bool(busy_runs) and decided != "pass"  # load only slows: a pass measured busy holds
    waits = [explained_by_load(x) for x in busy_runs]
    waited = None if not busy or None in waits else max(waits)
    if busy and not (decided == "fail" and waited is not None and
                     verdict(spec.limit, limit, *unloaded(spec.limit, low, high, waited)) == "fail"):
        decided = "inconclusive"
    relation = {"pass": "<=" if spec.limit == "max" else ">=", "fail": ">" if spec.limit == "max" else "<",
                "inconclusive": "straddles"}[decided]
    shown = f"{_show(spec.metric, value)} {_interval_text(spec.metric, low, high)}"
    why = []
    if bounds_unknown(low, high):
        why.append("no spread measured (one repetition?); raise --repetitions")
    load = busy_runs[0].machine_load.get("reason") if busy_runs else None
    if busy and decided == "fail":
        why.append(f"beyond the {waited:.0%} slowdown the load explains ({load})")
    elif busy:
        why.append(f"measured on a busy machine ({load})")
    if pool is not None:
        shown += f" (mean of {pool.runs} runs)"
    text = f"{spec.what} {shown} vs {key} {limit:g}: {'; '.join(why)}" if why else \
        f"{spec.what} {shown} {relation} {key} {limit:g}"
    return Check(r.name, r.format, key, limit, value, decided == "pass", text, source, verdict=decided,
                 low=None if math.isinf(low) else low, high=None if math.isinf(high) else high,
                 interval_rule=rule, busy=busy, rerunnable=metric.timing)


def explained_by_load(r: ArtifactResult) -> float | None:
    """The largest share of a timing that waiting for a CPU can explain: the worst ~1 s window's run-queue wait
    share times the threads (a thread that waits can stall the others at their next sync); None where no wait was
    measured (the capacity rule flagged it) or steal time flagged it."""
    from edgemed.process.machine_load import BUSY_STEAL

    load = r.machine_load
    share, needed = load.get("wait_share_max"), load.get("needed_cores") or 1
    if share is None or (load.get("steal_fraction") or 0) > BUSY_STEAL:
        return None
    return min(0.95, share * needed)


def unloaded(limit_kind: str, low: float, high: float, waited: float) -> tuple[float, float]:
    """The interval widened toward what an unloaded machine could have measured: a throughput (``min_`` budget) up
    to high / (1 - waited), a time (``max_``) down to low x (1 - waited)."""
    return (low, high / (1 - waited)) if limit_kind == "min" else (low * (1 - waited), high)


def bounds_unknown(low: float, high: float) -> bool:
    return math.isinf(low) or math.isinf(high)


def _interval_text(metric: str, low: float, high: float) -> str:
    if bounds_unknown(low, high):
        return "[interval unknown]"
    if low == high:
        return "(single value)" if METRICS[metric].interval is None else f"[{_show(metric, low)}]"
    return f"[{_show(metric, low)}, {_show(metric, high)}]"


def _show(metric: str, value: float) -> str:
    return format_value(metric, value)


__all__ = ["INCONCLUSIVE_POLICIES", "VERDICTS", "Budgets", "Check", "budget_keys", "check_budgets", "check_one",
           "deprecated_keys", "load_budgets", "tomllib_module", "verdict"]
