"""``edgemed report``: being built (see its issue)."""

from __future__ import annotations

from edgemed.errors import EdgemedError


def report() -> int:
    """Not built yet."""
    raise EdgemedError("edgemed report is not built yet")
