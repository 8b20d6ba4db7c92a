"""``edgemed export``: the merged model to edge formats, each verified against it before it is placed."""

from __future__ import annotations

from pathlib import Path
from typing import Literal


def export(
    merged: Path,
    out: Path | None = None,
    formats: list[str] | None = None,
    force: bool = False,
    verify: bool = True,
    threads: int | None = None,
    int8_isa: Literal["auto", "vnni", "avx2", "arm"] = "auto",
    imatrix: Path | None = None,
    imatrix_ctx: int | None = None,
    imatrix_chunks: int | None = None,
    gguf_output_type: str | None = None,
    gguf_token_embedding_type: str | None = None,
    gguf_tensor_type: list[str] | None = None,
) -> int:
    """Export a merged model to edge formats (hf, bnb-int8/nf4, onnx/onnx-int8, gguf-f16/q8_0/q4_k_m, gguf-<type>,
    gguf-<type>-imatrix; --formats ladder: llama.cpp's type ladder, plain and calibrated).

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
        int8_isa: the CPU onnx-int8 is made for: auto (this one), vnni (x86 with AVX512-VNNI/AVX-VNNI/AMX), avx2
            (x86 without VNNI: uint8 weights (U8U8), which onnxruntime's int8 kernels there cannot saturate;
            exact on every CPU) or arm; recorded in the manifest.
        imatrix: for gguf-<type>-imatrix formats: a llama-imatrix file to use instead of computing the matrix
            from the model's training text (checked first; its sha256 is recorded).
        imatrix_ctx: llama-imatrix's chunk size in tokens for gguf-<type>-imatrix (default 512, llama.cpp's).
        imatrix_chunks: at most this many chunks of the training text for the matrix (default: all).
        gguf_output_type: ggml type of output.weight in quantized GGUF formats (llama-quantize
            --output-tensor-type, e.g. q8_0).
        gguf_token_embedding_type: ggml type of the token embeddings in quantized GGUF formats
            (--token-embedding-type).
        gguf_tensor_type: REGEX=TYPE per-tensor types for quantized GGUF formats (--tensor-type, e.g.
            attn_v=q8_0); repeat the flag or separate rules with commas.
    """
    from edgemed.console import console, err_console
    from edgemed.export.run import SUMMARY, exit_code, problem_lines, run_export, summary_table

    merged = Path(merged)
    out = Path(out) if out is not None else merged.parent / f"{merged.name}-exports"
    settings = None
    if int8_isa != "auto" and (formats is None or "onnx-int8" in formats):
        settings = {"onnx-int8": {"kernel": int8_isa}}
    from edgemed.export.gguf.exporter import gguf_settings
    from edgemed.registry import FORMATS, expand_formats

    gguf = gguf_settings(expand_formats(formats) or [n for n, s in FORMATS.items() if s.default], imatrix=imatrix,
                         imatrix_ctx=imatrix_ctx, imatrix_chunks=imatrix_chunks, output_type=gguf_output_type,
                         token_embedding_type=gguf_token_embedding_type, tensor_types=gguf_tensor_type)
    if gguf:
        settings = {**(settings or {}), **gguf}
    results = run_export(Path(merged), formats or None, Path(out), force=force, verify=verify, threads=threads,
                         settings=settings)
    console.print(summary_table(results))
    for line in problem_lines(results):
        err_console.print(line, markup=False, highlight=False)
    console.print(f"results: {Path(out) / SUMMARY}")
    return exit_code(results)
