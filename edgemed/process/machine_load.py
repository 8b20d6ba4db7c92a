"""Was the machine quiet while an artifact was measured? (pyperf warns about unstable systems; this measures.)

While the artifact's process runs, the parent reads the machine's CPU time (``/proc/stat``) and the artifact's
own (its process tree; at the end the kernel's exact rusage of it). What is left, less the harness's own
sampling, is other processes' CPU use, in cores. Steal time (a hypervisor giving the vCPU to someone else)
and the load average are recorded beside it.

A result is flagged **busy** when other processes used, on average or in any ~1 s window for 3 s or more,
more than ``0.15`` cores beyond half of the cores the bench left free (threads < cores), or when steal time
exceeded 5%. On a 2-core machine benchmarked with 2 threads that is 0.15 cores: one spinning process anywhere
flags it. Timing figures of a busy result are not comparable with a quiet one; bench marks them.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import psutil

BUSY_CORES = 0.15
BUSY_STEAL = 0.05
WINDOW_S = 1.0
SUSTAINED_WINDOWS = 3


def machine_cpu_seconds() -> tuple[float, float, float] | None:
    """(busy, steal, total) CPU seconds of the whole machine since boot, or None off Linux."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            parts = fh.readline().split()
    except OSError:
        return None
    if not parts or parts[0] != "cpu":
        return None
    hz = os.sysconf("SC_CLK_TCK")
    v = [int(x) / hz for x in parts[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (v + [0.0] * 8)[:8]
    busy = user + nice + system + irq + softirq  # guest time is already inside user
    return busy, steal, busy + idle + iowait + steal


def _cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            continue
    return total


@dataclass
class MachineLoad:
    """Other processes' CPU use while one artifact was measured (cores = CPU seconds per wall second)."""

    busy: bool = False
    reason: str = ""
    other_cores_mean: float | None = None
    other_cores_max: float | None = None  # the busiest ~1 s window
    busy_windows: int = 0  # ~1 s windows above the threshold
    steal_fraction: float | None = None
    threshold_cores: float | None = None
    artifact_cores_mean: float | None = None
    harness_cores_mean: float | None = None
    logical_cpus: int | None = None
    loadavg_start: list[float] = field(default_factory=list)
    loadavg_end: list[float] = field(default_factory=list)
    wall_s: float | None = None
    method: str = "/proc/stat busy time - the artifact's process tree (rusage) - the bench parent's own"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def short(self) -> str:
        if self.other_cores_mean is None:
            return "not measured"
        text = f"others {self.other_cores_mean:.2f} cores (max {self.other_cores_max or 0:.2f})"
        if self.steal_fraction:
            text += f", steal {self.steal_fraction:.0%}"
        return text


class LoadMonitor:
    """Call :meth:`sample` often (it acts every ~1 s) while the child runs, then :meth:`finish` once."""

    def __init__(self, threads: int | None):
        self.cpus = psutil.cpu_count(logical=True) or 1
        spare = max(self.cpus - (threads or self.cpus), 0)
        self.threshold = BUSY_CORES + 0.5 * spare
        self.me = psutil.Process()
        self.start_wall = time.monotonic()
        self.start_stat = machine_cpu_seconds()
        self.start_self = _cpu_seconds([self.me])
        self.loadavg_start = list(os.getloadavg())
        self._last = (self.start_wall, self.start_stat, 0.0, self.start_self)
        self.tree_cpu = 0.0
        self.window_max = 0.0
        self.busy_windows = 0

    def sample(self, procs: list[psutil.Process]) -> None:
        now = time.monotonic()
        last_t, last_stat, last_tree, last_self = self._last
        if now - last_t < WINDOW_S:
            return
        stat = machine_cpu_seconds()
        tree = max(_cpu_seconds(procs), self.tree_cpu)  # a process that exited takes its seconds with it
        own = _cpu_seconds([self.me])
        self.tree_cpu = tree
        if stat is not None and last_stat is not None:
            others = (stat[0] - last_stat[0]) - (tree - last_tree) - (own - last_self)
            cores = max(others, 0.0) / (now - last_t)
            self.window_max = max(self.window_max, cores)
            self.busy_windows += cores > self.threshold
        self._last = (now, stat, tree, own)

    def finish(self, child_cpu_s: float | None) -> MachineLoad:
        wall = time.monotonic() - self.start_wall
        load = MachineLoad(logical_cpus=self.cpus, threshold_cores=self.threshold, wall_s=wall,
                           loadavg_start=self.loadavg_start, loadavg_end=list(os.getloadavg()))
        stat = machine_cpu_seconds()
        if stat is None or self.start_stat is None or wall <= 0:
            load.reason = "no /proc/stat: machine load not measured"
            return load
        child = child_cpu_s if child_cpu_s is not None else self.tree_cpu
        own = _cpu_seconds([self.me]) - self.start_self
        busy, steal, total = (a - b for a, b in zip(stat, self.start_stat, strict=True))
        load.other_cores_mean = max(busy - child - own, 0.0) / wall
        load.other_cores_max = max(self.window_max, load.other_cores_mean)
        load.busy_windows = self.busy_windows
        load.steal_fraction = steal / total if total > 0 else 0.0
        load.artifact_cores_mean = child / wall
        load.harness_cores_mean = own / wall
        reasons = []
        if load.other_cores_mean > self.threshold:
            reasons.append(f"other processes used {load.other_cores_mean:.2f} cores on average "
                           f"(threshold {self.threshold:.2f})")
        elif self.busy_windows >= SUSTAINED_WINDOWS:
            reasons.append(f"other processes used more than {self.threshold:.2f} cores for {self.busy_windows} s "
                           f"(peak {load.other_cores_max:.2f})")
        if load.steal_fraction > BUSY_STEAL:
            reasons.append(f"steal time {load.steal_fraction:.0%} (the hypervisor ran someone else)")
        load.busy = bool(reasons)
        load.reason = "; ".join(reasons) if reasons else "quiet"
        return load
