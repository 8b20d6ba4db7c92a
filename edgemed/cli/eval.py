"""``edgemed eval``: being built (see its issue)."""

from __future__ import annotations

from edgemed.errors import EdgemedError


def evaluate() -> int:
    """Not built yet."""
    raise EdgemedError("edgemed eval is not built yet")
