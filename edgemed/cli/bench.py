"""``edgemed bench``: being built (see its issue)."""

from __future__ import annotations

from edgemed.errors import EdgemedError


def bench() -> int:
    """Not built yet."""
    raise EdgemedError("edgemed bench is not built yet")
