"""The search space of ``edgemed tune``: a declared grid (``tune_space.toml``, or ``--space FILE``) expanded into
candidates, each a format plus exporter settings with a readable id and a cache key.

Nothing here is hand-listed: the types, override recipes, block and group sizes all come from the TOML file (see
its header for the schema). A candidate that cannot be made or run with this install (a missing extra, a type
llama.cpp refuses) is kept with the reason, so the tune records it as skipped instead of dropping it silently.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from edgemed import registry
from edgemed.errors import EdgemedError

# --runtimes name -> runtime (gguf -> llama.cpp, onnx -> onnxruntime, openvino): the registry's RuntimeSpec.tune_name
RUNTIMES = {s.tune_name: s.name for s in registry.RUNTIMES.values() if s.tune_name}
GGUF_KEYS = ("types", "imatrix", "overrides")
TENSOR_FLAGS = {"output": "output_tensor_type", "token_embd": "token_embedding_type"}  # the rest: tensor_types


@dataclass
class Candidate:
    """One point of the grid: a format and its exporter settings."""

    id: str
    format: str
    runtime: str  # the --runtimes name (gguf, onnx, openvino)
    settings: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)  # what the grid said (overrides as levels), for the record
    skip: str | None = None  # why it cannot be made or run here

    def key(self, source_sha256: str) -> str:
        """The cache key: the merged model's sha256, the format and the settings."""
        blob = json.dumps([source_sha256, self.format, self.settings], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def default_space_text() -> str:
    return resources.files("edgemed.bench.tune").joinpath("tune_space.toml").read_text(encoding="utf-8")


def load_space(path: Path | None) -> dict[str, Any]:
    """The grid as parsed TOML; a missing or malformed file is bad input (EdgemedError naming it)."""
    from edgemed.bench.gate.budget import tomllib_module

    tomllib = tomllib_module()
    where = str(path) if path is not None else "the bundled tune_space.toml"
    try:
        text = default_space_text() if path is None else Path(path).read_text(encoding="utf-8")
        space = tomllib.loads(text)
    except (OSError, UnicodeDecodeError) as exc:
        raise EdgemedError(f"--space {path}: cannot be read ({exc}); give a TOML file like the bundled "
                           "tune_space.toml") from None
    except tomllib.TOMLDecodeError as exc:
        raise EdgemedError(f"--space {where}: not valid TOML ({exc})") from None
    unknown = set(space) - {*RUNTIMES, "ladder"}
    if unknown:
        raise EdgemedError(f"--space {where}: unknown table(s) {', '.join(sorted(unknown))}; known: ladder, "
                           f"{', '.join(RUNTIMES)}")
    for name in RUNTIMES:
        tables = space.get(name, [])
        if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
            raise EdgemedError(f"--space {where}: '{name}' must be an array of tables ([[{name}]])")
    return space


def _axes(table: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """The product of a table's list values (a scalar is one value)."""
    keys = sorted(table)
    values = []
    for k in keys:
        v = table[k]
        if isinstance(v, list) and not v:
            raise EdgemedError(f"--space {where}: '{k}' is an empty list; give at least one value")
        values.append(v if isinstance(v, list) else [v])
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*values)]


def _tag(value: Any) -> str:
    return str(value).lower() if not isinstance(value, float) else f"{value:g}"


def expand(space: dict[str, Any], runtimes: list[str], where: str = "the bundled tune_space.toml") -> list[Candidate]:
    """Every candidate of the grid for the chosen runtimes, in the file's order, duplicates dropped."""
    out: dict[tuple[str, str], Candidate] = {}
    for runtime in runtimes:
        for n, table in enumerate(space.get(runtime, []), start=1):
            here = f"{where} [[{runtime}]] #{n}"
            made = _gguf_table(table, space, here) if runtime == "gguf" else _plain_table(runtime, table, here)
            for cand in made:
                out.setdefault((cand.format, json.dumps(cand.settings, sort_keys=True)), cand)
    return list(out.values())


def _plain_table(runtime: str, table: dict[str, Any], where: str) -> list[Candidate]:
    if "format" not in table:
        raise EdgemedError(f"--space {where}: give the format (e.g. format = \"onnx-int4\")")
    cands = []
    for point in _axes(table, where):
        fmt = str(point.pop("format"))
        tags = [f"{k}-{_tag(v)}" for k, v in sorted(point.items())]
        cands.append(Candidate(id="+".join([fmt, *tags]), format=fmt, runtime=runtime, settings=point,
                               recipe=dict(point)))
    return cands


def _gguf_table(table: dict[str, Any], space: dict[str, Any], where: str) -> list[Candidate]:
    from edgemed.export.gguf.types import format_name, refusal

    if "types" not in table:
        raise EdgemedError(f"--space {where}: give the llama.cpp types (e.g. types = [\"q4_0\", \"q4_k_m\"])")
    ladder = space.get("ladder") or []
    extra = {k: v for k, v in table.items() if k not in GGUF_KEYS}
    grid = {"types": table["types"], "imatrix": table.get("imatrix", [False]),
            "overrides": table.get("overrides", [{}]), **extra}
    if not isinstance(grid["overrides"], list):
        grid["overrides"] = [grid["overrides"]]
    cands = []
    for point in _axes(grid, where):
        ftype, calibrated, recipe = str(point.pop("types")).lower(), point.pop("imatrix"), point.pop("overrides")
        if not isinstance(calibrated, bool) or not isinstance(recipe, dict):
            raise EdgemedError(f"--space {where}: imatrix takes true/false and overrides a list of tables, e.g. "
                               "overrides = [{}, { output = 1 }]")
        fmt = format_name(ftype, calibrated)
        settings, tags = dict(point), []
        skip = refusal(ftype, calibrated)
        for tensor, level in sorted(recipe.items()):
            try:
                tname = override_type(ftype, level, ladder, f"{where}: overrides {tensor}")
            except LookupError as exc:  # off the ladder: kept, and recorded as skipped with the reason
                skip = skip or str(exc)
                tags.append(f"{tensor}{level:+d}")
                settings.setdefault("unmade", []).append(f"{tensor}{level:+d}")
                continue
            tags.append(f"{tensor}-{tname}")
            if tensor in TENSOR_FLAGS:
                settings[TENSOR_FLAGS[tensor]] = tname
            else:
                settings.setdefault("tensor_types", []).append(f"{tensor}={tname}")
        ident = "+".join([fmt, *tags, *(f"{k}-{_tag(v)}" for k, v in sorted(point.items()))])
        cands.append(Candidate(id=ident, format=fmt, runtime="gguf", settings=settings,
                               recipe={"type": ftype, "imatrix": calibrated, "overrides": recipe, **point},
                               skip=skip))
    return cands


def bits_per_weight(ggml_type: str) -> float | None:
    """Bits per weight of a ggml tensor type (from the gguf package's block sizes); None when unknown."""
    try:
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
    except ImportError:
        return None
    try:
        block, size = GGML_QUANT_SIZES[GGMLQuantizationType[ggml_type.upper()]]
    except KeyError:
        return None
    return 8 * size / block


def main_tensor_type(ftype: str) -> str:
    """The ggml type most tensors of a llama.cpp file type get: q4_k_m -> q4_k, q4_0 -> q4_0."""
    parts = ftype.split("_")
    return "_".join(parts[:-1]) if len(parts) > 2 and parts[-1] in ("s", "m", "l", "xs", "xxs") and \
        parts[-2] == "k" else ftype


def override_type(ftype: str, level: Any, ladder: list[str], where: str) -> str:
    """The ggml type `level` rungs above `ftype`'s rung of `ladder`, or `level` itself when it names a type.
    Bad values raise EdgemedError; a rung beyond the ladder or a type unknown here raises LookupError (skip)."""
    if isinstance(level, str):
        if bits_per_weight(level) is None:
            raise EdgemedError(f"--space {where}: '{level}' is not a ggml tensor type (e.g. q8_0, q6_k, f16)")
        return level.lower()
    if not isinstance(level, int) or isinstance(level, bool):
        raise EdgemedError(f"--space {where}: give a number of ladder rungs (1, 2, 0, -1) or a ggml type, "
                           f"not {level!r}")
    if not ladder:
        raise EdgemedError(f"--space {where}: rungs need a ladder (ladder = [\"q4_0\", \"q5_0\", \"q8_0\", \"f16\"])")
    bits = [bits_per_weight(t) for t in ladder]
    if any(b is None for b in bits) or bits != sorted(bits):
        raise EdgemedError(f"--space: ladder {ladder} must list ggml tensor types from the fewest bits per weight up")
    base = bits_per_weight(main_tensor_type(ftype))
    if base is None:
        raise LookupError(f"{ftype}: its bits per weight are unknown to the gguf package, so rungs cannot be counted")
    rung = max((i for i, b in enumerate(bits) if b is not None and b <= base), default=-1)
    target = rung + level
    if not 0 <= target < len(ladder):
        raise LookupError(f"{ftype} {'+' if level >= 0 else ''}{level} rungs is off the ladder {ladder}")
    return ladder[target]


def check_space(path: Path | None, runtimes: list[str]) -> tuple[dict[str, Any], list[Candidate], str]:
    """The grid of `path` (None: the bundled one) for `runtimes`, parsed, expanded and every value checked: (the
    parsed TOML, its candidates with ``skip`` set where this install cannot make or run one, where it came from).
    Bad input (a file that does not parse, an unknown key, table or format, a value the exporter refuses) raises
    EdgemedError naming the table and the value: called by TuneConfig.validate, before any work."""
    where = str(path) if path else "the bundled tune_space.toml"
    space = load_space(path)
    cands = expand(space, runtimes, where)
    if not cands:
        raise EdgemedError(f"--space {where} has no candidate for --runtimes {','.join(runtimes)}; add tables for "
                           "them or choose other runtimes")
    check_available(cands, where)
    return space, cands, where


def _unknown_format(name: str, exc: EdgemedError) -> str | None:
    """None when `name` is a gguf-<type> that only a missing llama.cpp leaves unknown (skipped, with the install
    message), else the error to raise (an unknown name, with the registry's did-you-mean)."""
    from edgemed.export.gguf.types import FILE_TYPES, parse_format
    from edgemed.registry import can_run, spec_of

    gguf = parse_format(name)
    if gguf is not None and gguf.ftype in FILE_TYPES and can_run(spec_of(name)):
        return None
    return str(exc)


def check_available(cands: list[Candidate], where: str = "the bundled tune_space.toml") -> None:
    """Set ``skip`` on each candidate this install cannot export or run (the exporter's own reason); raise
    EdgemedError (exit 2) for a format no install knows (with a did-you-mean) and for settings the exporter refuses
    (unknown keys, values out of range: its ``check``), whether or not it can run here."""
    from edgemed.registry import can_run, get_format, install_message, load_object, spec_of

    for c in cands:
        if c.skip and c.runtime == "gguf":
            continue  # llama.cpp refuses the type (or the rung is off the ladder): recorded with the reason
        try:
            spec = get_format(c.format)
        except EdgemedError as exc:
            problem = _unknown_format(c.format, exc)
            if problem:
                raise EdgemedError(f"--space {where} [[{c.runtime}]]: {problem}") from None
            c.skip = f"cannot be run with this install: {can_run(spec_of(c.format))}"
            continue
        if RUNTIMES[c.runtime] != spec.runtime:
            raise EdgemedError(f"--space: {c.format} is a {spec.runtime} format, listed under [[{c.runtime}]]; move it "
                               f"to the [[{next(k for k, v in RUNTIMES.items() if v == spec.runtime)}]] tables")
        try:
            exporter = load_object(spec.exporter)(c.format, **c.settings)
            exporter.check()
        except ImportError as exc:
            c.skip = f"exporter not importable here ({exc}); {install_message([exc.name or str(exc)], spec.extra)}"
            continue
        except EdgemedError as exc:
            raise EdgemedError(f"--space {where}: {c.id}: {exc}; fix the value in the grid") from None
        if c.skip:
            continue
        why = exporter.available()
        run = can_run(spec)
        if why:
            c.skip = f"cannot be exported with this install: {why}"
        elif run:
            c.skip = f"cannot be run with this install: {run}"
