"""Format and runtime registry: a name maps to ``"module:Class"``, imported only when used.

Adding a format is one exporter module, one runtime (or an existing one) and one entry here: the entry holds
every per-format fact (exporter, runtime, extras, verification tolerance, weight files, detection rule).
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from edgemed.errors import EdgemedError


@dataclass(frozen=True)
class FormatSpec:
    """Every per-format fact, in one place: who writes it, who runs it, what to install, how close it must stay to
    the merged model, which files hold its weights, and how to recognise it without a manifest."""

    name: str
    exporter: str  # "module:Class"
    runtime: str  # a key of RUNTIMES
    extra: str  # the pip extra its exporter needs ("edgemed[EXTRA]")
    run_extra: str  # the pip extra its runtime alone needs (evaluate and benchmark, e.g. on a board)
    tolerance: float  # max |delta| of letter log-probs vs the merged model accepted at verification
    description: str
    weight_suffixes: tuple[str, ...] = ()  # files that hold the weights (what decode reads per token)
    detect: Callable[[Path], bool] | None = None  # recognises a folder without edgemed.json (first match wins)
    default: bool = True  # exported when no --formats is given (the others: by name, e.g. --formats onnx-int4)
    # False where a token's logits depend on the other tokens of the same forward pass (activations quantized over
    # the whole input: LLM.int8's outlier columns, onnxruntime's per-tensor dynamic scale). Such a format is scored
    # one question per pass, the prompt alone: never batched, never read from the fidelity pass's longer sequence.
    rows_independent: bool = True


def _has(pattern: str) -> Callable[[Path], bool]:
    return lambda path: (path.is_file() and path.match(pattern)) or (path.is_dir() and any(path.glob(pattern)))


def _quantized(key: str | None) -> Callable[[Path], bool]:
    """A transformers folder whose config.json quantization_config sets `key` (None: no quantization)."""

    def rule(path: Path) -> bool:
        config = path / "config.json"
        if not config.is_file():
            return False
        try:
            quant = json.loads(config.read_text()).get("quantization_config") or {}
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, RecursionError):
            raise EdgemedError(f"{config} is corrupt (not a JSON object); re-export the artifact") from None
        return bool(quant.get(key)) if key else not quant

    return rule


_ONNX = (".onnx", ".onnx_data", ".onnx.data")
_OPENVINO = (".bin",)  # the IR's weights (the .xml is the graph)
FORMATS: dict[str, FormatSpec] = {
    s.name: s
    for s in [
        FormatSpec("hf", "edgemed.export.hf:HFExporter", "transformers", "train", "train", 1e-4,
                   "merged model, safetensors (reference)", (".safetensors",), _quantized(None)),
        FormatSpec("bnb-int8", "edgemed.export.bnb:BnbInt8Exporter", "transformers", "bnb", "bnb", 0.75,
                   "bitsandbytes LLM.int8", (".safetensors",), _quantized("load_in_8bit"), rows_independent=False),
        FormatSpec("bnb-nf4", "edgemed.export.bnb:BnbNf4Exporter", "transformers", "bnb", "bnb", 2.5,
                   "bitsandbytes 4-bit NF4", (".safetensors",), _quantized("load_in_4bit")),
        FormatSpec("onnx", "edgemed.export.onnx:OnnxExporter", "onnxruntime", "onnx-export", "onnx", 1e-3,
                   "ONNX with KV cache (Optimum)", _ONNX, _has("model.onnx")),
        FormatSpec("onnx-int8", "edgemed.export.onnx:OnnxInt8Exporter", "onnxruntime", "onnx-export", "onnx", 1.0,
                   "ONNX, onnxruntime dynamic int8", _ONNX, rows_independent=False),  # files: same as onnx
        FormatSpec("gguf-f16", "edgemed.export.gguf:GgufExporter", "llama.cpp", "gguf", "gguf", 0.05,
                   "GGUF f16 for llama.cpp", (".gguf",)),
        FormatSpec("gguf-q8_0", "edgemed.export.gguf:GgufExporter", "llama.cpp", "gguf", "gguf", 0.2,
                   "GGUF q8_0 for llama.cpp", (".gguf",)),
        FormatSpec("gguf-q4_k_m", "edgemed.export.gguf:GgufExporter", "llama.cpp", "gguf", "gguf", 2.0,
                   "GGUF q4_k_m for llama.cpp", (".gguf",)),
        # issue 19: what edge engineers ship beside GGUF; exported when named (--formats), not by default
        FormatSpec("onnx-int4", "edgemed.export.onnx_int4:OnnxInt4Exporter", "onnxruntime", "onnx-export", "onnx",
                   3.0, "ONNX, MatMulNBits int4 (onnxruntime RTN, block 32)", _ONNX, default=False),
        FormatSpec("openvino-int8", "edgemed.export.openvino:OpenVinoInt8Exporter", "openvino", "openvino-export",
                   "openvino", 0.4, "OpenVINO IR, NNCF int8 weights", _OPENVINO, default=False),
        FormatSpec("openvino-int4", "edgemed.export.openvino:OpenVinoInt4Exporter", "openvino", "openvino-export",
                   "openvino", 2.5, "OpenVINO IR, NNCF int4 weights (int8 embedding/lm_head)", _OPENVINO,
                   default=False),
        FormatSpec("openvino-int4-awq", "edgemed.export.openvino:OpenVinoInt4AwqExporter", "openvino",
                   "openvino-export", "openvino", 2.5, "OpenVINO IR, NNCF int4, AWQ + scale estimation on the "
                   "training text", _OPENVINO, default=False),
    ]
}
# Any other llama.cpp file type is a format too, ``gguf-<type>``, verified against a tolerance by type family.
GGUF_TOLERANCE_BY_PREFIX = (
    ("f32", 0.01), ("f16", 0.05), ("bf16", 0.1), ("q8", 0.2), ("q6", 0.5), ("q5", 1.0), ("q4", 2.0),
    ("iq4", 2.0), ("q3", 3.0), ("iq3", 3.0), ("q2", 4.0), ("iq2", 4.0), ("iq1", 6.0), ("tq", 6.0),
)
# A folder or file without a manifest whose llama.cpp type is unknown is the generic "gguf" format.
GGUF_ANY = FormatSpec("gguf", "edgemed.export.gguf:GgufExporter", "llama.cpp", "gguf", "gguf", 2.0,
                      "GGUF for llama.cpp (type not recorded)", (".gguf",), _has("*.gguf"))
DETECTION_ORDER = ("gguf", "onnx", "bnb-int8", "bnb-nf4", "hf")  # most specific first

# What each runtime imports: a board with only the format's run_extra installed can evaluate and benchmark it.
RUNTIME_NEEDS: dict[str, tuple[str, ...]] = {
    "transformers": ("torch", "transformers"),
    "onnxruntime": ("onnxruntime", "tokenizers"),
    "llama.cpp": ("llama_cpp",),
    "openvino": ("openvino", "tokenizers"),
}

RUNTIMES: dict[str, str] = {
    "transformers": "edgemed.runtimes.hf:TransformersRuntime",
    "onnxruntime": "edgemed.runtimes.onnx:OnnxRuntime",
    "llama.cpp": "edgemed.runtimes.llamacpp:LlamaCppRuntime",
    "openvino": "edgemed.runtimes.openvino:OpenVinoRuntime",
}


def _did_you_mean(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return f"; did you mean '{close[0]}'?" if close else ""


def gguf_tolerance(ftype: str) -> float:
    return next((tol for prefix, tol in GGUF_TOLERANCE_BY_PREFIX if ftype.startswith(prefix)), 2.0)


def get_format(name: str) -> FormatSpec:
    """A registered format, or ``gguf-<type>`` for any type the installed llama.cpp can quantize to."""
    if name in FORMATS:
        return FORMATS[name]
    if name.startswith("gguf-") and len(name) > 5:
        from edgemed.export.gguf_types import refusal, split_format

        ftype, calibrated = split_format(name)  # gguf-<type>-imatrix: calibrated with an importance matrix
        try:
            known = load_object("edgemed.export.gguf:ftypes")()
        except ImportError:
            known = {}
        if ftype in known:
            why = refusal(ftype, calibrated)  # e.g. iq2_xxs without a matrix: llama.cpp refuses, so do we, now
            if why:
                raise EdgemedError(f"{name}: {why}")
            what = f"GGUF {ftype}{' with an importance matrix' if calibrated else ''} for llama.cpp"
            return replace(FORMATS["gguf-q8_0"], name=name, tolerance=gguf_tolerance(ftype), description=what)
    raise EdgemedError(
        f"unknown format '{name}'{_did_you_mean(name, list(FORMATS))} (known: {', '.join(FORMATS)}, "
        "gguf-<type> for another llama.cpp type, gguf-<type>-imatrix, or the set 'ladder')"
    )


def expand_formats(names: list[str] | None) -> list[str] | None:
    """Format names with named sets expanded (``ladder``: gguf-f16 and llama.cpp's type ladder, plain and
    calibrated; see edgemed.export.gguf_types), duplicates dropped, order kept; None stays None."""
    if names is None:
        return None
    from edgemed.export.gguf_types import FORMAT_SETS

    out: list[str] = []
    for name in names:
        out.extend(FORMAT_SETS[name]() if name in FORMAT_SETS else [name])
    return list(dict.fromkeys(out))


def detect_format(path: Path) -> FormatSpec | None:
    """The format of an artifact without a manifest, by the registry's detection rules (None: not an artifact)."""
    for name in DETECTION_ORDER:
        spec = GGUF_ANY if name == "gguf" else FORMATS[name]
        if spec.detect is not None and spec.detect(Path(path)):
            return spec
    return None


def load_object(target: str):
    """Import ``"module:attr"`` lazily."""
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def missing_modules(modules: tuple[str, ...]) -> list[str]:
    """The modules of `modules` that cannot be imported here (found without importing them)."""
    out = []
    for m in modules:
        try:
            found = importlib.util.find_spec(m) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            out.append(m)
    return out


def can_run(spec: FormatSpec) -> str | None:
    """None when this format's runtime can load here, else what to install."""
    missing = missing_modules(RUNTIME_NEEDS.get(spec.runtime, ()))
    return f"needs {', '.join(missing)}: pip install 'edgemed[{spec.run_extra}]'" if missing else None


# What the commands that load a model with transformers import (train, merge, export's reference, building an
# alias): the `train` extra. A board install (one run extra) lacks it; those commands then exit 2 naming it.
TRAIN_NEEDS = ("torch", "transformers", "peft", "accelerate", "safetensors")


def require_train(what: str) -> None:
    """Raise EdgemedError (exit 2) naming the `train` extra when a package it brings is missing."""
    missing = missing_modules(TRAIN_NEEDS)
    if missing:
        raise EdgemedError(f"{what} needs {', '.join(missing)}, which this install lacks: "
                           "pip install 'edgemed[train]'")


def spec_of(fmt: str) -> FormatSpec:
    """The spec of a format name as manifests and detection give it (``gguf``, ``gguf-<any type>`` included),
    without importing any engine; unknown names raise EdgemedError."""
    if fmt in FORMATS:
        return FORMATS[fmt]
    if fmt == GGUF_ANY.name:
        return GGUF_ANY
    ftype = fmt[5:].removesuffix("-imatrix")  # gguf-<type>-imatrix: the same runtime, calibrated weights
    if fmt.startswith("gguf-") and len(ftype) > 0 and ftype.replace("_", "").isalnum():
        return replace(GGUF_ANY, name=fmt, tolerance=gguf_tolerance(ftype), description=f"GGUF {fmt[5:]}")
    raise EdgemedError(
        f"unknown format '{fmt}'{_did_you_mean(fmt, list(FORMATS))} (known: {', '.join(FORMATS)}, or gguf-<type>)"
    )


def rows_independent(fmt: str | None) -> bool:
    """Whether `fmt`'s logits at a position depend only on the tokens up to it (unknown formats: assumed not)."""
    try:
        return spec_of(fmt).rows_independent if fmt else False
    except EdgemedError:
        return False


def require_runtime(fmt: str, runtime: str, what: str) -> None:
    """Raise EdgemedError (exit 2) naming the extra to install when `fmt`'s runtime cannot load here (a format this
    process does not know is checked by its runtime alone)."""
    try:
        spec = spec_of(fmt)
    except EdgemedError:
        spec = next((s for s in FORMATS.values() if s.runtime == runtime), None)
        if spec is None:
            return  # an unknown runtime: runtime_class says so
    reason = can_run(spec)
    if reason:
        raise EdgemedError(f"{what} is an artifact of format {fmt}; running it {reason}")


def runtime_class(name: str):
    if name not in RUNTIMES:
        raise EdgemedError(
            f"unknown runtime '{name}'{_did_you_mean(name, list(RUNTIMES))} (known: {', '.join(RUNTIMES)})"
        )
    return load_object(RUNTIMES[name])


def exporter_class(name: str):
    return load_object(get_format(name).exporter)


def weight_suffixes(fmt: str) -> tuple[str, ...]:
    """The weight files of a format (any gguf-<type>: .gguf); every known suffix if the format is unknown."""
    if fmt in FORMATS:
        return FORMATS[fmt].weight_suffixes
    if fmt.startswith("gguf"):
        return GGUF_ANY.weight_suffixes
    return tuple(sorted({s for f in FORMATS.values() for s in f.weight_suffixes}))


def weight_bytes(path, fmt: str) -> int:
    """Bytes of an artifact's weight files (what decode reads per token, roughly), not tokenizer/config files."""
    from pathlib import Path

    path = Path(path)
    suffixes = weight_suffixes(fmt)
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files if p.name.endswith(suffixes))
