"""Format and runtime registry: a name maps to ``"module:Class"``, imported only when used.

The entries are :mod:`edgemed.catalog`'s (one :class:`~edgemed.specs.FormatSpec` per format holds every per-format
fact: exporter, runtime, extras, verification tolerance and route, export chain, weight files, detection rule,
whether it is exported by default; one :class:`~edgemed.specs.RuntimeSpec` per runtime: its class, what it imports,
its extra, its engine and that engine's GPU probe). Adding a format is one exporter module, one runtime (or an
existing one) and one catalog entry; ``register_runtime`` / ``register_format`` add entries from outside (a plugin,
a test). This module looks them up: by name with a did-you-mean, ``gguf-<type>`` for any llama.cpp type
(:func:`edgemed.export.gguf.types.parse_format`), by detection, and what this install can run.

Whether a module is importable, ``"module:attr"`` loading and the `train` extra live in :mod:`edgemed.optional`
(re-exported here), the "install the extra" message beside the errors (:func:`edgemed.errors.install_message`).
"""

from __future__ import annotations

import difflib
from dataclasses import replace
from pathlib import Path

from edgemed.catalog import ARCHITECTURE_LIMITS, FORMATS, GGUF_ANY, GGUF_TOLERANCE_BY_PREFIX, RUNTIMES
from edgemed.errors import EdgemedError, install_message
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
from edgemed.specs import ArchitectureLimit, FormatSpec, RuntimeSpec, has_file, quantized  # noqa: F401 (re-exported)


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


def architecture_limit(fmt: str, source: Path) -> str | None:
    """Why `fmt` cannot be exported from the model folder `source` ("<engine> <version>: <what is missing> for
    <architecture>"), or None."""
    return next(filter(None, (limit.reason(fmt, source) for limit in ARCHITECTURE_LIMITS)), None)
