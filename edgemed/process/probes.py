"""Machine and process probes: the copy bandwidth of this machine, resident memory of a process tree."""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable
from typing import Any

import psutil


def copy_bandwidth(size_bytes: int = 256 * 2**20, repeats: int = 5) -> dict[str, Any]:
    """Best-of-`repeats` numpy memcpy of a large buffer, counted STREAM-style (bytes read + bytes written).

    The buffer shrinks on machines with little free memory (each of the two buffers stays under 1/8 of it).
    """
    import numpy as np

    size = int(min(size_bytes, psutil.virtual_memory().available // 8))
    size -= size % 4096
    src = np.ones(size, dtype=np.uint8)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # fault the pages in before timing
    best = float("inf")
    for _ in range(max(repeats, 1)):
        start = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - start)
    return {
        "buffer_bytes": size,
        "repeats": repeats,
        "best_s": best,
        "gbps": 2 * size / best / 1e9,
        "method": "numpy copyto, one thread, best of repeats; read + write bytes per second (STREAM copy)",
    }


def rss_bytes(proc: psutil.Process | None = None) -> int:
    """Resident memory of one process (this one by default)."""
    return (proc or psutil.Process()).memory_info().rss


def maxrss_to_bytes(ru_maxrss: int) -> int:
    """ru_maxrss is kilobytes on Linux and bytes on macOS."""
    return int(ru_maxrss) if sys.platform == "darwin" else int(ru_maxrss) * 1024


def self_peak_rss_bytes() -> int:
    """This process's peak RSS: VmHWM of its own address space on Linux (unaffected by the parent), else ru_maxrss."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return maxrss_to_bytes(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


class TreeSampler:
    """Peak summed RSS of a process and its descendants; the descendant list is refreshed every `refresh_s`.

    Scanning for children walks /proc, so it runs rarely; reading each known process's RSS is cheap. `on_refresh`
    is given the tree after each scan (the 1B scale check names the processes there).
    """

    def __init__(self, pid: int, refresh_s: float = 0.5, include_root: bool = True,
                 on_refresh: Callable[[list[psutil.Process]], None] | None = None):
        self.root = psutil.Process(pid)
        self.refresh_s = refresh_s
        self.include_root = include_root
        self.on_refresh = on_refresh
        self._procs: list[psutil.Process] = [self.root] if include_root else []
        self._last_refresh = 0.0
        self.peak = 0
        self.samples = 0

    def rss_by_pid(self) -> dict[int, int]:
        """Each process's RSS now (the tree as of the latest scan, rescanned when `refresh_s` has passed)."""
        now = time.monotonic()
        if not self._procs or now - self._last_refresh >= self.refresh_s:
            try:
                kids = self.root.children(recursive=True)
            except psutil.Error:
                kids = []
            self._procs = [self.root, *kids] if self.include_root else kids
            self._last_refresh = now
            if self.on_refresh is not None:
                self.on_refresh(self._procs)
        rss: dict[int, int] = {}
        for proc in self._procs:
            try:
                rss[proc.pid] = proc.memory_info().rss
            except psutil.Error:
                continue
        return rss

    def sample(self) -> int:
        total = sum(self.rss_by_pid().values())
        self.peak = max(self.peak, total)
        self.samples += 1
        return total

    @property
    def procs(self) -> list[psutil.Process]:
        """The processes sampled last (the tree as of the latest refresh)."""
        return self._procs
