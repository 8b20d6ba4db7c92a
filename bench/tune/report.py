"""What ``edgemed tune`` leaves beside tune.json: the Pareto front, the sentence that names the deciding numbers,
tune.md (every candidate and why it was dropped), pareto.png, and the console summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgemed.fsutil import atomic_write_text, fmt_bytes
from edgemed.registry import PLOT_EXTRA, install_message


def _tg(r: dict[str, Any]) -> float | None:
    return (((r.get("bench") or {}).get("throughput") or {}).get("tg") or {}).get("avg_ts")


def _rss(r: dict[str, Any]) -> float | None:
    return ((r.get("bench") or {}).get("memory") or {}).get("peak_rss_bytes")


def _p95(r: dict[str, Any]) -> float | None:
    lat = ((r.get("bench") or {}).get("latency") or {}).get("answer_ms") or {}
    return lat.get("p95") if lat.get("p95") is not None else lat.get("max")


def _kld(r: dict[str, Any]) -> tuple[float, list[float]] | None:
    """The best KLD measurement of a candidate: the full bench's when it ran, else stage 1's last."""
    fid = (r.get("bench") or {}).get("fidelity") or {}
    if fid.get("kld_ci"):
        return fid["kld_mean"], fid["kld_ci"]
    if r.get("kld_ci"):
        return r["kld_mean"], r["kld_ci"]
    return None


def pareto(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Fronts over the measured candidates: stage 1 (size, KLD) and stage 2 (size, memory, KLD, tg)."""
    from edgemed.bench.render.plot import pareto_front

    one = [(r["id"], (float(r["size_bytes"]), _kld(r)[0])) for r in records if _kld(r) and r.get("size_bytes")]
    two = [(r["id"], (float(r["size_bytes"]), float(_rss(r)), _kld(r)[0], -float(_tg(r))))
           for r in records if r.get("bench") and _rss(r) and _tg(r) is not None and _kld(r)]
    return {"stage1": {"objectives": ["size_bytes", "kld_mean"], "front": pareto_front(one)},
            "stage2": {"objectives": ["size_bytes", "peak_rss_bytes", "kld_mean", "tg_tokens_per_s (max)"],
                       "front": pareto_front(two)}}


def _numbers(r: dict[str, Any], budgets: dict[str, Any]) -> str:
    b = r.get("bench") or {}
    kld = _kld(r)
    parts = [f"size {fmt_bytes(r.get('size_bytes'))}"]
    if kld:
        bound = f" (budget {budgets['max_kld']:g}: the whole interval within)" if budgets.get("max_kld") is not None \
            else ""
        parts.append(f"mean KLD {kld[0]:.4f} [{kld[1][0]:.4f}-{kld[1][1]:.4f}]{bound}")
    fid = b.get("fidelity") or {}
    if fid.get("top1_agreement") is not None:
        parts.append(f"top-1 agreement {fid['top1_agreement']:.3f}")
    acc = b.get("accuracy") or {}
    if acc.get("accuracy") is not None:
        p = acc.get("mcnemar_p")
        parts.append(f"accuracy {acc['accuracy']:.3f}" + (f" (McNemar p = {p:.2g} vs the reference)" if p is not None
                                                           else ""))
    if _rss(r):
        parts.append(f"peak memory {fmt_bytes(_rss(r))}")
    if _tg(r) is not None:
        parts.append(f"tg {_tg(r):.1f} t/s")
    if _p95(r) is not None:
        parts.append(f"p95 {_p95(r):.1f} ms")
    return ", ".join(parts)


def answer(doc: dict[str, Any], best: dict[str, Any] | None, records: list[dict[str, Any]],
           budgets: dict[str, Any], objective: str) -> dict[str, Any]:
    """The sentence with the deciding numbers; when nothing meets the budget, the nearest candidates and what each
    one breaks."""
    from edgemed.bench.tune.rules import distance

    met = [r for r in records if r["status"] in ("meets", "chosen")]
    evaluated = sum(1 for r in records if r.get("stage1"))
    contenders = [r for r in records if r["status"] == "failed" and r.get("stage") == 2]
    failed = [r for r in records if r["status"] == "failed" and r.get("stage") != 2]
    notes = ""
    if failed:
        notes += (f" {len(failed)} candidate(s) failed before they could be compared: "
                  f"{', '.join(r['id'] for r in failed)} (why: tune.md).")
    rebuilt = doc.get("cache_rebuilt") or {}
    if rebuilt:
        notes += f" {len(rebuilt)} damaged cache entr{'y was' if len(rebuilt) == 1 else 'ies were'} built again."
    failing = {"failed_contenders": [{"id": r["id"], "reason": r.get("reason", "")} for r in contenders]}
    if best is not None:
        others = sorted((r for r in met if r is not best), key=lambda r: r.get("size_bytes") or 0)
        runner = f"; next: {others[0]['id']} ({_numbers(others[0], {})})" if others else ""
        text = (f"{best['id']} meets every budget with the least {objective} of the {len(met)} candidate(s) that do "
                f"(of {evaluated} measured): {_numbers(best, budgets)}{runner}.")
        if contenders:
            text = (f"NOT ESTABLISHED: {', '.join(r['id'] for r in contenders)} survived stage 1 but failed in stage 2 "
                    f"({'; '.join(r.get('reason', '') for r in contenders)}), so it might have been the answer; of the "
                    f"rest, " + text[0].lower() + text[1:] + " Fix the failure and re-run with --resume.")
        return {"met": True, "text": text + notes, "nearest": [], **failing}
    measured = [r for r in records if r.get("stage1") or r.get("bench")]
    nearest = sorted(measured, key=lambda r: (len(r.get("breaks") or []) if r.get("bench") else 9,
                                              distance(r, budgets), r.get("size_bytes") or 0))[:3]
    near = [{"id": r["id"], "breaks": r.get("breaks") or [r.get("reason", "")], "numbers": _numbers(r, budgets)}
            for r in nearest]
    listed = "; ".join(f"{n['id']} ({n['numbers']}) breaks: {' / '.join(n['breaks'])}" for n in near)
    text = f"No candidate of the {evaluated} measured meets every budget. Nearest: {listed or 'none was measured'}."
    if contenders:
        text += (f" {', '.join(r['id'] for r in contenders)} survived stage 1 but failed in stage 2: "
                 f"{'; '.join(r.get('reason', '') for r in contenders)}.")
    return {"met": False, "text": text + notes, "nearest": near, **failing}


def _ci(v: list[float] | None, digits: int = 4) -> str:
    return f"[{v[0]:.{digits}f}-{v[1]:.{digits}f}]" if v else ""


def rows(doc: dict[str, Any]) -> list[dict[str, str]]:
    """One display row per candidate (tune.md and the console), in the order the grid lists them."""
    out = []
    front = set(doc.get("pareto", {}).get("stage1", {}).get("front", []))
    for r in doc["candidates"]:
        kld = _kld(r)
        bpw = r.get("bits_per_weight")
        out.append({
            "candidate": r["id"] + (" *" if r["id"] in front else ""),
            "status": r["status"],
            "size MB": f"{r['size_bytes'] / 1e6:.1f}" if r.get("size_bytes") else "",
            "bpw": f"{bpw:.2f}" if bpw else "",
            "KLD [95%]": f"{kld[0]:.4f} {_ci(kld[1])}" if kld else "",
            "top-1": f"{r['top1']:.3f}" if r.get("top1") is not None else "",
            "tokens": str(r.get("tokens") or ""),
            "RSS MB": f"{_rss(r) / 1e6:.0f}" if _rss(r) else "",
            "tg t/s": f"{_tg(r):.1f}" if _tg(r) is not None else "",
            "p95 ms": f"{_p95(r):.1f}" if _p95(r) is not None else "",
            "why": r.get("reason", ""),
        })
    return out


def to_markdown(doc: dict[str, Any]) -> str:
    b, cfg = doc["budgets"], doc["config"]
    set_budgets = {k: v for k, v in b.items() if v is not None and k != "max_memory_from"}
    lines = ["# edgemed tune", "", f"**{doc['answer']['text']}**", "",
             f"Merged model: `{doc['merged']}` (sha256 {str(doc.get('source_sha256'))[:12]}); objective: "
             f"{cfg['objective']}; budgets: {', '.join(f'{k} = {v}' for k, v in set_budgets.items()) or 'none'}; "
             f"{doc['questions']} evaluation questions, {doc.get('reference', {}).get('tokens', '?')} fidelity "
             f"tokens; {doc['threads']} threads; {doc.get('evaluated', 0)} candidates measured in "
             f"{doc.get('seconds', 0):.0f} s.",
             "", "Stage 1 measured each candidate's KL divergence on a growing share of the tokens "
             f"({', '.join(f'{f:.0%}' for f in cfg['fractions'])}) while its 95% interval straddled a budget; stage 2 "
             "ran the full bench (bench/bench.md) on the survivors. `*`: on the (size, KLD) Pareto front.", ""]
    table = rows(doc)
    if table:
        cols = list(table[0])
        lines += ["| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
        lines += ["| " + " | ".join(row[c].replace("|", "\\|") for c in cols) + " |" for row in table]
    two = doc.get("pareto", {}).get("stage2", {}).get("front", [])
    lines += ["", "Pareto front after the full bench (size, peak memory, KLD, tg): "
                  f"{', '.join(two) or 'none benched'}."]
    if doc.get("choice"):
        lines += ["", f"Chosen artifact: `{doc['choice']['path']}` ({doc['choice']['format']}, settings "
                      f"`{doc['choice']['settings']}`)."]
    lines += ["", "![size vs KL divergence](pareto.png)", ""]
    return "\n".join(lines)


def write_reports(doc: dict[str, Any], out: Path) -> dict[str, str]:
    """tune.md and pareto.png (tune.json is the caller's); a plot that cannot be drawn is listed as skipped."""
    written = {"json": str(out / "tune.json"), "markdown": str(atomic_write_text(out / "tune.md", to_markdown(doc)))}
    try:
        png, why = plot(doc, out / "pareto.png")
    except Exception as exc:  # noqa: BLE001 - a figure must never cost the measured results
        png, why = None, f"plotting failed ({type(exc).__name__}: {exc}); the numbers are in tune.json"
    if png:
        written["plot"] = str(png)
    else:
        doc.setdefault("skipped_outputs", {})["pareto.png"] = why
    return written


COLORS = {"chosen": "tab:green", "meets": "tab:olive", "breaks": "tab:orange", "not-benched": "tab:blue",
          "dropped": "0.6", "failed": "tab:red"}


def plot(doc: dict[str, Any], path: Path) -> tuple[Path | None, str]:
    """Size vs KLD of every measured candidate (95% intervals), the front labelled; tg vs KLD of the benched."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from edgemed.bench.render.plot import save_figure
    except ImportError:
        return None, install_message(["matplotlib"], PLOT_EXTRA)
    recs = [r for r in doc["candidates"] if _kld(r) and r.get("size_bytes")]
    if not recs:
        return None, "no candidate was measured"
    benched = [r for r in recs if _tg(r) is not None]
    front = doc.get("pareto", {}).get("stage1", {}).get("front", [])
    fig, axes = plt.subplots(1, 2 if benched else 1, figsize=(15 if benched else 9, 6.5), dpi=120, squeeze=False)
    ax = axes[0][0]
    for r in recs:
        m, (lo, hi) = _kld(r)
        x = r["size_bytes"] / 1e6
        color = COLORS.get(r["status"], "0.6")
        ax.errorbar(x, m, yerr=[[max(m - lo, 0)], [max(hi - m, 0)]], fmt="none", ecolor=color, alpha=0.6, capsize=2)
        ax.scatter(x, m, s=90 if r["status"] == "chosen" else 36, marker="*" if r["status"] == "chosen" else "o",
                   color=color, edgecolors="black" if r["id"] in front else "none", zorder=3)
    labelled = [r for r in recs if r["id"] in front or r["status"] in ("chosen", "meets")]
    _labels(ax, [(r["size_bytes"] / 1e6, _kld(r)[0], r["id"]) for r in sorted(labelled, key=lambda r: r["size_bytes"])])
    if doc["budgets"].get("max_kld") is not None:
        ax.axhline(doc["budgets"]["max_kld"], color="tab:red", lw=0.8, ls="--", label="max KLD budget")
    if doc["budgets"].get("max_size_bytes") is not None:
        ax.axvline(doc["budgets"]["max_size_bytes"] / 1e6, color="tab:purple", lw=0.8, ls="--", label="max size budget")
    ax.set_yscale("log")
    ax.set_xlabel("size on disk (MB) - lower is better")
    ax.set_ylabel("mean KL(reference || candidate), nats/token (95% interval) - lower is better")
    ax.set_title(f"{len(recs)} candidates: size vs KL divergence (outlined: Pareto front)", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    for status, color in COLORS.items():
        ax.scatter([], [], color=color, label=status)
    ax.legend(fontsize=7, loc="upper right")
    if benched:
        ax2 = axes[0][1]
        for r in benched:
            ax2.scatter(_tg(r), _kld(r)[0], s=30 + 400 * (_rss(r) or 0) / max(_rss(x) or 1 for x in benched),
                        color=COLORS.get(r["status"], "0.6"), edgecolors="black", alpha=0.7, zorder=3)
        _labels(ax2, [(_tg(r), _kld(r)[0], f"{r['id']} ({(_rss(r) or 0) / 1e6:.0f} MB)") for r in benched])
        ax2.set_yscale("log")
        ax2.set_xlabel("generation tokens/s (tg) - higher is better")
        ax2.set_ylabel("mean KL divergence (full bench)")
        ax2.set_title("stage 2, full bench: tg vs KLD (marker area = peak memory)", fontsize=10)
        ax2.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return save_figure(fig, path), ""


def _labels(ax, items: list[tuple[float, float, str]]) -> None:
    """Labels fanned out left and right in turn, on rising offsets, so neighbours do not overlap."""
    for n, (x, y, text) in enumerate(items):
        side = 1 if n % 2 == 0 else -1
        ax.annotate(text, (x, y), textcoords="offset points", xytext=(8 * side, 10 + 9 * (n % 4)), fontsize=7,
                    ha="left" if side > 0 else "right", arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.5})


def print_summary(doc: dict[str, Any]) -> None:
    """The console: a compact table (tune.md has every column), each dropped candidate's reason, the sentence."""
    from rich.table import Table

    from edgemed.console import console

    table = Table(title="edgemed tune")
    cols = ("candidate", "status", "size MB", "KLD [95%]", "RSS MB", "tg t/s")
    for col in cols:
        table.add_column(col, no_wrap=True, justify="left" if col in ("candidate", "status") else "right")
    display = rows(doc)
    for row in display:
        table.add_row(*(row[c] for c in cols))
    console.print(table)
    for row in display:
        if row["status"] not in ("meets", "chosen"):
            console.print(f"{row['candidate']}: {row['status']}: {row['why']}", markup=False, highlight=False)
    console.print(doc["answer"]["text"], markup=False, highlight=False)
    for name, path in doc.get("outputs", {}).items():
        console.print(f"{name}: {path}", markup=False, highlight=False)
