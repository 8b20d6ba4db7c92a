"""``ReportConfig``: the options of ``edgemed report``, declared once (the CLI's flags and help are generated from
it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class ReportConfig:
    """How bench runs are put side by side.

    Args:
        out: folder to write report.json, report.md and report.html into.
        tolerance: relative change within which a metric counts as unchanged, e.g. 10% or 0.1; exit 1 beyond it.
    """

    out: Path | None = None
    tolerance: str | None = None
