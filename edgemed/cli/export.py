"""``edgemed export``: the merged model to edge formats, each verified against it before it is placed."""

from __future__ import annotations

from pathlib import Path


def export(
    merged: Path,
    out: Path | None = None,
    formats: list[str] | None = None,
    force: bool = False,
    verify: bool = True,
    threads: int | None = None,
) -> int:
    """Export a merged model to edge formats (hf, bnb-int8/nf4, onnx/onnx-int8, gguf-f16/q8_0/q4_k_m, gguf-<type>).

    Each artifact goes to OUT/<format>/ with an edgemed.json manifest, only after it loaded in its own
    runtime and matched the merged model's letter log-probs and token ids; OUT/export.json lists every result.
    Exit 0 when all requested formats are in place, 1 when a verification failed, 2 for bad input.

    Args:
        merged: the merged model folder (safetensors + tokenizer), e.g. from 'edgemed merge'.
        out: folder that receives one sub-folder per format and export.json (default: MERGED-exports beside it).
        formats: formats to export, comma-separated (default: every format whose extra is installed).
        force: replace artifacts that exist from another source or with other settings.
        verify: check each artifact against the merged model before placing it.
        threads: CPU threads for exporting and verifying (default: the libraries' choice).
    """
    from edgemed.console import console, err_console
    from edgemed.export.run import SUMMARY, exit_code, problem_lines, run_export, summary_table

    merged = Path(merged)
    out = Path(out) if out is not None else merged.parent / f"{merged.name}-exports"
    results = run_export(Path(merged), formats or None, Path(out), force=force, verify=verify, threads=threads)
    console.print(summary_table(results))
    for line in problem_lines(results):
        err_console.print(line, markup=False, highlight=False)
    console.print(f"results: {Path(out) / SUMMARY}")
    return exit_code(results)
