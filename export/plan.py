"""What an export run will do, decided before any work: the format names expanded and ordered, every input checked
(source, output folder, settings, each exporter's own check, this install, this machine's memory), which artifacts
already in place are up to date (:func:`existing`), and whether the "beside" export chain may run next to the
"main" one (:func:`overlap_plan`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from edgemed.errors import EdgemedError
from edgemed.export.base import Exporter, check_source
from edgemed.fsutil import check_output_dir
from edgemed.registry import (
    FORMATS,
    FormatSpec,
    architecture_limit,
    default_formats,
    expand_formats,
    get_format,
    load_object,
    require_train,
)


def order(name: str) -> int:
    """A format's place in the registry (results and chains follow it); unknown names last."""
    names = list(FORMATS)
    return names.index(name) if name in names else len(names)


def prepare(merged: Path, formats: list[str] | None, out: Path, threads: int | None,
             settings: dict[str, dict[str, Any]] | None,
             ) -> tuple[list[FormatSpec], dict[str, Exporter], dict[str, str | None], bool]:
    """Every check before any work: threads, this install, the source, the output folder, the format names and
    their settings, each exporter's own check, what this machine can export and its memory. (specs in registry
    order, their exporters, why each cannot be exported here or None, whether the formats were named)."""
    if threads is not None:
        from edgemed.resources import resolve_threads

        resolve_threads(threads)  # at least 1, at most a sane multiple of this machine's CPUs
    require_train("edgemed export (it reads the merged model with transformers)")  # e.g. a board install
    check_source(merged)
    check_output_dir(out, "--out")
    if out.resolve() == merged.resolve() or merged.resolve() in out.resolve().parents:
        raise EdgemedError(f"--out {out} is the merged model folder or inside it; give a separate folder (default: "
                           f"{merged.parent / (merged.name + '-exports')})")
    formats = expand_formats(formats)  # named sets: --formats ladder
    explicit = formats is not None
    specs = sorted((get_format(n) for n in dict.fromkeys(formats if explicit else default_formats())),
                   key=lambda s: order(s.name))
    unknown = set(settings or {}) - {s.name for s in specs}
    if unknown:
        raise EdgemedError(f"settings given for formats not exported: {', '.join(sorted(unknown))}")
    exporters: dict[str, Exporter] = {
        s.name: load_object(s.exporter)(s.name, threads=threads, siblings=out, **(settings or {}).get(s.name, {}))
        for s in specs
    }
    for exporter in exporters.values():
        exporter.check(merged)  # a setting out of range, a matrix for another model: exit 2 before any work
    unavailable = {name: e.available() or architecture_limit(name, merged) for name, e in exporters.items()}
    if all(unavailable.values()):  # nothing can be written here: say what to install
        reasons = "; ".join(f"{name} {why}" for name, why in unavailable.items())
        raise EdgemedError(f"no requested format can be exported with this install ({reasons})")
    from edgemed.memory_plan import check_export

    check_export([s.name for s in specs if not unavailable[s.name]], str(merged))  # exit 2 before any work
    return specs, exporters, unavailable, explicit


def overlap_plan(asked: bool, gguf: list[FormatSpec], rest: list[FormatSpec], names: list[str],
                  merged: Path) -> dict[str, Any]:
    """Whether the "beside" chain (GGUF) runs beside the "main" one (run_export's `overlap`), and why
    (export.json)."""
    if not asked:
        return {"chains": [], "why": "not asked for"}
    if not gguf or not rest:
        return {"chains": [], "why": "one chain only"}
    from edgemed.memory_plan import exports_fit_together

    chains = [[s.name for s in gguf if s.name in names], [s.name for s in rest if s.name in names]]
    if not all(chains):
        return {"chains": [], "why": "one chain only (the other's formats cannot be exported with this install)"}
    fits, why = exports_fit_together(chains, str(merged))
    return {"chains": chains if fits else [], "why": why}


def existing(m: dict[str, Any] | None, final: Path, source_sha: str, settings: dict[str, Any],
              verify: bool) -> tuple[bool, str]:
    """(up to date?, why not) for an artifact folder already at `final`, whose manifest is `m` (None: none that
    reads): a format whose artifact is up to date is skipped."""
    if m is None:
        return False, f"{final} exists but is not an edgemed artifact"
    source = m.get("source")
    if not isinstance(source, dict) or source.get("sha256") != source_sha:
        return False, f"{final} was exported from another source"
    if m.get("settings") != json.loads(json.dumps(settings)):
        return False, f"{final} was exported with other settings"
    if verify and m.get("status") != "verified":
        return False, f"{final} was not verified"
    return True, "up to date (same source and settings)"


def cleanup_partials(out: Path, name: str) -> None:
    """Temp folders left by a killed run (SIGKILL, power loss) never have the final name; remove them."""
    for stale in list(out.glob(f".{name}.*.partial")) + [out / f".{name}.old"]:
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
