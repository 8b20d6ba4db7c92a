"""``edgemed report RUN...``: validate the options, build the report document, show it on the console, write
report.json, report.md and report.html, and return the document."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgemed.bench.report.config import ReportConfig
from edgemed.bench.report.document import build_report, change_line, rich_report, to_markdown
from edgemed.bench.units import parse_ratio
from edgemed.console import console
from edgemed.fsutil import atomic_write_json, atomic_write_text, check_output_dir


def run_report(runs: list[Path], config: ReportConfig) -> dict[str, Any]:
    """The report of bench runs (bench.json files or their folders): printed, written to ``config.out`` when given,
    and returned. Bad options or runs raise EdgemedError before anything is written."""
    tol = parse_ratio(config.tolerance, "--tolerance") if config.tolerance is not None else None
    if config.out is not None:
        check_output_dir(Path(config.out), "--out")
    doc = build_report([Path(r) for r in runs], tol)
    show(doc)
    if config.out is not None:
        from edgemed.bench.report.html import report_html

        out = Path(config.out)
        md, html = to_markdown(doc), report_html(doc)  # rendered before anything is written
        atomic_write_json(out / "report.json", doc)
        atomic_write_text(out / "report.md", md)
        atomic_write_text(out / "report.html", html)
        console.print(f"[dim]wrote {out / 'report.json'}, {out / 'report.md'}, {out / 'report.html'}[/dim]")
    return doc


def exit_code(doc: dict[str, Any]) -> int:
    """1 when --tolerance was given and a metric regressed beyond its noise band, else 0."""
    return 1 if doc["regressions"] and doc["tolerance_given"] else 0


def show(doc: dict[str, Any]) -> None:
    """The console's view: the table, each run, each change, the profile checks, the regressions."""
    from rich.console import Console
    from rich.markup import escape

    wide = console if console.is_terminal else Console(width=250, highlight=False)
    wide.print(rich_report(doc))
    for run in doc["runs"]:
        console.print(f"[bold]{run['label']}[/bold] {escape(run['path'])}: {escape(run['machine_name'])} "
                      f"{escape('[' + run['machine'] + ']')}, commit {escape(str(run['commit'] or '?'))}")
        if run["not_measured"]:
            shown = "; ".join(run["not_measured"][:5]) + (" ..." if len(run["not_measured"]) > 5 else "")
            console.print(f"[yellow]{run['label']}: {len(run['not_measured'])} value(s) are not finite numbers, "
                          f"shown as not measured[/yellow]: {escape(shown)}")
    for c in doc["changes"]:
        console.print(escape(change_line(c)))
    for p in doc["profile_checks"]:
        off = p["off_by_more_than_2x"]
        state = f"[red]off by more than 2x[/red]: {escape('; '.join(off))}" if off else "every estimate within 2x"
        console.print(f"profile {p['profile']} ({p['estimated_in']}) vs board run {p['board_run']}: {state}")
    regressed = doc["regressions"]
    for c in regressed:
        console.print(f"[red]REGRESSED[/red] {escape(c['artifact'])}: {escape(c['message'])}")
    machines = {run["machine"]: run["machine_name"] for run in doc["runs"]}
    if not doc["changes"] and len(doc["runs"]) > 1:  # runs of different machines are shown, never compared
        console.print(f"[yellow]compared nothing[/yellow]: no two runs were made on the same machine "
                      f"({escape('; '.join(f'{name} [{mid}]' for mid, name in machines.items()))}); timings of "
                      "different machines are shown side by side, not compared, so no regression was checked")
    elif doc["tolerance_given"] and not regressed:
        console.print(f"[green]no regression beyond the noise bands ({doc['tolerance']:.0%} or 2 standard "
                      "errors)[/green]")
