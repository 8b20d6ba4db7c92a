"""Run one command in a fresh child process: sample its memory, enforce a timeout, read the kernel's accounting.

A crash (signal), a non-zero exit, an out-of-memory kill or a timeout is reported, never raised, so the
caller records it as that artifact's failure and goes on with the next one.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgemed.bench.machine_load import LoadMonitor, MachineLoad
from edgemed.bench.probes import TreeSampler, maxrss_to_bytes


@dataclass
class ChildOutcome:
    exit_code: int | None  # None when killed by a signal
    signal: int | None
    timed_out: bool
    wall_s: float
    peak_rss_sampled: int
    samples: int
    ru_maxrss: int | None  # bytes, the kernel's peak RSS of the command (wait4 in the launcher); None if unknown
    interval_s: float
    load: MachineLoad | None = None  # other processes' CPU use while it ran
    cpu_s: float | None = None  # the command's own CPU seconds (user + system, kernel accounting)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    @property
    def signal_name(self) -> str | None:
        if self.signal is None:
            return None
        try:
            return signal.Signals(self.signal).name
        except ValueError:
            return f"signal {self.signal}"

    def describe(self) -> str:
        if self.timed_out:
            return f"timed out after {self.wall_s:.0f} s and was killed"
        if self.signal is not None:
            hint = " (likely out of memory: the kernel's OOM killer sends SIGKILL)" if self.signal == 9 else ""
            return f"crashed: killed by {self.signal_name}{hint}"
        return f"exited with code {self.exit_code}"


def run_child(
    cmd: list[str],
    log_path: Path,
    timeout_s: float | None = None,
    env: dict[str, str] | None = None,
    interval_s: float = 0.02,
    on_tick: Callable[[], None] | None = None,
    tick_s: float = 0.5,
    threads: int | None = None,
) -> ChildOutcome:
    """Run `cmd` with stdout+stderr into `log_path`; poll every `interval_s` until it ends or times out.

    `cmd[0]` must be a path to an executable. It is started through :mod:`edgemed.bench.launch` so that its
    ``ru_maxrss`` is its own; memory is sampled over the launcher's descendants (the command and its children),
    and the CPU use of every other process on the machine is measured meanwhile (`threads`: the command's).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    rusage_path = log_path.with_suffix(".rusage.json")
    rusage_path.unlink(missing_ok=True)
    launcher = [sys.executable, "-S", str(Path(__file__).with_name("launch.py")), str(rusage_path)]
    start = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([*launcher, *cmd], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)
    sampler = TreeSampler(proc.pid, include_root=False)
    monitor = LoadMonitor(threads)
    timed_out = False
    last_tick = start
    status = 0
    try:
        while True:
            pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                break
            with contextlib.suppress(Exception):
                sampler.sample()
                monitor.sample(sampler.procs)
            now = time.monotonic()
            if timeout_s and now - start > timeout_s:
                timed_out = True
                _kill_group(proc.pid)
                _, status, _ = os.wait4(proc.pid, 0)
                break
            if on_tick and now - last_tick >= tick_s:
                last_tick = now
                on_tick()
            time.sleep(interval_s)
    except BaseException:  # interrupted: never leave the child running
        _kill_group(proc.pid)
        with contextlib.suppress(ChildProcessError):
            os.wait4(proc.pid, 0)
        proc.returncode = -9
        raise
    _kill_group(proc.pid)  # grandchildren it left behind
    wall = time.monotonic() - start
    sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
    proc.returncode = code if code is not None else -(sig or 0)  # reaped here, so Popen must not wait again
    rusage = _launcher_rusage(rusage_path)
    cpu_s = rusage["ru_utime"] + rusage["ru_stime"] if rusage else None
    return ChildOutcome(
        exit_code=code, signal=sig, timed_out=timed_out, wall_s=wall, peak_rss_sampled=sampler.peak,
        samples=sampler.samples, ru_maxrss=maxrss_to_bytes(rusage["ru_maxrss"]) if rusage else None,
        interval_s=interval_s, load=monitor.finish(cpu_s), cpu_s=cpu_s,
    )


def _launcher_rusage(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
        return {k: float(data[k]) for k in ("ru_maxrss", "ru_utime", "ru_stime")}
    except (OSError, ValueError, KeyError, TypeError):
        return None  # the launcher was killed too (timeout): only the sampled figures are known


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def tail(path: Path, lines: int = 20, max_bytes: int = 16384) -> str:
    """The last lines of a log file."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(size - max_bytes, 0))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
