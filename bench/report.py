"""``edgemed report OLD.json NEW.json``: the comparison document and how it is shown (console table, markdown);
the pairing and the numbers come from :mod:`edgemed.bench.compare_runs`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgemed.bench.compare_runs import deltas, load_run, pair, regressions
from edgemed.bench.results import METRICS, TABLE_COLUMNS, format_value

ENV_KEYS = ("cpu", "cores_physical", "ram_gb", "os", "accelerator", "commit")


def compare_bench(before: Path, after: Path, tolerance: float | None = None) -> dict[str, Any]:
    """The comparison document: one entry per artifact (matched by name, then format) with every metric's delta."""
    doc_b, res_b = load_run(before)
    doc_a, res_a = load_run(after)
    rows = []
    for b, a in pair(res_b, res_a):
        rows.append({
            "name": (a or b).name,
            "format": (a or b).format,
            "before": None if b is None else {"name": b.name, "status": b.status},
            "after": None if a is None else {"name": a.name, "status": a.status},
            "metrics": deltas(b, a),
        })
    env_b, env_a = doc_b.get("environment", {}), doc_a.get("environment", {})
    set_b, set_a = doc_b.get("settings", {}), doc_a.get("settings", {})
    out: dict[str, Any] = {
        "before": str(before), "after": str(after),
        "created": {"before": doc_b.get("created"), "after": doc_a.get("created")},
        "environment_changed": {k: [env_b.get(k), env_a.get(k)] for k in ENV_KEYS if env_b.get(k) != env_a.get(k)},
        "settings_changed": {k: [set_b.get(k), set_a.get(k)] for k in sorted(set(set_b) | set(set_a))
                             if set_b.get(k) != set_a.get(k)},
        "artifacts": rows,
    }
    if tolerance is not None:
        checks = regressions(res_b, res_a, tolerance, f"baseline {before}")
        out["tolerance"] = tolerance
        out["checks"] = [c.to_dict() for c in checks]
        out["regressions"] = [c.to_dict() for c in checks if not c.passed]
    return out


def _delta_cell(key: str, d: dict[str, Any]) -> str:
    if d["after"] is None:
        return "-" if d["before"] is None else f"[dim]{format_value(key, d['before'])} -> -[/dim]"
    text = format_value(key, d["after"])
    if d["relative"] is None:
        return text
    better = METRICS[key].better
    rel = d["relative"]
    good = (rel < 0) if better == "min" else (rel > 0) if better == "max" else None
    colour = "" if good is None or abs(rel) < 0.02 else ("green" if good else "red")
    shown = f"{text} ({rel:+.0%})"
    return f"[{colour}]{shown}[/{colour}]" if colour else shown


def rich_report(doc: dict[str, Any]):
    from rich.table import Table

    table = Table(title=f"edgemed report: {doc['before']} -> {doc['after']}", title_justify="left")
    table.add_column("artifact", no_wrap=True)
    table.add_column("format")
    for key in TABLE_COLUMNS:
        table.add_column(METRICS[key].label, justify="right")
    for row in doc["artifacts"]:
        name = row["name"]
        if row["before"] is None:
            name += " (new)"
        elif row["after"] is None:
            name += " (gone)"
        elif row["after"]["status"] != "ok":
            name += " (FAILED now)"
        table.add_row(name, row["format"], *[_delta_cell(k, row["metrics"][k]) for k in TABLE_COLUMNS])
    return table


def to_markdown(doc: dict[str, Any]) -> str:
    lines = [f"## edgemed report: `{doc['before']}` -> `{doc['after']}`", ""]
    keys = ("accuracy", "answer_p95_ms", "ttft_ms", "decode_tps", "peak_rss_mb", "size_mb")
    lines.append("| artifact | " + " | ".join(METRICS[k].label for k in keys) + " |")
    lines.append("| --- | " + " | ".join("---:" for _ in keys) + " |")
    for row in doc["artifacts"]:
        cells = []
        for k in keys:
            d = row["metrics"][k]
            cell = format_value(k, d["after"])
            if d["relative"] is not None:
                cell += f" ({d['relative']:+.1%})"
            cells.append(cell)
        lines.append(f"| {row['name']} | " + " | ".join(cells) + " |")
    for key, (b, a) in {**doc["settings_changed"], **doc["environment_changed"]}.items():
        lines.append(f"- changed {key}: {b} -> {a}")
    for c in doc.get("regressions", []):
        lines.append(f"- :x: `{c['artifact']}` {c['message']}")
    return "\n".join(lines) + "\n"
