"""The one rule that shows a metric's value: :func:`cell`. The terminal and markdown tables, bench.html, report.json's
cells and the report's pages all print what it returns, as the metric's entry (:mod:`edgemed.bench.metrics`) says:
its format, its interval or standard deviation, its stand-in, the BUSY mark."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgemed.bench.metrics import METRICS, format_value
from edgemed.bench.results import ArtifactResult


@dataclass
class Cell:
    """One metric of one result as every printer shows it: ``text`` is ``shown`` (the value, or its stand-in),
    then ``spread`` (its interval or standard deviation), then `` BUSY`` where a busy machine spoils it."""

    value: float | None
    shown: str
    spread: str = ""
    busy: bool = False
    interval: tuple[float, float] | None = None
    sd: float | None = None
    stand_in: str | None = None
    failed: bool = False

    @property
    def text(self) -> str:
        return self.shown + self.spread + (" BUSY" if self.busy else "")

    def to_dict(self) -> dict[str, Any]:
        """report.json's cell: value, busy, interval/sd/stand_in where there is one, text."""
        if self.failed:
            return {"value": None, "failed": True, "text": self.text, "busy": False}
        out: dict[str, Any] = {"value": self.value, "busy": self.busy}
        if self.interval is not None:
            out["interval"] = list(self.interval)
        if self.sd is not None:
            out["sd"] = self.sd
        if self.stand_in is not None:
            out["stand_in"] = self.stand_in
        out["text"] = self.text
        return out


def cell(r: ArtifactResult, key: str) -> Cell:
    """The one rule that shows metric `key` of result `r`: its value in the metric's format, its interval
    (``cell_interval``) or standard deviation (``sd``), its stand-in where it is not measured, the BUSY mark on a
    timing (or the load metric) measured while other processes used the CPU. A failed result is ``FAILED``."""
    if not r.ok:
        return Cell(None, "FAILED", failed=True)
    m = METRICS[key]
    value = r.metric(key)
    out = Cell(value, format_value(key, value), busy=(m.timing or m.busy_mark) and r.busy)
    if value is None:
        stand_in = r.metric(m.stand_in.key) if m.stand_in else None
        if stand_in is not None:
            out.value, out.stand_in = stand_in, m.stand_in.why
            out.shown = f"{m.stand_in.prefix} {format_value(m.stand_in.key, stand_in)}"
        return out
    ci = m.interval(r) if m.interval is not None and m.cell_interval else None
    if ci is not None:
        out.interval = ci
        out.spread = f" [{ci[0]:.2f}-{ci[1]:.2f}]" if m.cell_interval == "range" else f" ±{(ci[1] - ci[0]) / 2:.5f}"
    sd = r.metric(m.sd) if m.sd else None
    if sd is not None:
        out.sd, out.spread = sd, out.spread + f" ±{sd:.1f}"
    return out

