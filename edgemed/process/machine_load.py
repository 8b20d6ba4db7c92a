"""Was the machine quiet while an artifact was measured? (pyperf warns about unstable systems; this measures.)

While the artifact's process runs, the parent reads two things about it every ~1 s:

- **its own run-queue wait**: for every thread of its process tree, the kernel's schedstat
  (``/proc/PID/task/TID/schedstat``: CPU time, time spent runnable but waiting for a CPU). Its share of the
  runnable time is how much other processes held back this measurement: 0 when it always had a CPU, whatever
  else ran on the other cores. This judges other processes' CPU against what the measurement needed.
- **other processes' CPU use**, in cores: the machine's CPU time (``/proc/stat``) less the artifact's own (its
  process tree; at the end the kernel's exact rusage of it) and the harness's sampling. Steal time (a hypervisor
  giving the vCPU to someone else) and the load average are recorded beside it.

A result is flagged **busy** when the measurement's threads waited for a CPU more than 5% of the time they were
runnable (on average, or in 3 or more ~1 s windows), or steal time exceeded 5%. Where schedstat cannot be read
(not Linux, a kernel without it), the flag falls back on capacity: other processes used more cores than the
machine had beyond the bench's threads, plus ``0.15``. Timing figures of a busy result are not comparable with a
quiet one; bench marks them, and a budget they break is inconclusive rather than failed.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import psutil

BUSY_CORES = 0.15  # capacity fallback: other processes' cores beyond those the bench left free
BUSY_WAIT = 0.05  # share of the measurement's runnable time spent waiting for a CPU
BUSY_STEAL = 0.05
MIN_RUNNABLE_S = 0.05  # a window in which the measurement was runnable for less than this is not judged
WINDOW_S = 1.0
SCHEDSTAT_S = 0.2  # how often the measurement's threads are read (their last reads before it ends count)
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


def thread_schedstats(pid: int) -> dict[int, tuple[float, float]] | None:
    """tid -> (CPU seconds, run-queue wait seconds) of every thread of process `pid`, from the kernel's schedstat;
    None where it cannot be read (not Linux, no schedstat, the process gone)."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    out: dict[int, tuple[float, float]] = {}
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", encoding="ascii") as fh:
                run_ns, wait_ns = fh.read().split()[:2]
            out[int(tid)] = (int(run_ns) / 1e9, int(wait_ns) / 1e9)
        except (OSError, ValueError):
            continue  # a thread that just exited
    return out


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
    threshold_cores: float | None = None  # the capacity fallback's threshold (no schedstat)
    needed_cores: float | None = None  # what the measurement needed: its threads
    wait_share: float | None = None  # its threads' run-queue wait / their runnable time (None: not readable)
    wait_share_max: float | None = None  # the same in the worst ~1 s window
    runnable_s: float | None = None  # its threads' CPU + wait seconds seen
    artifact_cores_mean: float | None = None
    harness_cores_mean: float | None = None
    logical_cpus: int | None = None
    loadavg_start: list[float] = field(default_factory=list)
    loadavg_end: list[float] = field(default_factory=list)
    wall_s: float | None = None
    method: str = ("busy: the artifact's threads' run-queue wait (/proc/PID/task/TID/schedstat) and steal; others: "
                   "/proc/stat busy time - the artifact's process tree (rusage) - the bench parent's own")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def short(self) -> str:
        if self.other_cores_mean is None:
            return "not measured"
        text = f"others {self.other_cores_mean:.2f} cores (max {self.other_cores_max or 0:.2f})"
        if self.wait_share is not None:
            text += f", waited for a CPU {self.wait_share:.0%} of its runnable time"
        if self.steal_fraction:
            text += f", steal {self.steal_fraction:.0%}"
        return text


class LoadMonitor:
    """Call :meth:`sample` often (it acts every ~1 s) while the child runs, then :meth:`finish` once."""

    def __init__(self, threads: int | None):
        self.cpus = psutil.cpu_count(logical=True) or 1
        self.needed = min(threads or self.cpus, self.cpus)
        self.threshold = BUSY_CORES + max(self.cpus - self.needed, 0)
        self.me = psutil.Process()
        self.start_wall = time.monotonic()
        self.start_stat = machine_cpu_seconds()
        self.start_self = _cpu_seconds([self.me])
        self.loadavg_start = list(os.getloadavg())
        self._last = (self.start_wall, self.start_stat, 0.0, self.start_self)
        self.tree_cpu = 0.0
        self.window_max = 0.0
        self.busy_windows = 0  # capacity fallback: windows with other processes above the threshold
        self.threads_seen: dict[tuple[int, int], tuple[float, float]] = {}  # (pid, tid) -> (cpu, wait) last read
        self.schedstat = False  # read at least once
        self.run_s = self.wait_s = 0.0
        self.window_run = self.window_wait = 0.0
        self.last_sched = self.start_wall
        self.wait_max = 0.0
        self.wait_windows = 0  # windows in which the measurement waited more than BUSY_WAIT

    def _waits(self, procs: list[psutil.Process]) -> tuple[float, float]:
        """CPU and run-queue wait seconds the process tree's threads added since the last read (a thread first
        seen counts from its start: the tree is watched from its own start)."""
        run = wait = 0.0
        for p in procs:
            stats = thread_schedstats(p.pid)
            if stats is None:
                continue
            self.schedstat = True
            for tid, (cpu, waited) in stats.items():
                last_cpu, last_wait = self.threads_seen.get((p.pid, tid), (0.0, 0.0))
                run += max(cpu - last_cpu, 0.0)
                wait += max(waited - last_wait, 0.0)
                self.threads_seen[(p.pid, tid)] = (cpu, waited)
        return run, wait

    def sample(self, procs: list[psutil.Process]) -> None:
        now = time.monotonic()
        if now - self.last_sched >= SCHEDSTAT_S:
            run, wait = self._waits(procs)
            self.window_run += run
            self.window_wait += wait
            self.last_sched = now
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
        run, wait = self.window_run, self.window_wait
        self.run_s += run
        self.wait_s += wait
        self.window_run = self.window_wait = 0.0
        if run + wait >= MIN_RUNNABLE_S:
            share = wait / (run + wait)
            self.wait_max = max(self.wait_max, share)
            self.wait_windows += share > BUSY_WAIT
        self._last = (now, stat, tree, own)

    def finish(self, child_cpu_s: float | None) -> MachineLoad:
        wall = time.monotonic() - self.start_wall
        load = MachineLoad(logical_cpus=self.cpus, threshold_cores=self.threshold, needed_cores=self.needed,
                           wall_s=wall, loadavg_start=self.loadavg_start, loadavg_end=list(os.getloadavg()))
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
        others = f"other processes used {load.other_cores_mean:.2f} cores beside the {self.needed} it needed"
        reasons = []
        self.run_s += self.window_run  # the last, partial window
        self.wait_s += self.window_wait
        self.window_run = self.window_wait = 0.0
        runnable = self.run_s + self.wait_s
        if self.schedstat and runnable >= MIN_RUNNABLE_S:
            load.runnable_s = runnable
            load.wait_share = self.wait_s / runnable
            load.wait_share_max = max(self.wait_max, load.wait_share)
            load.busy_windows = self.wait_windows
            if load.wait_share > BUSY_WAIT:
                reasons.append(f"it waited for a CPU {load.wait_share:.0%} of the time it was runnable ({others})")
            elif self.wait_windows >= SUSTAINED_WINDOWS:
                reasons.append(f"it waited for a CPU more than {BUSY_WAIT:.0%} of its runnable time in "
                               f"{self.wait_windows} ~1 s windows (worst {load.wait_share_max:.0%}; {others})")
        elif load.other_cores_mean > self.threshold:
            reasons.append(f"{others} on average, more than the {self.cpus} CPUs hold (threshold "
                           f"{self.threshold:.2f}; run-queue wait not readable)")
        elif self.busy_windows >= SUSTAINED_WINDOWS:
            reasons.append(f"other processes used more than {self.threshold:.2f} cores for {self.busy_windows} s "
                           f"(peak {load.other_cores_max:.2f}; run-queue wait not readable)")
        if load.steal_fraction > BUSY_STEAL:
            reasons.append(f"steal time {load.steal_fraction:.0%} (the hypervisor ran someone else)")
        load.busy = bool(reasons)
        load.reason = "; ".join(reasons) if reasons else "quiet"
        return load
