"""``edgemed report``: any number of bench runs, from several machines and commits, in one table."""

from __future__ import annotations

from pathlib import Path


def report(runs: list[Path], out: Path | None = None, tolerance: str | None = None) -> int:
    """Bench runs (bench.json files or their folders, from any machine) in one table: each artifact once, matched
    by its weights' sha256, a column group per run; each run against the one before it on the same machine, with
    noise bands; board profiles' estimates beside the board's own measurement.

    With --tolerance it exits 1 when a metric regressed beyond its noise band (latency or memory up, tokens/s or
    accuracy down, KLD up), like 'edgemed bench --baseline'; without it the band uses 10% and the exit is 0.

    Args:
        runs: bench.json files or the folders holding them, earliest first where times are equal.
        out: folder to write report.json, report.md and report.html into.
        tolerance: relative change within which a metric counts as unchanged, e.g. 10% or 0.1; exit 1 beyond it.
    """
    from rich.console import Console
    from rich.markup import escape

    from edgemed.bench.report.document import build_report, change_line, rich_report, to_markdown
    from edgemed.bench.units import parse_ratio
    from edgemed.console import console

    tol = parse_ratio(tolerance, "--tolerance") if tolerance is not None else None
    if out is not None:
        from edgemed.fsutil import check_output_dir

        check_output_dir(Path(out), "--out")
    doc = build_report([Path(r) for r in runs], tol)
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
    elif tol is not None and not regressed:
        console.print(f"[green]no regression beyond the noise bands ({tol:.0%} or 2 standard errors)[/green]")
    if out is not None:
        from edgemed.bench.report.html import report_html
        from edgemed.fsutil import atomic_write_json, atomic_write_text

        out = Path(out)
        md, html = to_markdown(doc), report_html(doc)  # rendered before anything is written
        atomic_write_json(out / "report.json", doc)
        atomic_write_text(out / "report.md", md)
        atomic_write_text(out / "report.html", html)
        console.print(f"[dim]wrote {out / 'report.json'}, {out / 'report.md'}, {out / 'report.html'}[/dim]")
    return 1 if regressed and tol is not None else 0
