"""``bench.html`` and ``report.html``: one self-contained page each, readable with no network.

Inline CSS and JS, plots as inline SVG (:mod:`edgemed.bench.render.svg`), system fonts only, and a
Content-Security-Policy that forbids the browser any load at all (``default-src 'none'``). The tables sort by a
click on a header; ``#sort=KEY`` or ``#sort=KEY:desc`` in the address sorts on load (by clicking that header).
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

from edgemed.bench.metrics import METRICS, TABLE_COLUMNS, format_value
from edgemed.bench.render.cells import cell
from edgemed.bench.render.selective import selective_html
from edgemed.bench.render.svg import Point, agreement_svg, kld_svg, scatter_svg, style_of
from edgemed.bench.results import ArtifactResult, tail_latency

CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"
CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif;margin:24px;
color:#1a1a1a;max-width:1500px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
.muted{color:#555}.small{font-size:12px}code{font-size:12px;background:#f4f4f4;padding:1px 3px}
table{border-collapse:collapse;margin:6px 0;font-variant-numeric:tabular-nums}
th,td{border:1px solid #d6d6d6;padding:3px 7px;vertical-align:top}td:first-child{white-space:nowrap}
th{background:#f2f2f2;font-weight:600;white-space:nowrap}td.num{text-align:right;white-space:nowrap}
th[data-col]{cursor:pointer;user-select:none}th[data-col]:after{content:" \\2195";color:#999}
th[aria-sort=ascending]:after{content:" \\2191";color:#000}th[aria-sort=descending]:after{content:" \\2193";color:#000}
td.best{font-weight:700}.ci{color:#666;font-size:12px}.busy{background:#fff3c4}
.badge{display:inline-block;font-size:11px;font-weight:700;padding:0 4px;border-radius:3px;background:#E69F00;
color:#000;margin-left:3px}.worse{background:#f9d3c2}.better{background:#cdebe0}.failed{color:#b00020}
.plots{display:flex;flex-wrap:wrap;gap:18px}svg.plot{background:#fff;border:1px solid #e2e2e2}
svg .axis{stroke:#333}svg .grid{stroke:#ececec}svg .tick{font-size:10px;fill:#444}
svg .axlabel{font-size:11px;fill:#222}svg .title{font-size:12px;font-weight:600;fill:#111}
svg .label{font-size:11px;fill:#111}svg .leader{stroke:#999;stroke-width:.7}svg .errbar{stroke-width:1.5;opacity:.7}
svg .cell{font-size:10px;fill:#000}svg g.q:hover rect{stroke:#000;stroke-width:1.5}
dl.kv{display:grid;grid-template-columns:max-content auto;gap:2px 14px;margin:4px 0}dl.kv dt{color:#555}
dl.kv dd{margin:0}.scroll{overflow-x:auto}
"""
JS = """
function sortBy(th){
  const table=th.closest('table'), body=table.tBodies[0], col=+th.dataset.col, text=th.dataset.type==='text';
  const dir=th.getAttribute('aria-sort')==='ascending'?'descending':'ascending';
  table.querySelectorAll('th[data-col]').forEach(h=>h.removeAttribute('aria-sort'));
  th.setAttribute('aria-sort',dir);
  const sign=dir==='ascending'?1:-1;
  const rows=[...body.rows];
  rows.sort((a,b)=>{
    const x=a.cells[col].dataset.v, y=b.cells[col].dataset.v;
    if(x===undefined||x==='')return (y===undefined||y==='')?0:1;
    if(y===undefined||y==='')return -1;
    return sign*(text?x.localeCompare(y):(+x)-(+y));
  });
  rows.forEach(r=>body.appendChild(r));
}
document.querySelectorAll('th[data-col]').forEach(th=>th.addEventListener('click',()=>sortBy(th)));
function fromHash(){
  const m=location.hash.match(/sort=([\\w.:-]+?)(?::(asc|desc))?$/);
  if(!m)return;
  const th=document.querySelector('th[data-key="'+m[1]+'"]');
  if(!th)return;
  th.click();
  if(m[2]==='desc'&&th.getAttribute('aria-sort')!=='descending')th.click();
}
function checkLabels(){
  document.querySelectorAll('svg.plot').forEach(svg=>{
    const boxes=[...svg.querySelectorAll('text.label')].map(t=>t.getBBox());
    let n=0;
    for(let i=0;i<boxes.length;i++)for(let j=i+1;j<boxes.length;j++){
      const a=boxes[i],b=boxes[j];
      if(a.x<b.x+b.width&&b.x<a.x+a.width&&a.y<b.y+b.height&&b.y<a.y+a.height)n++;
    }
    svg.dataset.overlaps=n;
  });
}
fromHash();window.addEventListener('hashchange',fromHash);checkLabels();
document.documentElement.dataset.ready='1';
"""


def page(title: str, body: list[str]) -> str:
    """The whole document: CSP, inline style, body sections, inline script."""
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{escape(title)}</title><style>{CSS}</style></head><body>\n"
            + "\n".join(b for b in body if b) + f"\n<script>{JS}</script></body></html>\n")


def td(text: str, sort: Any = None, cls: str = "", title: str = "") -> dict[str, Any]:
    return {"text": text, "sort": sort, "cls": cls, "title": title}


def sortable_table(table_id: str, header: list[tuple[str, str, str]], rows: list[list[dict[str, Any]]],
                   groups: list[tuple[str, int]] | None = None) -> str:
    """header: (key, label, 'num'|'text'); each row's cells from :func:`td` (text is already HTML)."""
    out = [f'<div class="scroll"><table id="{table_id}" class="sortable"><thead>']
    if groups:
        out.append("<tr>" + "".join(f'<th colspan="{n}">{escape(g)}</th>' for g, n in groups) + "</tr>")
    out.append("<tr>" + "".join(f'<th data-col="{i}" data-key="{escape(k)}" data-type="{t}">{escape(label)}</th>'
                                for i, (k, label, t) in enumerate(header)) + "</tr></thead><tbody>")
    for row in rows:
        cells = []
        for c in row:
            sort = "" if c["sort"] is None or (isinstance(c["sort"], float) and math.isnan(c["sort"])) else c["sort"]
            attrs = f' data-v="{escape(str(sort))}"' + (f' class="{c["cls"]}"' if c["cls"] else "")
            attrs += f' title="{escape(c["title"])}"' if c["title"] else ""
            cells.append(f"<td{attrs}>{c['text']}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def kv(items: list[tuple[str, Any]]) -> str:
    return '<dl class="kv">' + "".join(f"<dt>{escape(k)}</dt><dd>{escape(str(v))}</dd>" for k, v in items
                                       if v not in (None, "", [])) + "</dl>"


# --- bench.html -------------------------------------------------------------------------------------------
def _metric_cell(r: ArtifactResult, key: str, best: dict[str, float]) -> dict[str, Any]:
    """A bench.html cell from the one cell rule (:func:`edgemed.bench.metrics.cell`): the spread in grey, the BUSY
    mark as a badge, the value sorted on and marked where it is the column's best."""
    c = cell(r, key)
    text = escape(c.shown) + (f' <span class="ci">{escape(c.spread.strip())}</span>' if c.spread else "")
    cls = "num" + (" best" if key in best and c.value == best[key] else "") + (" busy" if c.busy else "")
    title = ""
    if c.busy:
        text += '<span class="badge">BUSY</span>'
        title = f"measured while other processes used the CPU ({r.machine_load.get('reason') or 'busy'})"
    return td(text, c.value, cls, title)


def bench_table(results: list[ArtifactResult], ref: str | None) -> str:
    from edgemed.bench.render.tables import best_per_column

    best = best_per_column(results)
    header = [("name", "artifact", "text"), ("format", "format", "text")] + \
        [(k, METRICS[k].label, "num") for k in TABLE_COLUMNS]
    rows = []
    for r in results:
        name = escape(r.name) + (' <span class="muted">(ref)</span>' if r.name == ref else "")
        first = [td(name, r.name), td(escape(r.format), r.format)]
        if not r.ok:
            msg = r.failure.message if r.failure else "failed"
            rows.append(first + [td(f'<span class="failed">FAILED</span> {escape(msg)}', None)] +
                        [td("", None) for _ in TABLE_COLUMNS[1:]])
            continue
        rows.append(first + [_metric_cell(r, k, best) for k in TABLE_COLUMNS])
    return sortable_table("results", header, rows)


def recommendation_html(rec: dict[str, Any] | None) -> str:
    if not rec:
        return ""
    items = "".join(f"<li><code>{escape(n)}</code>: {escape('; '.join(why))}</li>"
                    for n, why in rec.get("rejected", {}).items())
    choice = f"<strong>{escape(rec['choice'])}</strong>" if rec.get("choice") else "<strong>none</strong>"
    return (f'<h2>Recommendation</h2><p id="recommendation">{choice}: {escape(rec.get("why", ""))}</p>'
            f"<p class=\"muted small\">Every other artifact, with the number that decided:</p><ul>{items}</ul>")


def pareto_plots(results: list[ArtifactResult], front: list[str]) -> str:
    ok = [r for r in results if r.ok]
    colour = {r.name: style_of(i) for i, r in enumerate(results)}
    acc = [Point(r.name, lat, r.accuracy.accuracy, *colour[r.name], r.name in front, r.accuracy.ci_low,
                 r.accuracy.ci_high, f"{r.name}: accuracy {r.accuracy.accuracy:.3f}, {lat:.1f} ms")
           for r in ok if r.accuracy.accuracy is not None and (lat := tail_latency(r.latency.answer_ms))]
    kld = []
    for r in ok:
        f, rss = r.fidelity or {}, r.memory.peak_rss_bytes
        if f.get("kld_mean") is None or not rss:
            continue
        lo, hi = (f.get("kld_ci") or [None, None])[:2]
        floor = f["kld_mean"] <= 0
        kld.append(Point(r.name, rss / 1e6, max(f["kld_mean"], 1e-7), *colour[r.name], r.name in front,
                         None if floor else lo, None if floor else hi,
                         f"{r.name}: KLD {f['kld_mean']:.5f}{' (drawn at the axis floor)' if floor else ''}, "
                         f"peak RSS {rss / 1e6:.0f} MB"))
    svgs = [scatter_svg(acc, "answer latency, p95 (ms; max below 20 samples): lower is better",
                        "accuracy (95% interval)", "accuracy vs latency"),
            scatter_svg(kld, "peak RSS while serving (MB): lower is better",
                        "mean KL divergence (log)", "fidelity vs memory", ylog=True)]
    if not any(svgs):
        return ""
    return ("<h2>Pareto plots</h2><p class=\"muted small\">Filled markers (bold labels): the Pareto front over "
            "KL divergence (else accuracy), latency and memory; hollow: dominated. Hover a marker for its numbers."
            f'</p><div class="plots">{"".join(svgs)}</div>')


def agreement_html(doc: dict[str, Any], results: list[ArtifactResult]) -> str:
    ref = next((r for r in results if r.name == doc.get("reference") and r.ok and r.predictions), None)
    others = [r for r in results if r.ok and r.predictions and r is not ref]
    if ref is None or not others:
        return ""
    texts = {str(q.get("id")): str(q.get("question", "")) for q in doc.get("questions") or []}
    ref_preds = {str(p["id"]): p for p in ref.predictions}
    svg, n = agreement_svg(ref.name, ref_preds, [(r.name, {str(p["id"]): p for p in r.predictions})
                                                 for r in others], texts)
    agree = ", ".join(f"{r.name} {format_value('agreement', r.accuracy.agreement)}" for r in others)
    legend = ('<span style="background:#009E73;padding:0 6px"></span> now right, '
              '<span style="background:#D55E00;padding:0 6px"></span> now wrong, '
              '<span style="background:#E69F00;padding:0 6px"></span> another wrong letter')
    body = svg or "<p>No answer differs from the reference's.</p>"
    return (f"<h2>Agreement with the reference ({escape(ref.name)})</h2><p>{n} of {len(ref_preds)} questions "
            f"flip in at least one artifact (answer agreement: {escape(agree)}). Each column is one such question; "
            f"the letter is the artifact's answer where it differs; hover for the question. {legend}.</p>"
            f'<div class="scroll">{body}</div>')


def kld_html(results: list[ArtifactResult]) -> str:
    rows = [(r.name, r.fidelity, style_of(i)[0]) for i, r in enumerate(results) if r.ok and r.fidelity]
    svg = kld_svg(rows)
    if not svg:
        return ""
    keys = ("kld_mean", "kld_median", "kld_p90", "kld_p99", "kld_max")
    header = [("name", "artifact", "text")] + [(k, k.replace("kld_", "KLD "), "num") for k in keys]
    table = sortable_table("kld", header, [[td(escape(n), n)] + [td(f"{f.get(k):.4g}" if f.get(k) is not None
                                                                    else "-", f.get(k), "num") for k in keys]
                                           for n, f, _ in rows])
    return f"<h2>KL divergence distribution</h2><div class=\"plots\">{svg}</div>{table}"


def machine_html(doc: dict[str, Any], results: list[ArtifactResult]) -> str:
    env, s = doc.get("environment") or {}, doc.get("settings") or {}
    bw = ((doc.get("machine") or {}).get("copy_bandwidth") or {}).get("gbps")
    sysinfo = next((r.runtime_info.get("system_info") for r in results if r.runtime_info.get("system_info")), None)
    machine = kv([("CPU", env.get("cpu")), ("board", env.get("board")), ("emulated", env.get("emulated")),
                  ("ISA", " ".join(env.get("cpu_features") or [])),
                  ("cores", f"{env.get('cores_physical')} physical, {env.get('cores_logical')} logical"),
                  ("RAM", f"{env.get('ram_gb')} GB"), ("copy bandwidth", f"{bw:.1f} GB/s" if bw else None),
                  ("llama.cpp", sysinfo), ("OS", env.get("os")), ("accelerator", env.get("accelerator")),
                  ("commit", f"{env.get('commit')}{' (uncommitted changes)' if env.get('commit_dirty') else ''}")])
    settings = kv([(k, s.get(k)) for k in ("data", "split", "questions", "question_selection", "threads", "device",
                                           "n_prompt", "n_gen", "repetitions", "warmup", "latency_prompts",
                                           "wait_policy", "flash_attn", "fidelity")])
    busy = "".join(f"<li><code>{escape(r.name)}</code>: {escape(str(r.machine_load.get('reason')))}</li>"
                   for r in results if r.ok and r.busy)
    busy_html = (f'<p class="busy"><strong>Busy machine</strong>: other processes used the CPU while these were '
                 f"measured; their timings are not comparable with a quiet run:</p><ul>{busy}</ul>" if busy else
                 "<p>No artifact was measured on a busy machine.</p>")
    return f"<h2>Machine, settings, busy flags</h2>{machine}<h3>Settings</h3>{settings}{busy_html}"


def checks_html(doc: dict[str, Any]) -> str:
    """Every check that did not pass or was inconclusive: its interval, verdict and reruns."""
    from edgemed.bench.render.tables import check_interval, check_outcome

    checks = doc.get("checks") or []
    if not checks:
        return ""
    broken = [c for c in checks if not c.get("passed")]
    shown = [c for c in checks if not c.get("passed") or c.get("verdict") == "inconclusive"]
    items = "".join(f"<li class=\"{'failed' if not c.get('passed') else 'inconclusive'}\"><code>"
                    f"{escape(c['artifact'])}</code> {escape(c['key'])}: {escape(c['message'])}; 95% interval "
                    f"{escape(check_interval(c))}; {escape(check_outcome(c))} ({escape(str(c.get('source')))})</li>"
                    for c in shown)
    return (f"<h2>Checks</h2><p>{len(checks) - len(broken)} of {len(checks)} hold; each budget is decided on its "
            "measured 95% interval (inconclusive: it straddles the limit, or a timing was measured busy).</p>"
            + (f"<ul>{items}</ul>" if items else ""))


def bench_html(doc: dict[str, Any], results: list[ArtifactResult]) -> str:
    """The page of one bench run (bench.json's document and its results)."""
    s = doc.get("settings") or {}
    data = s.get("data") or (s.get("question_selection") or {}).get("source")
    intro = (f"<h1>edgemed bench</h1><p class=\"muted\">{len(results)} artifacts, {s.get('questions')} questions "
             f"({escape(str(data))}), {s.get('threads')} threads on {escape(str(s.get('device')))}, "
             f"pp{s.get('n_prompt')}/tg{s.get('n_gen')} x {s.get('repetitions')}; {escape(str(doc.get('created')))}."
             " Best value per column in bold; click a header to sort.</p>")
    left = "".join(f"<li><code>{escape(name)}</code>: {escape(why)}</li>"
                   for name, why in (doc.get("left_out") or {}).items())
    if left:
        intro += f"<p><strong>Not measured here</strong> (exported, but left out of this bench):</p><ul>{left}</ul>"
    front = doc.get("pareto_front") or []
    return page("edgemed bench", [intro, "<h2>Results</h2>", bench_table(results, doc.get("reference")),
                                  recommendation_html(doc.get("recommendation")), checks_html(doc),
                                  pareto_plots(results, front), agreement_html(doc, results), kld_html(results),
                                  selective_html(results, sortable_table, td), machine_html(doc, results)])


def write_bench_html(doc: dict[str, Any], results: list[ArtifactResult], path) -> tuple[Any, str]:
    """Write bench.html atomically: (path, '') or (None, why it was skipped); a page never costs the results."""
    from pathlib import Path

    from edgemed.fsutil import atomic_write_text, environment_error

    try:
        return atomic_write_text(Path(path), bench_html(doc, results)), ""
    except Exception as exc:  # noqa: BLE001 - the numbers are in bench.json whatever happens here
        if environment_error(exc) is not None:
            raise  # a full disk is not a page problem: the CLI names it
        return None, f"bench.html failed ({type(exc).__name__}: {exc}); the numbers are in bench.json"
