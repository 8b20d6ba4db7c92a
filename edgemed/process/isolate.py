"""Run one bench worker in a fresh child process and measure it: memory sampled over its process tree, the
kernel's accounting of its peak RSS and CPU (through :mod:`edgemed.process.launch`), and the CPU every other
process used meanwhile. Running, timeouts and crash reporting are :mod:`edgemed.process.child`'s, shared with export.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgemed.process.child import ChildOutcome, run_child, tail
from edgemed.process.machine_load import LoadMonitor, MachineLoad
from edgemed.process.probes import TreeSampler, maxrss_to_bytes

__all__ = ["MeasuredOutcome", "measure_child", "tail"]


@dataclass
class MeasuredOutcome(ChildOutcome):
    peak_rss_sampled: int = 0
    samples: int = 0
    ru_maxrss: int | None = None  # bytes, the kernel's peak RSS of the command (wait4 in the launcher)
    interval_s: float = 0.02
    load: MachineLoad | None = None  # other processes' CPU use while it ran
    cpu_s: float | None = None  # the command's own CPU seconds (user + system, kernel accounting)

    def peak_rss(self) -> tuple[int | None, int | None]:
        return self.peak_rss_sampled or None, self.ru_maxrss or None


def measure_child(
    cmd: list[str],
    log_path: Path,
    timeout_s: float | None = None,
    env: dict[str, str] | None = None,
    interval_s: float = 0.02,
    on_tick: Callable[[], None] | None = None,
    tick_s: float = 0.5,
    threads: int | None = None,
) -> MeasuredOutcome:
    """Run `cmd` like :func:`edgemed.process.child.run_child`, measured. `cmd[0]` must be a path to an executable: it is
    started through the launcher so that its ``ru_maxrss`` is its own; `threads` are the command's (for the
    machine-load figure)."""
    log_path = Path(log_path)
    rusage_path = log_path.with_suffix(".rusage.json")
    rusage_path.unlink(missing_ok=True)
    launcher = [sys.executable, "-S", str(Path(__file__).with_name("launch.py")), str(rusage_path)]
    monitor = LoadMonitor(threads)
    samplers: list[TreeSampler] = []

    def watch(pid: int) -> Callable[[], None]:
        sampler = TreeSampler(pid, include_root=False)
        samplers.append(sampler)

        def poll() -> None:
            sampler.sample()
            monitor.sample(sampler.procs)

        return poll

    base = run_child([*launcher, *cmd], log_path, timeout_s=timeout_s, env=env, watch=watch, interval_s=interval_s,
                     on_tick=on_tick, tick_s=tick_s)
    rusage = _launcher_rusage(rusage_path)
    cpu_s = rusage["ru_utime"] + rusage["ru_stime"] if rusage else None
    sampler = samplers[0]
    return MeasuredOutcome(
        **vars(base), peak_rss_sampled=sampler.peak, samples=sampler.samples,
        ru_maxrss=maxrss_to_bytes(rusage["ru_maxrss"]) if rusage else None, interval_s=interval_s,
        load=monitor.finish(cpu_s), cpu_s=cpu_s,
    )


def _launcher_rusage(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
        return {k: float(data[k]) for k in ("ru_maxrss", "ru_utime", "ru_stime")}
    except (OSError, ValueError, KeyError, TypeError):
        return None  # the launcher was killed too (timeout): only the sampled figures are known
