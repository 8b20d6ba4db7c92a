"""Timing budgets decided across runs: each artifact's timings measured in several worker processes.

The repetitions of one process share that process's speed. On a shared or virtual machine a fresh process of the
same artifact runs several per cent faster or slower than the last one (where its memory landed, which host cores
its threads got), so the 95% interval of one run's repetitions is narrower than the change from one run to the
next, and a budget decided on it fails an unchanged artifact that merely drew a slow process. A timing budget is
therefore decided on runs: the bench run's own measurement plus ``--timing-runs`` - 1 timing-only runs, each in its
own worker, artifact after artifact per round (a drift of the machine reaches every artifact). Each run gives one
value of the metric (its tokens/s, its p95, its median TTFT); the check reads their mean and the 95% t interval of
that mean over the runs. An inconclusive check gets more runs (``--timing-runs`` of them, at least 2) up to
``--retries`` times, pooled with the earlier ones, so the interval narrows with their number. Runs measured on a busy
machine are left out while at least two quiet ones remain; otherwise they stay in and the check is marked busy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from edgemed.bench.measure.stats import mean_interval
from edgemed.bench.results import METRICS, ArtifactResult

if TYPE_CHECKING:
    from edgemed.bench.plan import Plan

RUNS_RULE = "95% t interval of the mean over {n} runs, each its own process (the drift between runs included)"
AUTO_RUNS = 3  # --timing-runs when a timing budget applies and the flag is not given


@dataclass
class Pooled:
    """One timing metric over an artifact's runs: the mean, its 95% interval, the runs used and the busy ones."""

    value: float
    low: float
    high: float
    runs: int
    busy: list[ArtifactResult]  # busy runs kept in the pool (fewer than two quiet ones)
    left_out: int  # busy runs left out of the pool

    @property
    def rule(self) -> str:
        text = RUNS_RULE.format(n=self.runs)
        return text + (f"; {self.left_out} busy run(s) left out" if self.left_out else "")


def pooled(key: str, runs: list[ArtifactResult]) -> Pooled | None:
    """A timing metric over `runs` (ok ones), busy runs left out while two quiet ones remain; None below 2 runs
    holding the metric (then one run's own interval is all there is)."""
    ok = [r for r in runs if r.ok and r.metric(key) is not None]
    quiet = [r for r in ok if not r.busy]
    use = quiet if len(quiet) >= 2 else ok
    values = [r.metric(key) for r in use]
    bounds = mean_interval(values)
    if bounds is None:
        return None
    mean = sum(values) / len(values)
    return Pooled(mean, *bounds, runs=len(use), busy=[r for r in use if r.busy], left_out=len(ok) - len(use))


def _timed_keys() -> set[str]:
    """The budget keys whose metric is a timing."""
    return {m.budget for m in METRICS.values() if m.budget and m.timing}


def timing_runs(plan: Plan) -> int:
    """Runs per artifact for its timing budgets: --timing-runs, else AUTO_RUNS when a budget (file or flag) sets a
    limit on a timing for some format, else 1."""
    if plan.config.timing_runs is not None:
        return plan.config.timing_runs
    if plan.budgets is None:
        return 1
    timed = _timed_keys()
    return AUTO_RUNS if any(timed & set(plan.budgets.for_format(t.format)) for t in plan.targets) else 1


def timing_budgeted(plan: Plan, result: ArtifactResult) -> bool:
    """Whether a budget applies to one of the artifact's timings (only those artifacts are measured again)."""
    if plan.budgets is None or not result.ok:
        return False
    return bool(_timed_keys() & set(plan.budgets.for_format(result.format)))


def measure_runs(plan: Plan, results: list[ArtifactResult], count: int, label: str) -> dict[str, list[ArtifactResult]]:
    """`count` timing-only runs of every result given, each in its own worker, one artifact after another per
    round. Returns artifact name -> its new runs."""
    from edgemed.bench.protocol import Job, run_worker
    from edgemed.console import err_console, progress

    runs: dict[str, list[ArtifactResult]] = {r.name: [] for r in results}
    if count < 1 or not results:
        return runs
    targets = {t.name: t for t in plan.targets}
    qdicts = [asdict(q) for q in plan.questions]
    with progress() as bar:
        task = bar.add_task(label, total=count * len(results))
        for n in range(count):
            for r in results:
                job = Job(config=plan.config, target=targets[r.name], questions=qdicts, threads=plan.where["threads"],
                          device=plan.where["device"], timing_only=True)
                again = run_worker(job, r.settings_key, plan.out / "work", bar, task)
                runs[r.name].append(again)
                state = f"done in {again.wall_s:.1f} s" if again.ok else f"[red]{again.failure.message}[/red]"
                busy = " [yellow]BUSY[/yellow]" if again.ok and again.busy else ""
                err_console.print(f"{label} {r.name}: run {n + 1} of {count} {state}{busy}")
                bar.advance(task)
    return runs


def timings(r: ArtifactResult) -> dict[str, Any]:
    """What one run measured: its timings (and every budgeted metric), load and wall time (bench.json)."""
    return {"ok": r.ok, "busy": r.busy, "wall_s": r.wall_s, "machine_load": r.machine_load.get("reason"),
            **{key: r.metric(key) for key, m in METRICS.items() if m.timing or m.budget}}
