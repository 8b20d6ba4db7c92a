"""Render bench results: the rich terminal table (best value per column highlighted), CSV and markdown."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

from edgemed.bench.metrics import METRICS, TABLE_COLUMNS
from edgemed.bench.render.cells import cell
from edgemed.bench.results import ArtifactResult


def best_per_column(results: list[ArtifactResult], columns: Sequence[str] = TABLE_COLUMNS) -> dict[str, float]:
    """metric -> the best value among the artifacts that ran (for metrics with a direction)."""
    best: dict[str, float] = {}
    for key in columns:
        better = METRICS[key].better
        values = [v for r in results if r.ok and (v := r.metric(key)) is not None]
        if better and len(values) > 1:
            best[key] = min(values) if better == "min" else max(values)
    return best


def rich_table(results: list[ArtifactResult], title: str = "edgemed bench", reference: str | None = None):
    from rich.table import Table

    best = best_per_column(results)
    table = Table(title=title, title_justify="left")
    table.add_column("artifact", no_wrap=True)
    table.add_column("format")
    for key in TABLE_COLUMNS:
        table.add_column(METRICS[key].label, justify="right")
    for r in results:
        name = r.name + (" (ref)" if r.name == reference else "")
        if not r.ok:
            kind = r.failure.kind if r.failure else "failed"
            table.add_row(name, r.format, "[red]FAILED[/red]", f"[red]{kind}[/red]", *[""] * (len(TABLE_COLUMNS) - 2))
            continue
        cells = []
        for key in TABLE_COLUMNS:
            text = cell(r, key).text
            value = r.metric(key)
            cells.append(f"[bold green]{text}[/bold green]" if key in best and value == best[key] else text)
        table.add_row(name, r.format, *cells)
    return table


def to_csv(results: list[ArtifactResult]) -> str:
    rows = [r.row() for r in results]
    buf = io.StringIO()
    fields = ["name", "format", "runtime", "status", *METRICS, "failure"]
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in fields})
    return buf.getvalue()


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def question_source(settings: dict[str, Any]) -> str:
    """Where the scored questions came from, as the lineage selected them (never the unset --data)."""
    sel = settings.get("question_selection") or {}
    source = sel.get("source") or settings.get("data") or "?"
    split = f" {sel['split']}" if sel.get("split") and source != "sample" else ""
    how = sel.get("selection")
    return f"{source}{split}: {how}" if how else f"{source}{split}"


LLAMA_BENCH_DEFAULTS = (("n_prompt", "-p", 512), ("n_gen", "-n", 128), ("repetitions", "-r", 5))


def below_llama_bench(settings: dict[str, Any]) -> str:
    """What these settings lower below llama-bench's own defaults, said beside the table ('' when nothing)."""
    low = [f"{flag} {settings[key]} < {default}" for key, flag, default in LLAMA_BENCH_DEFAULTS
           if isinstance(settings.get(key), int) and settings[key] < default]
    return f" (below llama-bench's defaults: {', '.join(low)})" if low else ""


def int8_notes(results: list[ArtifactResult]) -> list[str]:
    """One line per int8 artifact whose weights can saturate this CPU's kernel, with the KLD measured here."""
    lines = []
    for r in results:
        risk = (r.runtime_info or {}).get("int8_saturation_risk") if r.ok else None
        if risk:
            fid = r.fidelity or {}
            kld = f"its KLD on this CPU: {fid['kld_mean']:.4g}" if fid.get("kld_mean") is not None else "no KLD here"
            lines.append(f"{r.name}: {risk} ({kld})")
    return lines


def to_markdown(doc: dict[str, Any], results: list[ArtifactResult]) -> str:
    """A summary for a pull request or $GITHUB_STEP_SUMMARY: table, checks, recommendation, environment."""
    ref = doc.get("reference")
    lines = ["## edgemed bench", ""]
    lines += _md_intro(doc.get("settings", {}), results, doc.get("left_out") or {})
    lines.append("")
    lines += _md_table(results, ref)
    lines.append("")
    lines += _md_checks(doc.get("checks", []))
    lines += _md_recommendation(doc.get("recommendation"))
    lines += _md_profiles(doc.get("profiles", []))
    lines += _md_notes(results, ref)
    lines.append(_md_environment(doc))
    return "\n".join(lines) + "\n"


def left_out_lines(left_out: dict[str, str]) -> list[str]:
    """What the caller chose not to measure, and why (markdown)."""
    if not left_out:
        return []
    return ["", "**Not measured here** (exported, but left out of this bench):"] + \
        [f"- `{name}`: {why}" for name, why in left_out.items()]


def _md_intro(settings: dict[str, Any], results: list[ArtifactResult], left_out: dict[str, str]) -> list[str]:
    """What was measured and how; what was left out; busy machines and int8 kernel risks."""
    lines = [
        f"{len(results)} artifacts, {settings.get('questions', '?')} questions ({question_source(settings)}), "
        f"{settings.get('threads')} threads on {settings.get('device')}, pp{settings.get('n_prompt')} / "
        f"tg{settings.get('n_gen')} x {settings.get('repetitions')} repetitions{below_llama_bench(settings)} after "
        f"{settings.get('warmup')} warm-up, wait policy {settings.get('wait_policy')}. "
        "Best value per column in **bold**."
    ]
    lines += left_out_lines(left_out)
    busy = [r for r in results if r.ok and r.busy]
    if busy:
        lines += ["", "**Busy machine:** other processes used the CPU while these were measured; their timings are "
                      "not comparable with a quiet run:"]
        lines += [f"- `{r.name}`: {r.machine_load.get('reason')}" for r in busy]
    warnings = int8_notes(results)
    if warnings:
        lines += ["", "**int8 kernel risk:**"] + [f"- {w}" for w in warnings]
    return lines


def _md_table(results: list[ArtifactResult], ref: str | None) -> list[str]:
    """One row per artifact over :data:`TABLE_COLUMNS`, the best value per column in bold."""
    best = best_per_column(results)
    header = ["artifact", "format"] + [METRICS[k].label for k in TABLE_COLUMNS]
    lines = [_md_row(header), _md_row(["---"] * 2 + ["---:"] * len(TABLE_COLUMNS))]
    for r in results:
        name = r.name + (" (ref)" if r.name == ref else "")
        if not r.ok:
            msg = r.failure.message if r.failure else "failed"
            lines.append(_md_row([name, r.format, f"FAILED: {msg}"] + [""] * (len(TABLE_COLUMNS) - 1)))
            continue
        cells = []
        for key in TABLE_COLUMNS:
            text = cell(r, key).text
            cells.append(f"**{text}**" if key in best and r.metric(key) == best[key] else text)
        lines.append(_md_row([name, r.format, *cells]))
    return lines


def check_interval(c: dict[str, Any]) -> str:
    """A check's measured interval as text ('-' when it has none)."""
    low, high = c.get("low"), c.get("high")
    if low is None or high is None:
        return "-"
    return f"{low:.4g}" if low == high else f"[{low:.4g}, {high:.4g}]"


def check_outcome(c: dict[str, Any]) -> str:
    """'pass', 'FAIL', or 'inconclusive -> counted as fail (--inconclusive fail)', plus reruns."""
    verdict = c.get("verdict") or ("pass" if c["passed"] else "fail")
    text = verdict if verdict == "pass" else verdict.upper() if verdict == "fail" else \
        f"inconclusive -> counted as {c['policy']} (--inconclusive {c['policy']})" if c.get("policy") else verdict
    if c.get("reruns"):
        text += f", after {c['reruns']} rerun(s)"
    return text


def checks_table(checks: list[dict[str, Any]]):
    """The checks as a rich table for the console: limit, measured value, its 95% interval, verdict and reruns."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="checks (each decided on its measured 95% interval)", title_justify="left")
    for name, justify in (("artifact", "left"), ("check", "left"), ("limit", "right"), ("measured", "right"),
                          ("95% interval", "right"), ("verdict", "left")):
        table.add_column(name, justify=justify)
    for c in checks:
        outcome = check_outcome(c)
        style = "green" if c["passed"] and c.get("verdict") == "pass" else "red" if not c["passed"] else "yellow"
        table.add_row(escape(c["artifact"]), c["key"], "-" if c["limit"] is None else f"{c['limit']:g}",
                      "-" if c["measured"] is None else f"{c['measured']:.4g}", escape(check_interval(c)),
                      f"[{style}]{escape(outcome)}[/{style}]")
    return table


def _md_checks(checks: list[dict[str, Any]]) -> list[str]:
    """Every check: limit, measured value and interval, verdict, reruns (the broken ones first)."""
    if not checks:
        return []
    broken = [c for c in checks if not c["passed"]]
    inconclusive = sum(1 for c in checks if c.get("verdict") == "inconclusive")
    status = "all checks hold" if not broken else f"{len(broken)} of {len(checks)} checks broken"
    if inconclusive:
        status += f" ({inconclusive} inconclusive)"
    lines = [f"**Checks: {status}.** Each budget is decided on its measured 95% interval: pass when the whole "
             "interval is on the allowed side of the limit, fail when wholly beyond, inconclusive when it straddles "
             "the limit or a timing was measured on a busy machine.", "",
             _md_row(["artifact", "check", "limit", "measured", "95% interval", "verdict", "detail", "from"]),
             _md_row(["---"] * 2 + ["---:"] * 3 + ["---"] * 3)]
    for c in sorted(checks, key=lambda c: c["passed"]):
        measured = "-" if c["measured"] is None else f"{c['measured']:.4g}"
        limit = "-" if c["limit"] is None else f"{c['limit']:g}"
        mark = "" if c["passed"] else ":x: "
        lines.append(_md_row([f"`{c['artifact']}`", c["key"], limit, measured, check_interval(c),
                              mark + check_outcome(c), c["message"], c["source"]]))
    return lines + [""]


def _md_recommendation(rec: dict[str, Any] | None) -> list[str]:
    if not rec:
        return []
    lines = [f"**Recommendation:** {rec['why']}."]
    lines += [f"- `{name}`: {'; '.join(reasons)}" for name, reasons in rec.get("rejected", {}).items()]
    return lines + [""]


def _md_profiles(profiles: list[dict[str, Any]]) -> list[str]:
    lines = []
    for prof in profiles:
        p = prof["profile"]
        lines.append(f"**Device profile {p['name']}** ({p['description']}; {p['bandwidth_gbps']:g} GB/s, "
                     f"{p['memory_ceiling_gb']:g} GB usable; estimates):")
        for row in prof["artifacts"]:
            est = row.get("est_decode_tokens_per_s")
            bound = row.get("est_max_decode_tokens_per_s")
            shown = f"~{est:.1f} tok/s" if est else "-"
            shown += f" (memory-bound max {bound:.1f})" if bound else ""
            lines.append(f"- `{row['artifact']}`: {row['note']}; decode {shown}")
        lines.append("")
    return lines


def _md_notes(results: list[ArtifactResult], ref: str | None) -> list[str]:
    """What the columns mean, and what the fidelity figures rest on."""
    lines = ["p95 ms: one question answered (letter log-probs; `max` below 20 samples); TTFT at the MedMCQA "
             "prompt; pp/tg t/s: llama-bench's tests, mean ± stdev; RSS MB: peak resident memory of the "
             "artifact's process while serving (load, answers, pp, tg), before the bench's own scoring buffers "
             "(the whole-run peak is `memory.peak_rss_process_bytes` in bench.json); others: other processes' "
             "CPU use in cores while it was measured.", ""]
    fid = next((r.fidelity for r in results if r.ok and r.fidelity), None)
    if fid:
        lines.append(f"Fidelity vs `{ref}`: {fid['tokens']} tokens in {fid['sequences']} sequences; KLD = mean "
                     f"KL(reference || artifact) in nats/token ± half its 95% interval; same top = top-1 agreement; "
                     f"reference top-{fid['top_k']} stored (mean mass left out {fid['tail_mass']:.3f}).")
        lines.append("")
    return lines


def _md_environment(doc: dict[str, Any]) -> str:
    env = doc.get("environment", {})
    bw = doc.get("machine", {}).get("copy_bandwidth", {})
    return (f"<sub>{env.get('cpu')} ({env.get('cores_physical')} cores), {env.get('ram_gb')} GB RAM, {env.get('os')}, "
            f"accelerator {env.get('accelerator')}, copy bandwidth {bw.get('gbps', 0):.1f} GB/s, "
            f"commit {env.get('commit')}</sub>")
