"""``pareto.png``: the trade-offs an edge engineer weighs, in two panels.

Left: accuracy (95% interval) against answer latency, marker area = peak memory, chance level and n shown.
Right: mean KL divergence from the reference (95% interval) against size on disk. Artifacts on the Pareto front
over three objectives (quality, latency, memory) are green: one is dominated only when another is at least as
good on all three and better on one. Quality is the mean KL divergence where it was measured (lower is better),
else accuracy. Labels are placed so that they never overlap each other or a marker.
"""

from __future__ import annotations

from pathlib import Path

from edgemed.bench.results import ArtifactResult, tail_latency
from edgemed.registry import PLOT_EXTRA, install_message

CHANCE = 0.25  # four options


def pareto_front(points: list[tuple[str, tuple[float, ...]]]) -> list[str]:
    """Names not dominated: no other point is <= on every objective (all minimised) and < on one."""
    front = []
    for name, obj in points:
        dominated = any(
            all(o2 <= o for o2, o in zip(other_obj, obj, strict=True))
            and any(o2 < o for o2, o in zip(other_obj, obj, strict=True))
            for other, other_obj in points if other != name
        )
        if not dominated:
            front.append(name)
    return front


def objectives(r: ArtifactResult, use_kld: bool) -> tuple[float, float, float] | None:
    """(quality, latency, memory), each to minimise; None when one is missing."""
    quality = (r.fidelity or {}).get("kld_mean") if use_kld else (
        -r.accuracy.accuracy if r.accuracy.accuracy is not None else None)
    latency = tail_latency(r.latency.answer_ms)
    memory = r.memory.peak_rss_bytes
    if quality is None or latency is None or memory is None:
        return None
    return float(quality), float(latency), float(memory)


def front_of(results: list[ArtifactResult]) -> tuple[list[str], str]:
    """(names on the 3-objective front, which quality measure was used)."""
    ok = [r for r in results if r.ok]
    use_kld = bool(ok) and all((r.fidelity or {}).get("kld_mean") is not None for r in ok)
    pts = [(r.name, o) for r in ok if (o := objectives(r, use_kld)) is not None]
    return pareto_front(pts), "mean KL divergence" if use_kld else "accuracy"


def _place_labels(ax, items: list[tuple[float, float, str, bool]], avoid: tuple = ()) -> None:
    """Annotate each (x, y, text, bold) at the first offset whose box overlaps no label, marker or `avoid` artist."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    taken = [(b.x0, b.y0, b.x1, b.y1) for b in (a.get_window_extent(renderer) for a in avoid)]
    for x, y, _, _ in items:  # markers: a small box around each point, in display pixels
        px, py = ax.transData.transform((x, y))
        taken.append((px - 9, py - 9, px + 9, py + 9))
    offsets = [(dx * r, dy * r) for r in (10, 22, 36, 52, 70) for dx, dy in
               ((1, 0.6), (1, -1), (-1, 0.6), (-1, -1), (0, 1.2), (0, -1.6), (1.2, 0), (-1.2, 0))]
    for x, y, text, bold in items:
        placed = None
        for dx, dy in offsets:
            ann = ax.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=7,
                              fontweight="bold" if bold else "normal", ha="left" if dx >= 0 else "right",
                              va="bottom" if dy >= 0 else "top",
                              arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.5} if abs(dx) > 12 else None)
            bb = ann.get_window_extent(renderer)
            box = (bb.x0, bb.y0, bb.x1, bb.y1)
            inside = ax.get_window_extent(renderer)
            fits = inside.x0 <= box[0] and box[2] <= inside.x1 and inside.y0 <= box[1] and box[3] <= inside.y1
            if fits and not any(box[0] < t[2] and t[0] < box[2] and box[1] < t[3] and t[1] < box[3] for t in taken):
                placed = box
                break
            ann.remove()
        if placed is None:  # crowded: the last resort still gets a label, offset furthest out
            ann = ax.annotate(text, (x, y), textcoords="offset points", xytext=offsets[-1], fontsize=7)
            bb = ann.get_window_extent(renderer)
            placed = (bb.x0, bb.y0, bb.x1, bb.y1)
        taken.append(placed)


def plot_pareto(results: list[ArtifactResult], path: Path, caption: str = "") -> tuple[Path | None, str]:
    """Write the plot atomically; (path, '') or (None, why it was skipped)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.lines import Line2D
    except ImportError:
        return None, install_message(["matplotlib"], PLOT_EXTRA)
    ok = [r for r in results if r.ok and r.accuracy.accuracy is not None and tail_latency(r.latency.answer_ms)]
    if not ok:
        return None, "no artifact has both accuracy and latency"
    front, quality = front_of(ok)
    rss = {r.name: (r.memory.peak_rss_bytes or 0) for r in ok}
    top = max(rss.values()) or 1
    with_kld = [r for r in ok if (r.fidelity or {}).get("kld_mean") is not None and r.size_bytes]
    fig, axes = plt.subplots(1, 2 if with_kld else 1, figsize=(14 if with_kld else 8, 6.2), dpi=120,
                             squeeze=False)
    ax = axes[0][0]
    n = max(r.accuracy.n for r in ok)
    items = []
    for r in ok:
        lat, acc = tail_latency(r.latency.answer_ms), r.accuracy.accuracy
        on = r.name in front
        if r.accuracy.ci_low is not None and r.accuracy.ci_high is not None:
            ax.errorbar(lat, acc, yerr=[[max(0.0, acc - r.accuracy.ci_low)], [max(0.0, r.accuracy.ci_high - acc)]],
                        fmt="none",
                        ecolor="tab:gray", alpha=0.5, capsize=3, zorder=1)
        ax.scatter(lat, acc, s=40 + 700 * rss[r.name] / top, alpha=0.55, edgecolors="black",
                   color="tab:green" if on else "tab:gray", zorder=3)
        items.append((lat, acc, f"{r.name}{' (busy)' if r.busy else ''}", on))
    ax.axhline(CHANCE, color="tab:red", lw=0.8, ls=":", zorder=0)
    chance = ax.text(0.99, CHANCE, "chance (4 options)", color="tab:red", fontsize=7, ha="right", va="bottom",
                     transform=ax.get_yaxis_transform())
    lat_kind = "p95" if all(r.latency.answer_ms.get("p95") is not None for r in ok) else "p95 (max where n<20)"
    ax.set_xlabel(f"answer latency, {lat_kind} (ms) - lower is better")
    ax.set_ylabel("accuracy - higher is better")
    ax.set_title(f"accuracy (95% interval, n = {n}) vs latency", fontsize=10)
    ax.grid(alpha=0.3)
    sizes = sorted({round(v / 1e6, -1) for v in rss.values() if v})
    picks = sorted({sizes[0], sizes[len(sizes) // 2], sizes[-1]}) if sizes else []
    handles = [plt.scatter([], [], s=40 + 700 * (m * 1e6) / top, color="white", edgecolors="black") for m in picks]
    handles += [Line2D([], [], marker="o", ls="", color="tab:green", label="Pareto front"),
                Line2D([], [], marker="o", ls="", color="tab:gray", label="dominated")]
    labels = [f"{m:.0f} MB peak RSS" for m in picks] + [f"Pareto front ({quality}, latency, memory)", "dominated"]
    ax.legend(handles, labels, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=len(labels),
              borderpad=0.9, columnspacing=1.2, frameon=False)  # below the axes: never over a point or label
    fig.canvas.draw()
    _place_labels(ax, items, avoid=(chance,))
    if with_kld:
        ax2 = axes[0][1]
        items2 = []
        for r in with_kld:
            f = r.fidelity
            on = r.name in front
            x, y = r.size_bytes / 1e6, f["kld_mean"]
            lo, hi = f["kld_ci"]
            ax2.errorbar(x, y, yerr=[[max(y - lo, 0)], [max(hi - y, 0)]], fmt="none", ecolor="tab:gray", capsize=3)
            ax2.scatter(x, y, s=50, color="tab:green" if on else "tab:gray", edgecolors="black", zorder=3)
            items2.append((x, y, r.name, on))
        ax2.set_yscale("symlog", linthresh=1e-4)
        ax2.set_xlabel("size on disk (MB) - lower is better")
        ax2.set_ylabel("mean KL(reference || artifact), nats/token - lower is better")
        ax2.set_title(f"fidelity vs size ({with_kld[0].fidelity['tokens']} tokens)", fontsize=10)
        ax2.grid(alpha=0.3)
        fig.canvas.draw()
        _place_labels(ax2, items2)
    if caption:
        fig.text(0.01, 0.01, caption, fontsize=7, color="0.3")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return save_figure(fig, Path(path)), ""


def save_figure(fig, path: Path) -> Path:
    """Write `fig` to `path` through a temporary file beside it (a reader never sees half a PNG), then close it."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path
