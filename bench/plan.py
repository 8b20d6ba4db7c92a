"""A bench run, validated before any work (validate, then set up): the artifacts in their order (the reference first),
the questions, threads and device resolved once, the budgets with the --max-* flags on top, the baseline, the
recommendation's constraints, the --profile boards and the A/B pairs. :func:`validate` raises EdgemedError (exit 2)
on bad input, so a usage error never costs a bench run."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgemed.bench.artifacts import Target, name_artifacts, pick_reference_target
from edgemed.bench.config import BenchConfig
from edgemed.bench.results import ArtifactResult
from edgemed.bench.units import parse_ms, parse_ratio, parse_size
from edgemed.errors import EdgemedError

if TYPE_CHECKING:
    from edgemed.bench.gate.ab import Pair
    from edgemed.bench.gate.budget import Budgets
    from edgemed.bench.profiles import Profile
    from edgemed.data.medmcqa import Question


@dataclass
class Plan:
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


def validate(artifacts: list[Path], config: BenchConfig) -> Plan:
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
    _p95_measurable(config, budgets, targets, bool(pairs))
    questions, selection, models = _questions(config, targets)
    where = resolved(config.threads, config.device)
    incomparable = _comparable(config, base_doc, questions, models, where) if base_doc is not None else []
    return Plan(config=config, out=out, targets=targets, reference=ref_target, questions=questions,
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


def _p95_measurable(config: BenchConfig, budgets: Budgets | None, targets: list[Target], ab: bool) -> None:
    """A p95 needs at least MIN_SAMPLES_P95 answer latencies (--latency-prompts x -r). With fewer, a p95 budget on an
    artifact is refused before any work (exit 2) instead of failing as not measured, and the A/B gate says up front
    that it leaves the p95 out (it compares the other timings)."""
    from edgemed.bench.measure.stats import MIN_SAMPLES_P95, factor_for_p95
    from edgemed.console import err_console

    samples = config.latency_prompts * config.repetitions
    if samples >= MIN_SAMPLES_P95:
        return
    limited = sorted({t.format for t in targets if budgets and budgets.for_format(t.format).get("max_p95_ms")
                      is not None})
    if limited:
        need = factor_for_p95(config.latency_prompts)
        raise EdgemedError(f"max_p95_ms ({budgets.source_of(limited[0], 'max_p95_ms')}) needs a p95 of at least "
                           f"{MIN_SAMPLES_P95} answer latencies, and --latency-prompts {config.latency_prompts} x -r "
                           f"{config.repetitions} gives {samples}; use -r {need} or more (or more --latency-prompts)")
    if ab:
        err_console.print(f"note: the A/B gate leaves p95 latency out: a p95 needs {MIN_SAMPLES_P95} answer latencies "
                          f"per round, and --latency-prompts {config.latency_prompts} x -r {config.repetitions} gives "
                          f"{samples}")


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
           "max_kld": config.recommend_max_kld if config.recommend_max_kld is not None else config.max_kld,
           "min_coverage": config.recommend_min_coverage}
    if out["max_memory_bytes"] is None and boards:
        out["max_memory_bytes"] = boards[0].memory_ceiling_bytes
    return out


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
        **where, "question_ids_sha256": ids_hash(questions)}, "models": models}
    differs = not_comparable(base_doc, current)
    if differs and config.strict:
        raise EdgemedError(f"--baseline {config.baseline} cannot be compared with this run: {'; '.join(differs)}; "
                           "measure the baseline on this machine with the same model and questions, or drop --strict")
    if differs:
        print(f"warning: --baseline {config.baseline} not compared: {'; '.join(differs)} (--strict makes this exit 2)",
              file=sys.stderr)
    return differs


def ids_hash(questions) -> str:
    return hashlib.sha256("\n".join(q.id for q in questions).encode()).hexdigest()[:16]
