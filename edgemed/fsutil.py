"""Atomic file and folder writes: nothing half-written is ever left under a final name."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgemed.errors import EdgemedError


def atomic_write_text(path: Path, text: str) -> Path:
    """Write text to a temp file beside `path`, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are meant to be read by others
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_json(path: Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


@contextlib.contextmanager
def atomic_dir(final: Path, force: bool = False) -> Iterator[Path]:
    """Yield a temp folder beside `final`; on success it replaces `final`, on failure it is removed."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    tmp.chmod(0o755)
    try:
        yield tmp
        if final.exists():
            if not force:
                raise FileExistsError(final)
            old = final.with_name(f".{final.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_jsonl(path: Path, fix: str) -> list[tuple[int, Any]]:
    """(line number, object) per non-blank line; a line that is not JSON raises EdgemedError naming it and `fix`."""
    rows = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rows.append((n, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise EdgemedError(f"{path}: line {n} is not valid JSON ({exc.msg}); {fix}") from None
    return rows


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def dir_size(path: Path) -> int:
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def check_output_dir(path: Path, flag: str = "--out") -> Path:
    """Make sure `path` is a writable folder, or can be created as one, before any work starts (exit 2 otherwise).
    Creates nothing: a run that stops on bad input leaves no folder behind."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise EdgemedError(f"{flag} {path} is a file, not a folder; give a folder path")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise EdgemedError(f"{flag} {path}: {existing} is a file, not a folder; give a folder path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise EdgemedError(f"{flag} {path}: {existing} is not writable; give a folder you can write to")
    if existing == path:
        try:
            fd, probe = tempfile.mkstemp(dir=path, prefix=".edgemed-write-check.")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise EdgemedError(f"{flag} {path} cannot be written ({exc.strerror or exc}); "
                               "give a writable folder") from None
    return path
