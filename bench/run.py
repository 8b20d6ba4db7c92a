"""Drive a bench run: each artifact in its own child process, results saved as they finish, then checks and outputs.

Public entry point: :func:`run_bench` (used by ``edgemed bench`` and ``edgemed pipeline``).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from edgemed.bench.budget import Check, check_budgets, load_budgets
from edgemed.bench.isolate import ChildOutcome, run_child, tail
from edgemed.bench.results import (
    Accuracy,
    ArtifactResult,
    Bandwidth,
    Failure,
    Latency,
    Memory,
    Throughput,
)
from edgemed.bench.units import parse_ms, parse_ratio, parse_size
from edgemed.errors import EdgemedError
from edgemed.fsutil import atomic_write_json, atomic_write_text, dir_size

SCHEMA = 1
BENCH_JSON = "bench.json"


def run_bench(
    artifacts: list[Path],
    out: Path,
    data: str = "sample",
    limit: int | None = None,
    threads: int | None = None,
    repeats: int = 5,
    warmup: int = 1,
    budget: Path | None = None,
    *,
    split: str = "validation",
    held_out: bool = True,
    seed: int = 0,
    latency_prompts: int = 4,
    gen_tokens: int = 32,
    batch_size: int = 8,
    device: str = "auto",
    reference: str | None = None,
    baseline: Path | None = None,
    tolerance: str | float = "10%",
    max_memory: str | int | None = None,
    max_p95_ms: str | float | None = None,
    profiles: list[str] | None = None,
    timeout: float | None = 1800.0,
    junit: Path | None = None,
    resume: bool = False,
    show: bool = True,
) -> dict[str, Any]:
    """Benchmark artifacts (folders with edgemed.json, or folders holding them) and write DIR/bench.{json,csv,md},
    pareto.png and optionally JUnit XML. Returns the bench.json document; its ``exit_code`` is 0 when every
    artifact ran and every budget held, 1 otherwise. Bad input raises EdgemedError (exit 2) before anything runs.
    """
    from edgemed.bench.compare_runs import load_run
    from edgemed.bench.profiles import get_profile

    out = Path(out)
    # --- validate everything first: a usage error must not cost a bench run -------------------------------
    for name, value, low in (("repeats", repeats, 1), ("warmup", warmup, 0), ("latency_prompts", latency_prompts, 1),
                             ("gen_tokens", gen_tokens, 2), ("batch_size", batch_size, 1)):
        if value < low:
            raise EdgemedError(f"--{name.replace('_', '-')} must be at least {low}, got {value}")
    if threads is not None and threads < 1:
        raise EdgemedError(f"--threads must be at least 1, got {threads}")
    if timeout is not None and timeout <= 0:
        raise EdgemedError(f"--timeout must be positive seconds, got {timeout}")
    budgets = load_budgets(budget) if budget else None
    tol = parse_ratio(tolerance, "--tolerance")
    base_doc, base_results = load_run(baseline) if baseline else (None, [])
    mem_limit = parse_size(max_memory, "--max-memory") if max_memory is not None else None
    p95_limit = parse_ms(max_p95_ms, "--max-p95-ms") if max_p95_ms is not None else None
    boards = [get_profile(p) for p in profiles or []]
    if mem_limit is None and boards:
        mem_limit = boards[0].memory_ceiling_bytes
    targets = _name_artifacts(artifacts)
    if reference is not None and not any(reference in (t["name"], t["format"]) for t in targets):
        raise EdgemedError(
            f"--reference '{reference}' names no artifact; use one of {', '.join(t['name'] for t in targets)}"
        )
    questions = _questions(data, split, held_out, seed, limit)
    threads = threads or _default_threads()

    # --- measure --------------------------------------------------------------------------------------------
    from edgemed.bench.probes import copy_bandwidth
    from edgemed.sysinfo import environment

    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    work.mkdir(exist_ok=True)
    settings = {
        "data": data, "split": split, "held_out": held_out, "seed": seed, "limit": limit,
        "questions": len(questions), "question_ids_sha256": _ids_hash(questions),
        "threads": threads, "repeats": repeats, "warmup": warmup, "latency_prompts": min(latency_prompts,
                                                                                          len(questions)),
        "gen_tokens": gen_tokens, "batch_size": batch_size, "device": device, "timeout_s": timeout,
    }
    doc: dict[str, Any] = {
        "schema": SCHEMA, "tool": "edgemed bench", "status": "running",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "settings": settings,
        "environment": environment(), "machine": {"copy_bandwidth": copy_bandwidth()},
        "artifacts": [],
    }
    previous = _previous_results(out) if resume else {}
    results: list[ArtifactResult] = []
    qfile = atomic_write_json(work / "questions.json", [asdict(q) for q in questions])
    from edgemed.console import err_console, progress

    with progress() as bar:
        task = bar.add_task("bench", total=len(targets))
        for target in targets:
            key = _settings_key(settings, target)
            prior = previous.get(target["name"])
            if prior is not None and prior.ok and prior.settings_key == key:
                results.append(prior)
                err_console.print(f"[dim]{target['name']}: already measured with these settings (--resume)[/dim]")
            else:
                bar.update(task, description=f"{target['name']}: starting")
                results.append(_measure(target, key, settings, qfile, work, timeout, bar, task))
                r = results[-1]
                if r.ok:
                    err_console.print(f"[green]{r.name}[/green]: done in {r.wall_s:.1f} s")
                else:
                    err_console.print(f"[red]{r.name}: {r.failure.message}[/red] (log: {work / (r.name + '.log')})")
            doc["artifacts"] = [r.to_dict() for r in results]
            atomic_write_json(out / BENCH_JSON, doc)  # finished artifacts survive a later crash
            bar.advance(task)

    # --- compare, check, recommend, write -----------------------------------------------------------------
    ref = _pick_reference(results, reference, targets)
    _fill_derived(results, ref, doc["machine"]["copy_bandwidth"]["gbps"])
    checks: list[Check] = []
    if budgets:
        checks += check_budgets(budgets, results, ref)
        doc["budgets"] = budgets.to_dict()
    if baseline:
        from edgemed.bench.compare_runs import regressions

        checks += regressions(base_results, results, tol, f"baseline {baseline}")
        doc["baseline"] = {"path": str(baseline), "tolerance": tol, "created": base_doc.get("created")}
    from edgemed.bench.profiles import estimate
    from edgemed.bench.recommend import recommend

    doc.update(
        status="complete",
        reference=ref.name if ref else None,
        artifacts=[r.to_dict() for r in results],
        checks=[c.to_dict() for c in checks],
        recommendation=recommend(results, mem_limit, p95_limit),
        profiles=[estimate(b, results) for b in boards],
    )
    failed = [r.name for r in results if not r.ok]
    broken = [c for c in checks if not c.passed]
    doc["exit_code"] = 1 if failed or broken else 0
    doc["summary"] = {"failed_artifacts": failed, "broken_checks": len(broken), "checks": len(checks)}
    doc["outputs"] = _write_outputs(doc, results, out, junit, checks)
    atomic_write_json(out / BENCH_JSON, doc)
    if show:
        _print(doc, results, broken)
    return doc


# --- inputs -------------------------------------------------------------------------------------------------
def _name_artifacts(paths: list[Path]) -> list[dict[str, Any]]:
    from edgemed.manifest import detect_runtime, find_artifacts

    if not paths:
        raise EdgemedError("no artifacts given; pass artifact folders or a folder holding them")
    found = find_artifacts([Path(p) for p in paths])
    targets, seen = [], set()
    for path in found:
        fmt, runtime = detect_runtime(path)
        name = path.stem if path.is_file() else path.name
        base, n = name, 2
        while name in seen:
            name, n = f"{base}-{n}", n + 1
        seen.add(name)
        targets.append({"name": name, "path": path.resolve(), "format": fmt, "runtime": runtime})
    return targets


def _questions(data: str, split: str, held_out: bool, seed: int, limit: int | None):
    from edgemed.data import EVAL_FRACTION, load_questions, split_questions

    questions, _ = load_questions(data, split=split)
    if held_out:
        _, questions = split_questions(questions, eval_fraction=EVAL_FRACTION, seed=seed)
    if limit is not None:
        if limit < 1:
            raise EdgemedError(f"--limit must be at least 1, got {limit}")
        questions = questions[:limit]
    if not questions:
        raise EdgemedError(f"no evaluation questions in '{data}' (held-out side empty); pass --no-held-out")
    return questions


def _default_threads() -> int:
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


def _ids_hash(questions) -> str:
    return hashlib.sha256("\n".join(q.id for q in questions).encode()).hexdigest()[:16]


def _identity(path: Path) -> str:
    """What changes when the artifact changes: its manifest, else its files' sizes and mtimes."""
    from edgemed.manifest import MANIFEST

    manifest = path / MANIFEST
    if manifest.is_file():
        return hashlib.sha256(manifest.read_bytes()).hexdigest()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return hashlib.sha256("".join(f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns};" for p in files)
                          .encode()).hexdigest()


def _settings_key(settings: dict[str, Any], target: dict[str, Any]) -> str:
    measured = {k: v for k, v in settings.items() if k != "timeout_s"}
    blob = json.dumps([measured, str(target["path"]), _identity(target["path"])], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _previous_results(out: Path) -> dict[str, ArtifactResult]:
    path = out / BENCH_JSON
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {a["name"]: ArtifactResult.from_dict(a) for a in data.get("artifacts", [])}
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
        return {}  # unreadable: measure everything again


# --- one artifact ---------------------------------------------------------------------------------------------
def _measure(target: dict[str, Any], key: str, settings: dict[str, Any], qfile: Path, work: Path,
             timeout: float | None, bar, task) -> ArtifactResult:
    name = target["name"]
    config = {
        "artifact": str(target["path"]), "name": name, "threads": settings["threads"], "device": settings["device"],
        "repeats": settings["repeats"], "warmup": settings["warmup"], "latency_prompts": settings["latency_prompts"],
        "gen_tokens": settings["gen_tokens"], "batch_size": settings["batch_size"],
        "questions": json.loads(qfile.read_text(encoding="utf-8")),
    }
    cfg_path = atomic_write_json(work / f"{name}.config.json", config)
    res_path = work / f"{name}.result.json"
    log_path = work / f"{name}.log"
    res_path.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(settings["threads"])}
    cmd = [sys.executable, "-m", "edgemed.bench.worker", str(cfg_path), str(res_path)]

    def tick() -> None:
        lines = [ln for ln in tail(log_path, 5, 2048).splitlines() if ln.startswith("[bench]")]
        if lines:
            bar.update(task, description=f"{name}: {lines[-1][8:][:60]}")

    outcome = run_child(cmd, log_path, timeout_s=timeout, env=env, on_tick=tick)
    result = ArtifactResult(name=name, path=str(target["path"]), format=target["format"],
                            runtime=target["runtime"], settings_key=key, wall_s=outcome.wall_s)
    result.size_bytes = dir_size(target["path"])
    from edgemed.bench.worker import weight_bytes

    result.bandwidth = Bandwidth(weight_bytes=weight_bytes(target["path"]))
    result.memory = Memory(peak_rss_sampled_bytes=outcome.peak_rss_sampled or None,
                           peak_rss_os_bytes=outcome.ru_maxrss or None,
                           sample_interval_ms=outcome.interval_s * 1e3, samples=outcome.samples)
    if not outcome.ok or not res_path.is_file():
        result.status = "failed"
        result.failure = _failure(outcome, log_path, res_path.is_file())
        return result
    raw = json.loads(res_path.read_text(encoding="utf-8"))
    mem = raw["memory"]
    result.memory.rss_before_load_bytes = mem.get("rss_before_load_bytes")
    result.memory.rss_after_load_bytes = mem.get("rss_after_load_bytes")
    result.memory.peak_gpu_bytes = mem.get("peak_gpu_bytes")
    result.memory.peak_rss_self_bytes = mem.get("self_peak_rss_bytes")
    result.load_s, result.eval_s = raw["load_s"], raw["eval_s"]
    result.runtime_info = {**raw.get("runtime_info", {}), "prompt_style": raw.get("style")}
    lat = raw["latency"]
    result.latency = Latency.from_samples({k: lat["samples"][k] for k in ("answer_ms", "ttft_ms", "tpot_ms",
                                                                          "generate_ms")})
    result.throughput = Throughput.from_samples(
        {k: lat["samples"][k] for k in ("decode_tokens_per_s", "prefill_tokens_per_s")},
        lat.get("prompt_tokens"), lat.get("new_tokens"))
    result.predictions = raw.get("predictions", [])
    result.accuracy = _accuracy(raw)
    return result


def _failure(outcome: ChildOutcome, log_path: Path, has_result: bool) -> Failure:
    text = tail(log_path, 25)
    errors = [ln for ln in text.splitlines() if ln.startswith("error: ")]
    if outcome.timed_out:
        kind = "timeout"
    elif outcome.signal is not None:
        kind = "crash"
    elif outcome.exit_code != 0:
        kind = "error"
    else:
        kind = "no-result"
    message = outcome.describe() if kind != "no-result" else "exited 0 without writing a result"
    if errors:
        message += f": {errors[-1][len('error: '):]}"
    return Failure(kind=kind, message=message, exit_code=outcome.exit_code, signal=outcome.signal_name,
                   stderr_tail=text)


def _accuracy(raw: dict[str, Any]) -> Accuracy:
    from edgemed.evaluator.metrics import wilson_interval

    preds = raw.get("predictions", [])
    n = len(preds)
    k = sum(1 for p in preds if p.get("correct"))
    lo, hi = wilson_interval(k, n) if n else (None, None)
    metrics = raw.get("evaluation", {}).get("metrics", raw["accuracy"].get("metrics", {}))
    return Accuracy(accuracy=raw["accuracy"]["accuracy"], n=raw["accuracy"]["n"], ci_low=lo, ci_high=hi,
                    metrics=metrics)


# --- after all artifacts ------------------------------------------------------------------------------------------
def _pick_reference(results: list[ArtifactResult], reference: str | None,
                    targets: list[dict[str, Any]]) -> ArtifactResult | None:
    """--reference by name or format; else the hf artifact; else the first one that ran."""
    ok = [r for r in results if r.ok]
    if reference is not None:
        for r in results:
            if reference in (r.name, r.format):
                return r if r.ok else None
    for r in ok:
        if r.format == "hf":
            return r
    return ok[0] if ok else None


def _fill_derived(results: list[ArtifactResult], ref: ArtifactResult | None, copy_gbps: float) -> None:
    """Agreement with the reference and effective decode bandwidth."""
    from edgemed.evaluator.compare import compare

    for r in results:
        if not r.ok:
            continue
        bw = r.bandwidth
        bw.machine_copy_gbps = copy_gbps
        tps = r.throughput.decode_tokens_per_s.get("median")
        if bw.weight_bytes and tps:
            bw.effective_gbps = bw.weight_bytes * tps / 1e9
            bw.fraction_of_copy = bw.effective_gbps / copy_gbps if copy_gbps else None
        if ref is None or not ref.predictions or not r.predictions:
            continue
        r.accuracy.reference = ref.name
        try:
            cmp = compare(ref.predictions, r.predictions)
        except EdgemedError as exc:
            r.accuracy.metrics["vs_reference_error"] = str(exc)
            continue
        r.accuracy.agreement = cmp.get("agreement")
        r.accuracy.mean_kl = cmp.get("mean_kl")
        r.accuracy.mcnemar_p = cmp.get("mcnemar_p")
        r.accuracy.accuracy_diff = cmp.get("accuracy_difference")
        r.accuracy.metrics["vs_reference"] = cmp


def _write_outputs(doc: dict[str, Any], results: list[ArtifactResult], out: Path, junit: Path | None,
                   checks: list[Check]) -> dict[str, str]:
    from edgemed.bench.junit import to_junit
    from edgemed.bench.plot import plot_pareto
    from edgemed.bench.render import to_csv, to_markdown

    written = {"json": str(out / BENCH_JSON)}
    written["csv"] = str(atomic_write_text(out / "bench.csv", to_csv(results)))
    md = to_markdown(doc, results)
    written["markdown"] = str(atomic_write_text(out / "bench.md", md))
    png = plot_pareto(results, out / "pareto.png")
    if png:
        written["plot"] = str(png)
    if junit:
        written["junit"] = str(atomic_write_text(Path(junit), to_junit(results, [c.to_dict() for c in checks])))
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a", encoding="utf-8") as fh:
            fh.write(md + "\n")
        written["github_step_summary"] = summary
    return written


def _print(doc: dict[str, Any], results: list[ArtifactResult], broken: list[Check]) -> None:
    from rich.console import Console

    from edgemed.bench.render import rich_table
    from edgemed.console import console

    s = doc["settings"]
    wide = console if console.is_terminal else Console(width=200, highlight=False)  # logs: never fold columns
    wide.print(rich_table(results, title=f"edgemed bench: {s['questions']} questions, {s['threads']} threads, "
                                         f"{s['repeats']} repeats", reference=doc.get("reference")))
    for r in results:
        if not r.ok:
            console.print(f"[red]FAILED[/red] {r.name}: {r.failure.message if r.failure else 'unknown'}")
    bw = doc["machine"]["copy_bandwidth"]["gbps"]
    console.print(f"[dim]p50/p95 ms = one question answered (letter log-probs); TTFT, TPOT, t/s from "
                  f"{s['gen_tokens']}-token greedy generations; RSS = peak resident memory of the artifact's process; "
                  f"BW use = weight bytes x decode t/s over this machine's copy bandwidth ({bw:.1f} GB/s)[/dim]")
    for c in broken:
        console.print(f"[red]BROKEN[/red] {c.artifact} {c.key}: {c.message} ({c.source})")
    checks = doc.get("checks", [])
    if checks and not broken:
        console.print(f"[green]all {len(checks)} checks hold[/green]")
    rec = doc["recommendation"]
    console.print(f"[bold]recommendation:[/bold] {rec['why']}")
    for name, reasons in rec["rejected"].items():
        console.print(f"  {name}: {'; '.join(reasons)}")
    for prof in doc.get("profiles", []):
        p = prof["profile"]
        console.print(f"[bold]{p['name']}[/bold] ({p['bandwidth_gbps']:g} GB/s, {p['memory_ceiling_gb']:g} GB usable; "
                      "estimates):")
        for row in prof["artifacts"]:
            est = row.get("est_decode_tokens_per_s")
            shown = f"~{est:.1f} tok/s" if est else "-"
            console.print(f"  {row['artifact']}: {row['note']}; est. decode {shown}")
    console.print(f"[dim]wrote {', '.join(doc['outputs'].values())}[/dim]")
