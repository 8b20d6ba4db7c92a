"""Which artifacts a bench measures, under which names, and which earlier results ``--resume`` may keep."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgemed.bench.results import ArtifactResult
from edgemed.errors import EdgemedError


@dataclass
class Target:
    """One artifact to measure."""

    name: str
    path: str
    format: str
    runtime: str
    problem: str | None = None  # why it cannot be measured (e.g. a corrupt manifest): recorded as failed, not run


def name_artifacts(paths: list[Path]) -> list[Target]:
    """Every artifact under `paths`, each with a unique name (its folder or file stem)."""
    from edgemed.manifest import check_artifact, detect_runtime, find_artifacts

    if not paths:
        raise EdgemedError("no artifacts given; pass artifact folders or a folder holding them")
    targets, seen = [], set()
    for path in find_artifacts([Path(p) for p in paths]):
        problem = None
        try:  # one artifact whose manifest is corrupt or unknown is recorded as failed; the others are measured
            fmt, runtime = detect_runtime(path)
            check_artifact(path)
        except EdgemedError as exc:
            fmt, runtime, problem = "unknown", "unknown", str(exc)
        name = path.stem if path.is_file() else path.name
        base, n = name, 2
        while name in seen:
            name, n = f"{base}-{n}", n + 1
        seen.add(name)
        targets.append(Target(name=name, path=str(path.resolve()), format=fmt, runtime=runtime, problem=problem))
    if all(t.problem for t in targets):
        raise EdgemedError(f"no artifact can be measured: {targets[0].problem}")
    return targets


def pick_reference_target(targets: list[Target], reference: str | None) -> Target:
    """--reference by name or format; else the artifact of the registry's reference format (hf); else the first.
    Bad names are exit 2."""
    from edgemed.registry import is_reference

    if reference is not None:
        for t in targets:
            if reference in (t.name, t.format):
                return t
        raise EdgemedError(f"--reference '{reference}' names no artifact; use one of "
                           f"{', '.join(t.name for t in targets)}")
    usable = [t for t in targets if not t.problem] or targets
    return next((t for t in usable if is_reference(t.format)), usable[0])


def identity(path: Path) -> str:
    """What changes when the artifact changes: its manifest, else its files' sizes and mtimes."""
    from edgemed.manifest import MANIFEST

    manifest = path / MANIFEST
    if manifest.is_file():
        return hashlib.sha256(manifest.read_bytes()).hexdigest()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return hashlib.sha256("".join(f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns};" for p in files)
                          .encode()).hexdigest()


def settings_key(measured: dict[str, Any], target: Target, reference: Target) -> str:
    """Same key = same measurement: the settings that matter, the artifact, and the fidelity reference."""
    blob = json.dumps([measured, target.path, identity(Path(target.path)), reference.path,
                       identity(Path(reference.path))], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def previous_results(path: Path) -> dict[str, ArtifactResult]:
    """Results of an earlier bench.json by artifact name ({} when there is none or it is unreadable)."""
    from edgemed.fsutil import try_json

    data = try_json(path) if path.is_file() else None
    if not isinstance(data, dict) or not isinstance(data.get("artifacts", []), list):
        return {}  # absent or unreadable: measure everything again
    try:
        return {a["name"]: ArtifactResult.from_dict(a) for a in data.get("artifacts", [])}
    except (KeyError, TypeError, ValueError, AttributeError):
        return {}  # an entry this version cannot read: measure everything again


def weights_record(path: Path, fmt: str) -> dict[str, Any]:
    """The artifact's weight files by content: each one's path inside the artifact, size and sha256, and one
    ``sha256`` over them that names the artifact on any machine, whatever its path (the file's own sha256 when
    there is one weight file). {} when the files cannot be read."""
    from edgemed.fsutil import sha256_file
    from edgemed.registry import weight_suffixes

    path = Path(path)
    suffixes = weight_suffixes(fmt)
    try:
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()
                                                     and p.name.endswith(suffixes))
        entries = [{"path": p.name if p == path else p.relative_to(path).as_posix(), "size": p.stat().st_size,
                    "sha256": sha256_file(p)} for p in files]
    except OSError:
        return {}
    if not entries:
        return {}
    digest = entries[0]["sha256"] if len(entries) == 1 else hashlib.sha256(
        "".join(f"{e['path']}:{e['sha256']}\n" for e in entries).encode()).hexdigest()
    return {"sha256": digest, "files": entries}


def path_from_run(path: str | Path, out: Path) -> str:
    """`path` relative to the bench folder (bench.json stays readable when the run is copied elsewhere)."""
    import os

    try:
        return Path(os.path.relpath(Path(path).resolve(), Path(out).resolve())).as_posix()
    except ValueError:  # another drive (Windows): keep it as it is
        return str(path)
