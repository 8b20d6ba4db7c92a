"""``edgemed bench``: accuracy, fidelity, latency, throughput, memory and size of exported artifacts, side by side."""

from __future__ import annotations

from pathlib import Path

from edgemed.bench.config import BenchConfig

# How to go on after an interruption (edgemed.cli.main prints it).
RESUME = "re-run the same command with --resume to keep the artifacts already measured"


def bench(artifacts: list[Path], config: BenchConfig) -> int:
    """Benchmark artifacts, each in its own process: accuracy, fidelity (KL divergence vs the reference),
    latency, pp/tg tokens/s, peak memory, size, budgets.

    Args:
        artifacts: artifact folders (with edgemed.json) or folders holding them, e.g. runs/pipeline/artifacts.
    """
    from edgemed.bench.run import run_bench

    return int(run_bench(artifacts, config)["exit_code"])
