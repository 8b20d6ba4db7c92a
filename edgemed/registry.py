"""Format and runtime registry: a name maps to ``"module:Class"``, imported only when used.

Adding a format is one exporter module, one runtime (or an existing one) and one entry here: the entry holds
every per-format fact (exporter, runtime, extras, verification tolerance, weight files, detection rule). Adding a
runtime is one runtime module and one :class:`RuntimeSpec` here: its class, what it imports, the extra that installs
it, the engine it drives. ``register_runtime`` / ``register_format`` add entries from outside (a plugin, a test).

Also here, once each: whether a module is importable (:func:`importable`), ``"module:attr"`` loading
(:func:`load_object`), the "install the extra" message (:func:`install_message`, defined beside the errors in
:mod:`edgemed.errors` and re-exported here), and the ``gguf-<type>`` names
(:func:`edgemed.export.gguf.types.parse_format`, used by :func:`get_format` and :func:`spec_of`).
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from edgemed.errors import EdgemedError, MissingDependency, install_message  # noqa: F401 (re-exported)


@dataclass(frozen=True)
class RuntimeSpec:
    """Every per-runtime fact: its class, what it imports, the extra that installs it alone (a board install), the
    engine whose GPU support decides the device, and how edgemed tune names it."""

    name: str  # what manifests record as "runtime"
    runtime: str  # "module:Class", a edgemed.runtimes.base.Runtime
    extra: str  # the pip extra that installs this runtime alone ("edgemed[EXTRA]")
    needs: tuple[str, ...]  # the modules it imports (checked without importing them)
    engine: str  # the engine it drives, as edgemed.resources.gpus() reports it in seen_by
    cuda_fix: str = ""  # how to get a build of the engine that uses a CUDA GPU ("": it runs on the CPU here)
    tune_name: str = ""  # its name in edgemed tune's --runtimes and --space tables ("": not tuned)
    builds_on: str = ""  # the format every tune candidate of this runtime is built from (its exporter's sibling)


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
    detect: Callable[[Path], bool] | None = None  # recognises a folder without edgemed.json (see detect_rank)
    default: bool = True  # exported when no --formats is given (the others: by name, e.g. --formats onnx-int4)
    # False where a token's logits depend on the other tokens of the same forward pass (activations quantized over
    # the whole input: LLM.int8's outlier columns, onnxruntime's per-tensor dynamic scale). Such a format is scored
    # one question per pass, the prompt alone: never batched, never read from the fidelity pass's longer sequence.
    rows_independent: bool = True
    needs: tuple[str, ...] = ()  # modules beyond its runtime's that loading it imports (bnb: bitsandbytes)
    reference: bool = False  # the unquantized format every other one is compared with (fidelity, bench's default)
    detect_rank: int = 50  # detection tries the lower ranks first: the most specific rules before the catch-alls
    # Peak memory of exporting and verifying it, in multiples of the merged model's float32 weight bytes (refused
    # before any work where that is above the machine's memory: edgemed.memory_plan). Measured on llama32-1b-shape
    # (docs/measurements.md): the verification's load of the merged model (1x) dominates GGUF and hf; bitsandbytes
    # quantizes a float32 load; ONNX traces the torch model and holds the graph (the export process peaked at 15.4 GB,
    # 3.1x the 4.95 GB of float32 weights); OpenVINO converts it from torch (not measured at 1B: 3x assumed).
    export_memory: float = 1.2
    # Why its engine on a machine without a CUDA GPU is only a fallback, not a way to deploy it ("": it serves on a
    # CPU). The pipeline's bench leaves such a format out there unless asked (--bench-formats), and says so: its CPU
    # timings would describe the fallback, not the format. It is still exported and verified.
    cpu_fallback: str = ""
    # What its graph file must hold (any one of) and must not hold, as bytes of the file (an op type, an IR element
    # type): (file, must hold one of, must hold none of). The manifest check reads it to refuse a folder whose files
    # are another format's (an int8 graph under an int4 manifest); None: nothing to check beyond the hashes.
    marks: tuple[str, tuple[bytes, ...], tuple[bytes, ...]] | None = None


def has_file(pattern: str) -> Callable[[Path], bool]:
    """A detection rule: the path is a file matching `pattern`, or a folder holding one."""
    return lambda path: (path.is_file() and path.match(pattern)) or (path.is_dir() and any(path.glob(pattern)))


def _quantized(key: str | None) -> Callable[[Path], bool]:
    """A transformers folder whose config.json quantization_config sets `key` (None: no quantization)."""

    def rule(path: Path) -> bool:
        from edgemed.fsutil import read_json

        config = path / "config.json"
        if not config.is_file():
            return False
        quant = read_json(config, "model config", "re-export the artifact", want_object=True).get("quantization_config")
        quant = quant if isinstance(quant, dict) else {}
        return bool(quant.get(key)) if key else not quant

    return rule


_BNB_ON_CPU = ("bitsandbytes is built for CUDA GPUs and runs on a CPU through its fallback backend (on the 2-core "
               "Xeon bnb-int8 decoded at half the hf reference's speed, in more memory)")
_ONNX = (".onnx", ".onnx_data", ".onnx.data")
_OPENVINO = (".bin",)  # the IR's weights (the .xml is the graph)
_OV_INT4 = (b'element_type="u4"', b'element_type="i4"')
_OV_INT8 = (b'element_type="u8"', b'element_type="i8"')
FORMATS: dict[str, FormatSpec] = {
    s.name: s
    for s in [
        FormatSpec("hf", "edgemed.export.hf:HFExporter", "transformers", "train", "train", 1e-4,
                   "merged model, safetensors (reference)", (".safetensors",), _quantized(None), reference=True,
                   detect_rank=90),  # any transformers folder: tried last
        FormatSpec("bnb-int8", "edgemed.export.bnb:BnbInt8Exporter", "transformers", "bnb", "bnb", 0.75,
                   "bitsandbytes LLM.int8", (".safetensors",), _quantized("load_in_8bit"), rows_independent=False,
                   needs=("bitsandbytes",), detect_rank=30, export_memory=1.5, cpu_fallback=_BNB_ON_CPU),
        FormatSpec("bnb-nf4", "edgemed.export.bnb:BnbNf4Exporter", "transformers", "bnb", "bnb", 2.5,
                   "bitsandbytes 4-bit NF4", (".safetensors",), _quantized("load_in_4bit"), needs=("bitsandbytes",),
                   detect_rank=40, export_memory=1.5, cpu_fallback=_BNB_ON_CPU),
        FormatSpec("onnx", "edgemed.export.onnx:OnnxExporter", "onnxruntime", "onnx-export", "onnx", 1e-3,
                   "ONNX with KV cache (Optimum)", _ONNX, has_file("model.onnx"), detect_rank=20, export_memory=3.2,
                   marks=("model.onnx", (), (b"MatMulNBits", b"MatMulInteger"))),
        FormatSpec("onnx-int8", "edgemed.export.onnx:OnnxInt8Exporter", "onnxruntime", "onnx-export", "onnx", 1.0,
                   "ONNX, onnxruntime dynamic int8", _ONNX, rows_independent=False,  # files: same as onnx
                   export_memory=3.2, marks=("model.onnx", (b"MatMulInteger",), (b"MatMulNBits",))),
        FormatSpec("gguf-f16", "edgemed.export.gguf.exporter:GgufExporter", "llama.cpp", "gguf", "gguf", 0.05,
                   "GGUF f16 for llama.cpp", (".gguf",)),
        FormatSpec("gguf-q8_0", "edgemed.export.gguf.exporter:GgufExporter", "llama.cpp", "gguf", "gguf", 0.2,
                   "GGUF q8_0 for llama.cpp", (".gguf",)),
        FormatSpec("gguf-q4_k_m", "edgemed.export.gguf.exporter:GgufExporter", "llama.cpp", "gguf", "gguf", 2.0,
                   "GGUF q4_k_m for llama.cpp", (".gguf",)),
        # what edge engineers ship beside GGUF; exported when named (--formats), not by default
        FormatSpec("onnx-int4", "edgemed.export.onnx_int4:OnnxInt4Exporter", "onnxruntime", "onnx-export", "onnx",
                   3.0, "ONNX, MatMulNBits int4 (onnxruntime RTN, block 32)", _ONNX, default=False, export_memory=3.2,
                   marks=("model.onnx", (b"MatMulNBits",), ())),
        FormatSpec("openvino-int8", "edgemed.export.openvino:OpenVinoInt8Exporter", "openvino", "openvino-export",
                   "openvino", 0.4, "OpenVINO IR, NNCF int8 weights", _OPENVINO, default=False, export_memory=3.0,
                   marks=("openvino_model.xml", _OV_INT8, _OV_INT4)),
        FormatSpec("openvino-int4", "edgemed.export.openvino:OpenVinoInt4Exporter", "openvino", "openvino-export",
                   "openvino", 2.5, "OpenVINO IR, NNCF int4 weights (int8 embedding/lm_head)", _OPENVINO,
                   default=False, export_memory=3.0, marks=("openvino_model.xml", _OV_INT4, ())),
        FormatSpec("openvino-int4-awq", "edgemed.export.openvino:OpenVinoInt4AwqExporter", "openvino",
                   "openvino-export", "openvino", 2.5, "OpenVINO IR, NNCF int4, AWQ + scale estimation on the "
                   "training text", _OPENVINO, default=False, export_memory=3.0,
                   marks=("openvino_model.xml", _OV_INT4, ())),
    ]
}
# Any other llama.cpp file type is a format too, ``gguf-<type>``, verified against a tolerance by type family.
GGUF_TOLERANCE_BY_PREFIX = (
    ("f32", 0.01), ("f16", 0.05), ("bf16", 0.1), ("q8", 0.2), ("q6", 0.5), ("q5", 1.0), ("q4", 2.0),
    ("iq4", 2.0), ("q3", 3.0), ("iq3", 3.0), ("q2", 4.0), ("iq2", 4.0), ("iq1", 6.0), ("tq", 6.0),
)
# A folder or file without a manifest whose llama.cpp type is unknown is the generic "gguf" format.
GGUF_ANY = FormatSpec("gguf", "edgemed.export.gguf.exporter:GgufExporter", "llama.cpp", "gguf", "gguf", 2.0,
                      "GGUF for llama.cpp (type not recorded)", (".gguf",), has_file("*.gguf"), detect_rank=10)

# Every runtime (a board with only a runtime's extra installed can evaluate and benchmark its formats).
RUNTIMES: dict[str, RuntimeSpec] = {
    s.name: s
    for s in [
        RuntimeSpec("transformers", "edgemed.runtimes.hf:TransformersRuntime", "train", ("torch", "transformers"),
                    "torch", cuda_fix="install a CUDA build of torch"),
        RuntimeSpec("llama.cpp", "edgemed.runtimes.llamacpp:LlamaCppRuntime", "gguf", ("llama_cpp",), "llama.cpp",
                    cuda_fix="install a CUDA build of llama-cpp-python (CMAKE_ARGS=-DGGML_CUDA=on)",
                    tune_name="gguf", builds_on="gguf-f16"),
        RuntimeSpec("onnxruntime", "edgemed.runtimes.onnx:OnnxRuntime", "onnx", ("onnxruntime", "tokenizers"),
                    "onnxruntime", cuda_fix="install onnxruntime-gpu", tune_name="onnx", builds_on="onnx"),
        RuntimeSpec("openvino", "edgemed.runtimes.openvino:OpenVinoRuntime", "openvino", ("openvino", "tokenizers"),
                    "openvino", tune_name="openvino", builds_on="onnx"),  # its CPU plugin only here (auto -> cpu)
    ]
}


def register_runtime(spec: RuntimeSpec) -> RuntimeSpec:
    """Add a runtime (or replace one of the same name): all edgemed needs to open, check and place its artifacts."""
    RUNTIMES[spec.name] = spec
    return spec


def register_format(spec: FormatSpec) -> FormatSpec:
    """Add a format (or replace one of the same name); its runtime must be registered."""
    runtime_spec(spec.runtime)
    FORMATS[spec.name] = spec
    return spec


def runtime_spec(name: str) -> RuntimeSpec:
    """A registered runtime's facts; an unknown name raises EdgemedError (with a suggestion)."""
    if name not in RUNTIMES:
        raise EdgemedError(
            f"unknown runtime '{name}'{_did_you_mean(name, list(RUNTIMES))} (known: {', '.join(RUNTIMES)})"
        )
    return RUNTIMES[name]


def engine_of(runtime: str) -> str | None:
    """The engine a runtime drives (None for a runtime this edgemed does not know)."""
    spec = RUNTIMES.get(runtime)
    return spec.engine if spec else None


def reference_format() -> str:
    """The name of the reference format (the unquantized one every other format is compared with)."""
    return next(s.name for s in FORMATS.values() if s.reference)


def is_reference(fmt: str | None) -> bool:
    """Whether `fmt` is the reference format (unknown names: not)."""
    spec = FORMATS.get(fmt) if fmt else None
    return bool(spec and spec.reference)


def _did_you_mean(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return f"; did you mean '{close[0]}'?" if close else ""


def format_names() -> list[str]:
    """Every format name a command accepts: the registered formats, ``gguf-<type>`` for every llama.cpp file type
    (the installed llama.cpp's, else llama.h's table) and ``gguf-<type>-imatrix`` where the type takes a matrix, and
    the named sets: what a did-you-mean chooses from."""
    from edgemed.export.gguf.types import FILE_TYPES, FORMAT_SETS, TAKES_IMATRIX, format_name, matrix_use

    try:
        ftypes = load_object("edgemed.export.gguf.exporter:ftypes")
        types = set(ftypes()) if importable("llama_cpp") else set(FILE_TYPES)
    except ImportError:
        types = set(FILE_TYPES)
    gguf = [format_name(t, matrix_use(t) == "needs") for t in sorted(types)]
    gguf += [format_name(t, True) for t in sorted(types & TAKES_IMATRIX) if matrix_use(t) == "benefits"]
    return list(dict.fromkeys([*FORMATS, *gguf, *FORMAT_SETS]))


def gguf_tolerance(ftype: str) -> float:
    return next((tol for prefix, tol in GGUF_TOLERANCE_BY_PREFIX if ftype.startswith(prefix)), 2.0)


def get_format(name: str) -> FormatSpec:
    """A registered format, or ``gguf-<type>`` for any type the installed llama.cpp can quantize to."""
    if name in FORMATS:
        return FORMATS[name]
    from edgemed.export.gguf.types import parse_format, refusal

    gguf = parse_format(name)  # gguf-<type>-imatrix: calibrated with an importance matrix
    if gguf is not None:
        try:
            known = load_object("edgemed.export.gguf.exporter:ftypes")()
        except ImportError:
            known = {}
        if gguf.ftype in known:
            why = refusal(*gguf)  # e.g. iq2_xxs without a matrix: llama.cpp refuses, so do we, now
            if why:
                raise EdgemedError(f"{name}: {why}")
            what = f"GGUF {gguf.ftype}{' with an importance matrix' if gguf.calibrated else ''} for llama.cpp"
            return replace(FORMATS["gguf-q8_0"], name=name, tolerance=gguf_tolerance(gguf.ftype), description=what)
    raise EdgemedError(
        f"unknown format '{name}'{_did_you_mean(name, format_names())} (known: {', '.join(FORMATS)}, "
        "gguf-<type> for another llama.cpp type, gguf-<type>-imatrix, or the set 'ladder')"
    )


def expand_formats(names: list[str] | None) -> list[str] | None:
    """Format names with named sets expanded (``ladder``: gguf-f16 and llama.cpp's type ladder, plain and
    calibrated; see edgemed.export.gguf.types), duplicates dropped, order kept; None stays None."""
    if names is None:
        return None
    from edgemed.export.gguf.types import FORMAT_SETS

    out: list[str] = []
    for name in names:
        out.extend(FORMAT_SETS[name]() if name in FORMAT_SETS else [name])
    return list(dict.fromkeys(out))


def detect_format(path: Path) -> FormatSpec | None:
    """The format of an artifact without a manifest, by the registry's detection rules, the lowest
    ``detect_rank`` first (None: not an artifact)."""
    specs = sorted((s for s in [GGUF_ANY, *FORMATS.values()] if s.detect is not None), key=lambda s: s.detect_rank)
    return next((s for s in specs if s.detect(Path(path))), None)


def load_object(target: str):
    """Import ``"module:attr"`` lazily (the one loader: registry entries and the CLI's command table)."""
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def importable(module: str) -> bool:
    """Whether `module` can be imported here, found without importing it (a dotted name whose parent package is
    missing, or a finder that refuses it, is not importable)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing_modules(modules: Iterable[str]) -> list[str]:
    """The modules of `modules` that cannot be imported here (found without importing them)."""
    return [m for m in modules if not importable(m)]


def require_module(module: str, extra: str, what: str):
    """Import an optional module, or raise MissingDependency (exit 2): `what` needs it, and which extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependency(module.split(".")[0], extra, what) from exc


def runtime_module(runtime: str, module: str):
    """Import a module a runtime needs, or exit 2 naming the runtime's extra (the registry's)."""
    return require_module(module, runtime_spec(runtime).extra, f"the {runtime} runtime")


def format_modules(fmt: str) -> None:
    """Import the modules a format needs beyond its runtime's (bnb: bitsandbytes), or exit 2 naming its run extra."""
    spec = spec_of(fmt)
    for module in spec.needs:
        require_module(module, spec.run_extra, f"{fmt} artifacts")


def can_run(spec: FormatSpec) -> str | None:
    """None when this format's runtime can load here, else what to install."""
    runtime = RUNTIMES.get(spec.runtime)
    missing = missing_modules([*(runtime.needs if runtime else ()), *spec.needs])
    return install_message(missing, spec.run_extra) if missing else None


# What the commands that load a model with transformers import (train, merge, export's reference, building an
# alias): the `train` extra. A board install (one run extra) lacks it; those commands then exit 2 naming it.
TRAIN_EXTRA = "train"
TRAIN_NEEDS = ("torch", "transformers", "peft", "accelerate", "safetensors")
# Extras that belong to no runtime or format, named in install_message by the code that needs them.
DATA_EXTRA = "data"  # datasets (hub sources) and pyarrow (.parquet files)
PLOT_EXTRA = "plot"  # matplotlib (pareto.png of edgemed bench and edgemed tune)


def require_train(what: str) -> None:
    """Raise EdgemedError (exit 2) naming the `train` extra when a package it brings is missing."""
    missing = missing_modules(TRAIN_NEEDS)
    if missing:
        raise EdgemedError(f"{what} {install_message(missing, TRAIN_EXTRA)} (this install lacks them)")


def spec_of(fmt: str) -> FormatSpec:
    """The spec of a format name as manifests and detection give it (``gguf``, ``gguf-<any type>`` included),
    without importing any engine; unknown names raise EdgemedError."""
    if fmt in FORMATS:
        return FORMATS[fmt]
    if fmt == GGUF_ANY.name:
        return GGUF_ANY
    from edgemed.export.gguf.types import PREFIX, parse_format

    gguf = parse_format(fmt)  # gguf-<type>-imatrix: the same runtime, calibrated weights
    if gguf is not None:
        return replace(GGUF_ANY, name=fmt, tolerance=gguf_tolerance(gguf.ftype),
                       description=f"GGUF {fmt.removeprefix(PREFIX)}")
    raise EdgemedError(
        f"unknown format '{fmt}'{_did_you_mean(fmt, format_names())} (known: {', '.join(FORMATS)}, or gguf-<type>)"
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
        if runtime not in RUNTIMES:
            return  # an unknown runtime: runtime_class says so
        known = RUNTIMES[runtime]
        spec = FormatSpec(fmt, "", runtime, known.extra, known.extra, 0.0, "")
    reason = can_run(spec)
    if reason:
        raise EdgemedError(f"{what} is an artifact of format {fmt}; running it {reason}")


def runtime_class(name: str):
    return load_object(runtime_spec(name).runtime)


def exporter_class(name: str):
    return load_object(get_format(name).exporter)


def weight_suffixes(fmt: str) -> tuple[str, ...]:
    """The weight files of a format (any gguf-<type>: .gguf); every known suffix if the format is unknown."""
    try:
        return spec_of(fmt).weight_suffixes
    except EdgemedError:
        return tuple(sorted({s for f in FORMATS.values() for s in f.weight_suffixes}))


def weight_bytes(path, fmt: str) -> int:
    """Bytes of an artifact's weight files (what decode reads per token, roughly), not tokenizer/config files."""
    path = Path(path)
    suffixes = weight_suffixes(fmt)
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files if p.name.endswith(suffixes))


# --- what an engine cannot do for a model architecture ------------------------------------------------------------
@dataclass(frozen=True)
class ArchitectureLimit:
    """A format an engine cannot produce for an architecture, measured (scripts/dev/family_matrix.py,
    docs/families.md), so the export refuses it before any work with the engine's limit named."""

    formats: str  # a format name, or the family of names it starts ("gguf": gguf-f16, gguf-q8_0, ...)
    architecture: str  # as config.json's "architectures" names it
    engine: str  # the engine, as the message names it
    package: str  # the installed distribution whose version is the engine's
    missing: str  # what the engine lacks for this architecture
    unless_file: str = ""  # the limit does not hold where the model folder has this file


ARCHITECTURE_LIMITS: list[ArchitectureLimit] = [
    ArchitectureLimit("gguf", "Gemma2ForCausalLM", "llama.cpp's converter", "llama-cpp-python",
                      "reads Gemma 2's vocabulary only from a SentencePiece tokenizer.model (this model folder has "
                      "none)", unless_file="tokenizer.model"),
]


def _architecture(source: Path) -> str | None:
    import json

    try:
        archs = json.loads((Path(source) / "config.json").read_text()).get("architectures") or []
    except (OSError, ValueError, AttributeError):
        return None
    return archs[0] if archs and isinstance(archs[0], str) else None


def architecture_limit(fmt: str, source: Path) -> str | None:
    """Why `fmt` cannot be exported from the model folder `source` ("<engine> <version>: <what is missing> for
    <architecture>"), or None."""
    import importlib.metadata as md

    arch = _architecture(source)
    for limit in ARCHITECTURE_LIMITS:
        if limit.architecture != arch or not (fmt == limit.formats or fmt.startswith(limit.formats + "-")):
            continue
        if limit.unless_file and (Path(source) / limit.unless_file).exists():
            continue
        try:
            version = md.version(limit.package)
        except md.PackageNotFoundError:
            version = "(not installed)"
        return f"{limit.engine} ({limit.package} {version}): {limit.missing} for {arch}"
    return None
