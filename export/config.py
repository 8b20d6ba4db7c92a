"""``ExportConfig``: the settings of one export (``edgemed export``'s flags), passed whole by the CLI and the pipeline.

The format flags (--int8-isa, the GGUF matrix and tensor-type flags) become per-format exporter settings here, in
:meth:`ExportConfig.settings`, so every caller of :func:`edgemed.export.run.run_export` passes them the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from edgemed.export.gguf.settings import gguf_settings
from edgemed.registry import default_formats, expand_formats

# A field with this metadata is set by a calling command (the pipeline), never a flag of edgemed export.
NOT_A_FLAG = {"cli": False}


@dataclass
class ExportConfig:
    """The settings of one export.

    Args:
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
        replace_stale: rebuild an edgemed artifact of another source or settings instead of failing that format
            (the pipeline, which owns its folder, after it trained again).
        overlap: export the GGUF chain beside the others where the memory plan allows (see run_export).
        show_progress: show the progress bar.
    """

    out: Path | None = None
    formats: list[str] | None = None
    force: bool = False
    verify: bool = True
    threads: int | None = None
    int8_isa: Literal["auto", "vnni", "avx2", "arm"] = "auto"
    imatrix: Path | None = None
    imatrix_ctx: int | None = None
    imatrix_chunks: int | None = None
    gguf_output_type: str | None = None
    gguf_token_embedding_type: str | None = None
    gguf_tensor_type: list[str] | None = None
    replace_stale: bool = field(default=False, metadata=NOT_A_FLAG)
    overlap: bool = field(default=False, metadata=NOT_A_FLAG)
    show_progress: bool = field(default=True, metadata=NOT_A_FLAG)

    def out_for(self, merged: Path) -> Path:
        """--out, or MERGED-exports beside the merged folder."""
        merged = Path(merged)
        return Path(self.out) if self.out is not None else merged.parent / f"{merged.name}-exports"

    def settings(self) -> dict[str, dict[str, Any]] | None:
        """Per-format exporter settings from the format flags (None: every exporter's defaults); a flag that no
        requested format takes is refused (EdgemedError)."""
        settings = None
        if self.int8_isa != "auto" and (self.formats is None or "onnx-int8" in self.formats):
            settings = {"onnx-int8": {"kernel": self.int8_isa}}
        gguf = gguf_settings(expand_formats(self.formats) or default_formats(), imatrix=self.imatrix,
                             imatrix_ctx=self.imatrix_ctx, imatrix_chunks=self.imatrix_chunks,
                             output_type=self.gguf_output_type, token_embedding_type=self.gguf_token_embedding_type,
                             tensor_types=self.gguf_tensor_type)
        if gguf:
            settings = {**(settings or {}), **gguf}
        return settings
