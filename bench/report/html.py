"""``report.html``: the page of ``edgemed report RUN...`` (runs, machines, the one table with a column group per
run, the changes with their noise bands, profile estimates against the board, plots), built from report.json's
document alone, with the same shell as bench.html (:mod:`edgemed.bench.render.html`)."""

from __future__ import annotations

from html import escape
from typing import Any

from edgemed.bench.render.html import kv, page, sortable_table, td
from edgemed.bench.render.svg import Point, kld_svg, scatter_svg, style_of
from edgemed.bench.report.document import change_index, change_line, machine_line, run_line

MAX_PLOTS = 6


def _cell_td(c: dict[str, Any] | None, ch: dict[str, Any] | None) -> dict[str, Any]:
    if c is None:
        return td('<span class="muted">-</span>', None, "num", "not in this run")
    if c.get("failed"):
        return td('<span class="failed">FAILED</span>', None, "num")
    text = escape(c["text"].removesuffix(" BUSY"))
    cls = "num"
    if c.get("busy"):
        text += '<span class="badge">BUSY</span>'
        cls += " busy"
    title = ""
    if ch is not None and ch["verdict"] != "not measured":
        rel = f"{ch['relative']:+.1%}" if ch["relative"] is not None else f"{ch['change']:+.3g}"
        text += f'<br><span class="ci">{rel} {escape(ch["verdict"])}{" (busy)" if ch["busy"] else ""}</span>'
        cls += f" {ch['verdict']}" if ch["verdict"] in ("worse", "better") else ""
        title = f"before {ch['before']:.6g}, after {ch['after']:.6g}, noise band ±{ch['band']:.4g}"
    return td(text, c.get("value"), cls, title)


def merged_table(doc: dict[str, Any]) -> str:
    idx = change_index(doc)
    runs, cols = doc["runs"], doc["columns"]
    header = [("name", "artifact", "text"), ("format", "format", "text")] + \
        [(f"{r['label']}.{c['key']}", c["label"], "num") for r in runs for c in cols]
    groups = [("", 2)] + [(f"{r['label']}: {r['machine_name']} @ {r['commit'] or '?'}", len(cols)) for r in runs]
    rows = []
    for a in doc["artifacts"]:
        sha = a.get("sha256")
        title = f"weights sha256 {sha}" if sha else "no sha256 recorded: matched by name and format"
        others = sorted(set(a["names"].values()) - {a["name"]})
        title += f"; also named {', '.join(others)}" if others else ""
        row = [td(escape(a["name"]), a["name"], "", title), td(escape(a["format"]), a["format"])]
        for r in runs:
            ch_all = idx.get((a["key"], r["label"])) or {}
            row += [_cell_td(a["cells"][r["label"]][c["key"]], ch_all.get(c["key"])) for c in cols]
        rows.append(row)
    return sortable_table("results", header, rows, groups)


def _runs_and_machines(doc: dict[str, Any]) -> str:
    runs = "".join(f"<li><strong>{r['label']}</strong> <code>{escape(r['path'])}</code>: {escape(run_line(r))}"
                   + (f"<br><span class=\"small\">recommendation: {escape(str(r['recommendation']['why']))}</span>"
                      if r["recommendation"].get("why") else "") + "</li>" for r in doc["runs"])
    machines = "".join(f"<li><code>{m['id']}</code> {escape(machine_line(m))}</li>" for m in doc["machines"])
    return f"<h2>Runs</h2><ul>{runs}</ul><h2>Machines</h2><ul>{machines}</ul>"


def _changes(doc: dict[str, Any]) -> str:
    items = "".join(f"<li>{escape(change_line(c))}</li>" for c in doc["changes"]) or \
        "<li>none: no machine has two runs</li>"
    regs = "".join(f'<li class="failed"><code>{escape(r["artifact"])}</code> {escape(r["message"])}</li>'
                   for r in doc["regressions"])
    return (f"<h2>Changes on the same machine</h2><p class=\"muted small\">Each run against the one before it on the "
            f"same machine. Noise band: the larger of {doc['tolerance']:.0%} of the earlier value and "
            f"{doc['noise_z']:g} standard errors of the difference; a change measured on a busy machine is marked "
            f"busy: not comparable with a quiet run.</p><ul>{items}</ul>"
            + (f"<h3>Regressions</h3><ul>{regs}</ul>" if regs else ""))


def _profiles(doc: dict[str, Any]) -> str:
    parts = []
    for p in doc["profile_checks"]:
        off = p["off_by_more_than_2x"]
        head = (f"<h3>Profile {escape(str(p['profile']))} (estimated in {p['estimated_in']}) vs the board "
                f"({escape(str(p['board']))}, run {p['board_run']})</h3><p>"
                + (f'<span class="failed">off by more than 2x: {escape("; ".join(off))}</span>' if off else
                   "every estimate within 2x") + "</p>")
        entries = ([("(board)", p["bandwidth"])] if p["bandwidth"] else []) + \
            [(a["name"], e) for a in p["artifacts"] for e in a["ratios"]]
        rows = []
        for name, e in entries:
            ratio = "" if e["ratio"] is None else f"{e['ratio']:.2f}"
            rows.append([td(escape(name), name), td(escape(e["what"]), e["what"]),
                         td(escape(_fmt(e["estimate"])), _num(e["estimate"]), "num"),
                         td(escape(_fmt(e["measured"])), _num(e["measured"]), "num"),
                         td(ratio + (' <span class="badge">OFF &gt;2x</span>' if e["off"] else ""), e["ratio"],
                            "num worse" if e["off"] else "num")])
        header = [("artifact", "artifact", "text"), ("what", "estimate", "text"), ("est", "profile", "num"),
                  ("meas", "measured on the board", "num"), ("ratio", "estimate / measured", "num")]
        parts.append(head + sortable_table(f"profile-{p['profile']}-{p['board_run']}", header, rows))
    return ("<h2>Profile estimates vs the board</h2>" + "".join(parts)) if parts else ""


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) else None


def _plots(doc: dict[str, Any]) -> str:
    svgs = []
    styles = {a["key"]: style_of(i) for i, a in enumerate(doc["artifacts"])}
    for r in doc["runs"][:MAX_PLOTS]:
        pts = []
        for a in doc["artifacts"]:
            cells = a["cells"][r["label"]]
            acc, lat = cells.get("accuracy") or {}, cells.get("answer_p95_ms") or {}
            if acc.get("value") is None or lat.get("value") is None:
                continue
            lo, hi = (acc.get("interval") or [None, None])
            pts.append(Point(a["name"], lat["value"], acc["value"], *styles[a["key"]], True, lo, hi,
                             f"{a['name']}: {acc['text']}, p95 {lat['text']}"))
        svgs.append(scatter_svg(pts, "answer latency p95 (ms)", "accuracy (95% interval)",
                                f"{r['label']}: accuracy vs latency"))
        kld = [(a["name"], a["kld_distribution"][r["label"]], styles[a["key"]][0]) for a in doc["artifacts"]
               if r["label"] in a.get("kld_distribution", {})]
        svgs.append(kld_svg(kld).replace("KL(reference || artifact) per token", f"{r['label']}: KLD per token", 1))
    svgs = [s for s in svgs if s]
    return f'<h2>Plots per run</h2><div class="plots">{"".join(svgs)}</div>' if svgs else ""


def report_html(doc: dict[str, Any]) -> str:
    """The page of a report document (:func:`edgemed.bench.report.document.build_report`)."""
    intro = (f"<h1>edgemed report</h1><p class=\"muted\">{len(doc['runs'])} runs on {len(doc['machines'])} machines, "
             f"{len(doc['artifacts'])} artifacts matched by the sha256 of their weights; {escape(doc['created'])}. "
             "Click a header to sort.</p>")
    legend = kv([("cell", "value [95% interval] or ±stdev; BUSY: measured while other processes used the CPU"),
                 ("change", "against the run before on the same machine: within noise = same")])
    return page("edgemed report", [intro, _runs_and_machines(doc), "<h2>Results</h2>", legend, merged_table(doc),
                                   _changes(doc), _profiles(doc), _plots(doc)])
