"""Format and runtime registry: a name maps to ``"module:Class"``, imported only when used.

Adding a format is one exporter module, one runtime (or an existing one) and one entry here: the entry holds
every per-format fact (exporter, runtime, extras, verification tolerance and route, export chain, weight files,
detection rule, whether it is exported by default). Adding a runtime is one runtime module and one
:class:`RuntimeSpec` here: its class, what it imports, the extra that installs it, the engine it drives and how to
ask that engine for a CUDA GPU. ``register_runtime`` / ``register_format`` add entries from outside (a plugin, a
test).

Also here: the ``gguf-<type>`` names (:func:`edgemed.export.gguf.types.parse_format`, used by :func:`get_format` and
:func:`spec_of`) and what an engine cannot do for a model architecture (:data:`ARCHITECTURE_LIMITS`). Whether a
module is importable, ``"module:attr"`` loading and the `train` extra live in :mod:`edgemed.optional` (re-exported
here), the "install the extra" message beside the errors (:func:`edgemed.errors.install_message`).
"""

from __future__ import annotations

import difflib
import importlib.metadata
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from edgemed.errors import EdgemedError, install_message
from edgemed.fsutil import read_json
from edgemed.optional import (  # noqa: F401 (re-exported: the registry's callers import them from here)
    DATA_EXTRA,
    PLOT_EXTRA,
    TRAIN_EXTRA,
    TRAIN_NEEDS,
    importable,
    load_object,
    missing_modules,
    require_module,
    require_train,
)


@dataclass(frozen=True)
class RuntimeSpec:
    """Every per-runtime fact: its class, what it imports, the extra that installs it alone (a board install), the
    engine whose GPU support decides the device and how to ask it, and how edgemed tune names it."""

    name: str  # what manifests record as "runtime"
    runtime: str  # "module:Class", a edgemed.runtimes.base.Runtime
    extra: str  # the pip extra that installs this runtime alone ("edgemed[EXTRA]")
    needs: tuple[str, ...]  # the modules it imports (checked without importing them)
    engine: str  # the engine it drives, as edgemed.resources.gpus() reports it in seen_by
    cuda_fix: str = ""  # how to get a build of the engine that uses a CUDA GPU ("": it runs on the CPU here)
    tune_name: str = ""  # its name in edgemed tune's --runtimes and --space tables ("": not tuned)
    builds_on: str = ""  # the format every tune candidate of this runtime is built from (its exporter's sibling)
    # "module:function" -> bool: whether the engine sees a CUDA GPU here, called only where `needs` import (cheap:
    # no model is loaded). "": the engine never uses one (edgemed.resources.gpus asks every runtime's probe).
    gpu_probe: str = ""


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
    # Where edgemed export runs it (edgemed.export.run): "first" before the others, in the export process (the
    # transformers formats: they read the merged model as it is and share one fork server for their verification);
    # "beside" in a second thread beside the "main" chain where the memory plan allows (llama.cpp's converter and
    # quantizer: subprocesses of mostly one core each, while ONNX holds one core for long stretches).
    export_chain: Literal["first", "beside", "main"] = "main"
    # How its verification worker starts: "forkserver" forked from a server that imported torch, transformers and
    # bitsandbytes once (edgemed.export.verify.transformers_workers: 2-3 s instead of 11-13 s per format on 2 cores);
    # "process" a fresh process (its runtime imports what it needs itself).
    verify_route: Literal["forkserver", "process"] = "process"


def has_file(pattern: str) -> Callable[[Path], bool]:
    """A detection rule: the path is a file matching `pattern`, or a folder holding one."""
    return lambda path: (path.is_file() and path.match(pattern)) or (path.is_dir() and any(path.glob(pattern)))


def _quantized(key: str | None) -> Callable[[Path], bool]:
    """A transformers folder whose config.json quantization_config sets `key` (None: no quantization)."""

    def rule(path: Path) -> bool:
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
_TRANSFORMERS = {"runtime": "transformers", "export_chain": "first", "verify_route": "forkserver",
                 "weight_suffixes": (".safetensors",)}
_BNB = {**_TRANSFORMERS, "extra": "bnb", "run_extra": "bnb", "needs": ("bitsandbytes",), "export_memory": 1.5,
        "cpu_fallback": _BNB_ON_CPU}
_ONNX_EXPORT = {"runtime": "onnxruntime", "extra": "onnx-export", "run_extra": "onnx", "weight_suffixes": _ONNX,
                "export_memory": 3.2}
_GGUF = {"exporter": "edgemed.export.gguf.exporter:GgufExporter", "runtime": "llama.cpp", "extra": "gguf",
         "run_extra": "gguf", "weight_suffixes": (".gguf",), "export_chain": "beside"}
_OV = {"runtime": "openvino", "extra": "openvino-export", "run_extra": "openvino", "weight_suffixes": _OPENVINO,
       "default": False, "export_memory": 3.0}
FORMATS: dict[str, FormatSpec] = {
    s.name: s
    for s in [
        FormatSpec(name="hf", exporter="edgemed.export.hf:HFExporter", **_TRANSFORMERS, extra="train",
                   run_extra="train", tolerance=1e-4, description="merged model, safetensors (reference)",
                   detect=_quantized(None), reference=True, detect_rank=90),  # any transformers folder: tried last
        FormatSpec(name="bnb-int8", exporter="edgemed.export.bnb:BnbInt8Exporter", **_BNB, tolerance=0.75,
                   description="bitsandbytes LLM.int8", detect=_quantized("load_in_8bit"), rows_independent=False,
                   detect_rank=30),
        FormatSpec(name="bnb-nf4", exporter="edgemed.export.bnb:BnbNf4Exporter", **_BNB, tolerance=2.5,
                   description="bitsandbytes 4-bit NF4", detect=_quantized("load_in_4bit"), detect_rank=40),
        FormatSpec(name="onnx", exporter="edgemed.export.onnx:OnnxExporter", **_ONNX_EXPORT, tolerance=1e-3,
                   description="ONNX with KV cache (Optimum)", detect=has_file("model.onnx"), detect_rank=20,
                   marks=("model.onnx", (), (b"MatMulNBits", b"MatMulInteger"))),
        FormatSpec(name="onnx-int8", exporter="edgemed.export.onnx:OnnxInt8Exporter", **_ONNX_EXPORT, tolerance=1.0,
                   description="ONNX, onnxruntime dynamic int8", rows_independent=False,  # files: same as onnx
                   marks=("model.onnx", (b"MatMulInteger",), (b"MatMulNBits",))),
        FormatSpec(name="gguf-f16", **_GGUF, tolerance=0.05, description="GGUF f16 for llama.cpp"),
        FormatSpec(name="gguf-q8_0", **_GGUF, tolerance=0.2, description="GGUF q8_0 for llama.cpp"),
        FormatSpec(name="gguf-q4_k_m", **_GGUF, tolerance=2.0, description="GGUF q4_k_m for llama.cpp"),
        # what edge engineers ship beside GGUF; exported when named (--formats), not by default
        FormatSpec(name="onnx-int4", exporter="edgemed.export.onnx_int4:OnnxInt4Exporter", **_ONNX_EXPORT,
                   tolerance=3.0, description="ONNX, MatMulNBits int4 (onnxruntime RTN, block 32)", default=False,
                   marks=("model.onnx", (b"MatMulNBits",), ())),
        FormatSpec(name="openvino-int8", exporter="edgemed.export.openvino:OpenVinoInt8Exporter", **_OV,
                   tolerance=0.4, description="OpenVINO IR, NNCF int8 weights",
                   marks=("openvino_model.xml", _OV_INT8, _OV_INT4)),
        FormatSpec(name="openvino-int4", exporter="edgemed.export.openvino:OpenVinoInt4Exporter", **_OV,
                   tolerance=2.5, description="OpenVINO IR, NNCF int4 weights (int8 embedding/lm_head)",
                   marks=("openvino_model.xml", _OV_INT4, ())),
        FormatSpec(name="openvino-int4-awq", exporter="edgemed.export.openvino:OpenVinoInt4AwqExporter", **_OV,
                   tolerance=2.5, description="OpenVINO IR, NNCF int4, AWQ + scale estimation on the training text",
                   marks=("openvino_model.xml", _OV_INT4, ())),
    ]
}
# Any other llama.cpp file type is a format too, ``gguf-<type>``, verified against a tolerance by type family.
GGUF_TOLERANCE_BY_PREFIX = (
    ("f32", 0.01), ("f16", 0.05), ("bf16", 0.1), ("q8", 0.2), ("q6", 0.5), ("q5", 1.0), ("q4", 2.0),
    ("iq4", 2.0), ("q3", 3.0), ("iq3", 3.0), ("q2", 4.0), ("iq2", 4.0), ("iq1", 6.0), ("tq", 6.0),
)
# A folder or file without a manifest whose llama.cpp type is unknown is the generic "gguf" format.
GGUF_ANY = FormatSpec(name="gguf", **_GGUF, tolerance=2.0, description="GGUF for llama.cpp (type not recorded)",
                      detect=has_file("*.gguf"), detect_rank=10)

# Every runtime (a board with only a runtime's extra installed can evaluate and benchmark its formats).
RUNTIMES: dict[str, RuntimeSpec] = {
    s.name: s
    for s in [
        RuntimeSpec(name="transformers", runtime="edgemed.runtimes.hf:TransformersRuntime", extra="train",
                    needs=("torch", "transformers"), engine="torch", cuda_fix="install a CUDA build of torch",
                    gpu_probe="edgemed.resources:torch_sees_cuda"),
        RuntimeSpec(name="llama.cpp", runtime="edgemed.runtimes.llamacpp:LlamaCppRuntime", extra="gguf",
                    needs=("llama_cpp",), engine="llama.cpp",
                    cuda_fix="install a CUDA build of llama-cpp-python (CMAKE_ARGS=-DGGML_CUDA=on)",
                    tune_name="gguf", builds_on="gguf-f16", gpu_probe="edgemed.resources:llamacpp_offloads"),
        RuntimeSpec(name="onnxruntime", runtime="edgemed.runtimes.onnx:OnnxRuntime", extra="onnx",
                    needs=("onnxruntime", "tokenizers"), engine="onnxruntime", cuda_fix="install onnxruntime-gpu",
                    tune_name="onnx", builds_on="onnx", gpu_probe="edgemed.resources:onnxruntime_sees_cuda"),
        RuntimeSpec(name="openvino", runtime="edgemed.runtimes.openvino:OpenVinoRuntime", extra="openvino",
                    needs=("openvino", "tokenizers"), engine="openvino", tune_name="openvino",
                    builds_on="onnx"),  # its CPU plugin only here (auto -> cpu)
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


def default_formats() -> list[str]:
    """The formats exported when none is named (export, pipeline), in registry order; the others only by name."""
    return [name for name, spec in FORMATS.items() if spec.default]


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
        spec = FormatSpec(name=fmt, exporter="", runtime=runtime, extra=known.extra, run_extra=known.extra,
                          tolerance=0.0, description="")
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
    try:
        archs = json.loads((Path(source) / "config.json").read_text()).get("architectures") or []
    except (OSError, ValueError, AttributeError):
        return None
    return archs[0] if archs and isinstance(archs[0], str) else None


def architecture_limit(fmt: str, source: Path) -> str | None:
    """Why `fmt` cannot be exported from the model folder `source` ("<engine> <version>: <what is missing> for
    <architecture>"), or None."""
    md = importlib.metadata
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
