"""Can two bench runs be compared? What keeps a ``--baseline`` from being compared with the run at hand."""

from __future__ import annotations

from typing import Any

from edgemed.bench.report.runs import HARDWARE_KEYS, fingerprint, machine_name


def not_comparable(baseline: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What keeps two bench documents from being compared, one phrase each: another machine (the hardware part of
    the fingerprint, as ``edgemed report`` matches machines), other threads, another base model or another question
    set. Empty when they compare (a fact a document does not record is not held against it)."""
    out = []
    fb, fc = fingerprint(baseline), fingerprint(current)
    hw = [k for k in HARDWARE_KEYS if fb.get(k) != fc.get(k) and k != "isa"]
    if hw or fb.get("isa") != fc.get("isa"):
        what = ", ".join(f"{k} {fb.get(k)} vs {fc.get(k)}" for k in hw) or "CPU features"
        out.append(f"another machine ({machine_name(fb)} vs {machine_name(fc)}: {what})")
    sb, sc = baseline.get("settings") or {}, current.get("settings") or {}
    if sb.get("threads") is not None and sc.get("threads") is not None and sb["threads"] != sc["threads"]:
        out.append(f"other threads ({sb['threads']} vs {sc['threads']})")
    mb, mc = set((baseline.get("models") or {}).values()), set((current.get("models") or {}).values())
    if mb and mc and mb != mc:
        out.append(f"another model ({', '.join(sorted(mb))} vs {', '.join(sorted(mc))})")
    qb, qc = sb.get("question_ids_sha256"), sc.get("question_ids_sha256")
    if qb and qc and qb != qc:
        out.append(f"another question set ({sb.get('questions')} questions, ids {qb} vs {qc})")
    return out
