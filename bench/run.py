"""Drive a bench run: validate, then each artifact in its own child process (the reference first, so its
log-probs are there for every other's fidelity), results saved as they finish, then checks and outputs.

Public entry point: :func:`run_bench` (used by ``edgemed bench`` and ``edgemed pipeline``).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from edgemed.bench.artifacts import (
    name_artifacts,
    path_from_run,
    pick_reference_target,
    previous_results,
    settings_key,
    weights_record,
)
from edgemed.bench.config import BenchConfig
from edgemed.bench.isolate import MeasuredOutcome, measure_child, tail
from edgemed.bench.outputs import BENCH_JSON, print_summary, write_outputs
from edgemed.bench.protocol import Job, worker_env
from edgemed.bench.results import Accuracy, ArtifactResult, Bandwidth, Failure, Latency, Memory, Throughput
from edgemed.bench.units import parse_ms, parse_ratio, parse_size
from edgemed.child import python_module
from edgemed.fsutil import atomic_write_json, dir_size

SCHEMA = 2


def run_bench(artifacts: list[Path], config: BenchConfig, show: bool = True) -> dict[str, Any]:
    """Benchmark artifacts (folders with edgemed.json, or folders holding them) and write OUT/bench.{json,csv,md},
    pareto.png and optionally JUnit XML. Returns the bench.json document; its ``exit_code`` is 0 when every
    artifact ran and every budget held, 1 otherwise. Bad input raises EdgemedError (exit 2) before anything runs.
    """
    from edgemed.bench.budget import check_budgets, load_budgets
    from edgemed.bench.compare_runs import load_run
    from edgemed.bench.profiles import get_profile
    from edgemed.fsutil import check_output_dir
    from edgemed.resources import resolved

    # --- validate everything first: a usage error must not cost a bench run -------------------------------
    config.validate()
    out = Path(config.out)
    check_output_dir(out, "--out")
    if config.junit is not None:
        from edgemed.fsutil import check_output_file

        check_output_file(Path(config.junit), "--junit")
    budgets = load_budgets(config.budget) if config.budget else None
    tol = parse_ratio(config.tolerance, "--tolerance")
    base_doc, base_results = load_run(config.baseline, "--baseline") if config.baseline else (None, [])
    mem_limit = parse_size(config.max_memory, "--max-memory") if config.max_memory is not None else None
    p95_limit = parse_ms(config.max_p95_ms, "--max-p95-ms") if config.max_p95_ms is not None else None
    boards = [get_profile(p) for p in config.profile or []]
    if mem_limit is None and boards:
        mem_limit = boards[0].memory_ceiling_bytes
    targets = name_artifacts(artifacts)
    ref_target = pick_reference_target(targets, config.reference)
    targets = [ref_target] + [t for t in targets if t is not ref_target]  # its log-probs first
    questions, selection = _questions(config, targets)
    where = resolved(config.threads, config.device)

    # --- measure --------------------------------------------------------------------------------------------
    from rich.markup import escape

    from edgemed.bench.probes import copy_bandwidth
    from edgemed.console import err_console, progress
    from edgemed.sysinfo import environment

    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    settings = {**config.to_dict(), **where, "questions": len(questions),
                "question_ids_sha256": _ids_hash(questions), "question_selection": selection,
                "latency_prompts": min(config.latency_prompts, len(questions))}
    doc: dict[str, Any] = {
        "schema": SCHEMA, "tool": "edgemed bench", "status": "running",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "settings": settings,
        "environment": environment(), "machine": {"copy_bandwidth": copy_bandwidth()},
        "reference": ref_target.name, "artifacts": [],
        "questions": [{"id": q.id, "subject": q.subject, "question": q.question[:300]} for q in questions],
    }
    measured = {**config.measured, **where, "question_ids_sha256": settings["question_ids_sha256"]}
    previous = previous_results(out / BENCH_JSON) if config.resume else {}
    fidelity_dir = work / "reference-fidelity"
    results: list[ArtifactResult] = []
    qdicts = [asdict(q) for q in questions]
    with progress() as bar:
        task = bar.add_task("bench", total=len(targets))
        for target in targets:
            key = settings_key(measured, target, ref_target)
            prior = previous.get(target.name)
            is_ref = target is ref_target
            if target.problem:  # e.g. a corrupt manifest: recorded as failed like a load failure, never run
                results.append(ArtifactResult(name=target.name, path=path_from_run(target.path, out),
                                              format=target.format, runtime=target.runtime, settings_key=key,
                                              status="failed", failure=Failure(kind="error", message=target.problem),
                                              weights=weights_record(Path(target.path), target.format)))
                err_console.print(f"[red]{escape(target.name)}: not measured: {escape(target.problem)}[/red]")
            elif prior is not None and prior.ok and prior.settings_key == key and \
                    (not is_ref or not config.fidelity or (fidelity_dir / "meta.json").is_file()):
                results.append(prior)
                err_console.print(f"[dim]{target.name}: already measured with these settings (--resume)[/dim]")
            else:
                bar.update(task, description=f"{target.name}: starting")
                job = Job(config=config, target=target, questions=qdicts, threads=where["threads"],
                          device=where["device"], fidelity_dir=str(fidelity_dir) if config.fidelity else None,
                          is_reference=is_ref)
                results.append(_measure(job, key, work, bar, task))
                r = results[-1]
                if r.ok:
                    busy = f" [yellow]BUSY machine: {r.machine_load.get('reason')}[/yellow]" if r.busy else ""
                    err_console.print(f"[green]{r.name}[/green]: done in {r.wall_s:.1f} s{busy}")
                else:
                    err_console.print(f"[red]{escape(r.name)}: {escape(r.failure.message)}[/red] "
                                      f"(log: {escape(str(work / (r.name + '.log')))})")
            doc["artifacts"] = [r.to_dict() for r in results]
            atomic_write_json(out / BENCH_JSON, doc)  # finished artifacts survive a later crash
            bar.advance(task)

    # --- compare, check, recommend, write -----------------------------------------------------------------
    from edgemed.bench.derive import fill_derived

    ref = next((r for r in results if r.name == ref_target.name and r.ok), None)
    fill_derived(results, ref, doc["machine"]["copy_bandwidth"]["gbps"])
    checks = []
    if budgets:
        checks += check_budgets(budgets, results, ref)
        doc["budgets"] = budgets.to_dict()
    if config.baseline:
        from edgemed.bench.compare_runs import regressions

        checks += regressions(base_results, results, tol, f"baseline {config.baseline}")
        doc["baseline"] = {"path": str(config.baseline), "tolerance": tol, "created": base_doc.get("created")}
    from edgemed.bench.profiles import estimate
    from edgemed.bench.recommend import Constraints, recommend

    constraints = Constraints(max_memory_bytes=mem_limit, max_p95_ms=p95_limit, max_kld=config.max_kld,
                              prefer=config.prefer)
    busy = [r.name for r in results if r.ok and r.busy]
    doc.update(
        status="complete",
        reference=ref.name if ref else None,
        artifacts=[r.to_dict() for r in results],
        checks=[c.to_dict() for c in checks],
        recommendation=recommend(results, ref, constraints),
        profiles=[estimate(b, results) for b in boards],
        busy_artifacts=busy,
    )
    failed = [r.name for r in results if not r.ok]
    broken = [c for c in checks if not c.passed]
    doc["exit_code"] = 1 if failed or broken else 0
    doc["summary"] = {"failed_artifacts": failed, "broken_checks": len(broken), "checks": len(checks),
                      "busy_artifacts": busy}
    from edgemed.bench.plot import front_of

    doc["pareto_front"], doc["pareto_quality"] = front_of(results)
    doc["outputs"] = write_outputs(doc, results, out, config.junit, checks)
    atomic_write_json(out / BENCH_JSON, doc)
    if show:
        print_summary(doc, results, broken)
    return doc


def _questions(config: BenchConfig, targets):
    """The questions every artifact scores: read from the artifacts' lineage (edgemed.lineage)."""
    from edgemed.lineage import read_lineage, scoring_questions

    lineages = {t.name: read_lineage(Path(t.path)) for t in targets if not t.problem}
    return scoring_questions(config.data, config.split, lineages, include_trained=config.include_trained,
                             limit=config.limit)


def _ids_hash(questions) -> str:
    return hashlib.sha256("\n".join(q.id for q in questions).encode()).hexdigest()[:16]


# --- one artifact ---------------------------------------------------------------------------------------------
def _measure(job: Job, key: str, work: Path, bar, task) -> ArtifactResult:
    target = job.target
    name = target.name
    env, job.env = worker_env(job.config, dict(os.environ))
    job_path = job.write(work / f"{name}.job.json")
    res_path = work / f"{name}.result.json"
    log_path = work / f"{name}.log"
    res_path.unlink(missing_ok=True)
    cmd = python_module("edgemed.bench.worker", str(job_path), str(res_path))

    def tick() -> None:
        lines = [ln for ln in tail(log_path, 5, 2048).splitlines() if ln.startswith("[bench]")]
        if lines:
            bar.update(task, description=f"{name}: {lines[-1][8:][:60]}")

    outcome = measure_child(cmd, log_path, timeout_s=job.config.timeout, env=env, on_tick=tick, threads=job.threads)
    result = ArtifactResult(name=name, path=path_from_run(target.path, work.parent), format=target.format,
                            runtime=target.runtime, settings_key=key, wall_s=outcome.wall_s,
                            weights=weights_record(Path(target.path), target.format))
    from edgemed.registry import weight_bytes

    result.size_bytes = dir_size(Path(target.path))
    result.bandwidth = Bandwidth(weight_bytes=weight_bytes(Path(target.path), target.format))
    result.memory = Memory(peak_rss_sampled_bytes=outcome.peak_rss_sampled or None,
                           peak_rss_os_bytes=outcome.ru_maxrss or None,
                           sample_interval_ms=outcome.interval_s * 1e3, samples=outcome.samples)
    result.machine_load = outcome.load.to_dict() if outcome.load else {}
    if not outcome.ok or not res_path.is_file():
        result.status = "failed"
        result.failure = _failure(outcome, log_path)
        return result
    raw = json.loads(res_path.read_text(encoding="utf-8"))
    mem = raw["memory"]
    result.memory.rss_before_load_bytes = mem.get("rss_before_load_bytes")
    result.memory.rss_after_load_bytes = mem.get("rss_after_load_bytes")
    result.memory.peak_gpu_bytes = mem.get("peak_gpu_bytes")
    result.memory.peak_rss_self_bytes = mem.get("self_peak_rss_bytes")
    result.memory.peak_rss_serving_bytes = mem.get("serving_peak_rss_bytes")
    result.load_s, result.eval_s = raw["load_s"], raw["eval_s"]
    result.phases_s = raw.get("phases_s", {})
    result.runtime_info = {**raw.get("runtime_info", {}), "prompt_style": raw.get("style"),
                             "prompt_style_source": raw.get("style_source")}
    result.latency = Latency.from_raw(raw["latency"])
    result.throughput = Throughput(pp=raw["pp"], tg=raw["tg"])
    result.fidelity = raw.get("fidelity")
    result.extra = raw.get("extra", {})
    result.predictions = raw.get("predictions", [])
    evaluation = raw["evaluation"]
    ci = evaluation.get("accuracy_ci") or [None, None]
    result.accuracy = Accuracy(accuracy=evaluation["accuracy"], n=evaluation["n"], ci_low=ci[0], ci_high=ci[1],
                               metrics=evaluation.get("metrics", {}))
    return result


def _failure(outcome: MeasuredOutcome, log_path: Path) -> Failure:
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
