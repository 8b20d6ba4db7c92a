"""What a served model is: its id (the name clients send), its path, format, digest and lineage."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgemed.errors import EdgemedError

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


@dataclass
class ArtifactSpec:
    """One artifact to serve: ``id`` is what the API's ``model`` field names."""

    id: str
    path: Path
    format: str = ""
    runtime: str = ""
    sha256: str = ""
    lineage: dict[str, Any] | None = None
    manifest: dict[str, Any] = field(default_factory=dict)

    def metadata(self) -> dict[str, Any]:
        """What GET /v1/models says about it besides OpenAI's own fields."""
        lin = self.lineage or {}
        return {"format": self.format, "runtime": self.runtime, "sha256": self.sha256, "path": str(self.path),
                "lineage": {k: lin.get(k) for k in ("prompt_style", "style_source", "base_model", "data",
                                                     "evaluation", "run") if k in lin}}


def parse_artifact_arg(text: str) -> tuple[str | None, str]:
    """``NAME=PATH`` or ``PATH`` -> (name or None, path)."""
    name, sep, path = text.partition("=")
    if sep and _ID.match(name) and not Path(text).exists():
        return name, path
    return None, text


def default_id(path: Path) -> str:
    path = Path(path)
    name = path.stem if path.is_file() else path.resolve().name
    name = re.sub(r"[^A-Za-z0-9._:-]", "-", name).strip("-") or "model"
    return name[:128]


def identify(arg: str) -> ArtifactSpec:
    """Resolve one ARTIFACT argument, check it against its manifest (sizes and recorded sha256), digest it."""
    from edgemed.artifact_digest import artifact_sha256
    from edgemed.evaluator.command import resolve_artifact
    from edgemed.lineage import read_lineage
    from edgemed.manifest import check_artifact, detect_runtime

    name, raw = parse_artifact_arg(arg)
    path = resolve_artifact(raw)  # checked against its manifest (sizes, sha256, format): a changed file is refused
    if name is not None and not _ID.match(name):
        raise EdgemedError(f"'{name}' is not a usable model id; use letters, digits, '.', '_', ':' or '-'")
    manifest = check_artifact(path) or {}  # the same check, memoised: its manifest without hashing again
    fmt, runtime = detect_runtime(path)
    lineage = read_lineage(path)
    return ArtifactSpec(id=name or default_id(path), path=path, format=fmt, runtime=runtime,
                        sha256=artifact_sha256(path), lineage=lineage.to_dict() if lineage else None,
                        manifest=manifest)
