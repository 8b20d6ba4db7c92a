"""``edgemed merge``: being built (see its issue)."""

from __future__ import annotations

from edgemed.errors import EdgemedError


def merge() -> int:
    """Not built yet."""
    raise EdgemedError("edgemed merge is not built yet")
