"""``edgemed data check``: validate every row of a MedMCQA-schema source."""

from __future__ import annotations

from edgemed.data.check import DataCheckConfig, run_check


def check(source: str, config: DataCheckConfig) -> int:
    """Validate every row of a MedMCQA source and report counts, subjects and each bad row.

    Args:
        source: 'sample', a local .jsonl/.json/.parquet/.csv file, or a hub id (openlifescienceai/medmcqa).
    """
    run_check(source, config)
    return 0
