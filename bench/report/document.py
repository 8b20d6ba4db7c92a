"""``edgemed report RUN...``: the report document (report.json) and how it is shown (console table, markdown).

The merging, fingerprints and changes come from :mod:`edgemed.bench.report.runs`, the profile checks from
:mod:`edgemed.bench.report.profiles`, the HTML page from :mod:`edgemed.bench.render.html`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from edgemed.bench.metrics import METRICS, report_columns
from edgemed.bench.render.cells import cell
from edgemed.bench.report.compare import NOISE_Z, deltas
from edgemed.bench.report.profiles import OFF_BY, profile_checks
from edgemed.bench.report.runs import (
    DEFAULT_TOLERANCE,
    Row,
    Run,
    changes,
    load_runs,
    machine_name,
    merge_rows,
    regressions_of,
)
from edgemed.bench.results import ArtifactResult

SCHEMA = 1
KLD_KEYS = ("kld_median", "kld_p90", "kld_p99", "kld_max", "kld_mean")


def _run_entry(run: Run) -> dict[str, Any]:
    s = run.doc.get("settings") or {}
    rec = run.doc.get("recommendation") or {}
    return {
        "label": run.label, "path": run.source, "created": run.doc.get("created"), "machine": run.machine,
        "machine_name": machine_name(run.fingerprint), "commit": run.commit,
        "commit_dirty": run.fingerprint.get("commit_dirty"), "reference": run.doc.get("reference"),
        "recommendation": {"choice": rec.get("choice"), "why": rec.get("why")},
        "busy_artifacts": [r.name for r in run.results if r.ok and r.busy],
        "settings": {"data": s.get("data") or (s.get("question_selection") or {}).get("source"),
                     **{k: s.get(k) for k in ("split", "questions", "threads", "device", "n_prompt", "n_gen",
                                              "repetitions", "warmup", "wait_policy", "flash_attn")}},
        "profiles": [(p.get("profile") or {}).get("name") for p in run.doc.get("profiles") or []],
        "not_measured": list(run.doc.get("not_measured") or []),  # values that were no finite number
    }


def _machines(runs: list[Run]) -> list[dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for run in runs:
        m = out.setdefault(run.machine, {"id": run.machine, "name": machine_name(run.fingerprint),
                                         "fingerprint": run.fingerprint, "runs": []})
        m["runs"].append(run.label)
    return list(out.values())


def _cell(r: ArtifactResult | None, key: str) -> dict[str, Any] | None:
    """A report cell (:func:`edgemed.bench.metrics.cell`); None where the run did not measure the artifact."""
    return cell(r, key).to_dict() if r is not None else None


def _row_entry(row: Row, runs: list[Run]) -> dict[str, Any]:
    present = [run for run in runs if run.label in row.cells]
    first, last = row.cells[present[0].label], row.cells[present[-1].label]
    return {
        "key": row.key, "sha256": row.key.split(":", 1)[1].split("#")[0] if row.matched_by == "sha256" else None,
        "matched_by": row.matched_by, "name": row.name, "format": row.format,
        "names": {label: r.name for label, r in row.cells.items()},
        "paths": {label: r.path for label, r in row.cells.items()},
        "status": {label: r.status for label, r in row.cells.items()},
        "cells": {run.label: {k: _cell(row.cells.get(run.label), k) for k in report_columns()} for run in runs},
        "kld_distribution": {label: {k: (r.fidelity or {}).get(k) for k in KLD_KEYS}
                             for label, r in row.cells.items() if r.ok and r.fidelity},
        # the first run that has it -> the last
        "metrics": deltas(first, last) if len(present) > 1 else {},
    }


def build_report(paths: list[Path], tolerance: float | None = None) -> dict[str, Any]:
    """The report document of any number of bench runs (bench.json files or their folders)."""
    runs = load_runs(paths)
    rows = merge_rows(runs)
    tol = DEFAULT_TOLERANCE if tolerance is None else tolerance
    compared = changes(runs, rows, tol)
    return {
        "tool": "edgemed report", "schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "tolerance": tol, "tolerance_given": tolerance is not None, "noise_z": NOISE_Z,
        "columns": [{"key": k, "label": METRICS[k].label, "better": METRICS[k].better, "timing": METRICS[k].timing}
                    for k in report_columns()],
        "runs": [_run_entry(r) for r in runs],
        "machines": _machines(runs),
        "artifacts": [_row_entry(row, runs) for row in rows],
        "changes": compared,
        "profile_checks": profile_checks(runs, rows),
        "regressions": regressions_of(compared),
    }


# --- showing it -------------------------------------------------------------------------------------------
def change_index(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """(artifact key, run label) -> that artifact's metric changes in that run against the run before it."""
    return {(it["key"], c["run"]): it["metrics"] for c in doc["changes"] for it in c["artifacts"]}


def cell_text(doc_cell: dict[str, Any] | None, ch: dict[str, Any] | None) -> tuple[str, str]:
    """(text, verdict) of one cell; the change against the earlier run of the same machine appended."""
    if doc_cell is None:
        return "-", ""
    text = doc_cell["text"]
    if ch is None or ch["verdict"] == "not measured":
        return text, ""
    rel = f"{ch['relative']:+.1%}" if ch["relative"] is not None else f"{ch['change']:+.3g}"
    return f"{text} ({rel}, {ch['verdict']}{', busy' if ch['busy'] else ''})", ch["verdict"]


def run_line(run: dict[str, Any]) -> str:
    s = run["settings"]
    dirty = " (uncommitted changes)" if run.get("commit_dirty") else ""
    busy = f"; BUSY while measuring {', '.join(run['busy_artifacts'])}" if run["busy_artifacts"] else ""
    prof = f"; profile {', '.join(run['profiles'])}" if run["profiles"] else ""
    return (f"{run['machine_name']} [{run['machine']}], commit {run['commit'] or '?'}{dirty}, {run['created']}: "
            f"{s.get('questions')} questions ({s.get('data')}), {s.get('threads')} threads on {s.get('device')}, "
            f"pp{s.get('n_prompt')}/tg{s.get('n_gen')} x {s.get('repetitions')}{prof}{busy}")


def machine_line(m: dict[str, Any]) -> str:
    fp = m["fingerprint"]
    return (f"{m['name']}: {fp.get('cpu')}, {fp.get('arch')}, ISA {' '.join(fp.get('isa') or []) or '-'}, "
            f"{fp.get('cores_physical')} cores / {fp.get('cores_logical')} threads, {fp.get('ram_gb')} GB RAM, "
            f"copy bandwidth {fp.get('copy_bandwidth_gbps')} GB/s, {fp.get('os')}, llama.cpp "
            f"{fp.get('llama_cpp_system_info') or '-'}; runs {', '.join(m['runs'])}")


def change_line(c: dict[str, Any]) -> str:
    s = c["summary"]
    what = "same commit" if c["same_commit"] else f"commit {c['commits'][0]} -> {c['commits'][1]}"
    verdict = "no change" if not s["worse"] and not s["better"] else f"{s['worse']} worse, {s['better']} better"
    extra = f"; {s['busy']} measured on a busy machine, not comparable with a quiet run" if s["busy"] else ""
    moved = {**c["settings_changed"], **c["environment_changed"]}
    changed = "; changed " + ", ".join(f"{k}: {a} -> {b}" for k, (a, b) in moved.items()) if moved else ""
    return f"{c['run']} vs {c['against']} ({what}): {verdict} ({s['same']} within noise{extra}){changed}"


def profile_lines(doc: dict[str, Any]) -> list[str]:
    lines = []
    for p in doc["profile_checks"]:
        off = p["off_by_more_than_2x"]
        head = (f"**Profile {p['profile']}** (estimated in {p['estimated_in']}) vs the board itself "
                f"({p['board']}, run {p['board_run']}): "
                + (f"off by more than {OFF_BY:g}x: {'; '.join(off)}" if off else f"every estimate within {OFF_BY:g}x"))
        lines += [head, "", "| artifact | estimate | profile | measured on the board | estimate / measured |",
                  "| --- | --- | ---: | ---: | ---: |"]
        entries = ([("(board)", p["bandwidth"])] if p["bandwidth"] else []) + \
            [(a["name"], e) for a in p["artifacts"] for e in a["ratios"]]
        for name, e in entries:
            ratio = "-" if e["ratio"] is None else f"{e['ratio']:.2f}" + (" **OFF >2x**" if e["off"] else "")
            if e["ratio"] is None and e["off"]:
                ratio = "**wrong**"
            lines.append(f"| {name} | {e['what']} | {_num(e['estimate'])} | {_num(e['measured'])} | {ratio} |")
        lines.append("")
    return lines


def _num(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def table_rows(doc: dict[str, Any]) -> tuple[list[str], list[list[tuple[str, str]]]]:
    """Header and cells ((text, verdict) each) of the one table: artifact, format, then per run its columns."""
    header = ["artifact", "format"] + [f"{run['label']}: {c['label']}" for run in doc["runs"] for c in doc["columns"]]
    idx = change_index(doc)
    rows = []
    for a in doc["artifacts"]:
        cells = [(a["name"], ""), (a["format"], "")]
        for run in doc["runs"]:
            for c in doc["columns"]:
                ch = (idx.get((a["key"], run["label"])) or {}).get(c["key"])
                cells.append(cell_text(a["cells"][run["label"]][c["key"]], ch))
        rows.append(cells)
    return header, rows


def to_markdown(doc: dict[str, Any]) -> str:
    runs, machines = doc["runs"], doc["machines"]
    lines = [f"## edgemed report: {len(runs)} runs on {len(machines)} machines, {len(doc['artifacts'])} artifacts",
             "", "Artifacts are matched by the sha256 of their weights, whatever their path. Runs:", ""]
    lines += [f"- **{r['label']}** `{r['path']}`: {run_line(r)}" for r in runs]
    lines += ["", "Machines:", ""] + [f"- `{m['id']}` {machine_line(m)}" for m in machines] + [""]
    header, rows = table_rows(doc)
    lines.append("| " + " | ".join(header) + " |")
    lines.append("| --- | --- | " + " | ".join("---:" for _ in header[2:]) + " |")
    for cells in rows:
        lines.append("| " + " | ".join(t.replace("|", "\\|") for t, _ in cells) + " |")
    lines += ["", f"Changes, each run against the one before it on the same machine (noise band: the larger of "
                  f"{doc['tolerance']:.0%} of the earlier value and {doc['noise_z']:g} standard errors of the "
                  "difference; busy: measured while other processes used the CPU, not comparable):", ""]
    lines += [f"- {change_line(c)}" for c in doc["changes"]] or ["- none: no machine has two runs"]
    lines += [f"- :x: `{r['artifact']}` {r['message']}" for r in doc["regressions"]]
    lines.append("")
    lines += profile_lines(doc)
    return "\n".join(lines) + "\n"


def rich_report(doc: dict[str, Any]):
    from rich.markup import escape
    from rich.table import Table

    colours = {"worse": "red", "better": "green", "busy": "yellow"}
    table = Table(title=f"edgemed report: {len(doc['runs'])} runs, {len(doc['machines'])} machines",
                  title_justify="left")
    header, rows = table_rows(doc)
    for i, h in enumerate(header):
        table.add_column(h.replace(": ", "\n"), justify="left" if i < 2 else "right", no_wrap=i == 0)
    for cells in rows:
        shown = []
        for text, verdict in cells:
            colour = colours.get(verdict) or ("yellow" if text.endswith("BUSY") else "")
            shown.append(f"[{colour}]{escape(text)}[/{colour}]" if colour else escape(text))
        table.add_row(*shown)
    return table
