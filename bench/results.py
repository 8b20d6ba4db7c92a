"""Result records of one bench run, in the optimum-benchmark style: small dataclasses that render to rows and JSON.

Latencies are milliseconds, sizes bytes, throughputs tokens per second. Each summary is a dict from
:func:`edgemed.bench.stats.summarize` (count, mean, median, p90, p95, min, max, stdev); raw samples are kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from edgemed.bench.stats import summarize


@dataclass
class Latency:
    """Per-question answer latency (letter log-probs of one prompt) and short greedy generation timings."""

    answer_ms: dict[str, Any] = field(default_factory=dict)  # the headline latency: one question answered
    ttft_ms: dict[str, Any] = field(default_factory=dict)  # prompt in -> first token out (prefill)
    tpot_ms: dict[str, Any] = field(default_factory=dict)  # time per output token after the first
    generate_ms: dict[str, Any] = field(default_factory=dict)  # end to end, one short generation
    samples: dict[str, list[float]] = field(default_factory=dict)

    @classmethod
    def from_samples(cls, samples: dict[str, list[float]]) -> Latency:
        return cls(**{k: summarize(samples.get(k, [])) for k in ("answer_ms", "ttft_ms", "tpot_ms", "generate_ms")},
                   samples=samples)


@dataclass
class Throughput:
    decode_tokens_per_s: dict[str, Any] = field(default_factory=dict)
    prefill_tokens_per_s: dict[str, Any] = field(default_factory=dict)
    prompt_tokens: float | None = None  # mean prompt length of the latency prompts
    new_tokens: float | None = None  # mean tokens generated per generation
    samples: dict[str, list[float]] = field(default_factory=dict)

    @classmethod
    def from_samples(cls, samples: dict[str, list[float]], prompt_tokens: float | None,
                     new_tokens: float | None) -> Throughput:
        return cls(
            decode_tokens_per_s=summarize(samples.get("decode_tokens_per_s", [])),
            prefill_tokens_per_s=summarize(samples.get("prefill_tokens_per_s", [])),
            prompt_tokens=prompt_tokens, new_tokens=new_tokens, samples=samples,
        )


@dataclass
class Memory:
    """Peak resident memory of the artifact's own process, measured two ways, plus phase snapshots."""

    peak_rss_sampled_bytes: int | None = None  # psutil, process tree, every `sample_interval_ms`
    peak_rss_os_bytes: int | None = None  # the kernel's accounting of the child (wait4 ru_maxrss)
    rss_before_load_bytes: int | None = None  # interpreter + imports, before the model is loaded
    rss_after_load_bytes: int | None = None
    peak_rss_self_bytes: int | None = None  # the child's own VmHWM, read by it at the end (Linux)
    peak_gpu_bytes: int | None = None  # torch.cuda.max_memory_allocated, where there is a GPU
    sample_interval_ms: float | None = None
    samples: int | None = None

    @property
    def peak_rss_bytes(self) -> int | None:
        known = [v for v in (self.peak_rss_sampled_bytes, self.peak_rss_os_bytes) if v]
        return max(known) if known else None


@dataclass
class Accuracy:
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


@dataclass
class Bandwidth:
    """Decode as a memory-bound workload: weight bytes read per token vs the machine's copy bandwidth."""

    weight_bytes: int | None = None
    effective_gbps: float | None = None  # weight bytes x median decode tokens/s
    machine_copy_gbps: float | None = None
    fraction_of_copy: float | None = None


@dataclass
class Failure:
    kind: str  # "crash" (signal), "error" (non-zero exit), "timeout", "no-result"
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
    runtime_info: dict[str, Any] = field(default_factory=dict)
    settings_key: str = ""
    predictions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def metric(self, key: str) -> float | None:
        return METRICS[key].get(self) if key in METRICS else None

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
        if not with_predictions:
            data.pop("predictions")
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArtifactResult:
        kinds = {"accuracy": Accuracy, "latency": Latency, "throughput": Throughput, "memory": Memory,
                 "bandwidth": Bandwidth, "failure": Failure}
        names = {f.name for f in fields(cls)}
        kw: dict[str, Any] = {}
        for key, value in data.items():
            if key not in names:
                continue
            if key in kinds and isinstance(value, dict):
                allowed = {f.name for f in fields(kinds[key])}
                value = kinds[key](**{k: v for k, v in value.items() if k in allowed})
            kw[key] = value
        return cls(**kw)


@dataclass(frozen=True)
class Metric:
    """One comparable number of a result: how to read it, which direction is better, how to show it."""

    key: str
    label: str
    get: Callable[[ArtifactResult], float | None]
    better: Literal["min", "max"] | None
    fmt: str  # format spec for the value


def _mb(v: int | None) -> float | None:
    return v / 1e6 if v is not None else None


METRICS: dict[str, Metric] = {m.key: m for m in [
    Metric("size_mb", "size MB", lambda r: _mb(r.size_bytes), "min", ".1f"),
    Metric("load_s", "load s", lambda r: r.load_s, "min", ".2f"),
    Metric("accuracy", "accuracy", lambda r: r.accuracy.accuracy, "max", ".3f"),
    Metric("accuracy_low", "acc low", lambda r: r.accuracy.ci_low, None, ".3f"),
    Metric("accuracy_high", "acc high", lambda r: r.accuracy.ci_high, None, ".3f"),
    Metric("agreement", "agree", lambda r: r.accuracy.agreement, "max", ".3f"),
    Metric("answer_p50_ms", "p50 ms", lambda r: r.latency.answer_ms.get("median"), "min", ".1f"),
    Metric("answer_p95_ms", "p95 ms", lambda r: r.latency.answer_ms.get("p95"), "min", ".1f"),
    Metric("ttft_ms", "TTFT ms", lambda r: r.latency.ttft_ms.get("median"), "min", ".1f"),
    Metric("tpot_ms", "TPOT ms", lambda r: r.latency.tpot_ms.get("median"), "min", ".2f"),
    Metric("generate_p95_ms", "gen p95 ms", lambda r: r.latency.generate_ms.get("p95"), "min", ".1f"),
    Metric("decode_tps", "decode t/s", lambda r: r.throughput.decode_tokens_per_s.get("median"), "max", ".1f"),
    Metric("prefill_tps", "prefill t/s", lambda r: r.throughput.prefill_tokens_per_s.get("median"), "max", ".0f"),
    Metric("peak_rss_mb", "RSS MB", lambda r: _mb(r.memory.peak_rss_bytes), "min", ".0f"),
    Metric("peak_gpu_mb", "peak GPU MB", lambda r: _mb(r.memory.peak_gpu_bytes), "min", ".0f"),
    Metric("bandwidth_gbps", "eff. GB/s", lambda r: r.bandwidth.effective_gbps, None, ".2f"),
    Metric("bandwidth_fraction", "BW use", lambda r: r.bandwidth.fraction_of_copy, "max", ".0%"),
]}

# The columns of the terminal table and the markdown summary (the CSV and JSON have all metrics).
TABLE_COLUMNS = ("size_mb", "load_s", "accuracy", "agreement", "answer_p95_ms", "ttft_ms", "tpot_ms",
                 "decode_tps", "prefill_tps", "peak_rss_mb", "bandwidth_fraction")


def format_value(key: str, value: float | None) -> str:
    if value is None:
        return "-"
    return format(value, METRICS[key].fmt) if key in METRICS else str(value)
