"""``edgemed train``: being built (see its issue)."""

from __future__ import annotations

from edgemed.errors import EdgemedError


def train() -> int:
    """Not built yet."""
    raise EdgemedError("edgemed train is not built yet")
