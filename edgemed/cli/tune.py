"""``edgemed tune``: the artifact that minimises an objective within quality and speed budgets, over a declared grid."""

from __future__ import annotations

from pathlib import Path

from edgemed.bench.tune.config import TuneConfig

# How to go on after an interruption (edgemed.cli.main prints it).
RESUME = "re-run the same command with --resume to go on (exports and measurements are cached)"


def tune(merged: Path, config: TuneConfig) -> int:
    """Search the quantization space for the artifact that minimises an objective within quality and speed budgets.

    Args:
        merged: the merged model folder (edgemed merge), or a pipeline run folder (its merged/ inside).
    """
    from edgemed.bench.tune.run import run_tune

    return int(run_tune(merged, config)["exit_code"])
