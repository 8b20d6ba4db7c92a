"""``pareto.png``: accuracy vs p95 answer latency, marker size = peak memory, Pareto front marked and labelled."""

from __future__ import annotations

from pathlib import Path

from edgemed.bench.results import ArtifactResult


def pareto_front(points: list[tuple[str, float, float]]) -> list[str]:
    """Names not dominated by another point (lower-or-equal latency AND higher-or-equal accuracy, one strictly)."""
    front = []
    for name, lat, acc in points:
        dominated = any(
            (lat2 <= lat and acc2 >= acc) and (lat2 < lat or acc2 > acc)
            for other, lat2, acc2 in points if other != name
        )
        if not dominated:
            front.append(name)
    return front


def plot_pareto(results: list[ArtifactResult], path: Path, title: str = "edgemed bench") -> Path | None:
    """Write the plot atomically; None when matplotlib is missing or nothing ran."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    pts = [(r, r.metric("answer_p95_ms"), r.accuracy.accuracy) for r in results if r.ok]
    pts = [(r, lat, acc) for r, lat, acc in pts if lat is not None and acc is not None]
    if not pts:
        return None
    front = set(pareto_front([(r.name, lat, acc) for r, lat, acc in pts]))
    rss = [r.memory.peak_rss_bytes or 0 for r, _, _ in pts]
    top = max(rss) or 1
    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=120)
    for (r, lat, acc), mem in zip(pts, rss, strict=True):
        on = r.name in front
        if r.accuracy.ci_low is not None and r.accuracy.ci_high is not None:
            ax.errorbar(lat, acc, yerr=[[acc - r.accuracy.ci_low], [r.accuracy.ci_high - acc]], fmt="none",
                        ecolor="tab:gray", alpha=0.5, capsize=3, zorder=1)
        ax.scatter(lat, acc, s=80 + 900 * mem / top, alpha=0.6, edgecolors="black",
                   color="tab:green" if on else "tab:gray", zorder=3)
        ax.annotate(f"{r.name}\n{mem / 1e6:.0f} MB", (lat, acc), textcoords="offset points", xytext=(8, 6),
                    fontsize=8, fontweight="bold" if on else "normal")
    line = sorted((lat, acc) for r, lat, acc in pts if r.name in front)
    if len(line) > 1:
        ax.plot([p[0] for p in line], [p[1] for p in line], "--", color="tab:green", label="Pareto front", zorder=2)
        ax.legend(loc="lower right")
    ax.set_xlabel("p95 answer latency (ms)  - lower is better")
    ax.set_ylabel("accuracy  - higher is better")
    ax.set_title(f"{title}: accuracy (95% interval) vs latency; marker size = peak memory", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path
