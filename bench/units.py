"""Parse the quantities users type: sizes ("4GB", "512MiB"), durations ("800ms", "2s") and ratios ("10%")."""

from __future__ import annotations

import math
import re

from edgemed.errors import EdgemedError

_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3, "t": 1000**4, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}
_TIME_UNITS = {"": 1e-3, "ms": 1e-3, "s": 1.0, "us": 1e-6, "min": 60.0}
_NUMBER = r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*"


def parse_size(text: str | int | float, what: str = "size") -> int:
    """Bytes in a size such as ``4GB`` (decimal), ``3.5GiB`` (binary) or ``800MB``; a bare number is bytes."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        return int(text)
    m = re.fullmatch(_NUMBER + r"([a-zA-Z]*)\s*", str(text))
    unit = m.group(2).lower() if m else None
    if not m or unit not in _SIZE_UNITS:
        raise EdgemedError(f"{what} '{text}' is not a size; write it like 4GB, 3.5GiB or 800MB")
    return int(float(m.group(1)) * _SIZE_UNITS[unit])


def parse_ms(text: str | int | float, what: str = "duration") -> float:
    """Milliseconds in a duration such as ``800ms``, ``1.5s`` or ``800`` (a bare number is milliseconds)."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        return float(text)
    m = re.fullmatch(_NUMBER + r"([a-zA-Z]*)\s*", str(text))
    unit = m.group(2).lower() if m else None
    if not m or unit not in _TIME_UNITS:
        raise EdgemedError(f"{what} '{text}' is not a duration; write it like 800ms, 1.5s or 800")
    return float(m.group(1)) * _TIME_UNITS[unit] * 1000.0


def parse_ratio(text: str | int | float, what: str = "tolerance") -> float:
    """A fraction from ``10%`` or ``0.1``."""
    raw = str(text).strip()
    try:
        value = float(raw[:-1]) / 100.0 if raw.endswith("%") else float(raw)
    except ValueError:
        raise EdgemedError(f"{what} '{text}' is not a ratio; write it like 10% or 0.1") from None
    if not (math.isfinite(value) and value >= 0.0):
        raise EdgemedError(f"{what} '{text}' must be a finite ratio of 0 or more; write it like 10% or 0.1")
    return value

