"""What every exporter shares: its format name, an availability check, settings, and the source model checks.

An exporter writes one artifact into a temp folder it is given; the orchestrator (``edgemed.export.run``)
renames it into place only after the artifact verified, and writes its manifest.
"""

from __future__ import annotations

import abc
import hashlib
import json
import shutil
import struct
from pathlib import Path
from typing import Any

from edgemed.errors import EdgemedError
from edgemed.fsutil import read_json, sha256_file, try_json
from edgemed.registry import get_format, install_message, missing_modules

# Files that describe a model but are not the weights: copied beside every artifact that needs a tokenizer.
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
    "tokenizer.model", "added_tokens.json", "chat_template.jinja", "chat_template.json",
)


class Exporter(abc.ABC):
    """One format's exporter. Subclasses set ``requires`` and ``defaults`` and implement ``export``."""

    requires: tuple[str, ...] = ()  # importable modules the export needs (the extra is the registry's)
    defaults: dict[str, Any] = {}

    def __init__(self, name: str, threads: int | None = None, siblings: Path | None = None, **settings: Any):
        unknown = set(settings) - set(self.defaults)
        if unknown:
            raise EdgemedError(
                f"{name}: unknown setting(s) {', '.join(sorted(unknown))}; known: {', '.join(self.defaults) or 'none'}"
            )
        self.name = name
        self.threads = threads
        self.siblings = Path(siblings) if siblings else None  # the export folder: other artifacts to reuse
        self.settings: dict[str, Any] = {**self.defaults, **settings}
        self.source_sha256: str | None = None  # set by the orchestrator; lets `sibling` check provenance

    def check(self, source: Path | None = None) -> None:
        """Raise EdgemedError (exit 2) for a setting out of range, or one that does not fit the model `source` (when
        given), before any work (the formats that take values check them here; the export checks them again)."""
        return None

    def available(self) -> str | None:
        """None when this exporter can run here, else the reason it cannot."""

        missing = missing_modules(self.requires)
        return install_message(missing, get_format(self.name).extra) if missing else None

    @abc.abstractmethod
    def export(self, source: Path, dest: Path, settings: dict[str, Any]) -> dict[str, Any]:
        """Write the artifact's files into the (empty, temporary) folder `dest`; return details for the manifest."""

    def sibling(self, fmt: str) -> Path | None:
        """An already exported, verified artifact of `fmt` from the same source, to build on (onnx for onnx-int8)."""
        if self.siblings is None or self.source_sha256 is None:
            return None
        from edgemed.manifest import try_manifest

        folder = self.siblings / fmt
        manifest = try_manifest(folder)
        if manifest is None:
            return None
        source = manifest.get("source")
        ok = isinstance(source, dict) and source.get("sha256") == self.source_sha256 \
            and manifest.get("status") == "verified"
        return folder if ok else None


def copy_tokenizer(source: Path, dest: Path) -> list[str]:
    """Copy the tokenizer (and chat template) files of `source` into `dest`."""
    copied = []
    for name in TOKENIZER_FILES:
        if (Path(source) / name).is_file():
            shutil.copy2(Path(source) / name, Path(dest) / name)
            copied.append(name)
    return copied


# --- the source model ---------------------------------------------------------------------------------------
def _safetensors_ok(path: Path) -> str | None:
    """None when the file's header parses and its data fits the file, else what is wrong."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            raw = fh.read(8)
            if len(raw) < 8:
                return "shorter than a safetensors header"
            (n,) = struct.unpack("<Q", raw)
            if n > min(size - 8, 100 * 2**20):
                return "header length beyond the end of the file"
            header = json.loads(fh.read(n))
    except (OSError, ValueError) as exc:
        return f"unreadable header ({exc})"
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end > size:
        return f"truncated: {size} bytes, the header needs {8 + n + end}"
    return None


def check_source(merged: Path) -> list[Path]:
    """The merged model's weight files, after checking the folder is a complete safetensors model."""
    merged = Path(merged)
    if not merged.is_dir():
        raise EdgemedError(f"{merged} is not a folder; give the merged model folder written by 'edgemed merge'")
    if not (merged / "config.json").is_file():
        raise EdgemedError(
            f"{merged} is not a model folder (no config.json); give the merged model folder written by 'edgemed merge'"
        )
    index = merged / "model.safetensors.index.json"
    if index.is_file():
        weight_map = read_json(index, "shard index", "re-run 'edgemed merge'", want_object=True).get("weight_map")
        if not isinstance(weight_map, dict) or not all(isinstance(s, str) for s in weight_map.values()):
            raise EdgemedError(f"{index} is corrupt: no weight_map of tensor -> shard file; re-run 'edgemed merge'")
        shards = sorted(set(weight_map.values()))
        missing = [s for s in shards if not (merged / s).is_file()]
        if missing:
            raise EdgemedError(
                f"{merged} is incomplete: shard {missing[0]} listed in {index.name} is missing; re-run 'edgemed merge'"
            )
        weights = [merged / s for s in shards]
    else:
        weights = sorted(merged.glob("*.safetensors"))
    if not weights:
        hint = " (only pickle .bin weights, which edgemed does not load)" if list(merged.glob("*.bin")) else ""
        raise EdgemedError(f"{merged} has no .safetensors weights{hint}; re-save the model with safe_serialization")
    for w in weights:
        problem = _safetensors_ok(w)
        if problem:
            raise EdgemedError(f"{w} is corrupt: {problem}; re-run 'edgemed merge'")
    if not (merged / "tokenizer.json").is_file() and not (merged / "tokenizer.model").is_file():
        raise EdgemedError(f"{merged} has no tokenizer files; save the tokenizer beside the model")
    return weights


def source_fingerprint(merged: Path) -> dict[str, Any]:
    """What the artifacts are made from: the merged folder's files and one sha256 over all of them."""

    merged = Path(merged)
    files = {
        str(p.relative_to(merged)): sha256_file(p)
        for p in sorted(merged.rglob("*"))
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(merged).parts)
        and not p.name.startswith("edgemed")
    }
    digest = hashlib.sha256("".join(f"{k}\0{v}\n" for k, v in files.items()).encode()).hexdigest()
    config = read_json(merged / "config.json", "model config",
                       "re-run 'edgemed merge' or give a model folder with a valid config.json", want_object=True)
    return {
        "path": str(merged.resolve()),
        "sha256": digest,
        "files": len(files),
        "model_type": config.get("model_type"),
        "architectures": config.get("architectures"),
    }


def source_lineage(merged: Path):
    """The source's lineage (recorded by train/merge); for a model no edgemed stage has seen, this stage
    decides its prompt style from the chat template and records that no training data is known."""
    from edgemed.lineage import read_lineage, untrained
    from edgemed.prompts import detect_style_for_folder

    lineage = read_lineage(merged)
    if lineage is None:
        lineage = untrained(detect_style_for_folder(Path(merged)) if chat_template_of(merged) else "plain",
                            "chat template at export",
                            {"given": str(Path(merged).resolve())})
    return lineage


def chat_template_of(folder: Path) -> str | None:
    """The chat template saved in a tokenizer folder (chat_template.jinja or tokenizer_config.json)."""
    folder = Path(folder)
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    config = try_json(folder / "tokenizer_config.json")
    template = config.get("chat_template") if isinstance(config, dict) else None
    return template if isinstance(template, str) else None
