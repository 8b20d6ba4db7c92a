"""``edgemed export``: the merged model to edge formats, each verified against it before it is placed."""

from __future__ import annotations

from pathlib import Path

from edgemed.console import console, err_console
from edgemed.export.config import ExportConfig


def export(merged: Path, config: ExportConfig) -> int:
    """Export a merged model to edge formats (hf, bnb-int8/nf4, onnx/onnx-int8, gguf-f16/q8_0/q4_k_m, gguf-<type>,
    gguf-<type>-imatrix; --formats ladder: llama.cpp's type ladder, plain and calibrated).

    Each artifact goes to OUT/<format>/ with an edgemed.json manifest, only after it loaded in its own
    runtime and matched the merged model's letter log-probs and token ids; OUT/export.json lists every result.
    Exit 0 when all requested formats are in place, 1 when a verification failed, 2 for bad input.

    Args:
        merged: the merged model folder (safetensors + tokenizer), e.g. from 'edgemed merge'.
    """
    from edgemed.export.run import SUMMARY, exit_code, run_export
    from edgemed.export.table import problem_lines, summary_table

    doc = run_export(Path(merged), config)
    console.print(summary_table(doc["results"]))
    for line in problem_lines(doc["results"]):
        err_console.print(line, markup=False, highlight=False)
    console.print(f"results: {config.out_for(merged) / SUMMARY}")
    return exit_code(doc["results"])
