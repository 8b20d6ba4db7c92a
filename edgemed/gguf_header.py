"""A GGUF file's header, read and checked without llama.cpp: magic, version, every key/value, every tensor's
shape and type, and that each tensor's data lies inside the file.

llama.cpp reading a malformed header can take a huge allocation or a native crash; reading it here first turns a
truncated, garbled or foreign file into one line naming the file (exit 2) before any work. Only the standard
library: a gguf-only install (a board) has it. Model files and importance matrices (``general.type = imatrix``)
are both GGUF.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path
from typing import Any

from edgemed.errors import EdgemedError

MAGIC = b"GGUF"
VERSIONS = (2, 3)
MAX_DIMS = 4
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
STRING, ARRAY = 8, 9
# ggml type id -> (elements per block, bytes per block), as ggml defines them (gguf-py GGML_QUANT_SIZES)
BLOCKS = {0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34), 9: (32, 40),
          10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 15: (256, 292),
          16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110), 22: (256, 82),
          23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8), 29: (256, 56), 30: (1, 2),
          34: (256, 54), 35: (256, 66), 39: (32, 17), 40: (64, 36), 41: (128, 18)}


class _Bad(Exception):
    """What is wrong with the header (turned into an EdgemedError naming the file)."""


class _Cursor:
    def __init__(self, buf, size: int):
        self.buf, self.size, self.pos = buf, size, 0

    def take(self, fmt: str) -> Any:
        n = struct.calcsize(fmt)
        if self.pos + n > self.size:
            raise _Bad(f"it ends inside its header (byte {self.pos} of {self.size})")
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return value

    def string(self) -> str:
        n = self.take("<Q")
        if n > self.size - self.pos:
            raise _Bad(f"a string of {n} bytes at byte {self.pos} runs past the end of the file")
        raw = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return raw.decode("utf-8", errors="replace")

    def value(self, vtype: int, keep: bool) -> Any:
        if vtype in _SCALARS:
            return self.take(_SCALARS[vtype])
        if vtype == STRING:
            return self.string()
        if vtype != ARRAY:
            raise _Bad(f"unknown value type {vtype} at byte {self.pos}")
        etype, count = self.take("<I"), self.take("<Q")
        if etype in _SCALARS:
            width = struct.calcsize(_SCALARS[etype])
            if count * width > self.size - self.pos:
                raise _Bad(f"an array of {count} values at byte {self.pos} runs past the end of the file")
            start = self.pos
            self.pos += count * width
            return list(struct.unpack_from(f"<{count}{_SCALARS[etype][1]}", self.buf, start)) if keep else None
        if count > self.size - self.pos:
            raise _Bad(f"an array of {count} values at byte {self.pos} runs past the end of the file")
        if etype == STRING and not keep:  # a vocabulary: lengths only, nothing decoded
            for _ in range(count):
                n = self.take("<Q")
                if n > self.size - self.pos:
                    raise _Bad(f"a string of {n} bytes at byte {self.pos} runs past the end of the file")
                self.pos += n
            return None
        items = [self.value(etype, keep) for _ in range(count)]
        return items if keep else None


def read_header(path: Path, keep_arrays: tuple[str, ...] = ()) -> dict[str, Any]:
    """{"version", "kv", "tensors": [{"name", "shape", "type", "offset", "bytes"}], "data_start", "size"} of a GGUF
    file; arrays are kept only for the keys in `keep_arrays`. Raises EdgemedError naming the file when it is not
    a complete GGUF file."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, 2)
            if size < 24:
                raise EdgemedError(f"{path} is not a GGUF file ({size} bytes, shorter than a GGUF header); "
                                   "re-export it")
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                if buf[:4] != MAGIC:
                    raise EdgemedError(f"{path} is not a GGUF file (bad magic); re-export it")
                return _parse(_Cursor(buf, size), keep_arrays)
    except _Bad as exc:
        raise EdgemedError(f"{path} has a malformed GGUF header: {exc}; the file is truncated or corrupt, re-export "
                           "it") from None
    except OSError as exc:
        raise EdgemedError(f"{path} cannot be read ({exc.strerror or exc}); check the path") from None


def _parse(cur: _Cursor, keep_arrays: tuple[str, ...]) -> dict[str, Any]:
    cur.take("<I")  # magic
    version = cur.take("<I")
    if version not in VERSIONS:
        raise _Bad(f"GGUF version {version}, not one llama.cpp reads ({', '.join(map(str, VERSIONS))})")
    n_tensors, n_kv = cur.take("<Q"), cur.take("<Q")
    if n_tensors > cur.size // 24 or n_kv > cur.size // 12:
        raise _Bad(f"it claims {n_tensors} tensors and {n_kv} keys, more than {cur.size} bytes can hold")
    kv: dict[str, Any] = {}
    for _ in range(n_kv):
        key = cur.string()
        vtype = cur.take("<I")
        kv[key] = cur.value(vtype, keep=vtype != ARRAY or key in keep_arrays)
    tensors = []
    for _ in range(n_tensors):
        name = cur.string()
        n_dims = cur.take("<I")
        if not 1 <= n_dims <= MAX_DIMS:
            raise _Bad(f"tensor {name!r} has {n_dims} dimensions")
        shape = [cur.take("<Q") for _ in range(n_dims)]
        ttype, offset = cur.take("<I"), cur.take("<Q")
        tensors.append({"name": name, "shape": shape, "type": ttype, "offset": offset, "bytes": _nbytes(shape, ttype)})
    align = kv.get("general.alignment", 32)
    if not isinstance(align, int) or align < 1:
        raise _Bad(f"general.alignment is {align!r}")
    data_start = -(-cur.pos // align) * align
    for t in tensors:
        end = data_start + t["offset"] + (t["bytes"] or 0)
        if end > cur.size:
            raise _Bad(f"tensor {t['name']!r} ends at byte {end}, past the end of the file ({cur.size} bytes)")
    return {"version": version, "kv": kv, "tensors": tensors, "data_start": data_start, "size": cur.size}


def _nbytes(shape: list[int], ttype: int) -> int | None:
    """Bytes of a tensor's data (None for a type this table does not know: its size is not checked)."""
    if ttype not in BLOCKS:
        return None
    block, nbytes = BLOCKS[ttype]
    n = 1
    for d in shape:
        n *= d
    if shape[0] % block:
        raise _Bad(f"a tensor of type {ttype} has rows of {shape[0]}, not a multiple of its block of {block}")
    return n // block * nbytes
