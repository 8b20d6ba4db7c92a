"""One content digest per artifact, computed from the bytes on disk: what ``edgemed serve`` reports as a model's
sha256 and what a calibrated threshold is tied to (``eval`` records it; ``serve`` refuses a threshold calibrated on
other bytes).

- a single file (a ``.gguf``), or a folder holding one file besides its manifest: that file's sha256, the number
  ``sha256sum`` prints;
- a folder of several files: the sha256 of its sorted ``<sha256>  <relative path>\\n`` lines (``sha256sum``'s own
  output format, so ``find . -type f ! -name edgemed.json | sort | xargs sha256sum | sha256sum`` agrees), the
  manifest ``edgemed.json`` left out (it records the digests, it is not the model).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from edgemed.fsutil import sha256_file

MANIFEST = "edgemed.json"


def model_files(path: Path) -> list[Path]:
    path = Path(path)
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")
                  and ".partial" not in p.name)


def artifact_sha256(path: Path) -> str:
    """The artifact's digest (see the module docstring), hashing every file."""
    path = Path(path)
    files = model_files(path)
    if len(files) == 1:
        return sha256_file(files[0])
    lines = "".join(f"{sha256_file(f)}  ./{f.relative_to(path).as_posix()}\n" for f in files)
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()
