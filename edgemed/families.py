"""The measured model family x format support matrix, as ``edgemed info`` shows it.

``scripts/dev/family_matrix.py`` measures it (every family's tiny random alias through ``edgemed pipeline``) and
writes docs/families.md and ``edgemed/data/family_matrix.json``, which this module reads. ``edgemed info`` shows
the columns of the formats this install can export.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MATRIX_FILE = Path(__file__).parent / "data" / "family_matrix.json"


def load_matrix() -> dict[str, Any] | None:
    """The recorded matrix ({"measured": ..., "formats": [...], "rows": [...]}), or None when none is shipped."""
    try:
        data = json.loads(MATRIX_FILE.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("rows"), list) else None


def installed_rows(installed: set[str]) -> tuple[list[str], list[dict[str, Any]]]:
    """(format columns this install can export, the families' rows limited to them)."""
    matrix = load_matrix()
    if matrix is None:
        return [], []
    formats = [f for f in matrix.get("formats", []) if f in installed or f.split("-imatrix")[0] in installed]
    rows = [{"family": r.get("family"), "alias": r.get("alias"),
             "cells": {f: (r.get("cells") or {}).get(f, {}).get("text", "not measured") for f in formats}}
            for r in matrix["rows"] if isinstance(r, dict)]
    return formats, rows


def print_table(console, installed: set[str]) -> dict[str, Any]:
    """Print the families' rows for the installed formats; what info.json records of them."""
    from rich.markup import escape
    from rich.table import Table

    formats, rows = installed_rows(installed)
    matrix = load_matrix() or {}
    if not rows:
        console.print("model families: no measured matrix shipped (scripts/dev/family_matrix.py writes it)")
        return {"formats": [], "rows": []}
    table = Table(title=f"model families x formats installed here (measured {matrix.get('measured', '?')}; "
                        "docs/families.md)")
    table.add_column("family")
    for f in formats:
        table.add_column(f)
    for r in rows:
        table.add_row(r["family"], *(escape(_short(r["cells"][f])) for f in formats))
    console.print(table)
    return {"measured": matrix.get("measured"), "formats": formats, "rows": rows}


def _short(text: str) -> str:
    return "refused" if text.startswith("refused") else text
