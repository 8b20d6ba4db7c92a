"""``edgemed tune``: the artifact that minimises an objective within quality and speed budgets, searched over a
declared grid of formats and settings (edgemed.bench.tune.space), in two stages.

1. **Stage 1, cheap** (edgemed.bench.tune.stage1): every candidate exported through ``run_export`` into a cache
   keyed by its inputs, then its KL divergence from the merged model's ``hf`` reference measured on a growing share
   of the fidelity sequences (``--fractions``), only while its 95% interval straddles a budget. Dropped: a
   candidate whose interval lies wholly outside a budget, that is still straddling at every sequence, that breaks
   the size budget, or that another candidate dominates on size and KLD beyond noise (edgemed.bench.tune.rules).
2. **Stage 2**: the full bench (``run_bench``) on the survivors, in objective order; a candidate that cannot beat
   the best one found so far is not benched.

A candidate that fails (its export, a measurement, its bench) is recorded as failed with the reason, never left
out in silence: when one that survived stage 1 fails in stage 2, the best of the rest is named but the answer is
not established (exit 1), since the failed one might have won. A damaged cache entry is built again and the run
says so (``cache_rebuilt``).

Every candidate and why it was dropped goes into OUT/tune.json (rewritten after each candidate: an interrupted tune
loses nothing finished, and ``--resume`` goes on), with tune.md and pareto.png beside it; the chosen artifact is
copied, manifest and all, into OUT/best/<format>.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from edgemed.bench.tune.config import TuneConfig
from edgemed.bench.tune.space import Candidate
from edgemed.bench.tune.stage2 import better, stage_two
from edgemed.bench.tune.state import TUNE_JSON, State, drop
from edgemed.errors import EdgemedError


class Plan:
    """Everything checked before any work: the merged model, the candidates, the questions, the folders."""

    def __init__(self, merged: Path, config: TuneConfig):
        from edgemed.bench.tune.space import check_space
        from edgemed.export.base import check_source
        from edgemed.fsutil import check_output_dir
        from edgemed.registry import require_train
        from edgemed.resources import resolved

        self.config = config.validate()
        self.budgets = config.budgets()
        require_train("edgemed tune (it exports the merged model with transformers)")
        self.merged = resolve_merged(Path(merged))
        check_source(self.merged)
        self.space, self.candidates, _ = check_space(config.space, config.runtimes)
        self.out = Path(config.out)
        # absolute: llama.cpp's tools run inside the artifact's temp folder, so a relative path would miss
        self.cache = (Path(config.cache) if config.cache else self.merged.parent / "tune-cache").resolve()
        for flag, folder in (("--out", self.out), ("--cache", self.cache)):
            check_output_dir(folder, flag)
            if folder.resolve() == self.merged.resolve() or self.merged.resolve() in folder.resolve().parents:
                raise EdgemedError(f"{flag} {folder} is the merged model folder or inside it; give a separate folder")
        if (self.out / TUNE_JSON).is_file() and not config.resume:
            raise EdgemedError(f"--out {self.out} holds an earlier tune ({TUNE_JSON}); pass --resume to go on with "
                               "it, or give another --out (exports and measurements are cached, so that is cheap)")
        self.questions, self.selection = self._questions()
        self.threads = int(resolved(config.threads, "cpu")["threads"])

    def _questions(self):
        from edgemed.lineage import read_lineage, scoring_questions

        questions, info = scoring_questions(self.config.data, None, {"merged": read_lineage(self.merged)},
                                            limit=self.config.limit)
        if not questions:
            raise EdgemedError("no evaluation question to measure fidelity on; check --data and --limit")
        return questions, info


def resolve_merged(path: Path) -> Path:
    """A merged model folder, or a pipeline run folder (its merged/ inside)."""
    if not (path / "config.json").is_file() and (path / "merged" / "config.json").is_file():
        return path / "merged"
    return path


def run_tune(merged: Path, config: TuneConfig, show: bool = True) -> dict[str, Any]:
    """Run the search (see the module doc) and return the tune.json document; its ``exit_code`` is 0 when a
    candidate met every budget, 1 when none did. Bad input raises EdgemedError before any work."""
    from edgemed.bench.tune.stage1 import Stage1

    plan = Plan(merged, config)
    started = time.perf_counter()
    state = State(plan)
    s1 = Stage1(plan.merged, plan.cache, plan.out / "logs", plan.threads, config.verify, config.timeout)
    state.doc["source_sha256"] = s1.sha
    state.rebuilt = s1.rebuilt
    try:
        stage_one(plan, s1, state)
        stage_two(plan, s1, state)
        finish(plan, state, time.perf_counter() - started)
    except BaseException:
        state.doc["status"] = "interrupted" if state.doc["status"] == "running" else state.doc["status"]
        state.save()
        raise
    if show:
        from edgemed.bench.tune.report import print_summary

        print_summary(state.doc)
    return state.doc


# --- stage 1 ----------------------------------------------------------------------------------------------------
def stage_one(plan: Plan, s1, state: State) -> None:
    """Export every candidate, measure each on the first share of the sequences, then grow the share only for the
    candidates whose interval still straddles a budget; prune after every pass."""
    from edgemed.console import progress

    fractions = plan.config.fractions
    with progress() as bar:
        task = bar.add_task("tune: reference", total=len(plan.candidates))
        state.doc["reference"] = s1.store_reference(plan.questions)
        state.save()
        seen: dict[str, str] = {}
        for c in plan.candidates:
            bar.update(task, description=f"stage 1 {c.id}: exporting")
            rec = state.records[c.id]
            _export_one(c, rec, s1, state, seen, plan.budgets)
            if rec["status"] == "exported":
                bar.update(task, description=f"stage 1 {c.id}: KLD on {fractions[0]:.0%}")
                _measure_one(c, rec, s1, state, fractions[0])
            state.save()
            bar.advance(task)
        for n, fraction in enumerate(fractions[1:], start=1):
            prune(list(state.records.values()), plan.budgets, plan.config.objective, final=False)
            pending = [c for c in plan.candidates
                       if state.records[c.id].get("alive") and state.records[c.id].get("pending")]
            if not pending:
                break
            grow = bar.add_task(f"stage 1: {fraction:.0%} of the tokens", total=len(pending))
            for c in pending:
                bar.update(grow, description=f"stage 1 {c.id}: KLD on {fraction:.0%}")
                _measure_one(c, state.records[c.id], s1, state, fraction)
                prune(list(state.records.values()), plan.budgets, plan.config.objective, final=False)
                state.save()
                bar.advance(grow)
            if n == len(fractions) - 1:
                break
        prune(list(state.records.values()), plan.budgets, plan.config.objective, final=True)
        state.save()


def _export_one(c: Candidate, rec: dict[str, Any], s1, state: State, seen: dict[str, str],
                budgets: dict[str, Any]) -> None:
    from edgemed.bench.tune.rules import describe_break

    if c.skip:
        drop(rec, "skipped", 1, c.skip)
        return
    got = s1.export(c)
    rec.update({k: v for k, v in got.items() if k != "status"})
    if got["status"] != "exported":
        drop(rec, "failed", 1, got["reason"])
        return
    rec["status"] = "exported"
    sha = got.get("weights_sha256")
    if sha and sha in seen:
        drop(rec, "duplicate", 1, f"the same weights as {seen[sha]} (sha256 {sha[:12]}): measured once")
        return
    if sha:
        seen[sha] = c.id
    if budgets.get("max_size_bytes") is not None and got["size_bytes"] > budgets["max_size_bytes"]:
        drop(rec, "dropped", 1, "outside the budget: " + describe_break("max_size", got, budgets))


def _measure_one(c: Candidate, rec: dict[str, Any], s1, state: State, fraction: float) -> None:
    try:
        m = s1.measure(c, Path(rec["path"]), fraction)
    except EdgemedError as exc:
        drop(rec, "failed", 1, f"stage-1 measurement failed: {exc}")
        return
    rec["stage1"].append(m)
    rec.update(status="measured", alive=True, kld_mean=m["kld_mean"], kld_ci=m["kld_ci"], top1=m["top1"],
               top1_ci=m["top1_ci"], tokens=m["tokens"], sequences=m["sequences"], fraction=m["fraction"])


def prune(records: list[dict[str, Any]], budgets: dict[str, Any], objective: str, final: bool) -> None:
    """Drop what is outside a budget, what another live candidate dominates, and (final) what still straddles; a
    live candidate whose interval straddles a budget is marked ``pending`` (measure more tokens)."""
    from edgemed.bench.tune.rules import OUTSIDE, STRADDLES, describe_break, dominator, stage1_verdicts

    live = [r for r in records if r.get("alive")]
    for r in live:
        verdicts = stage1_verdicts(r, budgets)
        r["verdicts"] = verdicts
        out = [k for k, v in verdicts.items() if v == OUTSIDE]
        straddle = [k for k, v in verdicts.items() if v == STRADDLES]
        r["pending"] = bool(straddle) and not out
        if out:
            drop(r, "dropped", 1, "outside the budget: " + "; ".join(describe_break(k, r, budgets) for k in out))
        elif straddle and final:
            drop(r, "dropped", 1, f"not shown within the budget at {r['sequences']} sequences ({r['tokens']} "
                       "tokens, every one measured): " + "; ".join(describe_break(k, r, budgets) for k in straddle)
                       + " (the interval straddles it)")
    for r in sorted((r for r in records if r.get("alive")), key=lambda r: -r["size_bytes"]):
        d = dominator(r, [o for o in records if o.get("alive") and o is not r], objective)
        if d is not None:
            drop(r, "dropped", 1, f"dominated by {d['id']}: size {d['size_bytes'] / 1e6:.1f} <= "
                       f"{r['size_bytes'] / 1e6:.1f} MB and mean KLD [{d['kld_ci'][0]:.4f}-{d['kld_ci'][1]:.4f}] "
                       f"wholly below [{r['kld_ci'][0]:.4f}-{r['kld_ci'][1]:.4f}]")


# --- the answer -------------------------------------------------------------------------------------------------
def finish(plan: Plan, state: State, seconds: float) -> None:
    """Choose, copy the chosen artifact into OUT/best, and write the Pareto front, the sentence and the reports."""
    from edgemed.bench.tune.report import answer, pareto, write_reports

    met = [r for r in state.records.values() if r["status"] == "meets"]
    best = None
    for r in met:
        if best is None or better(r, best, plan.config.objective):
            best = r
    doc = state.doc
    doc["choice"] = None
    if best is not None:
        best["status"] = "chosen"
        doc["choice"] = {"id": best["id"], "format": best["format"], "settings": best["settings"],
                         "path": str(_copy_best(Path(best["path"]), plan.out / "best" / best["format"])),
                         "cache_path": best["path"]}
    doc["pareto"] = pareto(list(state.records.values()))
    doc["cache_rebuilt"] = dict(state.rebuilt)
    doc["answer"] = answer(doc, best, list(state.records.values()), plan.budgets, plan.config.objective)
    doc["evaluated"] = sum(1 for r in state.records.values() if r.get("stage1"))
    doc["seconds"] = round(seconds, 1)
    doc["established"] = not doc["answer"].get("failed_contenders")
    doc["exit_code"] = 0 if best is not None and doc["established"] else 1
    doc["status"] = "complete"
    doc["outputs"] = write_reports(doc, plan.out)
    state.save()


def _copy_best(src: Path, dest: Path) -> Path:
    """The chosen artifact, files and manifest as exported and verified, copied (not linked) into OUT/best."""
    from edgemed.fsutil import atomic_dir

    with atomic_dir(dest, force=True) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True, symlinks=False)
    return dest
