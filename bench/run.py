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
from edgemed.bench.protocol import Job, Target, worker_env
from edgemed.bench.render.outputs import BENCH_JSON, print_summary, write_outputs
from edgemed.bench.results import SCHEMA, ArtifactResult, Failure
from edgemed.bench.units import parse_ms, parse_ratio, parse_size
from edgemed.errors import EdgemedError
from edgemed.fsutil import atomic_write_json, dir_size
from edgemed.process.child import python_module
from edgemed.process.isolate import MeasuredOutcome, measure_child, tail

if TYPE_CHECKING:
    from edgemed.bench.gate.ab import Pair
    from edgemed.bench.gate.budget import Budgets, Check
    from edgemed.bench.profiles import Profile
    from edgemed.data.medmcqa import Question



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
    if plan.ab_pairs:
        _ab_rounds(plan, doc, results)
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
    budgets: Budgets | None  # the --budget file and the --max-* budget flags
    tolerance: float
    baseline_doc: dict[str, Any] | None
    baseline_results: list[ArtifactResult]
    constraints: dict[str, Any]  # the recommendation's: --recommend-max-*, else the --max-* budgets
    boards: list[Profile]  # --profile
    left_out: dict[str, str] = field(default_factory=dict)  # not measured by the caller's choice: name -> why
    models: dict[str, str] = field(default_factory=dict)  # artifact -> the base model its lineage records
    not_comparable: list[str] = field(default_factory=list)  # why --baseline cannot be compared with this run
    suggest_margin: float = 0.1  # --suggest-margin, parsed
    ab_pairs: list[Pair] = field(default_factory=list)  # --ab-baseline: each baseline artifact with its candidate
    max_slowdown: float = 0.05  # --max-slowdown, parsed


def _validate(artifacts: list[Path], config: BenchConfig) -> _Plan:
    """Everything checked first: a usage error must not cost a bench run."""
    from edgemed.bench.gate.budget import load_budgets
    from edgemed.bench.profiles import get_profile
    from edgemed.bench.report.compare import load_run
    from edgemed.fsutil import check_output_dir, check_output_file
    from edgemed.resources import resolved

    config.validate()
    out = Path(config.out)
    check_output_dir(out, "--out")
    if config.junit is not None:
        check_output_file(Path(config.junit), "--junit")
    if config.suggest_budgets is not None:
        check_output_file(Path(config.suggest_budgets), "--suggest-budgets")
    margin = parse_ratio(config.suggest_margin, "--suggest-margin")
    budgets = _budgets(config, load_budgets(config.budget) if config.budget else None)
    tol = parse_ratio(config.tolerance, "--tolerance")
    base_doc, base_results = load_run(config.baseline, "--baseline") if config.baseline else (None, [])
    boards = [get_profile(p) for p in config.profile or []]
    constraints = _constraints(config, boards)
    targets = name_artifacts(artifacts)
    ref_target = pick_reference_target(targets, config.reference)
    targets = [ref_target] + [t for t in targets if t is not ref_target]  # its log-probs first
    pairs, slowdown = _ab_plan(config, targets)
    questions, selection, models = _questions(config, targets)
    where = resolved(config.threads, config.device)
    incomparable = _comparable(config, base_doc, questions, models, where) if base_doc is not None else []
    return _Plan(config=config, out=out, targets=targets, reference=ref_target, questions=questions,
                 selection=selection, where=where, budgets=budgets, tolerance=tol,
                 baseline_doc=base_doc, baseline_results=base_results, constraints=constraints, boards=boards,
                 models=models, not_comparable=incomparable, suggest_margin=margin, ab_pairs=pairs,
                 max_slowdown=slowdown)


def _ab_plan(config: BenchConfig, targets: list[Target]) -> tuple[list[Pair], float]:
    """--ab-baseline's artifacts paired with the candidates, --ab-python and --max-slowdown checked (exit 2)."""
    slowdown = parse_ratio(config.max_slowdown, "--max-slowdown")
    if not config.ab_baseline:
        if config.ab_python is not None:
            raise EdgemedError("--ab-python runs the --ab-baseline artifacts; give --ab-baseline too")
        return [], slowdown
    from edgemed.bench.gate.ab import ab_python, baseline_targets, pair_targets

    ab_python(config.ab_python)
    return pair_targets(baseline_targets(name_artifacts(config.ab_baseline)), targets), slowdown


def _ab_rounds(plan: _Plan, doc: dict[str, Any], results: list[ArtifactResult]) -> None:
    """The A/B rounds (edgemed.bench.gate.ab), each measurement in its own worker like any artifact."""
    from edgemed.bench.gate.ab import run_rounds
    from edgemed.console import err_console, progress

    work = plan.out / "work"
    qdicts = [asdict(q) for q in plan.questions]
    measured = {**plan.config.measured, **plan.where, "question_ids_sha256": doc["settings"]["question_ids_sha256"]}
    with progress() as bar:
        task = bar.add_task("A/B", total=None)

        def measure(target: Target, timing_only: bool, is_baseline: bool) -> ArtifactResult:
            c = plan.config
            threads = c.ab_threads if is_baseline and c.ab_threads else plan.where["threads"]
            job = Job(config=c, target=target, questions=qdicts, threads=threads,
                      device=plan.where["device"], is_reference=False, timing_only=timing_only,
                      fidelity_dir=str(work / "reference-fidelity") if c.fidelity else None)
            r = _measure(job, settings_key(measured, target, plan.reference), work, bar, task,
                         c.ab_python if is_baseline else None)
            state = f"done in {r.wall_s:.1f} s" if r.ok else f"[red]{r.failure.message}[/red]"
            err_console.print(f"A/B {target.name}: {state}{' [yellow]BUSY[/yellow]' if r.ok and r.busy else ''}")
            return r

        run_rounds(plan, results, measure)
    doc["ab"] = _ab_record(plan)
    atomic_write_json(plan.out / BENCH_JSON, doc)


def _ab_record(plan: _Plan) -> dict[str, Any]:
    c = plan.config
    return {"baseline": [str(p) for p in c.ab_baseline or []], "python": str(c.ab_python) if c.ab_python else None,
            "baseline_threads": c.ab_threads or plan.where["threads"], "threads": plan.where["threads"],
            "rounds": c.ab_rounds, "max_slowdown": plan.max_slowdown,
            "pairs": [p.to_dict() for p in plan.ab_pairs]}


# The bench's budget flags and the budgets-file key each sets (the same limit, the same check).
BUDGET_FLAGS = (("max_memory", "--max-memory", "max_peak_rss_mb"), ("max_p95_ms", "--max-p95-ms", "max_p95_ms"),
                ("max_kld", "--max-kld", "max_kld"))


def _budgets(config: BenchConfig, budgets: Budgets | None) -> Budgets | None:
    """The --budget file with the --max-* flags on top: a flag's limit applies to every format."""
    import sys

    from edgemed.bench.gate.budget import Budgets

    given = [(name, flag, key) for name, flag, key in BUDGET_FLAGS if getattr(config, name) is not None]
    if not given:
        return budgets
    budgets = budgets or Budgets(path="command line")
    for name, flag, key in given:
        raw = getattr(config, name)
        limit = parse_size(raw, flag) / 1e6 if key == "max_peak_rss_mb" else \
            parse_ms(raw, flag) if key == "max_p95_ms" else float(raw)
        budgets.flags[key] = (limit, flag)
        print(f"note: bench {flag} is a budget (exit 1 when an artifact breaks it), as in tune and the budgets file "
              f"({key}); --recommend-{flag[2:]} only constrains the recommendation", file=sys.stderr)
    return budgets


def _constraints(config: BenchConfig, boards: list[Profile]) -> dict[str, Any]:
    """The recommendation's limits: each --recommend-max-* flag, else the budget flag of the same limit."""
    memory = config.recommend_max_memory or config.max_memory
    p95 = config.recommend_max_p95_ms or config.max_p95_ms
    flag_mem = "--recommend-max-memory" if config.recommend_max_memory else "--max-memory"
    flag_p95 = "--recommend-max-p95-ms" if config.recommend_max_p95_ms else "--max-p95-ms"
    out = {"max_memory_bytes": parse_size(memory, flag_mem) if memory is not None else None,
           "max_p95_ms": parse_ms(p95, flag_p95) if p95 is not None else None,
           "max_kld": config.recommend_max_kld if config.recommend_max_kld is not None else config.max_kld}
    if out["max_memory_bytes"] is None and boards:
        out["max_memory_bytes"] = boards[0].memory_ceiling_bytes
    return out


def _new_doc(plan: _Plan) -> dict[str, Any]:
    """bench.json as it starts: settings, environment, the machine's copy bandwidth, the questions."""
    from edgemed.process.probes import copy_bandwidth
    from edgemed.sysinfo import environment

    config, questions = plan.config, plan.questions
    settings = {**config.to_dict(), **plan.where, "questions": len(questions),
                "question_ids_sha256": _ids_hash(questions), "question_selection": plan.selection,
                "latency_prompts": min(config.latency_prompts, len(questions))}
    return {
        "schema": SCHEMA, "tool": "edgemed bench", "status": "running",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "settings": settings,
        "environment": environment(), "machine": {"copy_bandwidth": copy_bandwidth()},
        "reference": plan.reference.name, "artifacts": [], "left_out": plan.left_out, "models": plan.models,
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
    """Compare with the reference, check budgets and the baseline (rerunning artifacts whose timing budgets are
    inconclusive, up to --retries), recommend, write every output."""
    from edgemed.bench.profiles import estimate
    from edgemed.bench.recommend import Constraints, recommend
    from edgemed.bench.render.plot import front_of

    config = plan.config
    ref, checks = _settle(plan, doc, results)
    constraints = Constraints(**plan.constraints, prefer=config.prefer)
    busy = [r.name for r in results if r.ok and r.busy]
    doc.update(
        status="complete",
        reference=ref.name if ref else None,
        artifacts=[r.to_dict() for r in results],
        checks=[c.to_dict() for c in checks],
        verdicts={"inconclusive": config.inconclusive, "retries": config.retries,
                  "rule": "each budget is decided on its measured 95% interval: pass when the whole interval is on "
                          "the allowed side of the limit, fail when it is wholly beyond, inconclusive when it "
                          "straddles the limit or a timing was measured on a busy machine; an inconclusive timing "
                          f"reruns its artifact up to {config.retries} time(s), then counts as "
                          f"'{config.inconclusive}' (--inconclusive)"},
        recommendation=recommend(results, ref, constraints, _broken_by_artifact(checks)),
        profiles=[estimate(b, results) for b in plan.boards],
        busy_artifacts=busy,
    )
    failed = [r.name for r in results if not r.ok]
    broken = [c for c in checks if not c.passed]
    doc["exit_code"] = 1 if failed or broken else 0
    doc["summary"] = {"failed_artifacts": failed, "broken_checks": len(broken), "checks": len(checks),
                      "inconclusive_checks": sum(c.verdict == "inconclusive" for c in checks),
                      "reruns": {r.name: r.reruns for r in results if r.reruns}, "busy_artifacts": busy}
    doc["pareto_front"], doc["pareto_quality"] = front_of(results)
    doc["outputs"] = write_outputs(doc, results, plan.out, config.junit, checks)
    if config.suggest_budgets is not None:
        from edgemed.bench.gate.budget import suggest_budgets
        from edgemed.fsutil import atomic_write_text

        run = (f"{plan.out / BENCH_JSON} ({doc['created']}, {doc['environment'].get('cpu')}, "
               f"{doc['settings']['threads']} threads)")
        text = suggest_budgets(results, plan.suggest_margin, doc["reference"], run)
        doc["outputs"]["suggested_budgets"] = str(atomic_write_text(Path(config.suggest_budgets), text))
    atomic_write_json(plan.out / BENCH_JSON, doc)
    if show:
        print_summary(doc, results, broken)
    return doc


def _broken_by_artifact(checks: list[Check]) -> dict[str, list[str]]:
    """Per artifact, the checks that did not pass, each named with its verdict (what keeps it from the choice)."""
    out: dict[str, list[str]] = {}
    for c in checks:
        if not c.passed:
            out.setdefault(c.artifact, []).append(f"{c.key} ({c.verdict}{', counted as failed' if c.policy else ''})")
    return out


def _derive(plan: _Plan, doc: dict[str, Any], results: list[ArtifactResult]) -> ArtifactResult | None:
    """Agreement, accuracy difference and bandwidth against the reference; returns the reference's result."""
    from edgemed.bench.measure.derive import fill_derived

    ref = next((r for r in results if r.name == plan.reference.name and r.ok), None)
    fill_derived(results, ref, doc["machine"]["copy_bandwidth"]["gbps"])
    return ref


def _settle(plan: _Plan, doc: dict[str, Any], results: list[ArtifactResult]) -> tuple[ArtifactResult | None,
                                                                                       list[Check]]:
    """Checks until no rerunnable one is inconclusive or --retries is spent (each rerun measures the whole artifact
    again and replaces its result; what it gave before is kept in ``earlier_attempts``); then an inconclusive
    check counts as --inconclusive says."""
    from edgemed.console import err_console, progress

    ref = _derive(plan, doc, results)
    checks = _checks(plan, doc, results, ref)
    targets = {t.name: t for t in plan.targets}
    qdicts = [asdict(q) for q in plan.questions]
    for attempt in range(1, plan.config.retries + 1):
        open_ = {}
        for c in checks:
            if c.verdict == "inconclusive" and c.rerunnable:
                open_.setdefault(c.artifact, []).append(c.key)
        if not open_:
            break
        with progress() as bar:
            task = bar.add_task("rerun", total=len(open_))
            for name, keys in open_.items():
                i = next(n for n, r in enumerate(results) if r.name == name)
                earlier = results[i]
                err_console.print(f"[yellow]{name}[/yellow]: {', '.join(keys)} inconclusive; measuring it again "
                                  f"({attempt} of --retries {plan.config.retries})")
                again = _measure_target(plan, targets[name], earlier.settings_key, None, qdicts,
                                        plan.out / "work", bar, task)
                again.reruns = earlier.reruns + 1
                again.earlier_attempts = [*earlier.earlier_attempts, _attempt_record(earlier, checks)]
                results[i] = again
                bar.advance(task)
        doc["artifacts"] = [r.to_dict() for r in results]
        atomic_write_json(plan.out / BENCH_JSON, doc)
        ref = _derive(plan, doc, results)
        checks = _checks(plan, doc, results, ref)
    reruns = {r.name: r.reruns for r in results}
    for c in checks:
        if c.rerunnable:  # an A/B check counts its extra rounds itself
            c.reruns = reruns.get(c.artifact, 0)
        c.settle(plan.config.inconclusive)
    return ref, checks


def _attempt_record(r: ArtifactResult, checks: list[Check]) -> dict[str, Any]:
    """What one earlier measurement of an artifact gave: its timings, load and verdicts."""
    from edgemed.bench.results import METRICS

    return {"wall_s": r.wall_s, "busy": r.busy, "machine_load": r.machine_load.get("reason"),
            **{k: r.metric(k) for k, m in METRICS.items() if m.timing},
            "verdicts": {c.key: c.verdict for c in checks if c.artifact == r.name}}


def _checks(plan: _Plan, doc: dict[str, Any], results: list[ArtifactResult],
            ref: ArtifactResult | None) -> list[Check]:
    """Budget checks and regressions against --baseline (each recorded in `doc`)."""
    checks: list[Check] = []
    if plan.budgets:
        from edgemed.bench.gate.budget import check_budgets

        checks += check_budgets(plan.budgets, results, ref)
        doc["budgets"] = plan.budgets.to_dict()
    if plan.ab_pairs and any(p.rounds for p in plan.ab_pairs):
        from edgemed.bench.gate.ab import ab_checks

        checks += ab_checks(plan.ab_pairs, plan.max_slowdown,
                            f"A/B vs {', '.join(str(x) for x in plan.config.ab_baseline or [])}")
        doc["ab"] = _ab_record(plan)
    baseline = plan.config.baseline
    if baseline:
        from edgemed.bench.report.compare import regressions

        if not plan.not_comparable:
            checks += regressions(plan.baseline_results, results, plan.tolerance, f"baseline {baseline}")
        doc["baseline"] = {"path": str(baseline), "tolerance": plan.tolerance,
                           "created": plan.baseline_doc.get("created"), "compared": not plan.not_comparable,
                           "not_comparable": plan.not_comparable}
    return checks


def _questions(config: BenchConfig, targets):
    """The questions every artifact scores: read from the artifacts' lineage (edgemed.lineage)."""
    from edgemed.lineage import read_lineage, scoring_questions

    lineages = {t.name: read_lineage(Path(t.path)) for t in targets if not t.problem}
    questions, selection = scoring_questions(config.data, config.split, lineages,
                                             include_trained=config.include_trained, limit=config.limit)
    models = {name: str(lin.base_model.get("resolved") or lin.base_model.get("given"))
              for name, lin in lineages.items() if lin is not None and lin.base_model}
    return questions, selection, models


def _comparable(config: BenchConfig, base_doc: dict[str, Any], questions, models: dict[str, str],
                where: dict[str, Any]) -> list[str]:
    """What makes --baseline incomparable with this run (another machine, model or question set): exit 2 under
    --strict, else one warning line; the baseline checks are then left out."""
    import sys

    from edgemed.bench.report.comparable import not_comparable
    from edgemed.sysinfo import environment

    current = {"environment": environment(with_accelerator=False), "settings": {
        **where, "question_ids_sha256": _ids_hash(questions)}, "models": models}
    differs = not_comparable(base_doc, current)
    if differs and config.strict:
        raise EdgemedError(f"--baseline {config.baseline} cannot be compared with this run: {'; '.join(differs)}; "
                           "measure the baseline on this machine with the same model and questions, or drop --strict")
    if differs:
        print(f"warning: --baseline {config.baseline} not compared: {'; '.join(differs)} (--strict makes this exit 2)",
              file=sys.stderr)
    return differs


def _ids_hash(questions) -> str:
    return hashlib.sha256("\n".join(q.id for q in questions).encode()).hexdigest()[:16]


# --- one artifact ---------------------------------------------------------------------------------------------
def _measure(job: Job, key: str, work: Path, bar, task, python: Path | None = None) -> ArtifactResult:
    """Run the worker on one artifact: its result as it wrote it (ArtifactResult.to_dict), or a failure, plus what
    this process measured from outside (:func:`add_outside`). `python`: the interpreter of another edgemed install
    to run the worker with (``--ab-python``), else this one."""
    target = job.target
    name = target.name
    env, job.env = worker_env(job.config, dict(os.environ))
    job_path = job.write(work / f"{name}.job.json")
    res_path = work / f"{name}.result.json"
    log_path = work / f"{name}.log"
    res_path.unlink(missing_ok=True)
    cmd = python_module("edgemed.bench.worker", str(job_path), str(res_path))
    if python is not None:  # any Python version: the bootstrap instead of -P (3.11+)
        from edgemed.process.child import _NO_CWD_BOOTSTRAP

        cmd = [str(python), "-c", _NO_CWD_BOOTSTRAP, "edgemed.bench.worker", str(job_path), str(res_path)]

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
