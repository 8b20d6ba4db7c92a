"""The artifact manifest ``edgemed.json``: what an artifact is, where it came from, how it verified.

An artifact is a folder holding its files and this manifest. Runtimes and the bench find artifacts
by their manifests; a folder without one is recognised by its files (config.json, model.onnx, .gguf).
"""

from __future__ import annotations

import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from edgemed.errors import EdgemedError
from edgemed.fsutil import read_json, sha256_file

MANIFEST = "edgemed.json"
SCHEMA_VERSION = 1
TRACKED_PACKAGES = (
    "edgemed", "torch", "transformers", "peft", "accelerate", "bitsandbytes", "optimum", "optimum-onnx",
    "onnx", "onnxruntime", "llama-cpp-python", "gguf", "numpy", "onnx-ir", "openvino", "nncf",
)


def versions(packages: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def file_entries(folder: Path) -> list[dict[str, Any]]:
    folder = Path(folder)
    return [
        {"path": str(p.relative_to(folder)), "size": p.stat().st_size, "sha256": sha256_file(p)}
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    ]


def new_manifest(fmt: str, runtime: str, source: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    return {
        "schema": SCHEMA_VERSION,
        "format": fmt,
        "runtime": runtime,
        "source": source,
        "settings": settings,
        "versions": versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def read_manifest(folder: Path) -> dict[str, Any]:
    """The checked manifest of an artifact folder: exit 2 (naming the file and the fix) when it is missing,
    corrupt, of a newer schema, or lists files outside the folder."""
    path = Path(folder) / MANIFEST
    if not path.exists() and not path.is_symlink():
        raise EdgemedError(f"{folder} has no {MANIFEST}; export it with 'edgemed export'")
    data = read_json(path, "artifact manifest", "re-export the artifact with --force")
    if not isinstance(data, dict) or "format" not in data or "runtime" not in data:
        raise EdgemedError(f"{path} lacks 'format'/'runtime'; re-export the artifact with --force")
    if not isinstance(data["format"], str) or not isinstance(data["runtime"], str):
        raise EdgemedError(f"{path}: 'format' and 'runtime' must be names (text); re-export the artifact with --force")
    schema = data.get("schema", SCHEMA_VERSION)
    if isinstance(schema, bool) or not isinstance(schema, int) or schema < 1:
        raise EdgemedError(f"{path}: schema {schema!r} is not a manifest schema version; re-export the artifact")
    if schema > SCHEMA_VERSION:
        raise EdgemedError(f"{path}: manifest schema {schema} is newer than this edgemed reads ({SCHEMA_VERSION}); "
                           "upgrade edgemed or re-export the artifact with this version")
    if "files" in data and not (isinstance(data["files"], list) and all(
            isinstance(f, dict) and isinstance(f.get("path"), str) and isinstance(f.get("size"), int)
            for f in data["files"])):
        raise EdgemedError(f"{path}: 'files' is not a list of {{path, size, sha256}}; re-export the artifact")
    for f in data.get("files", []):
        rel = Path(f["path"])
        if rel.is_absolute() or ".." in rel.parts:
            raise EdgemedError(f"{path}: file entry '{f['path']}' points outside the artifact folder; the manifest "
                               "is not edgemed's: re-export the artifact")
    return data


def try_manifest(folder: Path) -> dict[str, Any] | None:
    """:func:`read_manifest`'s manifest, or None when the folder has none or it is unreadable (for optional uses:
    a runtime's extra facts, a sibling artifact)."""
    if not (Path(folder) / MANIFEST).is_file():
        return None
    try:
        return read_manifest(folder)
    except EdgemedError:
        return None


def check_known_format(path: Path) -> None:
    """An artifact's manifest names a format this edgemed knows, run by the runtime the registry gives it (exit 2
    otherwise, naming the file). Checked where the user's artifacts come in (eval, bench), not in the workers."""
    path = Path(path)
    if not (path.is_dir() and (path / MANIFEST).exists()):
        return
    from edgemed.export.gguf.types import parse_format
    from edgemed.registry import FORMATS, can_run, get_format, spec_of

    m = read_manifest(path)
    try:
        spec = spec_of(m["format"])
        if m["format"] not in FORMATS and parse_format(m["format"]) and can_run(spec) is None:
            get_format(m["format"])  # a gguf-<type> the installed llama.cpp knows
    except EdgemedError as exc:
        raise EdgemedError(f"{path / MANIFEST}: {exc}; re-export the artifact") from None
    if spec.runtime != m["runtime"]:
        raise EdgemedError(f"{path / MANIFEST}: format {m['format']} runs on {spec.runtime}, the manifest says "
                           f"runtime '{m['runtime']}'; re-export the artifact")


_VERIFIED: dict[tuple[Any, ...], bool] = {}  # artifacts whose files hashed right, by their files' size and mtime


def check_artifact(path: Path) -> dict[str, Any] | None:
    """The one check of an artifact against the manifest that describes it, before anything measures it: the
    manifest reads and names a known format and its runtime; every file it lists is there with its size and sha256
    (hashed once per process while the files are unchanged); and the files are that format: a GGUF's header
    (general.file_type, general.architecture) against gguf-<type> and the source's model type (or the architecture
    the export recorded), an ONNX or OpenVINO graph against the format's marks (the registry's), a transformers
    folder against its quantization config. Exit 2 (EdgemedError) naming both sides; returns the manifest (None
    for a folder or file without one: only its own files say what it is)."""
    path = Path(path)
    if not (path.is_dir() and (path / MANIFEST).exists()):
        return None
    check_known_format(path)
    m = read_manifest(path)
    _check_hashes(path, m)
    from edgemed.registry import spec_of

    spec = spec_of(m["format"])
    if spec.runtime == "llama.cpp":
        _check_gguf(path, m)
    elif spec.marks is not None:
        _check_marks(path, m["format"], spec.marks)
    elif spec.runtime == "transformers" and spec.detect is not None and (path / "config.json").is_file() \
            and not spec.detect(path):
        from edgemed.registry import detect_format

        seen = detect_format(path)
        raise EdgemedError(f"{path}: the manifest says format {m['format']}, but its config.json is "
                           f"{'a ' + seen.name if seen else 'another format'}'s (quantization_config); re-export the "
                           f"artifact (edgemed export --formats {m['format']} --force)")
    return m


def _check_hashes(folder: Path, m: dict[str, Any]) -> None:
    check_files(folder, m)  # sizes first: a cut-short file is named without reading it
    entries = [e for e in m.get("files", []) if isinstance(e.get("sha256"), str)]
    try:
        key = (str(Path(folder).resolve()), *((e["path"], e["sha256"], (Path(folder) / e["path"]).stat().st_mtime_ns)
                                              for e in entries))
    except OSError:
        key = None
    if key is not None and _VERIFIED.get(key):
        return
    for entry in entries:
        if sha256_file(Path(folder) / entry["path"]) != entry["sha256"]:
            raise EdgemedError(f"artifact {folder} is corrupt: {entry['path']} is not the file the manifest records "
                               f"(sha256 {entry['sha256'][:12]}...), it changed since export; re-export it")
    if key is not None:
        _VERIFIED[key] = True


def _check_gguf(folder: Path, m: dict[str, Any]) -> None:
    from edgemed.export.gguf.types import FILE_TYPES, expected_arch, format_name, parse_format
    from edgemed.gguf_header import read_header

    files = sorted(p for p in Path(folder).glob("*.gguf") if not p.name.startswith("."))
    if len(files) != 1:
        return  # the runtime names a folder with none or several
    kv = read_header(files[0])["kv"]
    fmt = m["format"]
    gguf = parse_format(fmt)
    got = kv.get("general.file_type")
    if gguf is not None and gguf.ftype in FILE_TYPES and isinstance(got, int) and got != FILE_TYPES[gguf.ftype]:
        names = [t for t, n in FILE_TYPES.items() if n == got]
        said = format_name(names[0], gguf.calibrated) if names else f"llama.cpp file type {got}"
        raise EdgemedError(f"{folder}: the manifest says format {fmt}, but {files[0].name}'s GGUF header says "
                           f"{said} (general.file_type {got}); measuring it as {fmt} would put one format's numbers "
                           f"under another's name: re-export it (edgemed export --formats {fmt} --force)")
    arch = kv.get("general.architecture")
    recorded = (m.get("export") or {}).get("architecture") if isinstance(m.get("export"), dict) else None
    want = recorded if isinstance(recorded, str) else expected_arch((m.get("source") or {}).get("model_type")
                                                                      if isinstance(m.get("source"), dict) else None)
    if isinstance(arch, str) and want and arch != want:
        raise EdgemedError(f"{folder}: the manifest's model is a {want} model, but {files[0].name}'s GGUF header "
                           f"says general.architecture {arch}: the file is another model's; re-export the artifact")


def _check_marks(folder: Path, fmt: str, marks: tuple[str, tuple[bytes, ...], tuple[bytes, ...]]) -> None:
    import mmap

    name, need, forbid = marks
    graph = Path(folder) / name
    if not graph.is_file():
        raise EdgemedError(f"{folder}: the manifest says format {fmt}, but the folder has no {name}; re-export it")
    try:
        with open(graph, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            has = {mark: buf.find(mark) >= 0 for mark in (*need, *forbid)}
    except (OSError, ValueError) as exc:
        raise EdgemedError(f"{graph} cannot be read ({exc}); re-export the artifact") from None
    found = [k.decode() for k in forbid if has[k]]
    if (need and not any(has[k] for k in need)) or found:
        from edgemed.registry import FORMATS

        like = [f for f, s in FORMATS.items() if s.marks and s.marks[0] == name and f != fmt
                and (not s.marks[1] or any(has.get(k, False) for k in s.marks[1]))
                and not any(has.get(k, False) for k in s.marks[2])]
        what = (f"it holds {', '.join(found)}" if found else f"it holds none of {', '.join(k.decode() for k in need)}")
        raise EdgemedError(f"{folder}: the manifest says format {fmt}, but its {name} is not a {fmt} graph ({what}"
                           f"{'; it looks like ' + ' or '.join(like) if like else ''}); re-export it (edgemed export "
                           f"--formats {fmt} --force)")


def check_files(folder: Path, manifest: dict[str, Any], hashes: bool = False) -> None:
    """Raise EdgemedError when a file the manifest lists is missing, resized or (optionally) changed."""
    for entry in manifest.get("files", []):
        path = Path(folder) / entry["path"]
        if not path.is_file():
            raise EdgemedError(f"artifact {folder} is incomplete: {entry['path']} is missing; re-export it")
        if path.stat().st_size != entry["size"]:
            raise EdgemedError(
                f"artifact {folder} is corrupt: {entry['path']} is {path.stat().st_size} bytes, "
                f"the manifest says {entry['size']}; re-export it"
            )
        if hashes and sha256_file(path) != entry["sha256"]:
            raise EdgemedError(f"artifact {folder} is corrupt: {entry['path']} changed since export; re-export it")


def detect_runtime(path: Path) -> tuple[str, str]:
    """(format, runtime) of an artifact: from its manifest, else from its files."""
    path = Path(path)
    if path.is_dir() and (path / MANIFEST).exists():
        m = read_manifest(path)
        return m["format"], m["runtime"]
    from edgemed.registry import detect_format

    spec = detect_format(path)
    if spec is not None:
        return spec.name, spec.runtime
    raise EdgemedError(
        f"{path} is not an artifact: expected a folder with {MANIFEST}, config.json or model.onnx, "
        "or a .gguf file"
    )


def find_artifacts(paths: list[Path]) -> list[Path]:
    """Artifact folders named directly or found by their manifests below the given folders."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise EdgemedError(f"{path} does not exist; give artifact folders or a folder that holds them")
        if (path / MANIFEST).exists() or path.is_file():
            found.append(path)
            continue
        below = sorted(
            p.parent for p in path.rglob(MANIFEST)
            if not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        if below:
            found.extend(below)
        else:
            detect_runtime(path)  # raises a clear error when it is not an artifact either
            found.append(path)
    return found
