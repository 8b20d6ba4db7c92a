"""``LoadtestConfig``: every option of ``edgemed loadtest``, checked before the first request."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edgemed.errors import EdgemedError

DEFAULT_PROMPT = ("A 45-year-old man presents with crushing chest pain radiating to the left arm. Which enzyme rises "
                  "first after a myocardial infarction? Answer briefly.")


@dataclass
class LoadtestConfig:
    """Sweep concurrency against an OpenAI-compatible server: requests/s, output tokens/s, TTFT and inter-token
    latency (p50/p95), error rate per level; budgets exit 1.

    Args:
        model: model id to request (default: the first of GET /v1/models).
        concurrency: concurrency levels to sweep.
        requests: requests per level (default: 2 per concurrent client, at least 4).
        max_tokens: tokens to generate per request.
        endpoint: chat (POST /v1/chat/completions) or completions (POST /v1/completions).
        prompt: the user message (or completion prompt) sent every time.
        temperature: sampling temperature (0: greedy, the same answer each time).
        api_key: bearer key (default: $EDGEMED_API_KEY, else $OPENAI_API_KEY).
        timeout: seconds one request may take before it counts as an error.
        warmup: requests sent (and not counted) before the first level.
        max_error_rate: budget: most errors (any non-200, 429 included) per level, a share in [0, 1].
        max_ttft_p95_ms: budget: p95 time to first token at every level, ms.
        max_itl_p95_ms: budget: p95 inter-token latency at every level, ms.
        min_output_tokens_per_s: budget: least output tokens/s at every level.
        progress: show a progress bar.
        out: folder for loadtest.json and loadtest.md.
    """

    model: str | None = None
    concurrency: list[int] | None = None
    requests: int | None = None
    max_tokens: int = 64
    endpoint: Literal["chat", "completions"] = "chat"
    prompt: str = DEFAULT_PROMPT
    temperature: float = 0.0
    api_key: str | None = None
    timeout: float = 300.0
    warmup: int = 1
    max_error_rate: float | None = None
    max_ttft_p95_ms: float | None = None
    max_itl_p95_ms: float | None = None
    min_output_tokens_per_s: float | None = None
    progress: bool = True
    out: Path | None = None

    def __post_init__(self) -> None:
        self.concurrency = self.concurrency or [1, 2, 4, 8]

    def validate(self) -> LoadtestConfig:
        if any(c < 1 for c in self.concurrency):
            raise EdgemedError(f"--concurrency levels must be at least 1, not {self.concurrency}")
        for name, low in (("requests", 1), ("max_tokens", 1), ("warmup", 0)):
            value = getattr(self, name)
            if value is not None and value < low:
                raise EdgemedError(f"--{name.replace('_', '-')} must be at least {low}, not {value}")
        if not (math.isfinite(self.timeout) and self.timeout > 0):
            raise EdgemedError(f"--timeout must be a positive number of seconds, not {self.timeout}")
        if not (math.isfinite(self.temperature) and 0 <= self.temperature <= 2):
            raise EdgemedError(f"--temperature must be in [0, 2], not {self.temperature}")
        if self.max_error_rate is not None and not 0 <= self.max_error_rate <= 1:
            raise EdgemedError(f"--max-error-rate is a share in [0, 1], not {self.max_error_rate}")
        for name in ("max_ttft_p95_ms", "max_itl_p95_ms", "min_output_tokens_per_s"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise EdgemedError(f"--{name.replace('_', '-')} must be a positive number, not {value}")
        if not self.prompt.strip():
            raise EdgemedError("--prompt is empty; give the text to send")
        if self.api_key is None:
            self.api_key = os.environ.get("EDGEMED_API_KEY") or os.environ.get("OPENAI_API_KEY") or None
        if self.out is not None:
            from edgemed.fsutil import check_output_dir

            check_output_dir(Path(self.out), "--out")
        return self

    def requests_at(self, level: int) -> int:
        return self.requests or max(4, 2 * level)
