"""Was a child killed by the kernel's OOM killer? :func:`edgemed.process.child.run_child` reads the kernel's OOM-kill
counters before the child starts and after it ended: a child that died by SIGKILL while one of them rose was
killed for memory; a SIGKILL without a rise is a plain crash. The counters: ``oom_kill`` in /proc/vmstat (every
OOM kill on the machine, memory cgroups' included) and that of this process's memory cgroup, which its children
start in (cgroup v1 ``memory.oom_control``, v2 ``memory.events``).
"""

from __future__ import annotations

import os
from pathlib import Path

from edgemed.fsutil import fmt_bytes

VMSTAT = Path("/proc/vmstat")


def kill_counts() -> dict[str, int]:
    """Each readable OOM-kill counter, by the file it was read from; empty where none is readable."""
    counts: dict[str, int] = {}
    for path in [VMSTAT] + [d / name for d, name in memory_cgroups()]:
        value = _field(path, "oom_kill")
        if value is not None:
            counts[str(path)] = value
    return counts


def killed_for_memory(before: dict[str, int], after: dict[str, int]) -> bool | None:
    """Whether an OOM-kill counter rose between the two readings; None when no counter was read both times."""
    common = [k for k in before if k in after]
    if not common:
        return None
    return any(after[k] > before[k] for k in common)


def describe(peak_rss_sampled: int | None = None, peak_rss_kernel: int | None = None) -> str:
    """``killed: out of memory (...)``: the child's peak RSS where known, the machine's memory and a lower memory
    limit of this process's cgroup, if any."""
    parts = ["the kernel's OOM killer"]
    peaks = []
    if peak_rss_sampled:
        peaks.append(f"{fmt_bytes(peak_rss_sampled)} sampled")
    if peak_rss_kernel:
        peaks.append(f"{fmt_bytes(peak_rss_kernel)} by the kernel's count")
    if peaks:
        parts.append("peak RSS " + ", ".join(peaks))
    total = machine_memory_bytes()
    if total:
        where = f"this machine has {fmt_bytes(total)}"
        limit = cgroup_limit_bytes()
        if limit and limit < total:
            where += f", its memory cgroup allows {fmt_bytes(limit)}"
        parts.append(where)
    return f"killed: out of memory ({'; '.join(parts)})"


def machine_memory_bytes() -> int | None:
    """Physical memory of the machine."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None


def cgroup_limit_bytes() -> int | None:
    """The lowest memory limit over this process's memory cgroup and its ancestors (None: unlimited or unknown)."""
    for folder, name in memory_cgroups():
        if name == "memory.oom_control":  # v1: memory.stat has the hierarchy's limit
            return _plausible(_field(folder / "memory.stat", "hierarchical_memory_limit"))
        limits = []
        for d in [folder, *folder.parents]:
            try:
                text = (d / "memory.max").read_text().strip()
            except OSError:
                break  # above the mount (or the root cgroup, which has none)
            if text.isdigit():
                limits.append(int(text))
        return min(limits) if limits else None
    return None


def _plausible(limit: int | None) -> int | None:
    return limit if limit is not None and limit < 1 << 60 else None  # v1 writes "unlimited" as ~2**63


def _field(path: Path, key: str) -> int | None:
    """The integer after `key` in a ``key value`` file, else None."""
    try:
        text = path.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value.strip())
    return None


def memory_cgroups() -> list[tuple[Path, str]]:
    """(folder, counter file) of this process's memory cgroup: v1 ``memory.oom_control``, v2 ``memory.events``."""
    try:
        groups = Path("/proc/self/cgroup").read_text().splitlines()
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    v1 = v2 = None
    for line in groups:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if "memory" in controllers.split(","):
            v1 = path
        elif controllers == "":
            v2 = path
    found: list[tuple[Path, str]] = []
    for line in mounts:
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        root, point, fstype, options = fields[3], fields[4], tail[0], tail[2].split(",")
        if fstype == "cgroup" and "memory" in options and v1 is not None:
            found.append((_inside(point, root, v1), "memory.oom_control"))
        elif fstype == "cgroup2" and v2 is not None:
            found.append((_inside(point, root, v2), "memory.events"))
    return [(d, name) for d, name in found if (d / name).is_file()]


def _inside(mount_point: str, mount_root: str, path: str) -> Path:
    """The folder of cgroup `path` under a mount of the hierarchy's `mount_root`."""
    rel = path[len(mount_root):] if mount_root != "/" and path.startswith(mount_root) else path
    return Path(mount_point.replace("\\040", " ")) / rel.lstrip("/")
