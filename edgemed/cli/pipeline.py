"""``edgemed pipeline``: being built (see its issue)."""

from __future__ import annotations

from edgemed.errors import EdgemedError


def pipeline() -> int:
    """Not built yet."""
    raise EdgemedError("edgemed pipeline is not built yet")
