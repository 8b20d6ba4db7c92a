"""What the registry (:mod:`edgemed.registry`) records: a runtime's facts (:class:`RuntimeSpec`), a format's facts
(:class:`FormatSpec`), what an engine cannot do for a model architecture (:class:`ArchitectureLimit`), and the
detection rules format entries use to recognise a folder without a manifest (:func:`has_file`, :func:`quantized`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edgemed.fsutil import read_json


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


def quantized(key: str | None) -> Callable[[Path], bool]:
    """A transformers folder whose config.json quantization_config sets `key` (None: no quantization)."""

    def rule(path: Path) -> bool:
        config = path / "config.json"
        if not config.is_file():
            return False
        quant = read_json(config, "model config", "re-export the artifact", want_object=True).get("quantization_config")
        quant = quant if isinstance(quant, dict) else {}
        return bool(quant.get(key)) if key else not quant

    return rule


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

    def reason(self, fmt: str, source: Path) -> str | None:
        """Why `fmt` cannot be exported from the model folder `source` under this limit, or None."""
        arch = _architecture(source)
        if arch != self.architecture or not (fmt == self.formats or fmt.startswith(self.formats + "-")):
            return None
        if self.unless_file and (Path(source) / self.unless_file).exists():
            return None
        import importlib.metadata  # here: reading distribution metadata costs ~0.1 s at every CLI start

        try:
            version = importlib.metadata.version(self.package)
        except importlib.metadata.PackageNotFoundError:
            version = "(not installed)"
        return f"{self.engine} ({self.package} {version}): {self.missing} for {arch}"


def _architecture(source: Path) -> str | None:
    try:
        archs = json.loads((Path(source) / "config.json").read_text()).get("architectures") or []
    except (OSError, ValueError, AttributeError):
        return None
    return archs[0] if archs and isinstance(archs[0], str) else None
