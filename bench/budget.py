"""CI budgets from a TOML file: a ``[default]`` table and ``[format.NAME]`` tables that override it.

Example::

    [default]
    max_p95_latency_ms = 800
    max_peak_rss_mb = 2000

    [format.gguf-q4_k_m]
    max_accuracy_drop = 0.05

Every error names the file, the line and the fix (exit 2); a broken budget is a failed :class:`Check` (exit 1).
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgemed.bench.results import METRICS, ArtifactResult, format_value
from edgemed.errors import EdgemedError


@dataclass(frozen=True)
class BudgetKey:
    metric: str  # a key of results.METRICS, or "accuracy_drop"
    limit: str  # "max": measured must be <= limit; "min": >=
    what: str
    low: float = 0.0
    high: float | None = None


ACCURACY_DROP = BudgetKey("accuracy_drop", "max", "accuracy drop vs the reference", 0.0, 1.0)


def budget_keys() -> dict[str, BudgetKey]:
    """Every metric that declares a budget key (results.METRICS), plus the one derived from the reference."""
    keys = {m.budget: BudgetKey(m.key, m.budget.partition("_")[0], m.what, *m.bounds)
            for m in METRICS.values() if m.budget}
    return {**keys, "max_accuracy_drop": ACCURACY_DROP}


@dataclass
class Budgets:
    path: str
    default: dict[str, float] = field(default_factory=dict)
    formats: dict[str, dict[str, float]] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)  # "table.key" -> line

    def for_format(self, fmt: str) -> dict[str, float]:
        return {**self.default, **self.formats.get(fmt, {})}

    def line_of(self, fmt: str, key: str) -> int | None:
        return self.lines.get(f"format.{fmt}.{key}") if key in self.formats.get(fmt, {}) else \
            self.lines.get(f"default.{key}")

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "default": self.default, "formats": self.formats}


@dataclass
class Check:
    """One budget (or baseline comparison) applied to one artifact."""

    artifact: str
    format: str
    key: str
    limit: float | None
    measured: float | None
    passed: bool
    message: str
    source: str = ""  # "budgets.toml:4" or "baseline prev.json"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
            lines.setdefault(f"{table}.{key}" if table else key, number)
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
    for key, value in table.items():
        dotted = f"{name}.{key}"
        spec = budget_keys().get(key)
        if spec is None:
            raise EdgemedError(
                f"{where(dotted)}: unknown budget key '{key}' in [{name}]{_hint(key, list(budget_keys()))}; "
                f"known keys: {', '.join(budget_keys())}"
            )
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise EdgemedError(
                f"{where(dotted)}: budget '{key}' in [{name}] must be a number, got {type(value).__name__} "
                f"{value!r}; write e.g. {key} = {0.5 if spec.high == 1.0 else 100}"
            )
        if not math.isfinite(value) or value < spec.low or (spec.high is not None and value > spec.high):
            bounds = f"between {spec.low:g} and {spec.high:g}" if spec.high is not None else f">= {spec.low:g}"
            raise EdgemedError(f"{where(dotted)}: budget '{key}' in [{name}] is {value}, it must be {bounds}")
        out[key] = float(value)
    return out


def measured_value(result: ArtifactResult, key: str, reference: ArtifactResult | None) -> float | None:
    spec = budget_keys()[key]
    if spec.metric == "accuracy_drop":
        if reference is None or reference.accuracy.accuracy is None or result.accuracy.accuracy is None:
            return None
        return reference.accuracy.accuracy - result.accuracy.accuracy
    return result.metric(spec.metric)


def check_budgets(budgets: Budgets, results: list[ArtifactResult], reference: ArtifactResult | None) -> list[Check]:
    """One Check per artifact x budget that applies to its format."""
    checks: list[Check] = []
    for r in results:
        for key, limit in budgets.for_format(r.format).items():
            spec = budget_keys()[key]
            line = budgets.line_of(r.format, key)
            source = f"{budgets.path}:{line}" if line else budgets.path
            if not r.ok:
                reason = r.failure.message if r.failure else "failed"
                checks.append(Check(r.name, r.format, key, limit, None, False, f"not measured: {reason}", source))
                continue
            if spec.metric == "accuracy_drop" and reference is not None and reference.name == r.name:
                checks.append(Check(r.name, r.format, key, limit, 0.0, True, "is the reference", source))
                continue
            value = measured_value(r, key, reference)
            if value is None:
                why = "no reference artifact measured" if spec.metric == "accuracy_drop" else "not measured"
                if spec.metric == "answer_p95_ms" and r.latency.answer_ms.get("count"):
                    why = (f"fewer than 20 samples ({r.latency.answer_ms['count']}), so no p95; raise "
                           "--repetitions or --latency-prompts")
                checks.append(Check(r.name, r.format, key, limit, None, False, f"{spec.what}: {why}", source))
                continue
            passed = value <= limit if spec.limit == "max" else value >= limit
            shown = _show(spec.metric, value)
            relation = ("<=" if passed else ">") if spec.limit == "max" else (">=" if passed else "<")
            checks.append(Check(r.name, r.format, key, limit, value, passed,
                                f"{spec.what} {shown} {relation} {key} {limit:g}", source))
    return checks


def _show(metric: str, value: float) -> str:
    if metric == "accuracy_drop":
        return f"{value:.3f}"
    return format_value(metric, value)
