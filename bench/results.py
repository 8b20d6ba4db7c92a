"""Result records of one bench run, in the optimum-benchmark style: small dataclasses that render to rows and JSON.

One :class:`ArtifactResult` travels the whole way: the worker (:mod:`edgemed.bench.worker`) fills in what it measured
inside the artifact's process and writes :meth:`ArtifactResult.to_dict`; the parent (:mod:`edgemed.bench.run`) reads
it back with :meth:`ArtifactResult.from_dict` and only adds what it measured from outside (wall time, sampled memory,
machine load, exit status, size and weights on disk). Every key is bench.json's own: nothing is renamed on the way.

Each metric read from these records, and every fact about it (direction, interval, where it is shown and compared),
is one :class:`~edgemed.bench.metrics.Metric` entry in :mod:`edgemed.bench.metrics`; a new measured number is a
typed field here that the worker fills (or ``extra["NAME"]``) plus that one entry.

Latencies are milliseconds, sizes bytes, throughputs tokens per second. Each summary is a dict from
:func:`edgemed.bench.measure.stats.summarize` (count, mean, median, p90, p95, min, max, stdev); raw samples are kept.
"""

from __future__ import annotations

import math
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any, Literal

from edgemed.bench.measure.stats import summarize
from edgemed.bench.metrics import METRICS, TABLE_COLUMNS, Metric, add_metric, format_value

__all__ = ["METRICS", "SCHEMA", "TABLE_COLUMNS", "Accuracy", "ArtifactResult", "Bandwidth", "Failure", "Latency",
           "Memory", "Metric", "Throughput", "add_metric", "format_value", "tail_latency"]

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
    reruns: int = 0  # how often more runs were measured because a timing budget was inconclusive (--retries)
    timing_runs: list[dict[str, Any]] = field(default_factory=list)  # every run a timing budget read (gate.runs)

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
