"""``hf``: the merged model itself, copied as safetensors with its tokenizer (the reference artifact)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from edgemed.export.base import Exporter, check_source


class HFExporter(Exporter):
    requires = ("transformers", "torch")

    def export(self, source: Path, dest: Path, settings: dict[str, Any]) -> dict[str, Any]:
        check_source(source)
        copied = []
        for path in sorted(Path(source).iterdir()):
            if path.is_file() and not path.name.startswith(".") and path.name not in ("edgemed.json",):
                shutil.copy2(path, dest / path.name)
                copied.append(path.name)
        return {"copied": copied}
