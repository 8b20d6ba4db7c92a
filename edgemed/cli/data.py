"""``edgemed data check``: validate every row of a MedMCQA-schema source."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from edgemed.console import console
from edgemed.errors import EdgemedError
from edgemed.fsutil import atomic_write_json, check_output_dir


def check(source: str, split: str = "train", cop_base: Literal["auto", "0", "1"] = "auto",
          out: Path | None = None) -> int:
    """Validate every row of a MedMCQA source and report counts, subjects and each bad row.

    Args:
        source: 'sample', a local .jsonl/.json/.parquet/.csv file, or a hub id (openlifescienceai/medmcqa).
        split: split to read for hub ids and data folders.
        cop_base: label convention of 'cop': auto, 0 (Hugging Face copy, 0..3) or 1 (original release, 1..4).
        out: folder to write check.json into.
    """
    from rich.table import Table

    from edgemed.data.medmcqa import data_summary, validate_rows
    from edgemed.data.sources import read_rows

    if out is not None:
        check_output_dir(Path(out), "--out")
    rows = read_rows(source, split)
    if not rows:  # eval and train refuse it too: an empty or whitespace-only file is no data
        raise EdgemedError(f"{source}: no rows (the file is empty or holds only blank lines); give a file with "
                           "MedMCQA rows")
    questions, problems, base = validate_rows(rows, cop_base)
    summary = data_summary(questions)
    table = Table(title=f"{source} ({split}): {len(rows)} rows, cop {base}-based")
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
    if out is not None:
        atomic_write_json(
            Path(out) / "check.json",
            {
                "source": source,
                "split": split,
                "cop_base": base,
                "rows": len(rows),
                "good": len(questions),
                "summary": summary,
                "problems": [{"row": p.row, "id": p.id, "problem": p.problem} for p in problems],
            },
        )
    if problems:
        raise EdgemedError(f"{source}: {verdict}; fix the rows listed above")
    return 0
