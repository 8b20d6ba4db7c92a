"""One streamed request, timed from the client: time to the first generated text, the gaps between text chunks,
tokens (the server's usage when it reports it, else one per text chunk), status."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Sample:
    status: int  # HTTP status (0: no answer: connection refused, timeout)
    latency_s: float
    ttft_s: float | None = None
    gaps_s: list[float] = field(default_factory=list)
    tokens: int = 0
    tokens_source: str = "chunks"
    error: str | None = None
    started: float = 0.0
    ended: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.error is None


def body(config, model: str, seed: int) -> dict[str, Any]:
    common = {"model": model, "max_tokens": config.max_tokens, "temperature": config.temperature, "seed": seed,
              "stream": True}
    if config.endpoint == "chat":
        return {**common, "messages": [{"role": "user", "content": config.prompt}],
                "stream_options": {"include_usage": True}}
    return {**common, "prompt": config.prompt}


def _text(chunk: dict[str, Any]) -> str:
    out = ""
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta")
        if delta is not None:
            out += delta.get("content") or ""
        else:
            out += choice.get("text") or ""
    return out


async def one(client, url: str, payload: dict[str, Any], timeout: float) -> Sample:
    import httpx

    start = time.perf_counter()
    sample = Sample(status=0, latency_s=0.0, started=start)
    last = None
    chunks = 0
    try:
        async with client.stream("POST", url, json=payload, timeout=timeout) as resp:
            sample.status = resp.status_code
            if resp.status_code != 200:
                raw = await resp.aread()
                sample.error = raw.decode("utf-8", "replace")[:200]
            else:
                async for line in resp.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    chunk = json.loads(data)
                    if "error" in chunk:
                        sample.error = json.dumps(chunk["error"])[:200]
                        break
                    if chunk.get("usage"):
                        sample.tokens = int(chunk["usage"].get("completion_tokens") or 0)
                        sample.tokens_source = "usage"
                    if _text(chunk):
                        now = time.perf_counter()
                        if last is None:
                            sample.ttft_s = now - start
                        else:
                            sample.gaps_s.append(now - last)
                        last = now
                        chunks += 1
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        sample.error = f"{type(exc).__name__}: {exc}"[:200]
    if sample.tokens_source != "usage":
        sample.tokens = chunks
    sample.ended = time.perf_counter()
    sample.latency_s = sample.ended - start
    return sample
