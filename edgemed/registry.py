"""Format and runtime registry: a name maps to ``"module:Class"``, imported only when used.

Adding a format is one exporter module, one runtime (or an existing one) and one line here.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass

from edgemed.errors import EdgemedError


@dataclass(frozen=True)
class FormatSpec:
    name: str
    exporter: str  # "module:Class"
    runtime: str  # a key of RUNTIMES
    extra: str  # the pip extra its exporter and runtime need (its runtime alone may need less: onnx for onnx-export)
    tolerance: float  # max |delta| of letter log-probs vs the merged model accepted at verification
    description: str
    weight_suffixes: tuple[str, ...] = ()  # files that hold the weights (what decode reads per token)


FORMATS: dict[str, FormatSpec] = {
    s.name: s
    for s in [
        FormatSpec("hf", "edgemed.export.hf:HFExporter", "transformers", "train", 1e-4,
                   "merged model, safetensors (reference)", (".safetensors",)),
        FormatSpec("bnb-int8", "edgemed.export.bnb:BnbInt8Exporter", "transformers", "bnb", 0.75,
                   "bitsandbytes LLM.int8", (".safetensors",)),
        FormatSpec("bnb-nf4", "edgemed.export.bnb:BnbNf4Exporter", "transformers", "bnb", 2.5,
                   "bitsandbytes 4-bit NF4", (".safetensors",)),
        FormatSpec("onnx", "edgemed.export.onnx:OnnxExporter", "onnxruntime", "onnx-export", 1e-3,
                   "ONNX with KV cache (Optimum)", (".onnx", ".onnx_data", ".onnx.data")),
        FormatSpec("onnx-int8", "edgemed.export.onnx:OnnxInt8Exporter", "onnxruntime", "onnx-export", 1.0,
                   "ONNX, onnxruntime dynamic int8", (".onnx", ".onnx_data", ".onnx.data")),
        FormatSpec("gguf-f16", "edgemed.export.gguf:GgufF16Exporter", "llama.cpp", "gguf", 0.05,
                   "GGUF f16 for llama.cpp", (".gguf",)),
        FormatSpec("gguf-q8_0", "edgemed.export.gguf:GgufQ8Exporter", "llama.cpp", "gguf", 0.2,
                   "GGUF q8_0 for llama.cpp", (".gguf",)),
        FormatSpec("gguf-q4_k_m", "edgemed.export.gguf:GgufQ4KMExporter", "llama.cpp", "gguf", 2.0,
                   "GGUF q4_k_m for llama.cpp", (".gguf",)),
    ]
}

RUNTIMES: dict[str, str] = {
    "transformers": "edgemed.runtimes.hf:TransformersRuntime",
    "onnxruntime": "edgemed.runtimes.onnx:OnnxRuntime",
    "llama.cpp": "edgemed.runtimes.llamacpp:LlamaCppRuntime",
}


def _did_you_mean(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return f"; did you mean '{close[0]}'?" if close else ""


def get_format(name: str) -> FormatSpec:
    try:
        return FORMATS[name]
    except KeyError:
        raise EdgemedError(
            f"unknown format '{name}'{_did_you_mean(name, list(FORMATS))} "
            f"(known: {', '.join(FORMATS)})"
        ) from None


def load_object(target: str):
    """Import ``"module:attr"`` lazily."""
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def runtime_class(name: str):
    if name not in RUNTIMES:
        raise EdgemedError(
            f"unknown runtime '{name}'{_did_you_mean(name, list(RUNTIMES))} (known: {', '.join(RUNTIMES)})"
        )
    return load_object(RUNTIMES[name])


def exporter_class(name: str):
    return load_object(get_format(name).exporter)


def weight_suffixes(fmt: str) -> tuple[str, ...]:
    """The weight files of a format (a gguf-<type> format outside the table: .gguf); every known suffix if unknown."""
    spec = FORMATS.get(fmt)
    if spec is not None:
        return spec.weight_suffixes
    if fmt.startswith("gguf"):
        return (".gguf",)
    return tuple(sorted({s for f in FORMATS.values() for s in f.weight_suffixes}))


def weight_bytes(path, fmt: str) -> int:
    """Bytes of an artifact's weight files (what decode reads per token, roughly), not tokenizer/config files."""
    from pathlib import Path

    path = Path(path)
    suffixes = weight_suffixes(fmt)
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files if p.name.endswith(suffixes))
