"""Drive a bench run: validate, then each artifact in its own child process (the reference first, so its
log-probs are there for every other's fidelity), results saved as they finish, then checks and outputs.

Public entry point: :func:`run_bench` (used by ``edgemed bench`` and ``edgemed pipeline``).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgemed.bench.artifacts import Target, path_from_run, previous_results, settings_key, weights_record
from edgemed.bench.config import BenchConfig
from edgemed.bench.plan import Plan, ids_hash, validate
from edgemed.bench.protocol import Job, run_worker
from edgemed.bench.render.outputs import BENCH_JSON, print_summary, write_outputs
from edgemed.bench.results import SCHEMA, ArtifactResult, Failure
from edgemed.fsutil import atomic_write_json

if TYPE_CHECKING:
    from edgemed.bench.gate.budget import Check


def run_bench(artifacts: list[Path], config: BenchConfig, show: bool = True,
              left_out: dict[str, str] | None = None) -> dict[str, Any]:
    """Benchmark artifacts (folders with edgemed.json, or folders holding them) and write OUT/bench.{json,csv,md},
    pareto.png and optionally JUnit XML. Returns the bench.json document; its ``exit_code`` is 0 when every
    artifact ran and every budget held, 1 otherwise. Bad input raises EdgemedError (exit 2) before anything runs.
    left_out: artifacts the caller chose not to measure, by name, with the reason; bench.json, bench.md and the
    console say so (the pipeline's formats that run on this machine's CPU only through a fallback).
    """
    plan = validate(artifacts, config)
    plan.left_out = dict(left_out or {})
    doc, results = _measure_all(plan)
    if plan.ab_pairs:
        _ab_rounds(plan, doc, results)
    return _conclude(plan, doc, results, show)


def _ab_rounds(plan: Plan, doc: dict[str, Any], results: list[ArtifactResult]) -> None:
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
            r = run_worker(job, settings_key(measured, target, plan.reference), work, bar, task,
                         c.ab_python if is_baseline else None)
            state = f"done in {r.wall_s:.1f} s" if r.ok else f"[red]{r.failure.message}[/red]"
            err_console.print(f"A/B {target.name}: {state}{' [yellow]BUSY[/yellow]' if r.ok and r.busy else ''}")
            return r

        run_rounds(plan, results, measure)
    doc["ab"] = _ab_record(plan)
    atomic_write_json(plan.out / BENCH_JSON, doc)


def _ab_record(plan: Plan) -> dict[str, Any]:
    c = plan.config
    return {"baseline": [str(p) for p in c.ab_baseline or []], "python": str(c.ab_python) if c.ab_python else None,
            "baseline_threads": c.ab_threads or plan.where["threads"], "threads": plan.where["threads"],
            "rounds": c.ab_rounds, "max_slowdown": plan.max_slowdown,
            "pairs": [p.to_dict() for p in plan.ab_pairs]}


def _new_doc(plan: Plan) -> dict[str, Any]:
    """bench.json as it starts: settings, environment, the machine's copy bandwidth, the questions."""
    from edgemed.process.probes import copy_bandwidth
    from edgemed.sysinfo import environment

    config, questions = plan.config, plan.questions
    settings = {**config.to_dict(), **plan.where, "questions": len(questions),
                "question_ids_sha256": ids_hash(questions), "question_selection": plan.selection,
                "latency_prompts": min(config.latency_prompts, len(questions))}
    return {
        "schema": SCHEMA, "tool": "edgemed bench", "status": "running",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "settings": settings,
        "environment": environment(), "machine": {"copy_bandwidth": copy_bandwidth()},
        "reference": plan.reference.name, "artifacts": [], "left_out": plan.left_out, "models": plan.models,
        "questions": [{"id": q.id, "subject": q.subject, "question": q.question[:300]} for q in questions],
    }


def _measure_all(plan: Plan) -> tuple[dict[str, Any], list[ArtifactResult]]:
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


def _measure_target(plan: Plan, target: Target, key: str, prior: ArtifactResult | None, qdicts: list[dict[str, Any]],
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
    r = run_worker(job, key, work, bar, task)
    if r.ok:
        busy = f" [yellow]BUSY machine: {r.machine_load.get('reason')}[/yellow]" if r.busy else ""
        err_console.print(f"[green]{r.name}[/green]: done in {r.wall_s:.1f} s{busy}")
    else:
        err_console.print(f"[red]{escape(r.name)}: {escape(r.failure.message)}[/red] "
                          f"(log: {escape(str(work / (r.name + '.log')))})")
    return r


def _conclude(plan: Plan, doc: dict[str, Any], results: list[ArtifactResult], show: bool) -> dict[str, Any]:
    """Compare with the reference, check budgets and the baseline (rerunning artifacts whose timing budgets are
    inconclusive, up to --retries), recommend, write every output."""
    from edgemed.bench.gate.runs import timing_runs
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
        verdicts={"inconclusive": config.inconclusive, "retries": config.retries, "timing_runs": timing_runs(plan),
                  "rule": "each budget is decided on its measured 95% interval (a timing's: over its runs, "
                          "--timing-runs): pass when the whole interval is on "
                          "the allowed side of the limit, fail when it is wholly beyond, inconclusive when it "
                          "straddles the limit or a timing broke it on a busy machine by no more than its measured "
                          "wait for a CPU explains; an inconclusive timing "
                          f"gets more runs of its artifact up to {config.retries} time(s), then counts as "
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
        from edgemed.bench.gate.suggest import measure_repeats, suggest_budgets
        from edgemed.fsutil import atomic_write_text

        run = (f"{plan.out / BENCH_JSON} ({doc['created']}, {doc['environment'].get('cpu')}, "
               f"{doc['settings']['threads']} threads)")
        repeats = measure_repeats(plan, doc, results)
        text = suggest_budgets(results, plan.suggest_margin, doc["reference"], run, repeats)
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


def _derive(plan: Plan, doc: dict[str, Any], results: list[ArtifactResult]) -> ArtifactResult | None:
    """Agreement, accuracy difference and bandwidth against the reference; returns the reference's result."""
    from edgemed.bench.measure.derive import fill_derived

    ref = next((r for r in results if r.name == plan.reference.name and r.ok), None)
    fill_derived(results, ref, doc["machine"]["copy_bandwidth"]["gbps"])
    return ref


def _settle(plan: Plan, doc: dict[str, Any], results: list[ArtifactResult]) -> tuple[ArtifactResult | None,
                                                                                       list[Check]]:
    """Checks until no budget is inconclusive or --retries is spent: timing budgets are decided on --timing-runs
    runs of their artifact (edgemed.bench.gate.runs), and each retry adds that many more runs (at least 2) to an
    artifact whose timing budget is still inconclusive; then an inconclusive check counts as --inconclusive says."""
    from edgemed.bench.gate.runs import measure_runs, timing_budgeted, timing_runs
    from edgemed.console import err_console

    ref = _derive(plan, doc, results)
    count = timing_runs(plan)
    timed = [r for r in results if timing_budgeted(plan, r)]
    runs: dict[str, list[ArtifactResult]] = {r.name: [r] for r in timed}
    if count > 1 and timed:
        _add_runs(plan, doc, results, runs, measure_runs(plan, timed, count - 1, "--timing-runs"))
    checks = _checks(plan, doc, results, ref, runs)
    for attempt in range(1, plan.config.retries + 1):
        open_ = sorted({c.artifact for c in checks if c.verdict == "inconclusive" and c.rerunnable})
        if not open_:
            break
        more = max(count, 2)
        for name in open_:
            keys = ", ".join(c.key for c in checks if c.artifact == name and c.verdict == "inconclusive")
            err_console.print(f"[yellow]{name}[/yellow]: {keys} inconclusive; measuring it in {more} more runs "
                              f"({attempt} of --retries {plan.config.retries})")
        again = [r for r in results if r.name in open_]
        for r in again:
            r.reruns += 1
        _add_runs(plan, doc, results, runs, measure_runs(plan, again, more, "--retries"))
        checks = _checks(plan, doc, results, ref, runs)
    reruns = {r.name: r.reruns for r in results}
    for c in checks:
        if c.rerunnable:  # a timing budget; an A/B check counts its extra rounds itself
            c.reruns = reruns.get(c.artifact, 0)
        c.settle(plan.config.inconclusive)
    return ref, checks


def _add_runs(plan: Plan, doc: dict[str, Any], results: list[ArtifactResult], runs: dict[str, list[ArtifactResult]],
              new: dict[str, list[ArtifactResult]]) -> None:
    """Pool new timing-only runs with each artifact's earlier ones; bench.json's rows list them (``timing_runs``)."""
    from edgemed.bench.gate.runs import timings

    for r in results:
        if new.get(r.name):
            runs[r.name].extend(new[r.name])
            r.timing_runs = [timings(x) for x in runs[r.name]]
    doc["artifacts"] = [r.to_dict() for r in results]
    atomic_write_json(plan.out / BENCH_JSON, doc)


def _checks(plan: Plan, doc: dict[str, Any], results: list[ArtifactResult], ref: ArtifactResult | None,
            runs: dict[str, list[ArtifactResult]] | None = None) -> list[Check]:
    """Budget checks and regressions against --baseline (each recorded in `doc`)."""
    checks: list[Check] = []
    if plan.budgets:
        from edgemed.bench.gate.budget import check_budgets

        checks += check_budgets(plan.budgets, results, ref, runs)
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


