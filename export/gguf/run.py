"""llama.cpp's tools and scripts run as logged subprocesses, for the GGUF exporter and the importance matrix."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from edgemed.errors import EdgemedError


def run_logged(cmd: list[str], log: Path, what: str, **kw: Any) -> None:
    """Run a llama.cpp tool with its output in `log` (removed when it succeeds); EdgemedError naming why not."""
    outcome, why = run_tool(cmd, log, env={"OMP_WAIT_POLICY": "PASSIVE", **os.environ}, **kw)
    if not outcome.ok:
        raise EdgemedError(f"{what} ({outcome.describe()}): {error_line(log) or why}")
    log.unlink(missing_ok=True)


def error_line(log: Path) -> str | None:
    """The last line of a llama.cpp tool's log that reports an error (its stdout is flushed after its stderr, so the
    log's last line is rarely the reason)."""
    from edgemed.process.child import tail

    marks = ("error", "failed", "exception", "abort", "invalid", "requires")
    hits = [ln.strip() for ln in tail(log, 400, 1 << 20).splitlines() if any(m in ln.lower() for m in marks)]
    return hits[-1] if hits else None


def run_tool(cmd: list[str], log: Path | None, **kw: Any) -> tuple[Any, str]:
    """(outcome, why it failed) of edgemed.process.child.run_child, the log kept at `log` (else in a temporary file)."""
    import tempfile

    from edgemed.process.child import run_child

    if log is not None:
        outcome = run_child(cmd, log, **kw)
        return outcome, outcome.why()
    with tempfile.TemporaryDirectory(prefix="edgemed-gguf-") as tmp:
        outcome = run_child(cmd, Path(tmp) / "log", **kw)
        return outcome, outcome.why()
