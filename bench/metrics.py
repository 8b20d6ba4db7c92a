"""Every fact about a bench metric, in one place: :class:`Metric` entries in :data:`METRICS` (and how a cell shows
each, which :func:`edgemed.bench.render.cells.cell`, the one rule that prints a metric's value, reads).

In the spirit of llama-bench's one field list that feeds every printer: a Metric says how to read its number from
an :class:`~edgemed.bench.results.ArtifactResult`, which direction is better, how sure the bench is of it (its 95%
interval), whether it is a timing, and where it is shown and compared: a column of the bench table (``column``), of
``edgemed report`` (``report_column``), a figure ``bench --baseline`` compares (``regression``), a budget key
(``budget``). The lists the printers and comparisons walk (:data:`TABLE_COLUMNS`, :func:`report_columns`,
:func:`regression_metrics`) are read from these entries.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from edgemed.bench.measure.stats import mean_interval, quantile_interval

if TYPE_CHECKING:
    from edgemed.bench.results import ArtifactResult


class StandIn(NamedTuple):
    """The metric a cell shows where its own is not measured, e.g. the maximum for a p95 of too few samples."""

    key: str
    prefix: str  # written before the value: "max 12.3"
    why: str  # report.json's ``stand_in``


@dataclass(frozen=True)
class Metric:
    """One comparable number of a result: how to read it, which direction is better, how to show it, the budget key
    that limits it (``max_...``/``min_...`` in the budgets TOML), if any, how sure the bench is of it, and where it
    is shown and compared.

    Adding a metric is one entry here (``get=lambda r: ...`` that reads the number, with ``budget=`` to make it a
    budget key, ``column=`` to make it a column of the bench table) plus what the worker fills in: a number without a
    field of its own goes in ``result.extra["NAME"]`` (``get=lambda r: r.extra.get("NAME")``), one with a typed
    field is a field of a record of :mod:`edgemed.bench.results`.

    A budget check is decided on ``interval`` (95%, ``(low, high)`` or None when the run holds no spread for it,
    e.g. one repetition), described by ``interval_rule``: the whole interval on the right side of the limit passes,
    on the wrong side fails, across it is inconclusive. A metric without ``interval`` is a single measurement: its
    point value decides, and ``interval_rule`` says so. The same interval sets the noise band of a change between
    two runs in ``bench --baseline``; ``edgemed report`` reads ``stderr`` where one is given (the standard error
    from the run's summary: stdev over the square root of the count), else the interval's. ``timing``: the number
    moves between runs of the same artifact and depends on the machine's load, so a budget it breaks on a busy
    machine is inconclusive (other processes only slow it: a pass measured busy holds), a rerun can settle it
    (accuracy and KLD are the same on every run: a rerun cannot), and its cells carry the BUSY mark.

    Where it is shown: ``column``, ``report_column`` and ``regression`` are positions (1, 2, ...) in the bench table
    (terminal, markdown, HTML), in ``edgemed report``'s per-run columns (each compared with the run before on the
    same machine) and among the figures ``bench --baseline`` compares; None leaves it out (every metric is in the
    CSV, bench.json's rows and, with ``budget``, the budgets). How its cell shows its spread: ``cell_interval``
    (``"range"``: ``[low-high]``; ``"half"``: ``±`` half the interval), ``sd`` (the key of the metric holding its
    standard deviation, shown ``±sd``), ``stand_in`` (what to show where it is not measured), ``busy_mark`` (the
    load metric itself, which carries the BUSY mark without being a timing).
    """

    key: str
    label: str
    get: Callable[[ArtifactResult], float | None]
    better: Literal["min", "max"] | None
    fmt: str  # format spec for the value
    budget: str | None = None  # the budgets TOML key: max_* (measured <= limit) or min_* (measured >= limit)
    what: str = ""  # how a budget check names it
    bounds: tuple[float, float | None] = (0.0, None)  # allowed budget values
    interval: Callable[[ArtifactResult], tuple[float, float] | None] | None = None
    interval_rule: str = "single measurement: the point value decides"
    stderr: Callable[[ArtifactResult], float | None] | None = None  # edgemed report's; None: from `interval`
    timing: bool = False
    deprecated_budgets: tuple[str, ...] = ()  # earlier spellings of `budget`, accepted with a warning
    column: int | None = None  # position in the bench table
    report_column: int | None = None  # position among edgemed report's per-run columns
    regression: int | None = None  # position among the figures bench --baseline compares
    cell_interval: Literal["range", "half"] | None = None
    sd: str | None = None
    stand_in: StandIn | None = None
    busy_mark: bool = False


def _mb(v: int | None) -> float | None:
    return v / 1e6 if v is not None else None


def _fid(key: str) -> Callable[[ArtifactResult], float | None]:
    return lambda r: (r.fidelity or {}).get(key)


def _per_token_ms(r: ArtifactResult) -> float | None:
    ts = r.throughput.tg.get("avg_ts")
    return 1e3 / ts if ts else None


def _ts_interval(test: str) -> Callable[[ArtifactResult], tuple[float, float] | None]:
    return lambda r: mean_interval(getattr(r.throughput, test).get("samples_ts") or [])


def _summary_stderr(read: Callable[[ArtifactResult], dict[str, Any]], sd: str, n: Callable[[dict], Any]):
    """The standard error of a summarised figure: its stdev (`sd`) over the square root of its count (`n`)."""
    def stderr(r: ArtifactResult) -> float | None:
        summary = read(r)
        spread, count = summary.get(sd), n(summary)
        return spread / math.sqrt(count) if spread is not None and count else None
    return stderr


_ANSWER_SE = _summary_stderr(lambda r: r.latency.answer_ms, "stdev", lambda s: s.get("count"))
_TTFT_SE = _summary_stderr(lambda r: r.latency.ttft_ms, "stdev", lambda s: s.get("count"))


def _ts_stderr(test: str) -> Callable[[ArtifactResult], float | None]:
    return _summary_stderr(lambda r: getattr(r.throughput, test), "stddev_ts", lambda s: len(s.get("samples_ts") or []))


def _latency_interval(series: str, q: float) -> Callable[[ArtifactResult], tuple[float, float] | None]:
    return lambda r: quantile_interval(r.latency.samples.get(series) or [], q)


def _pair(value: Any) -> tuple[float, float] | None:
    return (float(value[0]), float(value[1])) if isinstance(value, list | tuple) and len(value) == 2 \
        and None not in value else None


def _accuracy_drop(r: ArtifactResult) -> float | None:
    return -r.accuracy.accuracy_diff if r.accuracy.accuracy_diff is not None else None


def _accuracy_drop_interval(r: ArtifactResult) -> tuple[float, float] | None:
    """Paired on the same questions, conditional on the discordant count m = b + c (b: only the reference right, c:
    only this one): the Wilson interval of b/m mapped to (b - c)/n = (m/n)(2 b/m - 1), the interval that matches
    the exact McNemar test the recommendation uses."""
    from edgemed.evaluator.metrics import wilson_interval

    vs = r.accuracy.metrics.get("vs_reference") or {}
    b, c, n = vs.get("b_reference_only_correct"), vs.get("c_this_only_correct"), vs.get("n")
    if b is None or c is None or not n:
        return None
    m = b + c
    if m == 0:
        return 0.0, 0.0
    lo, hi = wilson_interval(b, m)
    return m / n * (2 * lo - 1), m / n * (2 * hi - 1)


_T_RULE = "95% t interval of the mean over the repetitions (samples_ts)"
_Q_RULE = "95% distribution-free order-statistic interval of the {what} over the latency samples"
_P95_NOTE = " (below 72 samples its upper end is the sample maximum, which covers less)"


METRICS: dict[str, Metric] = {m.key: m for m in [
    Metric("size_mb", "size MB", lambda r: _mb(r.size_bytes), "min", ".1f", column=1),
    Metric("load_s", "load s", lambda r: r.load_s, "min", ".2f"),
    Metric("accuracy", "accuracy", lambda r: r.accuracy.accuracy, "max", ".3f", "min_accuracy", "accuracy",
           (0.0, 1.0), interval=lambda r: _pair([r.accuracy.ci_low, r.accuracy.ci_high]),
           interval_rule="95% Wilson score interval over the scored questions", column=2, report_column=1,
           regression=7, cell_interval="range"),
    Metric("accuracy_drop", "acc drop", _accuracy_drop, "min", ".3f", "max_accuracy_drop",
           "accuracy drop vs the reference", (0.0, 1.0), interval=_accuracy_drop_interval,
           interval_rule="95% paired interval on the same questions: Wilson interval of the discordant split "
                         "b/(b+c), times (b+c)/n"),
    Metric("accuracy_low", "acc low", lambda r: r.accuracy.ci_low, None, ".3f"),
    Metric("accuracy_high", "acc high", lambda r: r.accuracy.ci_high, None, ".3f"),
    Metric("agreement", "agree", lambda r: r.accuracy.agreement, "max", ".3f", column=3),
    Metric("answer_p50_ms", "p50 ms", lambda r: r.latency.answer_ms.get("median"), "min", ".1f", timing=True,
           stderr=_ANSWER_SE),
    Metric("answer_p95_ms", "p95 ms", lambda r: r.latency.answer_ms.get("p95"), "min", ".1f",
           "max_p95_ms", "p95 answer latency (ms)", interval=_latency_interval("answer_ms", 0.95),
           interval_rule=_Q_RULE.format(what="95th percentile") + _P95_NOTE, timing=True, stderr=_ANSWER_SE,
           deprecated_budgets=("max_p95_latency_ms",), column=6, report_column=3, regression=1,
           stand_in=StandIn("answer_max_ms", "max", "max (fewer than 20 samples)")),
    Metric("answer_max_ms", "max ms", lambda r: r.latency.answer_ms.get("max"), "min", ".1f", timing=True),
    Metric("ttft_ms", "TTFT ms", lambda r: r.latency.ttft_ms.get("median"), "min", ".1f",
           "max_ttft_ms", "median time to first token (ms)", interval=_latency_interval("ttft_ms", 0.5),
           interval_rule=_Q_RULE.format(what="median"), timing=True, column=7, report_column=4, regression=2,
           stderr=_TTFT_SE),
    Metric("tpot_ms", "TPOT ms", _per_token_ms, "min", ".2f", timing=True, regression=3),
    Metric("generate_p95_ms", "gen p95 ms", lambda r: r.latency.generate_ms.get("p95"), "min", ".1f", timing=True),
    Metric("prefill_tps", "pp t/s", lambda r: r.throughput.pp.get("avg_ts"), "max", ".0f",
           "min_prefill_tokens_per_s", "pp tokens/s", interval=_ts_interval("pp"), interval_rule=_T_RULE,
           timing=True, column=8, report_column=5, regression=5, sd="prefill_tps_sd", stderr=_ts_stderr("pp")),
    Metric("prefill_tps_sd", "pp sd", lambda r: r.throughput.pp.get("stddev_ts"), None, ".1f"),
    Metric("decode_tps", "tg t/s", lambda r: r.throughput.tg.get("avg_ts"), "max", ".1f",
           "min_decode_tokens_per_s", "tg tokens/s", interval=_ts_interval("tg"), interval_rule=_T_RULE,
           timing=True, column=9, report_column=6, regression=4, sd="decode_tps_sd", stderr=_ts_stderr("tg")),
    Metric("decode_tps_sd", "tg sd", lambda r: r.throughput.tg.get("stddev_ts"), None, ".2f"),
    Metric("kld", "KLD", _fid("kld_mean"), "min", ".5f", "max_kld",
           "mean KL divergence from the reference (nats/token)", interval=lambda r: _pair(_fid("kld_ci")(r)),
           interval_rule="95% interval of the mean KLD, cluster-robust standard error over sequences", column=4,
           report_column=2, cell_interval="half"),
    Metric("kld_low", "KLD low", lambda r: ((r.fidelity or {}).get("kld_ci") or [None])[0], None, ".5f"),
    Metric("kld_high", "KLD high", lambda r: ((r.fidelity or {}).get("kld_ci") or [None, None])[1], None, ".5f"),
    Metric("kld_p99", "KLD p99", _fid("kld_p99"), "min", ".3f"),
    Metric("top1_agreement", "same top", _fid("top1_agreement"), "max", ".3f", "min_top1_agreement",
           "top-1 token agreement with the reference", (0.0, 1.0),
           interval=lambda r: _pair(_fid("top1_agreement_ci")(r)),
           interval_rule="95% Wilson score interval over the scored tokens", column=5),
    Metric("ppl_ratio", "PPL ratio", _fid("ppl_ratio"), None, ".4f"),
    Metric("other_cpu_cores", "others", lambda r: r.machine_load.get("other_cores_mean"), None, ".2f", column=12,
           busy_mark=True),
    Metric("peak_rss_mb", "RSS MB", lambda r: _mb(r.memory.peak_rss_bytes), "min", ".0f", "max_peak_rss_mb",
           "peak resident memory (MB)",
           interval_rule="single measurement (the serving peak, VmHWM): the point value decides", column=10,
           report_column=7, regression=6),
    Metric("peak_rss_process_mb", "run RSS MB", lambda r: _mb(r.memory.peak_rss_process_bytes), None, ".0f"),
    Metric("peak_gpu_mb", "peak GPU MB", lambda r: _mb(r.memory.peak_gpu_bytes), "min", ".0f"),
    Metric("bandwidth_gbps", "eff. GB/s", lambda r: r.bandwidth.effective_gbps, None, ".2f", timing=True),
    Metric("bandwidth_fraction", "BW use", lambda r: r.bandwidth.fraction_of_copy, "max", ".0%", timing=True,
           column=11),
    Metric("ece", "ECE", lambda r: ((r.accuracy.metrics or {}).get("calibration") or {}).get("ece"), "min", ".3f"),
    Metric("aurc", "AURC", lambda r: r.extra.get("aurc"), "min", ".4f"),
    Metric("abstain_threshold", "abstain below p", lambda r: r.extra.get("abstain_threshold"), None, ".3f"),
    Metric("answered_share", "answered", lambda r: r.extra.get("answered_share"), "max", ".0%"),
    Metric("answered_error", "error answered", lambda r: r.extra.get("answered_error"), "min", ".3f",
           interval=lambda r: _pair([r.extra.get("answered_error_low"), r.extra.get("answered_error_high")]),
           interval_rule="95% Wilson score interval over the answered questions"),
]}


def _placed(position: str) -> list[str]:
    """The keys of the metrics with a `position` (``column``, ``report_column``, ``regression``), in its order."""
    placed = [m for m in METRICS.values() if getattr(m, position) is not None]
    return [m.key for m in sorted(placed, key=lambda m: getattr(m, position))]


# The columns of the terminal table, the markdown summary and the HTML page (the CSV and JSON have all metrics), as
# the entries' `column` places them; add_metric keeps it current.
TABLE_COLUMNS: list[str] = _placed("column")


def report_columns() -> list[str]:
    """edgemed report's per-run columns, each compared run to run (the entries' ``report_column``)."""
    return _placed("report_column")


def regression_metrics() -> list[str]:
    """The figures ``bench --baseline`` compares with the baseline run (the entries' ``regression``)."""
    return _placed("regression")


def add_metric(metric: Metric, column: bool = False) -> Metric:
    """Register one more metric: in every row, the CSV, bench.json's rows and the budgets (when it has a ``budget``
    key); with `column` (or its own ``column`` position), also a column of the terminal, markdown and HTML tables
    (after the others)."""
    if column and metric.column is None:
        metric = replace(metric, column=max((m.column or 0 for m in METRICS.values()), default=0) + 1)
    METRICS[metric.key] = metric
    TABLE_COLUMNS[:] = _placed("column")
    return metric


def format_value(key: str, value: float | None) -> str:
    if value is None:
        return "-"
    return format(value, METRICS[key].fmt) if key in METRICS else str(value)
