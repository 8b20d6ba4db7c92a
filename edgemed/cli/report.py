"""``edgemed report``: compare two bench runs artifact by artifact."""

from __future__ import annotations

from pathlib import Path


def report(before: Path, after: Path, out: Path | None = None, tolerance: str | None = None) -> int:
    """Compare two bench runs (bench.json files or their folders): per-artifact deltas of every metric.

    With --tolerance it exits 1 when a metric regressed beyond it (latency or memory up, tokens/s or
    accuracy down), like 'edgemed bench --baseline'.

    Args:
        before: the earlier bench.json (or the folder holding it).
        after: the later bench.json (or the folder holding it).
        out: folder to write report.json and report.md into.
        tolerance: allowed relative regression, e.g. 10% or 0.1; exit 1 beyond it.
    """
    from rich.console import Console

    from edgemed.bench.report import compare_bench, rich_report, to_markdown
    from edgemed.bench.units import parse_ratio
    from edgemed.console import console

    tol = parse_ratio(tolerance, "--tolerance") if tolerance is not None else None
    if out is not None:
        from edgemed.fsutil import check_output_dir

        check_output_dir(Path(out), "--out")
    doc = compare_bench(Path(before), Path(after), tol)
    wide = console if console.is_terminal else Console(width=200, highlight=False)
    wide.print(rich_report(doc))
    for key, (b, a) in {**doc["settings_changed"], **doc["environment_changed"]}.items():
        console.print(f"[yellow]changed[/yellow] {key}: {b} -> {a}")
    regressed = doc.get("regressions", [])
    for c in regressed:
        console.print(f"[red]REGRESSED[/red] {c['artifact']}: {c['message']}")
    if tol is not None and not regressed:
        console.print(f"[green]no regression beyond {tol:.0%}[/green]")
    if out is not None:
        from edgemed.fsutil import atomic_write_json, atomic_write_text

        atomic_write_json(Path(out) / "report.json", doc)
        atomic_write_text(Path(out) / "report.md", to_markdown(doc))
        console.print(f"[dim]wrote {Path(out) / 'report.json'}, {Path(out) / 'report.md'}[/dim]")
    return 1 if regressed else 0
