"""The results of an export as people read them: a table, and one line per format that did not end in place."""

from __future__ import annotations

from typing import Any

from edgemed.fsutil import fmt_bytes


def summary_table(results: list[dict[str, Any]]):
    """Rich table of the results; long reasons are left to ``problem_lines``."""
    from rich.table import Table

    table = Table(title="export")
    for col in ("format", "status", "size", "s", "max|Δlogp|", "tol", "tokens"):
        table.add_column(col, no_wrap=True, justify="left" if col in ("format", "status", "tokens") else "right")
    table.add_column("note", overflow="fold")
    colors = {"exported": "green", "skipped": "cyan", "unavailable": "yellow", "failed": "red"}
    for r in results:
        v = r.get("verification") or {}
        delta, parity = v.get("max_abs_delta"), v.get("token_parity")
        note = r.get("reason", "")
        table.add_row(
            r["format"],
            f"[{colors[r['status']]}]{r['status']}[/]",
            fmt_bytes(r.get("size_bytes"), missing=""),
            f"{r['seconds']:.1f}" if r.get("seconds") is not None else "",
            f"{delta:.2g}" if delta is not None else "",
            f"{v['tolerance']:g}" if "tolerance" in v else "",
            "" if parity is None else ("same" if parity else "[red]differ[/]"),
            "" if r["status"] == "skipped" else ("see below" if len(note) > 40 else note),
        )
    return table


def problem_lines(results: list[dict[str, Any]]) -> list[str]:
    """One line per format that did not end in place (failed or left out)."""
    return [f"{r['format']}: {r['status']}: {r['reason']}" for r in results if r["status"] in ("failed", "unavailable")]
