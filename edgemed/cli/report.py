"""``edgemed report``: any number of bench runs, from several machines and commits, in one table."""

from __future__ import annotations

from pathlib import Path

from edgemed.bench.report.config import ReportConfig


def report(runs: list[Path], config: ReportConfig) -> int:
    """Bench runs (bench.json files or their folders, from any machine) in one table: each artifact once, matched
    by its weights' sha256, a column group per run; each run against the one before it on the same machine, with
    noise bands; board profiles' estimates beside the board's own measurement.

    With --tolerance it exits 1 when a metric regressed beyond its noise band (latency or memory up, tokens/s or
    accuracy down, KLD up), like 'edgemed bench --baseline'; without it the band uses 10% and the exit is 0.

    Args:
        runs: bench.json files or the folders holding them, earliest first where times are equal.
    """
    from edgemed.bench.report.run import exit_code, run_report

    return exit_code(run_report(runs, config))
