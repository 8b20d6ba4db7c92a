"""bench.html's selective-prediction section: each artifact's risk-coverage curve (error among the questions it
answers, most confident first, against the share it answers) as hand-written inline SVG, its operating point at
the calibrated threshold with the error's 95% interval, the target error, and a table of the numbers.

Quantization moves confidence as well as accuracy: two artifacts of equal accuracy can rank their answers very
differently, and the curve (and its area, AURC: lower is better) shows it."""

from __future__ import annotations

from html import escape
from typing import Any

from edgemed.bench.render.svg import Axis, style_of, ticks
from edgemed.bench.results import ArtifactResult


def _fmt(v: Any, spec: str) -> str:
    return format(v, spec) if isinstance(v, int | float) else "-"


def risk_coverage_svg(rows: list[tuple[str, dict[str, Any], str]], width: int = 620, height: int = 380) -> str:
    """Per artifact (name, bench selective numbers, colour): its curve, its operating point with the error's
    interval, and the target error as a dashed line."""
    rows = [r for r in rows if r[1].get("risk_coverage")]
    if not rows:
        return ""
    left, top, bottom, right = 52.0, 30.0, height - 44.0, width - 170.0
    worst = max(p["risk"] for _, e, _ in rows for p in e["risk_coverage"])
    targets = {e.get("abstain_target_error") for _, e, _ in rows} - {None}
    hi = min(1.0, max([worst, *targets, 0.05]) * 1.1)
    x, y = Axis(0.0, 1.0, False, left, right), Axis(0.0, hi, False, bottom, top)
    parts = [f'<svg class="plot" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
             'aria-label="risk-coverage curves">',
             f'<text class="title" x="{(left + right) / 2}" y="16" text-anchor="middle">Risk-coverage: error among '
             'answered questions, most confident first</text>']
    for t in ticks(0.0, 1.0, False):
        parts.append(f'<line class="grid" x1="{x.px(t):.1f}" y1="{top}" x2="{x.px(t):.1f}" y2="{bottom}"/>'
                     f'<text class="tick" x="{x.px(t):.1f}" y="{bottom + 14}" text-anchor="middle">{t:.0%}</text>')
    for t in ticks(0.0, hi, False):
        parts.append(f'<line class="grid" x1="{left}" y1="{y.px(t):.1f}" x2="{right}" y2="{y.px(t):.1f}"/>'
                     f'<text class="tick" x="{left - 4}" y="{y.px(t) + 3:.1f}" text-anchor="end">{t:.2g}</text>')
    parts.append(f'<line class="axis" x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}"/>'
                 f'<line class="axis" x1="{left}" y1="{top}" x2="{left}" y2="{bottom}"/>')
    for target in sorted(targets):
        parts.append(f'<line x1="{left}" y1="{y.px(target):.1f}" x2="{right}" y2="{y.px(target):.1f}" stroke="#555" '
                     f'stroke-dasharray="5,4"><title>target error {target:g}</title></line>'
                     f'<text class="tick" x="{right - 2}" y="{y.px(target) - 4:.1f}" text-anchor="end">target error '
                     f'{target:g}</text>')
    for i, (name, e, colour) in enumerate(rows):
        points = " ".join(f"{x.px(p['coverage']):.1f},{y.px(p['risk']):.1f}" for p in e["risk_coverage"])
        tip = escape(f"{name}: AURC {_fmt(e.get('aurc'), '.4f')} (best possible {_fmt(e.get('aurc_optimal'), '.4f')})")
        parts.append(f'<g class="rc"><title>{tip}</title><polyline points="{points}" fill="none" stroke="{colour}" '
                     'stroke-width="2"/>')
        share, err = e.get("answered_share"), e.get("answered_error")
        if e.get("abstain_threshold") is not None and share and err is not None:
            cx, cy = x.px(share), y.px(err)
            lo, up = e.get("answered_error_low"), e.get("answered_error_high")
            if lo is not None and up is not None:
                parts.append(f'<line class="errbar" x1="{cx:.1f}" y1="{y.px(lo):.1f}" x2="{cx:.1f}" '
                             f'y2="{y.px(min(up, hi)):.1f}" stroke="{colour}"/>')
            parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="4.5" fill="{colour}" stroke="#000"><title>'
                         f'{escape(name)} at threshold p >= {e["abstain_threshold"]:.3f}: answers {share:.0%}, error '
                         f'{err:.3f} [{_fmt(lo, ".3f")}-{_fmt(up, ".3f")}]</title></circle>')
        ly = top + 8 + 16 * i
        parts.append(f'<line x1="{right + 12}" y1="{ly}" x2="{right + 30}" y2="{ly}" stroke="{colour}" '
                     f'stroke-width="2"/><text class="label" x="{right + 34}" y="{ly + 4}">{escape(name)}</text></g>')
    parts.append(f'<text class="axlabel" x="{(left + right) / 2}" y="{height - 8}" text-anchor="middle">coverage '
                 '(share of questions answered)</text><text class="axlabel" transform="rotate(-90)" '
                 f'x="{-(top + bottom) / 2}" y="14" text-anchor="middle">error among answered</text></svg>')
    return "".join(parts)


def selective_html(results: list[ArtifactResult], sortable_table, td) -> str:
    """The section: the chart and a row per artifact (AURC, threshold, answered share, error with its interval);
    `sortable_table` and `td` are bench.html's table builders (passed in: this module is imported by that one)."""

    rows = [(r.name, r.extra, style_of(i)[0]) for i, r in enumerate(results) if r.ok and r.extra.get("risk_coverage")]
    svg = risk_coverage_svg(rows)
    if not svg:
        return ""
    header = [("name", "artifact", "text"), ("aurc", "AURC", "num"), ("opt", "best AURC", "num"),
              ("t", "threshold p", "num"), ("share", "answered", "num"), ("err", "error answered [95%]", "num")]
    body = []
    for name, e, _ in rows:
        err = e.get("answered_error")
        err_text = "-" if err is None else (f"{err:.3f} [{_fmt(e.get('answered_error_low'), '.3f')}-"
                                            f"{_fmt(e.get('answered_error_high'), '.3f')}]")
        body.append([td(escape(name), name), td(_fmt(e.get("aurc"), ".4f"), e.get("aurc"), "num"),
                     td(_fmt(e.get("aurc_optimal"), ".4f"), e.get("aurc_optimal"), "num"),
                     td("none certified" if e.get("abstain_threshold") is None else _fmt(e["abstain_threshold"], ".3f"),
                        e.get("abstain_threshold"), "num"),
                     td(_fmt(e.get("answered_share"), ".0%"), e.get("answered_share"), "num"),
                     td(escape(err_text), err, "num")])
    rule = next((e for _, e, _ in rows), {})
    asked = (f"the lowest threshold whose error among answered questions is certified at most "
             f"{rule.get('abstain_target_error'):g} (95%)" if rule.get("abstain_rule", "target_error") == "target_error"
             and rule.get("abstain_target_error") is not None else
             f"the threshold answering {rule.get('abstain_coverage_asked')} of the questions")
    return ("<h2>Selective prediction</h2><p class=\"muted small\">Each curve: the error among the questions an "
            "artifact answers when it answers only its most confident ones, against the share it answers (lower is "
            f"better; AURC is the area under it). The dot: the artifact at its abstention threshold ({escape(asked)}"
            "; calibrated on these questions), with the 95% interval of its error. <code>edgemed serve --calibration "
            "bench.json</code> reads the threshold.</p>"
            f'<div class="plots">{svg}</div>{sortable_table("selective", header, body)}')
