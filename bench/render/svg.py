"""Inline SVG charts for bench.html and report.html, written by hand (no plotting library, no network).

- :func:`scatter_svg`: a scatter plot with error bars, log or linear axes, and labels placed so that none overlaps
  another label or a marker; a label that finds no free place goes to a column beside the plot with a leader line.
- :func:`kld_svg`: the KL-divergence distribution per artifact (median, p90, p99, max, mean) on a log axis.
- :func:`agreement_svg`: per question, which answers differ from the reference's (question text on hover).

Colours are the Okabe-Ito palette (safe for the common colour-vision deficiencies); past eight artifacts the
marker shape changes too, so no two artifacts look alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape
from typing import Any

OKABE_ITO = ("#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7", "#000000", "#F0E442")
SHAPES = ("circle", "square", "triangle", "diamond")
CHAR_W, LINE_H, FONT = 6.6, 13.0, 11  # label metrics (px) at FONT px, a little wider than most sans fonts


def style_of(i: int) -> tuple[str, str]:
    """(colour, shape) of the i-th artifact."""
    return OKABE_ITO[i % len(OKABE_ITO)], SHAPES[(i // len(OKABE_ITO)) % len(SHAPES)]


@dataclass
class Point:
    name: str
    x: float
    y: float
    colour: str
    shape: str = "circle"
    filled: bool = True  # on the Pareto front
    y_low: float | None = None
    y_high: float | None = None
    title: str = ""


@dataclass
class Axis:
    lo: float
    hi: float
    log: bool
    a: float  # pixel of lo
    b: float  # pixel of hi

    def px(self, v: float) -> float:
        if self.log:
            v, lo, hi = math.log10(max(v, self.lo)), math.log10(self.lo), math.log10(self.hi)
        else:
            lo, hi = self.lo, self.hi
        return self.a + (v - lo) / ((hi - lo) or 1) * (self.b - self.a)


def axis_range(values: list[float], log: bool) -> tuple[float, float]:
    """A padded range holding every finite value (log: decades around the positive values)."""
    values = [v for v in values if isinstance(v, int | float) and math.isfinite(v)] or [0.0]
    if log:
        pos = [v for v in values if v > 0] or [1.0]
        return 10 ** math.floor(math.log10(min(pos))), 10 ** math.ceil(math.log10(max(pos)) + 1e-9)
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.08 or abs(hi) * 0.1 or 1.0
    return lo - pad, hi + pad


def ticks(lo: float, hi: float, log: bool) -> list[float]:
    if log:
        return [10.0 ** e for e in range(round(math.log10(lo)), round(math.log10(hi)) + 1)]
    raw = (hi - lo) / 5
    if not math.isfinite(raw):
        return []
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step) + 1)]


def tick_text(v: float, log: bool) -> str:
    if log:
        return f"1e{round(math.log10(v))}" if v < 1e-2 or v >= 1e4 else f"{v:g}"
    return f"{v:.3g}"


def marker(p: Point, cx: float, cy: float, r: float = 5.0) -> str:
    fill = p.colour if p.filled else "white"
    common = f'fill="{fill}" stroke="{p.colour}" stroke-width="2"'
    if p.shape == "square":
        return f'<rect x="{cx - r:.1f}" y="{cy - r:.1f}" width="{2 * r:.1f}" height="{2 * r:.1f}" {common}/>'
    if p.shape in ("triangle", "diamond"):
        pts = ([(cx, cy - r - 1), (cx + r + 1, cy + r), (cx - r - 1, cy + r)] if p.shape == "triangle" else
               [(cx, cy - r - 1), (cx + r + 1, cy), (cx, cy + r + 1), (cx - r - 1, cy)])
        return f'<polygon points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in pts)}" {common}/>'
    return f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{r:.1f}" {common}/>'


Box = tuple[float, float, float, float]


def _overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def label_box(text: str, x: float, y: float, anchor: str) -> Box:
    w = CHAR_W * len(text) + 2
    x0 = x if anchor == "start" else x - w if anchor == "end" else x - w / 2
    return (x0 - 1, y - LINE_H + 2, x0 + w + 1, y + 4)  # a pixel more than the font's box on each side


def place_labels(pts: list[tuple[float, float, str]], area: Box) -> list[tuple[float, float, str, Box] | None]:
    """For each (px, py, text): (x, y, anchor, box) of a label that overlaps no other label or marker and stays
    inside `area`, or None where no candidate place is free."""
    taken: list[Box] = [(x - 7, y - 7, x + 7, y + 7) for x, y, _ in pts]
    offsets = [(dx * r, dy * r) for r in (9, 18, 30, 44) for dx, dy in
               ((1, -0.3), (-1, -0.3), (0, -1.2), (0, 1.6), (1, 1.1), (-1, 1.1), (1, -1.1), (-1, -1.1))]
    out: list[tuple[float, float, str, Box] | None] = []
    for x, y, text in pts:
        placed = None
        for dx, dy in offsets:
            anchor = "start" if dx > 0 else "end" if dx < 0 else "middle"
            lx, ly = x + dx, y + dy + 4
            box = label_box(text, lx, ly, anchor)
            inside = area[0] <= box[0] and box[2] <= area[2] and area[1] <= box[1] and box[3] <= area[3]
            if inside and not any(_overlaps(box, t) for t in taken):
                placed = (lx, ly, anchor, box)
                break
        if placed:
            taken.append(placed[3])
        out.append(placed)
    return out


def _axes_svg(x: Axis, y: Axis, xlabel: str, ylabel: str) -> list[str]:
    parts = [f'<line class="axis" x1="{x.a}" y1="{y.a}" x2="{x.b}" y2="{y.a}"/>',
             f'<line class="axis" x1="{x.a}" y1="{y.a}" x2="{x.a}" y2="{y.b}"/>']
    for t in ticks(x.lo, x.hi, x.log):
        px = x.px(t)
        parts.append(f'<line class="grid" x1="{px:.1f}" y1="{y.a}" x2="{px:.1f}" y2="{y.b}"/><text class="tick" '
                     f'x="{px:.1f}" y="{y.a + 14}" text-anchor="middle">{tick_text(t, x.log)}</text>')
    for t in ticks(y.lo, y.hi, y.log):
        py = y.px(t)
        parts.append(f'<line class="grid" x1="{x.a}" y1="{py:.1f}" x2="{x.b}" y2="{py:.1f}"/><text class="tick" '
                     f'x="{x.a - 5}" y="{py + 4:.1f}" text-anchor="end">{tick_text(t, y.log)}</text>')
    parts.append(f'<text class="axlabel" x="{(x.a + x.b) / 2}" y="{y.a + 32}" text-anchor="middle">'
                 f'{escape(xlabel)}</text>')
    parts.append(f'<text class="axlabel" transform="translate(14 {(y.a + y.b) / 2}) rotate(-90)" '
                 f'text-anchor="middle">{escape(ylabel)}</text>')
    return parts


def _side_labels(items: list[tuple[Point, float, float]], x0: float, top: float, bottom: float) -> list[str]:
    """Labels that found no place inside the plot: a column at x0, in the order of their points, leader lines."""
    parts = []
    ys = []
    for _, _, py in sorted(items, key=lambda it: it[2]):
        y = max(py + 4, (ys[-1] + LINE_H + 2) if ys else top + LINE_H)
        ys.append(y)
    shift = max(0.0, (ys[-1] if ys else 0) - bottom)
    for (p, px, py), y in zip(sorted(items, key=lambda it: it[2]), ys, strict=True):
        y -= shift
        parts.append(f'<line class="leader" x1="{px:.1f}" y1="{py:.1f}" x2="{x0 - 2:.1f}" y2="{y - 4:.1f}"/>'
                     f'<text class="label" x="{x0:.1f}" y="{y:.1f}">{escape(p.name)}</text>')
    return parts


def scatter_svg(points: list[Point], xlabel: str, ylabel: str, title: str, xlog: bool = False,
                ylog: bool = False, width: int = 620, height: int = 400) -> str:
    """A scatter plot: markers (filled = on the Pareto front), vertical error bars, non-overlapping labels."""
    if not points:
        return ""
    side = 10 + CHAR_W * max(len(p.name) for p in points)
    xs = [p.x for p in points]
    ys = [v for p in points for v in (p.y, p.y_low, p.y_high) if v is not None]
    x = Axis(*axis_range(xs, xlog), xlog, 64.0, width - side - 12)
    y = Axis(*axis_range(ys, ylog), ylog, height - 46.0, 30.0)
    parts = [f'<svg class="plot" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
             f'<text class="title" x="{width / 2}" y="16" text-anchor="middle">{escape(title)}</text>']
    parts += _axes_svg(x, y, xlabel, ylabel)
    pix = [(x.px(p.x), y.px(p.y)) for p in points]
    for p, (px, _) in zip(points, pix, strict=True):
        if p.y_low is not None and p.y_high is not None:
            parts.append(f'<line class="errbar" stroke="{p.colour}" x1="{px:.1f}" y1="{y.px(p.y_low):.1f}" '
                         f'x2="{px:.1f}" y2="{y.px(p.y_high):.1f}"/>')
    for p, (px, py) in zip(points, pix, strict=True):
        parts.append(f'<g class="pt">{marker(p, px, py)}<title>{escape(p.title or p.name)}</title></g>')
    placed = place_labels([(px, py, p.name) for p, (px, py) in zip(points, pix, strict=True)],
                          (x.a, y.b - 14, x.b, y.a))
    side_items = []
    for p, (px, py), spot in zip(points, pix, placed, strict=True):
        if spot is None:
            side_items.append((p, px, py))
            continue
        lx, ly, anchor, _ = spot
        weight = ' font-weight="bold"' if p.filled else ""
        parts.append(f'<text class="label" x="{lx:.1f}" y="{ly:.1f}" text-anchor="{anchor}"{weight}>'
                     f'{escape(p.name)}</text>')
    parts += _side_labels(side_items, x.b + 10, y.b, y.a)
    parts.append("</svg>")
    return "".join(parts)


def kld_svg(rows: list[tuple[str, dict[str, Any], str]], width: int = 620) -> str:
    """Per artifact (name, fidelity dict, colour): median-p90-p99 bar, max tick, mean diamond on a log axis."""
    rows = [r for r in rows if r[1].get("kld_p99") is not None]
    if not rows:
        return ""
    left = 12 + CHAR_W * max(len(n) for n, _, _ in rows)
    height = 70 + 22 * len(rows)
    vals = [v for _, f, _ in rows for k in ("kld_median", "kld_p90", "kld_p99", "kld_max", "kld_mean")
            if isinstance(v := f.get(k), int | float) and v > 0]
    lo, hi = axis_range(vals or [1e-6, 1.0], True)
    x = Axis(lo, hi, True, left, width - 20.0)
    parts = [f'<svg class="plot" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="KL divergence distribution">',
             f'<text class="title" x="{width / 2}" y="16" text-anchor="middle">KL(reference || artifact) per token: '
             'median to p90 (thick), to p99 (thin), max |, mean ◆</text>']
    base = height - 40.0
    for t in ticks(lo, hi, True):
        parts.append(f'<line class="grid" x1="{x.px(t):.1f}" y1="28" x2="{x.px(t):.1f}" y2="{base}"/>'
                     f'<text class="tick" x="{x.px(t):.1f}" y="{base + 14}" text-anchor="middle">'
                     f'{tick_text(t, True)}</text>')
    for i, (name, f, colour) in enumerate(rows):
        cy = 40 + 22 * i
        pos = {k: x.px(v) for k in ("kld_median", "kld_p90", "kld_p99", "kld_max", "kld_mean")
               if isinstance(v := f.get(k), int | float) and v > 0}
        tip = escape(", ".join(f"{k[4:]} {f[k]:.4g}" for k in ("kld_median", "kld_p90", "kld_p99", "kld_max",
                                                                "kld_mean") if f.get(k) is not None))
        parts.append(f'<g class="kld-row"><title>{escape(name)}: {tip}</title>'
                     f'<text class="label" x="{left - 6}" y="{cy + 4}" text-anchor="end">{escape(name)}</text>')
        a = pos.get("kld_median", x.a)
        if "kld_p99" in pos:
            parts.append(f'<line x1="{a:.1f}" y1="{cy}" x2="{pos["kld_p99"]:.1f}" y2="{cy}" stroke="{colour}" '
                         'stroke-width="2"/>')
        if "kld_p90" in pos:
            parts.append(f'<line x1="{a:.1f}" y1="{cy}" x2="{pos["kld_p90"]:.1f}" y2="{cy}" stroke="{colour}" '
                         'stroke-width="8"/>')
        if "kld_max" in pos:
            parts.append(f'<line x1="{pos["kld_max"]:.1f}" y1="{cy - 6}" x2="{pos["kld_max"]:.1f}" y2="{cy + 6}" '
                         f'stroke="{colour}" stroke-width="2"/>')
        if "kld_mean" in pos:
            m = pos["kld_mean"]
            parts.append(f'<polygon points="{m:.1f},{cy - 6} {m + 5:.1f},{cy} {m:.1f},{cy + 6} {m - 5:.1f},{cy}" '
                         f'fill="white" stroke="#000" stroke-width="1.5"/>')
        parts.append("</g>")
    parts.append(f'<text class="axlabel" x="{(x.a + x.b) / 2}" y="{height - 8}" text-anchor="middle">'
                 'nats per token (log scale; a token with KLD 0 is not drawn)</text></svg>')
    return "".join(parts)


AGREE_COLOURS = {"right": "#009E73", "wrong": "#D55E00", "other": "#E69F00"}


def agreement_svg(ref_name: str, ref_preds: dict[str, dict[str, Any]], others: list[tuple[str, dict[str, Any]]],
                  texts: dict[str, str], limit: int = 240) -> tuple[str, int]:
    """A grid: a row per artifact, a column per question where some artifact's letter differs from the
    reference's; cell colour says whether the flip made it right, wrong, or another wrong letter. Hover: the
    question, gold, reference's and artifact's letters. Returns (svg, number of flipping questions)."""
    ids = [q for q in ref_preds if any(q in p and p[q].get("predicted") != ref_preds[q].get("predicted")
                                       for _, p in others)]
    shown = ids[:limit]
    if not shown:
        return "", 0
    cw, ch = 14, 18
    left = 12 + CHAR_W * max(len(n) for n, _ in others)
    width, height = left + cw * len(shown) + 10, 26 + ch * len(others)
    parts = [f'<svg class="plot agreement" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="answers that differ from {escape(ref_name)}">']
    for j in range(len(shown)):
        parts.append(f'<text class="tick" x="{left + cw * j + cw / 2}" y="14" text-anchor="middle">{j + 1}</text>'
                     if (j + 1) % 5 == 0 or j == 0 else "")
    for i, (name, preds) in enumerate(others):
        y = 20 + ch * i
        parts.append(f'<text class="label" x="{left - 6}" y="{y + 13}" text-anchor="end">{escape(name)}</text>')
        for j, qid in enumerate(shown):
            p, r = preds.get(qid), ref_preds[qid]
            if p is None:
                continue
            same = p.get("predicted") == r.get("predicted")
            kind = "same" if same else "right" if p.get("correct") else "wrong" if r.get("correct") else "other"
            fill = "#e8e8e8" if same else AGREE_COLOURS[kind]
            tip = (f"Q{j + 1} {qid}: {texts.get(qid, '(question text not recorded)')}\ngold {r.get('gold')}, "
                   f"{ref_name} {r.get('predicted') or '-'}, {name} {p.get('predicted') or '-'}")
            letter = "" if same else (f'<text class="cell" x="{left + cw * j + cw / 2}" y="{y + 13}" '
                                      f'text-anchor="middle">{escape(str(p.get("predicted") or "-"))}</text>')
            parts.append(f'<g class="q" data-flip="{0 if same else 1}"><rect x="{left + cw * j}" y="{y}" '
                         f'width="{cw - 1}" height="{ch - 2}" fill="{fill}"/>{letter}<title>{escape(tip)}</title></g>')
    parts.append("</svg>")
    return "".join(parts), len(ids)
