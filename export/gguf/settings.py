"""A GGUF format's exporter settings: the tensor-type overrides and importance-matrix settings, checked before any
work (:func:`check_settings`), and made from edgemed export's GGUF flags (:func:`gguf_settings`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from edgemed.errors import EdgemedError
from edgemed.export.gguf.types import GgufName, parse_format, refusal

FLOAT_TYPES = ("f32", "f16", "bf16")
OVERRIDE_KEYS = ("output_tensor_type", "token_embedding_type", "tensor_types")
FLAG_OF = {"output_tensor_type": "--output-tensor-type", "token_embedding_type": "--token-embedding-type",
           "tensor_types": "--tensor-type"}
FLAG_NAME = {"output_tensor_type": "--gguf-output-type", "token_embedding_type": "--gguf-token-embedding-type"}


def gguf_name(name: str) -> GgufName:
    """The llama.cpp type of one of this exporter's formats (gguf-<type>[-imatrix]); any other name is refused."""
    gguf = parse_format(name)
    if gguf is None:
        raise EdgemedError(f"'{name}' is not a gguf-<type> format name (e.g. gguf-q4_k_m, gguf-q4_k_m-imatrix)")
    return gguf


def ggml_type_names() -> set[str] | None:
    """ggml tensor type names (q8_0, q6_k, f16, ...) as llama-quantize parses them; None without the gguf package."""
    try:
        from gguf import GGMLQuantizationType
    except ImportError:
        return None
    return {t.name.lower() for t in GGMLQuantizationType}


def check_settings(name: str, settings: dict[str, Any]) -> None:
    """Refuse bad override types, patterns and matrix settings before any work (EdgemedError naming the flag)."""
    why = refusal(*gguf_name(name))
    if why:
        raise EdgemedError(f"{name}: {why}")
    types = ggml_type_names()
    for key in ("output_tensor_type", "token_embedding_type"):
        value = settings.get(key)
        if value is not None and types is not None and str(value).lower() not in types:
            raise EdgemedError(f"{FLAG_NAME[key]} {value}: not a ggml type; known: "
                               f"{', '.join(sorted(types))}")
    rules = settings.get("tensor_types") or []
    if not isinstance(rules, list):
        raise EdgemedError(f"{name}: tensor_types must be a list of REGEX=TYPE strings")
    for rule in rules:
        pattern, sep, tname = str(rule).partition("=")
        if not sep or not pattern or not tname:
            raise EdgemedError(f"--gguf-tensor-type {rule}: give REGEX=TYPE, e.g. attn_v=q8_0")
        if types is not None and tname.lower() not in types:
            raise EdgemedError(f"--gguf-tensor-type {rule}: '{tname}' is not a ggml type; known: "
                               f"{', '.join(sorted(types))}")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise EdgemedError(f"--gguf-tensor-type {rule}: '{pattern}' is not a regular expression ({exc})") from None
    _check_matrix_settings(settings)


def _check_matrix_settings(settings: dict[str, Any]) -> None:
    from edgemed.export.gguf.imatrix import file_sha256, read_imatrix

    ctx, chunks = settings.get("imatrix_ctx"), settings.get("imatrix_chunks")
    if ctx is not None and (not isinstance(ctx, int) or ctx < 32):
        raise EdgemedError(f"--imatrix-ctx {ctx}: give a chunk size of at least 32 tokens (llama-imatrix: 512)")
    if chunks is not None and (not isinstance(chunks, int) or chunks < 1):
        raise EdgemedError(f"--imatrix-chunks {chunks}: give at least 1 (default: every chunk of the text)")
    if settings.get("imatrix"):
        path = Path(settings["imatrix"]).expanduser().resolve()
        read_imatrix(path)  # truncated or foreign: refused now, naming the file
        settings["imatrix"] = str(path)
        settings["imatrix_sha256"] = file_sha256(path)  # the same path with other contents is another setting


def gguf_settings(formats: list[str], *, imatrix: Path | None = None, imatrix_ctx: int | None = None,
                  imatrix_chunks: int | None = None, output_type: str | None = None,
                  token_embedding_type: str | None = None, tensor_types: list[str] | None = None,
                  ) -> dict[str, dict[str, Any]]:
    """Per-format exporter settings from export's GGUF flags: the overrides for every quantized GGUF format, the
    matrix settings for every calibrated one; a flag that no requested format takes is refused."""
    names = {f: parse_format(f) for f in formats}
    quantized = [f for f, g in names.items() if g is not None and g.ftype not in FLOAT_TYPES]
    calibrated = [f for f in quantized if names[f].calibrated]
    overrides = {"output_tensor_type": output_type, "token_embedding_type": token_embedding_type,
                 "tensor_types": list(tensor_types) if tensor_types else None}
    matrix = {"imatrix": str(imatrix) if imatrix else None, "imatrix_ctx": imatrix_ctx,
              "imatrix_chunks": imatrix_chunks}
    if any(v is not None for v in overrides.values()) and not quantized:
        raise EdgemedError("--gguf-output-type/--gguf-token-embedding-type/--gguf-tensor-type apply to quantized GGUF "
                           "formats, and none is requested; add one to --formats (e.g. gguf-q4_k_m)")
    if any(v is not None for v in matrix.values()) and not calibrated:
        raise EdgemedError("--imatrix/--imatrix-ctx/--imatrix-chunks apply to calibrated GGUF formats "
                           "(gguf-<type>-imatrix), and none is requested; add one to --formats (e.g. "
                           "gguf-q4_k_m-imatrix)")
    out: dict[str, dict[str, Any]] = {}
    for f in quantized:
        chosen = {**overrides, **(matrix if f in calibrated else {})}
        chosen = {k: v for k, v in chosen.items() if v is not None}
        if chosen:
            out[f] = chosen
    return out
