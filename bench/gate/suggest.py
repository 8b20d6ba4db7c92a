"""Budgets suggested from measured runs: ``edgemed bench --suggest-budgets FILE``.

Where a limit goes, per artifact and budget key. The artifact's timings are measured ``--suggest-runs`` times (the
bench run, then timing-only reruns, artifact after artifact; accuracy, KLD and agreement come from the one full run:
they do not change between runs of one artifact). Each run gives the metric's point value and its 95% interval
(``Metric.interval``; a metric without one gives its point). Then:

- **from**: for a timing measured in 2 runs or more, the runs' mean, since a timing budget is decided on the mean
  of the CI run's own runs and its interval (:mod:`edgemed.bench.gate.runs`); for any other metric (accuracy,
  KLD, memory: one measurement) the interval end on the side a regression moves to (``max_``: the highest upper
  end; ``min_``: the lowest lower end);
- **spread**: the standard deviation of the runs' point values (from 2 runs on): the drift between runs of one
  unchanged artifact on this machine (other processes, clocks, caches), which no single run's interval holds;
- **distance**: the larger of ``--suggest-margin`` x |from| and 2 x spread. The limit is from + distance
  (``max_``) or from - distance (``min_``).

Why 2 spreads from the mean: a CI run decides a timing on the mean of 3 to 9 runs (``--timing-runs``, more while
inconclusive, up to ``--retries``), whose interval's half width falls to under 0.8 spreads by the ninth run, so
an unchanged artifact ends well inside the limit while a change beyond the distance can never pass (it fails or
stays inconclusive, counted as ``--inconclusive`` says: fail by default). Each line's comment names the runs, the
spread and the distance from the mean ("catches"): the smallest change that cannot pass. A timing measured on a
busy machine is left out where quiet runs of the artifact exist (its slowdown would widen the limits); where all
were busy, the file says at its top that their limits are loose.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from edgemed.bench.gate.budget import _show, budget_keys
from edgemed.bench.measure.stats import stdev
from edgemed.bench.results import METRICS, ArtifactResult

if TYPE_CHECKING:
    from edgemed.bench.plan import Plan

SPREAD_SDS = 2.0  # run-to-run standard deviations between the runs' mean (a timing) or worst end and a limit


def measure_repeats(plan: Plan, doc: dict[str, Any], results: list[ArtifactResult]) -> dict[str, list[ArtifactResult]]:
    """``--suggest-runs`` - 1 more timing-only measurements of every artifact that ran, each in its own worker, one
    artifact after another per round (a drift of the machine reaches every artifact); recorded in bench.json's
    ``suggest_repeats``. Returns artifact name -> its extra measurements."""
    from edgemed.bench.gate.runs import measure_runs, timings

    ok = [r for r in results if r.ok]
    repeats = measure_runs(plan, ok, plan.config.suggest_runs - 1, "--suggest-runs")
    if ok and plan.config.suggest_runs > 1:
        doc["suggest_repeats"] = {name: [timings(x) for x in runs] for name, runs in repeats.items()}
    return repeats


def place_limit(kind: str, runs: list[tuple[float, float, float]], margin: float,
                timing: bool = False) -> tuple[float, dict[str, Any]]:
    """The limit of a ``max`` or ``min`` budget from runs of (value, interval low, interval high), and how it was
    placed: from (``from``: the runs' mean for a timing measured in 2 runs or more, whose check reads the mean of
    its runs; else the worst interval end), spread (run-to-run sd of the values, 0 from one run), distance, mean."""
    values = [v for v, _, _ in runs]
    mean = sum(values) / len(values)
    by_mean = timing and len(runs) > 1
    edge = mean if by_mean else max(hi for _, _, hi in runs) if kind == "max" else min(lo for _, lo, _ in runs)
    spread = stdev(values) or 0.0
    by_margin, by_spread = margin * abs(edge), SPREAD_SDS * spread
    distance = max(by_margin, by_spread)
    limit = edge + distance if kind == "max" else edge - distance
    return limit, {"edge": edge, "spread": spread, "distance": distance, "mean": mean, "from_mean": by_mean,
                   "by": "spread" if by_spread > by_margin else "margin", "runs": len(runs)}


def suggest_budgets(results: list[ArtifactResult], margin: float, reference: str | None, run: str,
                    repeats: dict[str, list[ArtifactResult]] | None = None) -> str:
    """A budgets TOML from measured results: per format, every budget key its metric measured, the limit placed as
    the module says from the result and its `repeats` (name -> more measurements of the same artifact); a comment
    per line says where the number came from. Artifacts of one format share a table: the loosest limit among
    them."""
    repeats = repeats or {}
    tables: dict[str, dict[str, tuple[float, str]]] = {}
    drifted: list[tuple[float, str]] = []  # (catches, "key (artifact)") of timing limits the drift placed
    busy = 0
    measured = 0
    for r in results:
        if not r.ok:
            continue
        runs_of = [r, *[x for x in repeats.get(r.name, []) if x.ok]]
        measured += len(runs_of)
        busy += sum(x.busy for x in runs_of)
        for key, spec in budget_keys().items():
            if spec.metric == "accuracy_drop" and r.name == reference:
                continue
            placed = _limit(spec, runs_of, margin)
            if placed is None:
                continue
            limit, why, catches = placed
            if catches is not None:
                drifted.append((catches, f"{key} ({r.name})"))
            if spec.limit == "min" and limit <= spec.low:  # catches nothing: said, not written
                why = f"left out: the lower limit comes out at {_toml_number(limit)}, which catches nothing; {why}"
                limit = math.nan
            table = tables.setdefault(r.format, {})
            old = table.get(key)
            if old is None or math.isnan(limit) or (limit > old[0] if spec.limit == "max" else limit < old[0]):
                table[key] = (limit, f"{r.name}: {why}")
    lines = [f"# Budgets suggested by `edgemed bench --suggest-budgets` from {run}.",
             f"# Each timing limit lies beyond the mean of the runs (--suggest-runs) by the larger of {margin:.0%} "
             f"(--suggest-margin) and {SPREAD_SDS:g}",
             "# run-to-run standard deviations (the drift between runs that one run's interval does not hold); "
             "other limits lie that far",
             "# beyond the worst 95% interval end. A CI run decides each timing on the mean of its own runs "
             "(--timing-runs). 'catches' is",
             "# the limit's distance from the runs' mean: a change that large cannot pass. Measure on the machine "
             "CI runs on; review before committing."]
    if drifted:
        catches, where = max(drifted)
        lines += [f"# NOTE: the runs drifted apart on this machine: {where} catches only a change of {catches:.0%} or "
                  "more. A budget", "# cannot tell a smaller slowdown from that drift without failing unchanged "
                  "runs; to catch one, gate on the", "# ratio to the shipped artifact measured interleaved on the "
                  "same runner (--ab-baseline DIR), or measure on a quieter machine."]
    if busy:
        lines += [f"# WARNING: {busy} of {measured} measurements ran on a busy machine (other processes held the "
                  "CPU): left out of the", "# timing limits where the artifact has quiet runs; a limit from busy runs "
                  "only is loose and can hide a regression."]
    lines.append("")
    for fmt, table in tables.items():
        lines.append(f"[format.{fmt}]")
        for key, (limit, why) in table.items():
            lines.append(f"# {key}: {why}" if math.isnan(limit) else f"{key} = {_toml_number(limit)}  # {why}")
        lines.append("")
    return "\n".join(lines)


def _limit(spec, runs_of: list[ArtifactResult], margin: float) -> tuple[float, str, float | None] | None:
    """One budget's limit from one artifact's runs, the comment saying how it was placed, and for a timing whose
    limit the run-to-run drift placed (wider than the margin) the relative change it catches (else None)."""
    metric = METRICS[spec.metric]
    quiet = [x for x in runs_of if not x.busy]
    dropped = len(runs_of) - len(quiet) if metric.timing and quiet else 0  # busy timings compare with nothing
    runs = []
    for x in (quiet if dropped else runs_of):
        value = x.metric(spec.metric)
        if value is None:
            continue
        bounds = metric.interval(x) if metric.interval is not None else (value, value)
        if bounds is not None:
            runs.append((value, *bounds))
    if not runs:
        return None
    limit, how = place_limit(spec.limit, runs, margin, metric.timing)
    if spec.limit == "max" and limit <= 0:  # a zero measured (KLD or drop of an identical artifact)
        limit = _floor_of(spec.metric)
    limit = min(max(limit, spec.low), spec.high) if spec.high is not None else max(limit, spec.low)
    m = spec.metric
    value, lo, hi = runs[0]
    if how["runs"] == 1:
        shown = "" if lo == hi else f", 95% interval [{_show(m, lo)}, {_show(m, hi)}]"
        why = (f"measured {_show(m, value)}{shown} ({metric.interval_rule}); "
               f"{'upper' if spec.limit == 'max' else 'lower'} end {'+' if spec.limit == 'max' else '-'}{margin:.0%}")
    else:
        dist = f"{margin:.0%} margin" if how["by"] == "margin" else f"{SPREAD_SDS:g} x sd"
        start = "" if how["from_mean"] else (f", {'highest upper' if spec.limit == 'max' else 'lowest lower'} end "
                                              f"{_show(m, how['edge'])} ({metric.interval_rule})")
        why = (f"measured in {how['runs']} runs, mean {_show(m, how['mean'])}, run-to-run sd "
               f"{_show(m, how['spread'])}{start}; {'mean ' if how['from_mean'] else ''}"
               f"{'+' if spec.limit == 'max' else '-'}{dist}")
    catches = None
    if how["mean"] and metric.timing:
        catches = abs(limit - how["mean"]) / abs(how["mean"])
        why += f"; catches {catches:.0%} from the mean"
    if dropped:
        why += f"; {dropped} run(s) measured busy left out"
    return limit, why, catches if how["by"] == "spread" and how["from_mean"] else None


def _floor_of(metric: str) -> float:
    """The smallest limit worth writing for a metric measured as zero."""
    return {"kld": 1e-4, "accuracy_drop": 0.01}.get(metric, 1e-6)


def _toml_number(x: float) -> str:
    return f"{x:.6g}" if "e" not in f"{x:.6g}" else repr(float(x))

