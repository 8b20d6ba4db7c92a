"""Prometheus metrics of one server (its own registry): requests and errors by code and model, time to first token
and between tokens, queue depth, abstention."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28)
NO_MODEL = "(none)"  # a request refused before it named a served model


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("edgemed_requests", "HTTP requests answered", ["endpoint", "model", "code"],
                                registry=r)
        self.errors = Counter("edgemed_request_errors", "Requests answered with an error (4xx/5xx)",
                              ["endpoint", "model", "code"], registry=r)
        self.latency = Histogram("edgemed_request_duration_seconds", "Arrival to last byte", ["endpoint", "model"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("edgemed_time_to_first_token_seconds", "Arrival to the first generated token "
                              "(queue wait included)", ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.itl = Histogram("edgemed_inter_token_latency_seconds", "Time between two generated tokens", ["model"],
                             buckets=TOKEN_BUCKETS, registry=r)
        self.tokens = Counter("edgemed_generated_tokens", "Tokens generated", ["model"], registry=r)
        self.depth = Gauge("edgemed_queue_depth", "Requests held by an engine (waiting + running)", ["model"],
                           registry=r)
        self.mcq = Counter("edgemed_mcq_answers", "Multiple-choice answers by outcome", ["model", "abstained"],
                           registry=r)
        self.abstention = Gauge("edgemed_abstention_rate", "Share of multiple-choice questions abstained on",
                                ["model"], registry=r)
        self.cancelled = Counter("edgemed_cancelled_requests", "Generations stopped early (client gone, timeout)",
                                 ["model", "reason"], registry=r)
        self.reloads = Counter("edgemed_route_reloads", "Routes file reloads", ["outcome"], registry=r)
        self._mcq_counts: dict[str, list[int]] = {}

    def answered(self, endpoint: str, model: str, code: int, seconds: float | None = None) -> None:
        self.requests.labels(endpoint, model, str(code)).inc()
        if code >= 400:
            self.errors.labels(endpoint, model, str(code)).inc()
        if seconds is not None:
            self.latency.labels(endpoint, model).observe(seconds)

    def abstained(self, model: str, abstained: bool) -> None:
        self.mcq.labels(model, "true" if abstained else "false").inc()
        counts = self._mcq_counts.setdefault(model, [0, 0])
        counts[0] += 1
        counts[1] += int(abstained)
        self.abstention.labels(model).set(counts[1] / counts[0])

    def engine_done(self, engine, job, result: dict) -> None:
        """An engine finished a request (read from every result, whether or not its client still waits)."""
        model = engine.spec.id
        self.tokens.labels(model).inc(int(result.get("completion_tokens") or 0))
        if result.get("finish_reason") in ("cancelled", "timeout"):
            self.cancelled.labels(model, result["finish_reason"]).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
