"""Rich tables for an evaluation, drawn from the results.json dict (so a saved run renders the same)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgemed.data.medmcqa import LETTERS


def _pct(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}%"


def _share(x: float) -> str:
    return f"{100 * x:.1f}%" if x >= 0.001 else f"{x:.1e}"


def _ci(ci: list[float] | tuple[float, float]) -> str:
    return f"{100 * ci[0]:.1f}-{100 * ci[1]:.1f}%"


def headline(results: dict[str, Any]) -> Table:
    m = results["metrics"]
    title = f"{results.get('artifact', 'eval')}: MedMCQA, {results['scoring']} scoring"
    t = Table(title=escape(title), show_header=False)
    t.add_column("", style="bold")
    t.add_column("")
    t.add_row("accuracy", f"{_pct(results['accuracy'])}  (95% Wilson {_ci(results['accuracy_ci'])})")
    baseline = m["letters"].get("majority_baseline")
    always = f"; always '{m['letters']['majority_letter']}' would score {_pct(baseline)}" if baseline else ""
    t.add_row("correct / n", f"{m['correct']} / {m['n']}   (chance 25%{always})")
    if results["scoring"] != "logprob":
        t.add_row("unparseable", f"{m['unparseable']} ({_pct(m['unparseable'] / m['n'])}), never counted correct")
    elif m["unparseable"]:
        t.add_row("[red]no answer[/red]", f"{m['unparseable']} questions got NaN/inf log-probs (broken artifact?)")
    cal = m.get("calibration")
    if cal:
        t.add_row("ECE (10 bins)", f"{cal['ece']:.4f}   mean confidence {_pct(cal['mean_confidence'])}, "
                  f"Brier {cal['brier']:.4f}")
    if m.get("letter_mass"):
        t.add_row("mass on A-D", f"mean {_share(m['letter_mass']['mean'])}, min {_share(m['letter_mass']['min'])}")
    t.add_row("prompt style", f"{results['prompt_style']} ({results['config'].get('prompt_style_source', '')})")
    data = results.get("data", {})
    if data:
        t.add_row("data", escape(f"{data.get('source')} ({data.get('subset', data.get('split'))})"))
    timing = results.get("timing", {})
    if timing.get("questions_per_s"):
        t.add_row("speed", f"{timing['questions_per_s']:.2f} questions/s ({timing['total_s']:.1f} s)")
    return t


def subjects(results: dict[str, Any]) -> Table | None:
    rows = results["metrics"].get("per_subject")
    if not rows:
        return None
    t = Table(title="per subject")
    for col in ("subject", "n", "accuracy", "95% CI"):
        t.add_column(col, justify="left" if col == "subject" else "right")
    for name, r in rows.items():
        t.add_row(escape(name), str(r["n"]), _pct(r["accuracy"]), _ci(r["accuracy_ci"]))
    return t


def letters(results: dict[str, Any]) -> Table:
    d = results["metrics"]["letters"]
    p_value = d.get("p_value")
    shown_p = "< 1e-15" if p_value is not None and p_value < 1e-15 else f"{p_value:.3g}"
    caption = f"chi-square {d['chi2']:.2f} (df {d['df']}, p {shown_p}); " if d.get("chi2") is not None else ""
    caption += f"most over-predicted: {d['over_predicted']} ({d['deviation'][d['over_predicted']]:+.1%})"
    t = Table(title="answer letters: predicted vs gold (position bias)", caption=caption)
    for col in ("letter", "predicted", "gold", "deviation", "mean prob"):
        t.add_column(col, justify="right")
    n_pred = max(sum(d["predicted"].values()), 1)
    n_gold = max(sum(d["gold"].values()), 1)
    for a in LETTERS:
        mean_p = d.get("mean_probs", {}).get(a)
        t.add_row(
            a,
            f"{d['predicted'][a]} ({_pct(d['predicted'][a] / n_pred)})",
            f"{d['gold'][a]} ({_pct(d['gold'][a] / n_gold)})",
            f"{d['deviation'][a]:+.1%}",
            _pct(mean_p),
        )
    return t


def calibration(results: dict[str, Any]) -> Table | None:
    cal = results["metrics"].get("calibration")
    if not cal:
        return None
    t = Table(title=f"calibration: ECE {cal['ece']:.4f}; accuracy when answering only the most confident")
    for col in ("coverage", "answered", "accuracy", "min confidence"):
        t.add_column(col, justify="right")
    for r in cal["accuracy_at_coverage"]:
        t.add_row(_pct(r["coverage"], 0), str(r["n"]), _pct(r["accuracy"]), _pct(r["threshold"]))
    return t


def failures(results: dict[str, Any], examples: int = 3) -> Table:
    f = results["metrics"]["failures"]
    t = Table(title=f"failures: {f['wrong']} wrong of {results['n']}")
    t.add_column("kind")
    t.add_column("count", justify="right")
    t.add_column("rule")
    t.add_column("examples (id: gold -> predicted)")
    for kind in ("confident_wrong", "near_miss", "unparseable", "position_bias"):
        block = f[kind]
        shown = []
        for ex in block["examples"][:examples]:
            ident = ex["id"] if len(ex["id"]) <= 20 else ex["id"][:8] + "..."
            label = f"{ident}: {ex['gold']} -> {ex['predicted'] or 'none'}"
            if ex.get("probs") and ex["predicted"]:
                label += f" (p {ex['probs'][ex['predicted']]:.2f})"
            if kind == "unparseable" and "text" in ex:
                label += f" {ex['text'][:40]!r}"
            shown.append(label)
        t.add_row(kind.replace("_", " "), str(block["count"]), block["rule"], escape("\n".join(shown)) or "-")
    return t


def legacy(results: dict[str, Any]) -> Table | None:
    lg = results["metrics"].get("legacy")
    if not lg:
        return None
    t = Table(title="LEGACY notebook metric (unreliable; for comparison only)", show_header=False)
    t.add_column("", style="bold")
    t.add_column("")
    t.add_row("legacy exact", f"{_pct(lg['exact_rate'])}  ({lg['exact_rule']})")
    t.add_row("legacy partial", f"{_pct(lg['partial_rate'])}  ({lg['partial_rule']})")
    if lg.get("empty_judged_exact"):
        t.add_row("empty answers judged exact", f"{lg['empty_judged_exact']} (the notebook's rule: '' is in every "
                  "gold text)")
    t.add_row("strict letter accuracy", _pct(lg["strict_letter_accuracy"]))
    t.add_row(
        "wrong letter judged right",
        f"exact {lg['wrong_letter_judged_exact']}/{lg['wrong_letter']} ({_pct(lg['false_positive_rate_exact'])}), "
        f"partial {lg['wrong_letter_judged_partial']}/{lg['wrong_letter']} ({_pct(lg['false_positive_rate_partial'])})",
    )
    return t


def test_size_table(results: dict[str, Any]) -> Table:
    ts = results["metrics"]["test_size"]
    t = Table(title=f"test size: 95% Wilson interval at accuracy {_pct(ts['at_accuracy'])}",
              caption="; ".join(
                  f"detect {r['difference']:+.0%}: {r['independent_n']} per model"
                  + (f" (paired {r['paired_n']})" if r.get("paired_n") else "")
                  for r in ts["n_to_detect"]
              ))
    for col in ("questions", "interval", "width"):
        t.add_column(col, justify="right")
    for r in ts["interval_width"]:
        t.add_row(str(r["n"]), f"{_pct(r['lo'])}-{_pct(r['hi'])}", f"±{100 * r['width'] / 2:.1f} pts")
    return t


def comparison(cmp: dict[str, Any]) -> Table:
    t = Table(title=f"vs reference: {cmp['n']} matched questions", show_header=False)
    t.add_column("", style="bold")
    t.add_column("")
    t.add_row("accuracy", f"{_pct(cmp['accuracy'])} vs reference {_pct(cmp['accuracy_reference'])} "
              f"({100 * cmp['accuracy_difference']:+.1f} pts)")
    t.add_row("agreement", _pct(cmp["agreement"]))
    if cmp.get("mean_kl") is not None:
        t.add_row("KL(ref || this)", f"mean {cmp['mean_kl']:.4f} nats, max {cmp['max_kl']:.4f}")
    t.add_row("McNemar (exact)", f"p = {cmp['mcnemar_p']:.4g}  (b = {cmp['b_reference_only_correct']} only reference "
              f"right, c = {cmp['c_this_only_correct']} only this right)")
    if cmp["only_in_reference"] or cmp["only_in_this"]:
        t.add_row("unmatched", f"{cmp['only_in_reference']} only in reference, {cmp['only_in_this']} only here")
    return t


def sweep_table(sw: dict[str, Any]) -> Table:
    t = Table(title=f"generation sweep: {sw['n']} questions, strict letter parse")
    for col in ("temperature", "max new", "accuracy (mean, min-max)", "consistency", "unparseable", "s/question",
                "tokens/q"):
        t.add_column(col, justify="right")
    for r in sw["rows"]:
        t.add_row(
            f"{r['temperature']:g}",
            str(r["max_new_tokens"]),
            f"{_pct(r['accuracy_mean'])} ({_pct(r['accuracy_min'])}-{_pct(r['accuracy_max'])})",
            _pct(r["consistency"]),
            _pct(r["unparseable_rate"]),
            f"{r['s_per_question']:.3f}",
            f"{r['new_tokens_per_question']:.1f}",
        )
    return t


def render(results: dict[str, Any], console: Console, examples: int = 3) -> None:
    """Print every table of an evaluation."""
    for table in (
        headline(results),
        legacy(results),
        subjects(results),
        letters(results),
        calibration(results),
        failures(results, examples),
        test_size_table(results),
    ):
        if table is not None:
            console.print(table)
    if results.get("comparison"):
        console.print(comparison(results["comparison"]))
