"""Result records of one bench run, in the optimum-benchmark style: small dataclasses that render to rows and JSON.

One :class:`ArtifactResult` travels the whole way: the worker (:mod:`edgemed.bench.worker`) fills in what it measured
inside the artifact's process and writes :meth:`ArtifactResult.to_dict`; the parent (:mod:`edgemed.bench.run`) reads
it back with :meth:`ArtifactResult.from_dict` and only adds what it measured from outside (wall time, sampled memory,
machine load, exit status, size and weights on disk). Every key is bench.json's own: nothing is renamed on the way.

Adding a metric is a typed field that the worker fills (on one of these classes) plus one :data:`METRICS` entry
(:func:`add_metric` for one that is registered later, e.g. by a plugin or a test).

Latencies are milliseconds, sizes bytes, throughputs tokens per second. Each summary is a dict from
:func:`edgemed.bench.measure.stats.summarize` (count, mean, median, p90, p95, min, max, stdev); raw samples are kept.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any, Literal

from edgemed.bench.measure.stats import mean_interval, quantile_interval, summarize

SCHEMA = 2  # bench.json's schema: written by edgemed.bench.run, a newer one refused by its readers (compare_runs)


@dataclass
class Latency:
    """Per-question answer latency (letter log-probs of one prompt) and TTFT of a greedy MedMCQA answer."""

    answer_ms: dict[str, Any] = field(default_factory=dict)  # the headline latency: one question answered
    ttft_ms: dict[str, Any] = field(default_factory=dict)  # MedMCQA prompt in -> first token out (prefill)
    generate_ms: dict[str, Any] = field(default_factory=dict)  # end to end, one short greedy answer
    prompt_tokens: float | None = None  # mean prompt length of the latency prompts
    new_tokens: float | None = None  # mean tokens of those answers (they stop at end of turn)
    samples: dict[str, list[float]] = field(default_factory=dict)

    @classmethod
    def from_raw(cls, raw: dict[str, Any]) -> Latency:
        samples = raw["samples"]
        return cls(**{k: summarize(samples.get(k, [])) for k in ("answer_ms", "ttft_ms", "generate_ms")},
                   prompt_tokens=raw.get("prompt_tokens"), new_tokens=raw.get("new_tokens"), samples=samples)


@dataclass
class Throughput:
    """llama-bench's two tests at fixed lengths (see :mod:`edgemed.bench.measure.throughput`), under its field names."""

    pp: dict[str, Any] = field(default_factory=dict)  # n_prompt, n_gen=0, avg_ts, stddev_ts, samples_ts, ...
    tg: dict[str, Any] = field(default_factory=dict)  # n_prompt=0, n_gen, avg_ts, stddev_ts, samples_ts, ...


@dataclass
class Memory:
    """Peak resident memory of the artifact's own process: while serving (what deploying the format costs) and
    over the whole run (scoring and fidelity buffers of the harness included), plus phase snapshots."""

    peak_rss_serving_bytes: int | None = None  # VmHWM after load, answer latency, pp and tg, before any scoring
    peak_rss_sampled_bytes: int | None = None  # whole run: psutil, process tree, every `sample_interval_ms`
    peak_rss_os_bytes: int | None = None  # whole run: the kernel's accounting of the child (wait4 ru_maxrss)
    rss_before_load_bytes: int | None = None  # interpreter + imports, before the model is loaded
    rss_after_load_bytes: int | None = None
    peak_rss_self_bytes: int | None = None  # the child's own VmHWM, read by it at the end (Linux)
    peak_gpu_bytes: int | None = None  # torch.cuda.max_memory_allocated, where there is a GPU
    sample_interval_ms: float | None = None
    samples: int | None = None

    @property
    def peak_rss_process_bytes(self) -> int | None:
        known = [v for v in (self.peak_rss_sampled_bytes, self.peak_rss_os_bytes) if v]
        return max(known) if known else None

    @property
    def peak_rss_bytes(self) -> int | None:
        """The figure compared between formats: the serving peak, else (a failed run) the whole-run peak."""
        return self.peak_rss_serving_bytes or self.peak_rss_process_bytes


@dataclass
class Accuracy:
    """Accuracy with its interval (the worker's evaluation), and agreement with the reference (filled in by
    :func:`edgemed.bench.measure.derive.fill_derived` once every artifact ran)."""

    accuracy: float | None = None
    n: int = 0
    ci_low: float | None = None  # Wilson 95% interval
    ci_high: float | None = None
    reference: str | None = None  # the artifact compared against
    agreement: float | None = None  # share of questions answered the same as the reference
    mean_kl: float | None = None
    mcnemar_p: float | None = None
    accuracy_diff: float | None = None  # this - reference
    metrics: dict[str, Any] = field(default_factory=dict)  # everything the evaluator reported

    @classmethod
    def from_evaluation(cls, evaluation: dict[str, Any]) -> Accuracy:
        """From an evaluator result's ``to_dict()`` (edgemed.evaluator.run.EvalResult)."""
        ci = evaluation.get("accuracy_ci") or [None, None]
        return cls(accuracy=evaluation["accuracy"], n=evaluation["n"], ci_low=ci[0], ci_high=ci[1],
                   metrics=evaluation.get("metrics", {}))


@dataclass
class Bandwidth:
    """Decode as a memory-bound workload: weight bytes read per token vs the machine's copy bandwidth."""

    weight_bytes: int | None = None
    effective_gbps: float | None = None  # weight bytes x median decode tokens/s
    machine_copy_gbps: float | None = None
    fraction_of_copy: float | None = None


def tail_latency(summary: dict[str, Any]) -> float | None:
    """p95 where there are enough samples, else the maximum (a conservative stand-in for limits)."""
    return summary.get("p95") if summary.get("p95") is not None else summary.get("max")


@dataclass
class Failure:
    kind: str  # "oom" (killed by the kernel for memory), "crash" (other signal), "error" (non-zero exit), "timeout",
    # "no-result"
    message: str
    exit_code: int | None = None
    signal: str | None = None
    stderr_tail: str = ""


@dataclass
class ArtifactResult:
    name: str
    path: str
    format: str
    runtime: str
    status: Literal["ok", "failed"] = "ok"
    failure: Failure | None = None
    size_bytes: int | None = None
    load_s: float | None = None
    eval_s: float | None = None
    wall_s: float | None = None
    accuracy: Accuracy = field(default_factory=Accuracy)
    latency: Latency = field(default_factory=Latency)
    throughput: Throughput = field(default_factory=Throughput)
    memory: Memory = field(default_factory=Memory)
    bandwidth: Bandwidth = field(default_factory=Bandwidth)
    fidelity: dict[str, Any] | None = None  # KL divergence etc. against the reference (see bench/measure/fidelity.py)
    machine_load: dict[str, Any] = field(default_factory=dict)  # other processes' CPU use while it ran
    extra: dict[str, Any] = field(default_factory=dict)  # any further number the worker reports under its name
    runtime_info: dict[str, Any] = field(default_factory=dict)
    settings_key: str = ""
    predictions: list[dict[str, Any]] = field(default_factory=list)
    phases_s: dict[str, float] = field(default_factory=dict)  # the worker's wall seconds per phase (where time goes)
    weights: dict[str, Any] = field(default_factory=dict)  # sha256 of the weight files (artifacts.weights_record)
    reruns: int = 0  # how often it was measured again because a timing budget was inconclusive
    earlier_attempts: list[dict[str, Any]] = field(default_factory=list)  # what those earlier measurements gave

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def busy(self) -> bool:
        """Measured while other processes used the CPU: its timings are not comparable."""
        return bool(self.machine_load.get("busy"))

    def metric(self, key: str) -> float | None:
        """The metric's value; None where it was not measured, and where the record holds no finite number there
        (a bench.json edited by hand or written by another version: shown as not measured, never as a figure)."""
        if key not in METRICS:
            return None
        try:
            value = METRICS[key].get(self)
        except (TypeError, AttributeError, KeyError, IndexError, ValueError, ZeroDivisionError):
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return None
        return value

    def row(self) -> dict[str, Any]:
        """A flat row: identity plus every metric of :data:`METRICS`."""
        row: dict[str, Any] = {"name": self.name, "format": self.format, "runtime": self.runtime,
                               "status": self.status}
        row.update({key: self.metric(key) for key in METRICS})
        row["failure"] = self.failure.message if self.failure else ""
        return row

    def to_dict(self, with_predictions: bool = True) -> dict[str, Any]:
        data = asdict(self)
        data["memory"]["peak_rss_bytes"] = self.memory.peak_rss_bytes
        data["memory"]["peak_rss_process_bytes"] = self.memory.peak_rss_process_bytes
        if not with_predictions:
            data.pop("predictions")
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArtifactResult:
        """The inverse of :meth:`to_dict` (a worker's result, or an artifact of bench.json): keys that are no field
        are left out (e.g. the derived ``memory.peak_rss_bytes``), nested records come back as their classes."""
        return _build(cls, data)


def _record_type(hint: Any) -> type | None:
    """The dataclass a field holds (``Memory``, ``Failure | None``), else None."""
    for kind in typing.get_args(hint) or (hint,):
        if isinstance(kind, type) and is_dataclass(kind):
            return kind
    return None


def _build(cls: type, data: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    kw: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in data:
            continue
        value, kind = data[f.name], _record_type(hints[f.name])
        kw[f.name] = _build(kind, value) if kind is not None and isinstance(value, dict) else value
    return cls(**kw)


@dataclass(frozen=True)
class Metric:
    """One comparable number of a result: how to read it, which direction is better, how to show it, the budget key
    that limits it (``max_...``/``min_...`` in the budgets TOML), if any, and how sure the bench is of it.

    Adding a metric is two places: the worker fills a typed field of its :class:`ArtifactResult` (a field of one of
    the records above, or a new record as a field of ArtifactResult) and one entry here (``get=lambda r: ...`` that
    reads it, with ``budget=`` to make it a budget key too). A number without a field of its own can go in
    ``result.extra["NAME"]`` (``get=lambda r: r.extra.get("NAME")``).

    A budget check is decided on ``interval`` (95%, ``(low, high)`` or None when the run holds no spread for it,
    e.g. one repetition), described by ``interval_rule``: the whole interval on the right side of the limit passes,
    on the wrong side fails, across it is inconclusive. A metric without ``interval`` is a single measurement: its
    point value decides, and ``interval_rule`` says so. ``timing``: the number moves between runs of the same
    artifact and depends on the machine's load, so a budget it breaks on a busy machine is inconclusive (other
    processes only slow it: a pass measured busy holds) and a rerun can settle it (accuracy and KLD are the same on
    every run: a rerun cannot).
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
    timing: bool = False
    deprecated_budgets: tuple[str, ...] = ()  # earlier spellings of `budget`, accepted with a warning


def _mb(v: int | None) -> float | None:
    return v / 1e6 if v is not None else None


def _fid(key: str) -> Callable[[ArtifactResult], float | None]:
    return lambda r: (r.fidelity or {}).get(key)


def _per_token_ms(r: ArtifactResult) -> float | None:
    ts = r.throughput.tg.get("avg_ts")
    return 1e3 / ts if ts else None


def _ts_interval(test: str) -> Callable[[ArtifactResult], tuple[float, float] | None]:
    return lambda r: mean_interval(getattr(r.throughput, test).get("samples_ts") or [])


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
    Metric("size_mb", "size MB", lambda r: _mb(r.size_bytes), "min", ".1f"),
    Metric("load_s", "load s", lambda r: r.load_s, "min", ".2f"),
    Metric("accuracy", "accuracy", lambda r: r.accuracy.accuracy, "max", ".3f", "min_accuracy", "accuracy",
           (0.0, 1.0), interval=lambda r: _pair([r.accuracy.ci_low, r.accuracy.ci_high]),
           interval_rule="95% Wilson score interval over the scored questions"),
    Metric("accuracy_drop", "acc drop", _accuracy_drop, "min", ".3f", "max_accuracy_drop",
           "accuracy drop vs the reference", (0.0, 1.0), interval=_accuracy_drop_interval,
           interval_rule="95% paired interval on the same questions: Wilson interval of the discordant split "
                         "b/(b+c), times (b+c)/n"),
    Metric("accuracy_low", "acc low", lambda r: r.accuracy.ci_low, None, ".3f"),
    Metric("accuracy_high", "acc high", lambda r: r.accuracy.ci_high, None, ".3f"),
    Metric("agreement", "agree", lambda r: r.accuracy.agreement, "max", ".3f"),
    Metric("answer_p50_ms", "p50 ms", lambda r: r.latency.answer_ms.get("median"), "min", ".1f", timing=True),
    Metric("answer_p95_ms", "p95 ms", lambda r: r.latency.answer_ms.get("p95"), "min", ".1f",
           "max_p95_ms", "p95 answer latency (ms)", interval=_latency_interval("answer_ms", 0.95),
           interval_rule=_Q_RULE.format(what="95th percentile") + _P95_NOTE, timing=True,
           deprecated_budgets=("max_p95_latency_ms",)),
    Metric("answer_max_ms", "max ms", lambda r: r.latency.answer_ms.get("max"), "min", ".1f", timing=True),
    Metric("ttft_ms", "TTFT ms", lambda r: r.latency.ttft_ms.get("median"), "min", ".1f",
           "max_ttft_ms", "median time to first token (ms)", interval=_latency_interval("ttft_ms", 0.5),
           interval_rule=_Q_RULE.format(what="median"), timing=True),
    Metric("tpot_ms", "TPOT ms", _per_token_ms, "min", ".2f", timing=True),
    Metric("generate_p95_ms", "gen p95 ms", lambda r: r.latency.generate_ms.get("p95"), "min", ".1f", timing=True),
    Metric("prefill_tps", "pp t/s", lambda r: r.throughput.pp.get("avg_ts"), "max", ".0f",
           "min_prefill_tokens_per_s", "pp tokens/s", interval=_ts_interval("pp"), interval_rule=_T_RULE,
           timing=True),
    Metric("prefill_tps_sd", "pp sd", lambda r: r.throughput.pp.get("stddev_ts"), None, ".1f"),
    Metric("decode_tps", "tg t/s", lambda r: r.throughput.tg.get("avg_ts"), "max", ".1f",
           "min_decode_tokens_per_s", "tg tokens/s", interval=_ts_interval("tg"), interval_rule=_T_RULE,
           timing=True),
    Metric("decode_tps_sd", "tg sd", lambda r: r.throughput.tg.get("stddev_ts"), None, ".2f"),
    Metric("kld", "KLD", _fid("kld_mean"), "min", ".5f", "max_kld",
           "mean KL divergence from the reference (nats/token)", interval=lambda r: _pair(_fid("kld_ci")(r)),
           interval_rule="95% interval of the mean KLD, cluster-robust standard error over sequences"),
    Metric("kld_low", "KLD low", lambda r: ((r.fidelity or {}).get("kld_ci") or [None])[0], None, ".5f"),
    Metric("kld_high", "KLD high", lambda r: ((r.fidelity or {}).get("kld_ci") or [None, None])[1], None, ".5f"),
    Metric("kld_p99", "KLD p99", _fid("kld_p99"), "min", ".3f"),
    Metric("top1_agreement", "same top", _fid("top1_agreement"), "max", ".3f", "min_top1_agreement",
           "top-1 token agreement with the reference", (0.0, 1.0),
           interval=lambda r: _pair(_fid("top1_agreement_ci")(r)),
           interval_rule="95% Wilson score interval over the scored tokens"),
    Metric("ppl_ratio", "PPL ratio", _fid("ppl_ratio"), None, ".4f"),
    Metric("other_cpu_cores", "others", lambda r: r.machine_load.get("other_cores_mean"), None, ".2f"),
    Metric("peak_rss_mb", "RSS MB", lambda r: _mb(r.memory.peak_rss_bytes), "min", ".0f", "max_peak_rss_mb",
           "peak resident memory (MB)",
           interval_rule="single measurement (the serving peak, VmHWM): the point value decides"),
    Metric("peak_rss_process_mb", "run RSS MB", lambda r: _mb(r.memory.peak_rss_process_bytes), None, ".0f"),
    Metric("peak_gpu_mb", "peak GPU MB", lambda r: _mb(r.memory.peak_gpu_bytes), "min", ".0f"),
    Metric("bandwidth_gbps", "eff. GB/s", lambda r: r.bandwidth.effective_gbps, None, ".2f", timing=True),
    Metric("bandwidth_fraction", "BW use", lambda r: r.bandwidth.fraction_of_copy, "max", ".0%", timing=True),
    Metric("ece", "ECE", lambda r: ((r.accuracy.metrics or {}).get("calibration") or {}).get("ece"), "min", ".3f"),
    Metric("aurc", "AURC", lambda r: r.extra.get("aurc"), "min", ".4f"),
    Metric("abstain_threshold", "abstain below p", lambda r: r.extra.get("abstain_threshold"), None, ".3f"),
    Metric("answered_share", "answered", lambda r: r.extra.get("answered_share"), "max", ".0%"),
    Metric("answered_error", "error answered", lambda r: r.extra.get("answered_error"), "min", ".3f",
           interval=lambda r: _pair([r.extra.get("answered_error_low"), r.extra.get("answered_error_high")]),
           interval_rule="95% Wilson score interval over the answered questions"),
]}

# The columns of the terminal table, the markdown summary and the HTML page (the CSV and JSON have all metrics).
TABLE_COLUMNS: list[str] = ["size_mb", "accuracy", "agreement", "kld", "top1_agreement", "answer_p95_ms", "ttft_ms",
                            "prefill_tps", "decode_tps", "peak_rss_mb", "bandwidth_fraction", "other_cpu_cores"]


def add_metric(metric: Metric, column: bool = False) -> Metric:
    """Register one more metric: in every row, the CSV, bench.json's rows and the budgets (when it has a ``budget``
    key); with `column`, also a column of the terminal, markdown and HTML tables (after the others)."""
    METRICS[metric.key] = metric
    if column and metric.key not in TABLE_COLUMNS:
        TABLE_COLUMNS.append(metric.key)
    return metric


def format_value(key: str, value: float | None) -> str:
    if value is None:
        return "-"
    return format(value, METRICS[key].fmt) if key in METRICS else str(value)
