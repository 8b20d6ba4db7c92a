"""The sweep: for each concurrency level, that many clients send the level's requests back to back; one field list
(FIELDS) feeds the table, loadtest.md and loadtest.json."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from edgemed.errors import EdgemedError
from edgemed.loadtest.client import Sample, body, one
from edgemed.loadtest.config import LoadtestConfig

# (key, header, format) of each level's row
FIELDS = (
    ("concurrency", "conc", "{:d}"),
    ("requests", "req", "{:d}"),
    ("ok", "ok", "{:d}"),
    ("rejected_429", "429", "{:d}"),
    ("error_rate", "err %", "{:.1%}"),
    ("requests_per_s", "req/s", "{:.2f}"),
    ("output_tokens_per_s", "out tok/s", "{:.1f}"),
    ("ttft_p50_ms", "TTFT p50 ms", "{:.0f}"),
    ("ttft_p95_ms", "TTFT p95 ms", "{:.0f}"),
    ("itl_p50_ms", "ITL p50 ms", "{:.1f}"),
    ("itl_p95_ms", "ITL p95 ms", "{:.1f}"),
    ("latency_p50_s", "latency p50 s", "{:.2f}"),
)


def percentile(values: list[float], q: float) -> float | None:
    xs = sorted(values)
    if not xs:
        return None
    pos = (len(xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize(level: int, samples: list[Sample], wall_s: float) -> dict[str, Any]:
    ok = [s for s in samples if s.ok]
    ttft = [s.ttft_s for s in ok if s.ttft_s is not None]
    gaps = [g for s in ok for g in s.gaps_s]
    ms = lambda v: None if v is None else v * 1000  # noqa: E731
    errors: dict[str, int] = {}
    for s in samples:
        if not s.ok:
            key = str(s.status) if s.status else (s.error or "no answer").split(":")[0]
            errors[key] = errors.get(key, 0) + 1
    return {
        "concurrency": level, "requests": len(samples), "ok": len(ok),
        "rejected_429": sum(s.status == 429 for s in samples),
        "error_rate": 1 - len(ok) / len(samples) if samples else None,
        "errors": errors,
        "wall_s": wall_s,
        "requests_per_s": len(ok) / wall_s if wall_s > 0 else None,
        "output_tokens": sum(s.tokens for s in ok),
        "output_tokens_per_s": sum(s.tokens for s in ok) / wall_s if wall_s > 0 else None,
        "tokens_counted_by": sorted({s.tokens_source for s in ok}),
        "ttft_p50_ms": ms(percentile(ttft, 50)), "ttft_p95_ms": ms(percentile(ttft, 95)),
        "itl_p50_ms": ms(percentile(gaps, 50)), "itl_p95_ms": ms(percentile(gaps, 95)),
        "latency_p50_s": percentile([s.latency_s for s in ok], 50),
        "latency_p95_s": percentile([s.latency_s for s in ok], 95),
        "first_errors": [s.error for s in samples if s.error][:3],
    }


def _base(url: str) -> str:
    url = url.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


async def _client_loop(client, target: str, config: LoadtestConfig, model: str, pending: list[int],
                       samples: list[Sample], tick) -> None:
    """One simulated client: sends the level's next request as soon as its last one is answered."""
    while pending:
        seed = pending.pop(0)
        samples.append(await one(client, target, body(config, model, seed), config.timeout))
        tick(1)


async def _sweep(url: str, config: LoadtestConfig, tick) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    import httpx

    headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
    base = _base(url)
    limits = httpx.Limits(max_connections=max(config.concurrency) + 2)
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=config.timeout) as client:
        try:
            resp = await client.get(f"{base}/models", timeout=30)
        except httpx.HTTPError as exc:
            raise EdgemedError(f"no OpenAI-compatible server answers at {base} ({type(exc).__name__}: {exc}); "
                               "check the URL and that the server runs") from None
        if resp.status_code == 401:
            raise EdgemedError(f"{base} wants an API key: pass --api-key or set EDGEMED_API_KEY")
        if resp.status_code != 200:
            raise EdgemedError(f"GET {base}/models answered {resp.status_code}; is {url} an OpenAI-compatible server?")
        listed = resp.json().get("data") or []
        model = config.model or (listed[0]["id"] if listed else None)
        if not model:
            raise EdgemedError(f"{base}/models lists no model; pass --model")
        server = {"url": base, "model": model,
                  "listed": next((m for m in listed if m.get("id") == model), None)}
        target = f"{base}/{'chat/completions' if config.endpoint == 'chat' else 'completions'}"
        for i in range(config.warmup):
            s = await one(client, target, body(config, model, 10_000 + i), config.timeout)
            if not s.ok:
                raise EdgemedError(f"the warm-up request failed ({s.status}: {s.error}); check --model and --endpoint")
        levels = []
        seed = 0
        for level in config.concurrency:
            n = config.requests_at(level)
            pending = list(range(seed, seed + n))
            seed += n
            samples: list[Sample] = []
            start = time.perf_counter()
            await asyncio.gather(*(_client_loop(client, target, config, model, pending, samples, tick)
                                   for _ in range(level)))
            levels.append(summarize(level, samples, time.perf_counter() - start))
        return levels, server


def budgets(levels: list[dict[str, Any]], config: LoadtestConfig) -> list[dict[str, Any]]:
    """One row per (level, budget) checked: value, limit, broken."""
    rows = []
    checks = (("error_rate", config.max_error_rate, "max"), ("ttft_p95_ms", config.max_ttft_p95_ms, "max"),
              ("itl_p95_ms", config.max_itl_p95_ms, "max"),
              ("output_tokens_per_s", config.min_output_tokens_per_s, "min"))
    for level in levels:
        for key, limit, kind in checks:
            if limit is None:
                continue
            value = level.get(key)
            broken = value is None or (value > limit if kind == "max" else value < limit)
            rows.append({"concurrency": level["concurrency"], "metric": key, "kind": kind, "limit": limit,
                         "value": value, "broken": broken})
    return rows


def run_loadtest(url: str, config: LoadtestConfig) -> dict[str, Any]:
    from edgemed.evaluator.run import tick_bar
    from edgemed.serve.server import require
    from edgemed.sysinfo import environment

    require(("httpx",), "edgemed loadtest")
    config.validate()
    total = sum(config.requests_at(c) for c in config.concurrency)
    with tick_bar(config.progress, "loadtest", total) as tick:
        levels, server = asyncio.run(_sweep(url, config, tick))
    checked = budgets(levels, config)
    return {"server": server, "endpoint": config.endpoint, "max_tokens": config.max_tokens,
            "temperature": config.temperature, "prompt": config.prompt, "levels": levels, "budgets": checked,
            "budgets_broken": sum(r["broken"] for r in checked),
            "client": "httpx over real HTTP, streamed (SSE); TTFT = request sent -> first text chunk; ITL = gaps "
                      "between text chunks; tokens = the server's usage when streamed, else text chunks",
            "environment": environment(with_accelerator=False)}


def cell(value: Any, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    lines = [f"# edgemed loadtest: {result['server']['model']} at {result['server']['url']}", "",
             f"{result['endpoint']} endpoint, max_tokens {result['max_tokens']}, temperature {result['temperature']}; "
             f"client CPU: {env.get('cpu')} ({env.get('cores_logical')} logical cores)", "",
             "| " + " | ".join(h for _, h, _ in FIELDS) + " |", "|" + "---|" * len(FIELDS)]
    for level in result["levels"]:
        lines.append("| " + " | ".join(cell(level.get(k), f) for k, _, f in FIELDS) + " |")
    if result["budgets"]:
        lines += ["", "## Budgets", "", "| conc | metric | limit | value | verdict |", "|---|---|---|---|---|"]
        for b in result["budgets"]:
            lines.append(f"| {b['concurrency']} | {b['metric']} | {b['kind']} {b['limit']:g} | "
                         f"{cell(b['value'], '{:.4g}')} | {'BROKEN' if b['broken'] else 'ok'} |")
    lines += ["", result["client"], ""]
    return "\n".join(lines)
