"""Drive a bench run: validate, then each artifact in its own child process (the reference first, so its
log-probs are there for every other's fidelity), results saved as they finish, then checks and outputs.

Public entry point: :func:`run_bench` (used by ``edgemed bench`` and ``edgemed pipeline``).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
from edgemed.bench.protocol import Job, Target, worker_env
from edgemed.bench.results import ArtifactResult, Failure
from edgemed.bench.units import parse_ms, parse_ratio, parse_size
from edgemed.child import python_module
from edgemed.fsutil import atomic_write_json, dir_size

if TYPE_CHECKING:
    from edgemed.bench.budget import Budgets, Check
    from edgemed.bench.profiles import Profile
    from edgemed.data.medmcqa import Question

SCHEMA = 2


def run_bench(artifacts: list[Path], config: BenchConfig, show: bool = True,
              left_out: dict[str, str] | None = None) -> dict[str, Any]:
    """Benchmark artifacts (folders with edgemed.json, or folders holding them) and write OUT/bench.{json,csv,md},
    pareto.png and optionally JUnit XML. Returns the bench.json document; its ``exit_code`` is 0 when every
    artifact ran and every budget held, 1 otherwise. Bad input raises EdgemedError (exit 2) before anything runs.
    left_out: artifacts the caller chose not to measure, by name, with the reason; bench.json, bench.md and the
    console say so (the pipeline's formats that run on this machine's CPU only through a fallback).
    """
    plan = _validate(artifacts, config)
    plan.left_out = dict(left_out or {})
    doc, results = _measure_all(plan)
    return _conclude(plan, doc, results, show)


@dataclass
class _Plan:
    """A bench run, validated: what it measures, in which order, and what it checks the results against."""

    config: BenchConfig
    out: Path
    targets: list[Target]  # the reference first: its log-probs are there for every other's fidelity
    reference: Target
    questions: list[Question]
    selection: dict[str, Any]
    where: dict[str, Any]  # threads and device, resolved once (edgemed.resources.resolved)
    budgets: Budgets | None
    tolerance: float
    baseline_doc: dict[str, Any] | None
    baseline_results: list[ArtifactResult]
    max_memory_bytes: int | None
    max_p95_ms: float | None
    boards: list[Profile]  # --profile
    left_out: dict[str, str] = field(default_factory=dict)  # not measured by the caller's choice: name -> why


def _validate(artifacts: list[Path], config: BenchConfig) -> _Plan:
    """Everything checked first: a usage error must not cost a bench run."""
    from edgemed.bench.budget import load_budgets
    from edgemed.bench.compare_runs import load_run
    from edgemed.bench.profiles import get_profile
    from edgemed.fsutil import check_output_dir
    from edgemed.resources import resolved

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
    return _Plan(config=config, out=out, targets=targets, reference=ref_target, questions=questions,
                 selection=selection, where=resolved(config.threads, config.device), budgets=budgets, tolerance=tol,
                 baseline_doc=base_doc, baseline_results=base_results, max_memory_bytes=mem_limit,
                 max_p95_ms=p95_limit, boards=boards)


def _new_doc(plan: _Plan) -> dict[str, Any]:
    """bench.json as it starts: settings, environment, the machine's copy bandwidth, the questions."""
    from edgemed.bench.probes import copy_bandwidth
    from edgemed.sysinfo import environment

    config, questions = plan.config, plan.questions
    settings = {**config.to_dict(), **plan.where, "questions": len(questions),
                "question_ids_sha256": _ids_hash(questions), "question_selection": plan.selection,
                "latency_prompts": min(config.latency_prompts, len(questions))}
    return {
        "schema": SCHEMA, "tool": "edgemed bench", "status": "running",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "settings": settings,
        "environment": environment(), "machine": {"copy_bandwidth": copy_bandwidth()},
        "reference": plan.reference.name, "artifacts": [], "left_out": plan.left_out,
        "questions": [{"id": q.id, "subject": q.subject, "question": q.question[:300]} for q in questions],
    }


def _measure_all(plan: _Plan) -> tuple[dict[str, Any], list[ArtifactResult]]:
    """Each artifact in turn, bench.json rewritten after each (finished artifacts survive a later crash)."""
    from edgemed.console import progress

    config, out = plan.config, plan.out
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    doc = _new_doc(plan)
    measured = {**config.measured, **plan.where, "question_ids_sha256": doc["settings"]["question_ids_sha256"]}
    previous = previous_results(out / BENCH_JSON) if config.resume else {}
    qdicts = [asdict(q) for q in plan.questions]
    results: list[ArtifactResult] = []
    with progress() as bar:
        task = bar.add_task("bench", total=len(plan.targets))
        for target in plan.targets:
            key = settings_key(measured, target, plan.reference)
            results.append(_measure_target(plan, target, key, previous.get(target.name), qdicts, work, bar, task))
            doc["artifacts"] = [r.to_dict() for r in results]
            atomic_write_json(out / BENCH_JSON, doc)
            bar.advance(task)
    return doc, results


def _measure_target(plan: _Plan, target: Target, key: str, prior: ArtifactResult | None, qdicts: list[dict[str, Any]],
                    work: Path, bar, task) -> ArtifactResult:
    """One artifact: recorded as failed when it cannot be measured, kept from --resume when it was, else run."""
    from rich.markup import escape

    from edgemed.console import err_console

    config, out = plan.config, plan.out
    fidelity_dir = work / "reference-fidelity"
    is_ref = target is plan.reference
    if target.problem:  # e.g. a corrupt manifest: recorded as failed like a load failure, never run
        result = ArtifactResult(name=target.name, path=path_from_run(target.path, out), format=target.format,
                                runtime=target.runtime, settings_key=key, status="failed",
                                failure=Failure(kind="error", message=target.problem),
                                weights=weights_record(Path(target.path), target.format))
        err_console.print(f"[red]{escape(target.name)}: not measured: {escape(target.problem)}[/red]")
        return result
    if prior is not None and prior.ok and prior.settings_key == key and \
            (not is_ref or not config.fidelity or (fidelity_dir / "meta.json").is_file()):
        err_console.print(f"[dim]{target.name}: already measured with these settings (--resume)[/dim]")
        return prior
    bar.update(task, description=f"{target.name}: starting")
    job = Job(config=config, target=target, questions=qdicts, threads=plan.where["threads"],
              device=plan.where["device"], fidelity_dir=str(fidelity_dir) if config.fidelity else None,
              is_reference=is_ref)
    r = _measure(job, key, work, bar, task)
    if r.ok:
        busy = f" [yellow]BUSY machine: {r.machine_load.get('reason')}[/yellow]" if r.busy else ""
        err_console.print(f"[green]{r.name}[/green]: done in {r.wall_s:.1f} s{busy}")
    else:
        err_console.print(f"[red]{escape(r.name)}: {escape(r.failure.message)}[/red] "
                          f"(log: {escape(str(work / (r.name + '.log')))})")
    return r


def _conclude(plan: _Plan, doc: dict[str, Any], results: list[ArtifactResult], show: bool) -> dict[str, Any]:
    """Compare with the reference, check budgets and the baseline, recommend, write every output."""
    from edgemed.bench.derive import fill_derived
    from edgemed.bench.plot import front_of
    from edgemed.bench.profiles import estimate
    from edgemed.bench.recommend import Constraints, recommend

    config = plan.config
    ref = next((r for r in results if r.name == plan.reference.name and r.ok), None)
    fill_derived(results, ref, doc["machine"]["copy_bandwidth"]["gbps"])
    checks = _checks(plan, doc, results, ref)
    constraints = Constraints(max_memory_bytes=plan.max_memory_bytes, max_p95_ms=plan.max_p95_ms,
                              max_kld=config.max_kld, prefer=config.prefer)
    busy = [r.name for r in results if r.ok and r.busy]
    doc.update(
        status="complete",
        reference=ref.name if ref else None,
        artifacts=[r.to_dict() for r in results],
        checks=[c.to_dict() for c in checks],
        recommendation=recommend(results, ref, constraints),
        profiles=[estimate(b, results) for b in plan.boards],
        busy_artifacts=busy,
    )
    failed = [r.name for r in results if not r.ok]
    broken = [c for c in checks if not c.passed]
    doc["exit_code"] = 1 if failed or broken else 0
    doc["summary"] = {"failed_artifacts": failed, "broken_checks": len(broken), "checks": len(checks),
                      "busy_artifacts": busy}
    doc["pareto_front"], doc["pareto_quality"] = front_of(results)
    doc["outputs"] = write_outputs(doc, results, plan.out, config.junit, checks)
    atomic_write_json(plan.out / BENCH_JSON, doc)
    if show:
        print_summary(doc, results, broken)
    return doc


def _checks(plan: _Plan, doc: dict[str, Any], results: list[ArtifactResult],
            ref: ArtifactResult | None) -> list[Check]:
    """Budget checks and regressions against --baseline (each recorded in `doc`)."""
    checks: list[Check] = []
    if plan.budgets:
        from edgemed.bench.budget import check_budgets

        checks += check_budgets(plan.budgets, results, ref)
        doc["budgets"] = plan.budgets.to_dict()
    baseline = plan.config.baseline
    if baseline:
        from edgemed.bench.compare_runs import regressions

        checks += regressions(plan.baseline_results, results, plan.tolerance, f"baseline {baseline}")
        doc["baseline"] = {"path": str(baseline), "tolerance": plan.tolerance,
                           "created": plan.baseline_doc.get("created")}
    return checks


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
    """Run the worker on one artifact: its result as it wrote it (ArtifactResult.to_dict), or a failure, plus what
    this process measured from outside (:func:`add_outside`)."""
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
    if outcome.ok and res_path.is_file():
        result = ArtifactResult.from_dict(json.loads(res_path.read_text(encoding="utf-8")))
    else:
        result = ArtifactResult(name=name, path=path_from_run(target.path, work.parent), format=target.format,
                                runtime=target.runtime, status="failed", failure=_failure(outcome, log_path))
    return add_outside(result, target, key, outcome)


def add_outside(result: ArtifactResult, target: Target, key: str, outcome: MeasuredOutcome) -> ArtifactResult:
    """Add to a worker's result what only the parent measures: wall time, the process's memory sampled from outside
    and the kernel's peak, other processes' load, the artifact's size, weight bytes and hashes on disk, and the
    settings key. Each of these is left at its default by the worker; nothing the worker reported is changed."""
    from edgemed.registry import weight_bytes

    path = Path(target.path)
    result.settings_key = key
    result.wall_s = outcome.wall_s
    result.weights = weights_record(path, target.format)
    result.size_bytes = dir_size(path)
    result.bandwidth.weight_bytes = weight_bytes(path, target.format)
    memory = result.memory
    memory.peak_rss_sampled_bytes = outcome.peak_rss_sampled or None
    memory.peak_rss_os_bytes = outcome.ru_maxrss or None
    memory.sample_interval_ms = outcome.interval_s * 1e3
    memory.samples = outcome.samples
    result.machine_load = outcome.load.to_dict() if outcome.load else {}
    return result


def _failure(outcome: MeasuredOutcome, log_path: Path) -> Failure:
    text = tail(log_path, 25)
    errors = [ln for ln in text.splitlines() if ln.startswith("error: ")]
    if outcome.timed_out:
        kind = "timeout"
    elif outcome.oom_killed:
        kind = "oom"
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
