"""What a bench run leaves behind: bench.json (written by the run), bench.csv, bench.md, pareto.png, JUnit XML,
$GITHUB_STEP_SUMMARY, and the console summary."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from edgemed.bench.gate.budget import Check
from edgemed.bench.results import ArtifactResult
from edgemed.fsutil import atomic_write_text

BENCH_JSON = "bench.json"


def write_outputs(doc: dict[str, Any], results: list[ArtifactResult], out: Path, junit: Path | None,
                   checks: list[Check]) -> dict[str, str]:
    from edgemed.bench.render.junit import to_junit
    from edgemed.bench.render.plot import plot_pareto
    from edgemed.bench.render.tables import to_csv, to_markdown

    written = {"json": str(out / BENCH_JSON)}
    written["csv"] = str(atomic_write_text(out / "bench.csv", to_csv(results)))
    md = to_markdown(doc, results)
    written["markdown"] = str(atomic_write_text(out / "bench.md", md))
    from edgemed.bench.render.html import write_bench_html  # bench.html beside bench.md

    page, why = write_bench_html(doc, results, out / "bench.html")
    if page:
        written["html"] = str(page)
    else:
        doc.setdefault("skipped_outputs", {})["bench.html"] = why
    env, st = doc.get("environment", {}), doc.get("settings", {})
    policies = sorted({str(r.runtime_info.get("omp_wait_policy")) for r in results if r.ok})
    caption = (f"{env.get('cpu')} ({env.get('cores_physical')} cores), {st.get('threads')} threads on "
               f"{st.get('device')}, OMP_WAIT_POLICY {' / '.join(policies) or '-'}; edgemed bench {doc.get('created')}")
    try:
        png, why = plot_pareto(results, out / "pareto.png", caption)
    except Exception as exc:  # noqa: BLE001 - a figure must never cost the measured results
        from edgemed.fsutil import environment_error

        if environment_error(exc) is not None:
            raise  # a full disk is not a plotting problem: the CLI names it
        png, why = None, f"plotting failed ({type(exc).__name__}: {exc}); the numbers are in bench.json"
    if png:
        written["plot"] = str(png)
    else:
        doc.setdefault("skipped_outputs", {})["pareto.png"] = why
    if junit:
        written["junit"] = str(atomic_write_text(Path(junit), to_junit(results, [c.to_dict() for c in checks])))
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a", encoding="utf-8") as fh:
            fh.write(md + "\n")
        written["github_step_summary"] = summary
    return written


def print_summary(doc: dict[str, Any], results: list[ArtifactResult], broken: list[Check]) -> None:
    from rich.console import Console
    from rich.markup import escape  # messages hold pip extras like 'edgemed[train]', not markup

    from edgemed.bench.render.tables import below_llama_bench, int8_notes, question_source, rich_table
    from edgemed.console import console

    s = doc["settings"]
    wide = console if console.is_terminal else Console(width=200, highlight=False)  # logs: never fold columns
    wide.print(rich_table(results, title=f"edgemed bench: {s['questions']} questions ({question_source(s)}), "
                                         f"{s['threads']} threads "
                                         f"({s['device']}), pp{s['n_prompt']}/tg{s['n_gen']} x {s['repetitions']}"
                                         f"{below_llama_bench(s)}",
                          reference=doc.get("reference")))
    for name, why in (doc.get("left_out") or {}).items():
        console.print(f"[yellow]NOT MEASURED[/yellow] {escape(name)}: {escape(why)}")
    for r in results:
        if not r.ok:
            console.print(f"[red]FAILED[/red] {r.name}: {escape(r.failure.message if r.failure else 'unknown')}")
    bw = doc["machine"]["copy_bandwidth"]["gbps"]
    console.print(f"[dim]p95 ms = one question answered (letter log-probs; 'max' below 20 samples); TTFT at the "
                  f"MedMCQA prompt; pp/tg t/s = llama-bench's tests (mean ± stdev); KLD = mean KL(reference || "
                  f"artifact), nats/token; same top = top-1 agreement; RSS = peak resident memory of the artifact's "
                  f"process while serving (load, answers, pp, tg; before scoring); BW use = weight bytes x tg t/s "
                  f"over this machine's copy bandwidth ({bw:.1f} GB/s); "
                  f"others = other processes' CPU use (cores) meanwhile, BUSY above the threshold[/dim]")
    for r in results:
        if r.ok and r.busy:
            console.print(f"[yellow]BUSY[/yellow] {r.name}: {r.machine_load.get('reason')}; its timings are not "
                          "comparable with a quiet run")
    for line in int8_notes(results):
        console.print(f"[yellow]INT8[/yellow] {escape(line)}")
    from edgemed.bench.render.tables import check_outcome, checks_table

    if doc.get("checks"):
        wide.print(checks_table(doc["checks"]))
    for c in broken:
        console.print(f"[red]BROKEN[/red] {c.artifact} {c.key}: {escape(c.message)}; "
                      f"{escape(check_outcome(c.to_dict()))} ({escape(c.source)})")
    checks = doc.get("checks", [])
    for c in checks:
        if c.get("verdict") == "inconclusive" and c["passed"]:
            console.print(f"[yellow]INCONCLUSIVE[/yellow] {c['artifact']} {c['key']}: {escape(c['message'])}; "
                          f"{escape(check_outcome(c))} ({escape(c['source'])})")
    if checks and not broken:
        console.print(f"[green]all {len(checks)} checks hold[/green]")
    if any(c.get("verdict") == "inconclusive" for c in checks):
        v = doc.get("verdicts", {})
        console.print(f"[dim]inconclusive = the 95% interval straddles the limit or a timing was measured busy; "
                      f"counted as '{v.get('inconclusive')}' after up to {v.get('retries')} rerun(s) "
                      "(--inconclusive, --retries)[/dim]")
    rec = doc["recommendation"]
    console.print(f"[bold]recommendation:[/bold] {escape(rec['why'])}")
    for name, reasons in rec["rejected"].items():
        console.print(f"  {name}: {escape('; '.join(reasons))}")
    for prof in doc.get("profiles", []):
        p = prof["profile"]
        console.print(f"[bold]{p['name']}[/bold] ({p['bandwidth_gbps']:g} GB/s, {p['memory_ceiling_gb']:g} GB usable; "
                      "estimates):")
        for row in prof["artifacts"]:
            est = row.get("est_decode_tokens_per_s")
            shown = f"~{est:.1f} tok/s" if est else "-"
            console.print(f"  {row['artifact']}: {row['note']}; est. decode {shown}")
    for name, why in doc.get("skipped_outputs", {}).items():
        console.print(f"[yellow]skipped {name}[/yellow]: {escape(why)}")
    console.print(f"[dim]wrote {escape(', '.join(doc['outputs'].values()))}[/dim]")
