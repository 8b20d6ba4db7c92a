"""Numbers derived after every artifact ran: agreement with the reference (paired tests) and decode bandwidth."""

from __future__ import annotations

from edgemed.bench.results import ArtifactResult
from edgemed.errors import EdgemedError


def fill_derived(results: list[ArtifactResult], ref: ArtifactResult | None, copy_gbps: float) -> None:
    """Agreement, McNemar and accuracy difference against the reference; effective decode bandwidth (tg)."""
    from edgemed.evaluator.compare import compare

    for r in results:
        if not r.ok:
            continue
        bw = r.bandwidth
        bw.machine_copy_gbps = copy_gbps
        tps = r.throughput.tg.get("avg_ts")
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
