"""Stage 2 of ``edgemed tune``: the full bench (``run_bench``) on the stage-1 survivors in objective order, a
candidate that cannot beat the best one found so far left unbenched; :func:`better` is the order the answer is
chosen by."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgemed.bench.tune.state import State, drop

if TYPE_CHECKING:
    from edgemed.bench.tune.run import Plan


def stage_two(plan: Plan, s1, state: State) -> None:
    """The full bench on the survivors in objective order, stopping for those that cannot beat the best."""
    from edgemed.bench.tune.rules import cannot_beat, objective_value, stage2_breaks
    from edgemed.console import err_console
    from edgemed.registry import weight_bytes

    objective = plan.config.objective
    survivors = [r for r in state.records.values() if r.get("alive")]
    survivors.sort(key=lambda r: (r["size_bytes"], r["kld_mean"]) if objective in ("size", "memory")
                   else (r["kld_mean"], r["size_bytes"]))
    for r in survivors:
        r["status"] = "survivor"
    state.save()
    links = plan.out / "candidates"
    benched: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    for r in survivors:
        bound = r["size_bytes"] if objective == "size" else weight_bytes(Path(r["path"]), r["format"])
        best_value = objective_value(best["bench"], objective) if best else None
        if best is not None and cannot_beat(bound, best_value, objective):
            drop(r, "not-benched", 2, f"cannot beat {best['id']} on {objective}: its "
                       f"{'size' if objective == 'size' else 'weights'} {bound / 1e6:.1f} MB > {best['id']}'s "
                       f"{best_value / 1e6:.1f} MB (+2% tie)")
            continue
        benched.append(r)
        err_console.print(f"[bold]stage 2[/bold]: full bench of {r['id']}")
        doc = _bench(plan, s1, links, benched)
        result = next((a for a in doc["artifacts"] if a["name"] == r["id"]), None)
        if result is None or result.get("status") != "ok":
            why = (result or {}).get("failure", {}) or {}
            drop(r, "failed", 2, f"bench failed: {why.get('message', 'no result')}")
            state.save()
            continue
        r["bench"] = _bench_record(result, doc)
        rejected = (doc.get("recommendation") or {}).get("rejected", {}).get(r["id"], [])
        r["breaks"] = stage2_breaks(result, plan.budgets, rejected)
        r.update(stage=2, alive=False)
        if r["breaks"]:
            r.update(status="breaks", reason="stage 2: " + "; ".join(r["breaks"]))
        else:
            r.update(status="meets", reason="meets every budget")
            if best is None or better(r, best, objective):
                best = r
        state.doc["bench"] = {"path": str(plan.out / "bench"), "reference": doc.get("reference"),
                              "busy_artifacts": doc.get("busy_artifacts", [])}
        state.save()


def _bench(plan: Plan, s1, links: Path, benched: list[dict[str, Any]]) -> dict[str, Any]:
    """run_bench on the reference and every candidate benched so far (earlier ones kept by --resume)."""
    from edgemed.bench.config import BenchConfig
    from edgemed.bench.measure.stats import factor_for_p95
    from edgemed.bench.run import run_bench
    from edgemed.registry import reference_format

    links.mkdir(parents=True, exist_ok=True)
    paths = []
    ref = reference_format()  # stage 1 exported it into its base folder
    for name, target in [(ref, s1.base / ref), *((r["id"], Path(r["path"])) for r in benched)]:
        link = links / name
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink(os.path.relpath(target, links), link)
        paths.append(link)
    b = plan.budgets
    config = BenchConfig(data=plan.config.data, limit=plan.config.limit, threads=plan.threads,
                         n_prompt=plan.config.n_prompt, n_gen=plan.config.n_gen,
                         repetitions=plan.config.repetitions,
                         latency_prompts=factor_for_p95(plan.config.repetitions),  # p95 from >= 20 samples
                         reference=ref, prefer="size" if plan.config.objective == "size" else "memory",
                         recommend_max_memory=str(b["max_memory_bytes"]) if b.get("max_memory_bytes") else None,
                         recommend_max_p95_ms=str(b["max_p95_ms"]) if b.get("max_p95_ms") else None,
                         profile=[b["profile"]] if b.get("profile") else None, timeout=plan.config.timeout,
                         resume=True, out=plan.out / "bench")
    return run_bench(paths, config, show=False)


def _bench_record(a: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    """What tune.json keeps of one artifact's bench result (the whole one is in bench/bench.json)."""
    keep = ("size_bytes", "accuracy", "latency", "throughput", "memory", "fidelity", "machine_load", "bandwidth")
    rec = {k: a.get(k) for k in keep}
    if rec["fidelity"]:
        rec["fidelity"] = {k: v for k, v in rec["fidelity"].items() if not isinstance(v, list | dict)
                           or k in ("kld_ci", "top1_agreement_ci")}
    for k in ("latency",):
        if rec[k]:
            rec[k] = {"answer_ms": (rec[k] or {}).get("answer_ms"), "ttft_ms": (rec[k] or {}).get("ttft_ms")}
            for sub in rec[k].values():
                if isinstance(sub, dict):
                    sub.pop("samples", None)
    for t in ("pp", "tg"):
        if (rec["throughput"] or {}).get(t):
            rec["throughput"][t] = {k: v for k, v in rec["throughput"][t].items() if k != "samples_ns"}
    rec["busy"] = bool((a.get("machine_load") or {}).get("busy"))
    rec["name"] = a.get("name")
    return rec


def better(a: dict[str, Any], b: dict[str, Any], objective: str) -> bool:
    """Is candidate `a` preferred to `b` (both meet every budget)? The bench's own ordering for size, memory and
    latency (ties within noise go to the next measure); tg: higher tg beyond noise, then size."""
    from edgemed.bench.recommend import decide
    from edgemed.bench.results import ArtifactResult
    from edgemed.bench.tune.rules import tg_rank_key, tg_tie

    if objective == "tg":
        if not tg_tie(a["bench"], b["bench"]):
            return tg_rank_key(a["bench"]) < tg_rank_key(b["bench"])
        return (a["size_bytes"], a["id"]) < (b["size_bytes"], b["id"])
    ra, rb = (ArtifactResult.from_dict({"name": r["id"], "path": r["path"], "format": r["format"],
                                        "runtime": r["runtime"], **r["bench"]}) for r in (a, b))
    return decide(ra, rb, objective)[0] < 0
