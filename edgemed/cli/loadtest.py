"""``edgemed loadtest``: concurrency sweep against an OpenAI-compatible server."""

from __future__ import annotations

from edgemed.console import console
from edgemed.fsutil import atomic_write_json, atomic_write_text
from edgemed.loadtest.config import LoadtestConfig


def loadtest(url: str, config: LoadtestConfig) -> int:
    """Sweep concurrency against an OpenAI-compatible server (edgemed serve, llama-server, vLLM): requests/s, output
    tokens/s, TTFT and inter-token latency p50/p95, error rate per level. Exit codes: 0 done, 1 a budget broken,
    2 bad usage or no server at URL, 3 a bug.

    Args:
        url: the server's base URL, e.g. http://127.0.0.1:8000 (or .../v1).
    """
    from pathlib import Path

    from rich.table import Table

    from edgemed.loadtest.run import FIELDS, cell, markdown, run_loadtest

    result = run_loadtest(url, config)
    table = Table(title=f"loadtest {result['server']['model']} ({result['endpoint']}, max_tokens "
                        f"{result['max_tokens']}); CPU {result['environment'].get('cpu')}")
    for _, header, _ in FIELDS:
        table.add_column(header, justify="right")
    for level in result["levels"]:
        table.add_row(*(cell(level.get(k), f) for k, _, f in FIELDS))
    console.print(table)
    for b in result["budgets"]:
        if b["broken"]:
            console.print(f"budget broken at concurrency {b['concurrency']}: {b['metric']} {cell(b['value'], '{:.4g}')}"
                          f" ({b['kind']} {b['limit']:g})", style="red", markup=False)
    if config.out is not None:
        out = Path(config.out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "loadtest.json", result)
        atomic_write_text(out / "loadtest.md", markdown(result))
        console.print(f"wrote {out / 'loadtest.json'} and loadtest.md")
    return 1 if result["budgets_broken"] else 0
