"""``edgemed data check``: every row of a MedMCQA-schema source validated: counts, subjects, each bad row, and
check.json with --out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from edgemed import fsutil
from edgemed.console import console
from edgemed.data.medmcqa import data_summary, validate_rows
from edgemed.data.sources import read_rows
from edgemed.errors import EdgemedError


@dataclass
class DataCheckConfig:
    """The settings of one data check.

    Args:
        split: split to read for hub ids and data folders.
        cop_base: label convention of 'cop': auto, 0 (Hugging Face copy, 0..3) or 1 (original release, 1..4).
        out: folder to write check.json into.
    """

    split: str = "train"
    cop_base: Literal["auto", "0", "1"] = "auto"
    out: Path | None = None


def run_check(source: str, config: DataCheckConfig) -> dict[str, Any]:
    """Validate every row, print the counts and each bad row, write check.json (with --out) and return that
    document; bad rows then raise EdgemedError (exit 2) naming the count."""
    from rich.table import Table

    if config.out is not None:
        fsutil.check_output_dir(Path(config.out), "--out")
    rows = read_rows(source, config.split)
    if not rows:  # eval and train refuse it too: an empty or whitespace-only file is no data
        raise EdgemedError(f"{source}: no rows (the file is empty or holds only blank lines); give a file with "
                           "MedMCQA rows")
    questions, problems, base = validate_rows(rows, config.cop_base)
    summary = data_summary(questions)
    table = Table(title=f"{source} ({config.split}): {len(rows)} rows, cop {base}-based")
    table.add_column("subject")
    table.add_column("rows", justify="right")
    for subject, count in summary["subjects"].items():
        table.add_row(subject, str(count))
    console.print(table)
    console.print("answers: " + ", ".join(f"{k} {v}" for k, v in summary["answers"].items()))
    for p in problems:
        console.print(f"[red]bad[/red] {p}")
    verdict = f"{len(questions)} good rows, {len({p.row for p in problems})} bad rows"
    console.print(verdict)
    doc = {
        "source": source,
        "split": config.split,
        "cop_base": base,
        "rows": len(rows),
        "good": len(questions),
        "summary": summary,
        "problems": [{"row": p.row, "id": p.id, "problem": p.problem} for p in problems],
    }
    if config.out is not None:
        fsutil.atomic_write_json(Path(config.out) / "check.json", doc)
    if problems:
        raise EdgemedError(f"{source}: {verdict}; fix the rows listed above")
    return doc
