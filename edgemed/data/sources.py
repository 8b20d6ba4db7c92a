"""Where MedMCQA-schema rows come from: ``sample`` (bundled, written for edgemed), a local ``.jsonl``/``.json``/
``.parquet``/``.csv`` file or a folder holding ``SPLIT.<ext>``, or a Hugging Face hub id such as
``openlifescienceai/medmcqa``. Every unreadable source is an EdgemedError naming the file and the fix."""

from __future__ import annotations

import csv
from importlib import resources
from pathlib import Path
from typing import Any

from edgemed.errors import EdgemedError
from edgemed.fsutil import read_json, read_jsonl
from edgemed.registry import DATA_EXTRA, install_message

HUB_DEFAULT = "openlifescienceai/medmcqa"


def sample_path(split: str = "all") -> Path:
    """Path of the bundled sample file (edgemed's own questions, not MedMCQA's)."""
    return Path(str(resources.files("edgemed.data").joinpath("sample.jsonl")))


def read_rows(source: str, split: str = "train") -> list[dict[str, Any]]:
    """Raw rows from a source, in order. Raises EdgemedError for unreadable sources."""
    if source == "sample":
        return _read_local(sample_path())
    path = Path(source).expanduser()
    if path.exists():
        if path.is_dir():
            candidates = [path / f"{split}{ext}" for ext in (".jsonl", ".json", ".parquet", ".csv")]
            found = [c for c in candidates if c.exists()]
            if not found:
                raise EdgemedError(
                    f"data folder {path} has no {split}.jsonl/.json/.parquet/.csv; "
                    "point --data at a file or name the split that exists"
                )
            path = found[0]
        return _read_local(path)
    if _looks_like_hub_id(source):
        return _read_hub(source, split)
    raise EdgemedError(
        f"data source '{source}' not found: give 'sample', a local .jsonl/.json/.parquet/.csv file, "
        f"or a Hugging Face dataset id such as {HUB_DEFAULT}"
    )


def _looks_like_hub_id(source: str) -> bool:
    parts = source.split("/")
    return len(parts) == 2 and all(parts) and not source.startswith((".", "/", "~"))


def _read_local(path: Path) -> list[dict[str, Any]]:
    from edgemed.fsutil import require_regular_file

    require_regular_file(path, "data file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            return [row for _, row in read_jsonl(path, "fix or remove that line")]
        if suffix == ".json":
            data = read_json(path, "data file", "fix it or give a list of flat row objects")
            if isinstance(data, dict) and "data" in data:
                data = data["data"]
            if not isinstance(data, list):
                raise EdgemedError(f"{path}: expected a JSON list of rows (or {{'data': [...]}})")
            return data
        if suffix == ".csv":
            with open(path, encoding="utf-8", newline="") as fh:
                return list(csv.DictReader(fh))
        if suffix == ".parquet":
            try:
                import pyarrow.parquet as pq
            except ImportError:
                raise EdgemedError(f"reading .parquet {install_message(['pyarrow'], DATA_EXTRA)}") from None
            try:
                return pq.read_table(path).to_pylist()
            except (OSError, ValueError, TypeError) as exc:  # pyarrow's ArrowInvalid is a ValueError
                first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
                raise EdgemedError(f"{path}: not a readable Parquet file ({first}); re-export it or give "
                                   ".jsonl/.json/.csv") from None
    except UnicodeDecodeError:
        raise EdgemedError(f"{path}: not UTF-8 text; convert it to UTF-8") from None
    except ValueError as exc:  # a CSV field the csv module refuses, say
        raise EdgemedError(f"{path}: cannot be read as rows ({exc})") from None
    except csv.Error as exc:
        raise EdgemedError(f"{path}: not a readable CSV file ({exc}); fix it or give .jsonl/.json") from None
    raise EdgemedError(f"{path}: unsupported file type '{suffix}'; use .jsonl, .json, .parquet or .csv")


def _read_hub(repo_id: str, split: str) -> list[dict[str, Any]]:
    try:
        import datasets
    except ImportError:
        raise EdgemedError(
            f"loading '{repo_id}' from the Hugging Face hub {install_message(['datasets'], DATA_EXTRA)}"
        ) from None
    try:
        ds = datasets.load_dataset(repo_id, split=split)
    except Exception as exc:  # network, auth, unknown split
        raise EdgemedError(f"could not load '{repo_id}' split '{split}' from the hub: {exc}") from None
    return list(ds)
