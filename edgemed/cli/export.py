"""``edgemed export``: being built (see its issue)."""

from __future__ import annotations

from edgemed.errors import EdgemedError


def export() -> int:
    """Not built yet."""
    raise EdgemedError("edgemed export is not built yet")
