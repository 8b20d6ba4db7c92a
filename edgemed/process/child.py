"""One way to run a child process, for every stage that isolates work in one (bench workers, export
verification, GGUF conversion and quantization): output to a log file, an optional timeout, the whole process
group killed on timeout or interruption, and an outcome that says how it ended (never raised).

A native crash in an engine (llama.cpp, onnxruntime) therefore ends one child, never the command. A child the
kernel killed for memory (SIGKILL while an OOM-kill counter rose, :mod:`edgemed.process.oom`) is told apart from other
crashes. The bench adds its measurements (memory sampling, machine load, kernel accounting) through ``watch``:
:func:`edgemed.process.isolate.measure_child`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgemed.errors import DISK_FULL_TEXT
from edgemed.fsutil import free_bytes
from edgemed.process import oom

FULL_BYTES = 1 << 20  # a failed child whose log folder has less free space than this ran out of disk
# For Python 3.10 (no -P): drop the current directory from sys.path, then run the module as -m would.
_NO_CWD_BOOTSTRAP = ("import runpy, sys; sys.path.pop(0); m = sys.argv.pop(1); "
                     "runpy.run_module(m, run_name='__main__', alter_sys=True)")


def python_module(module: str, *args: str) -> list[str]:
    """``python -m MODULE ARGS`` for a child process that never imports from its current directory: started
    inside a clone, ``-m`` would put the clone first on sys.path and its ``edgemed/`` (which has no ``bench``
    or ``export``) would shadow the installed package. ``-P`` on Python 3.11+, a bootstrap before that."""
    if sys.version_info >= (3, 11):
        return [sys.executable, "-P", "-m", module, *args]
    return [sys.executable, "-c", _NO_CWD_BOOTSTRAP, module, *args]


# Set while another thread of this process was interrupted (export's overlapped chains): run_child in any thread ends
# its child's process group and raises ChildStopped at its next poll instead of waiting for the child to finish.
STOP = threading.Event()


class ChildStopped(Exception):
    """run_child ended its child because :data:`STOP` was set."""


@dataclass
class ChildOutcome:
    exit_code: int | None  # None when killed by a signal
    signal: int | None
    timed_out: bool
    wall_s: float
    log_path: Path | None = None
    oom_killed: bool | None = False  # SIGKILL while an OOM-kill counter rose; None: SIGKILL, no counter readable

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

    def peak_rss(self) -> tuple[int | None, int | None]:
        """(sampled, kernel's) peak RSS of the child where it was measured (:mod:`edgemed.process.isolate`)."""
        return None, None

    def describe(self) -> str:
        if self.timed_out:
            return f"timed out after {self.wall_s:.0f} s and was killed"
        if self.oom_killed:
            return oom.describe(*self.peak_rss())
        if self.signal is not None:
            hint = (" (no OOM-kill counter was readable to tell whether the kernel killed it for memory)"
                    if self.signal == signal.SIGKILL and self.oom_killed is None else "")
            return f"crashed: killed by {self.signal_name}{hint}"
        return f"exited with code {self.exit_code}"

    def said_of(self, subject: str) -> str:
        """:meth:`describe` as a sentence about `subject` (``llama.cpp crashed: ...``, ``... was killed: ...``)."""
        return f"{subject} {'was ' if self.oom_killed else ''}{self.describe()}"

    def why(self) -> str:
        """How it ended, with the log's last line when it merely exited non-zero (usually the error)."""
        if self.timed_out or self.signal is not None or self.log_path is None:
            return self.describe()
        text = tail(self.log_path, 200, 65536)
        if any(mark in text for mark in DISK_FULL_TEXT):
            return "no space left on the device (see the log)"
        free = free_bytes(self.log_path.parent)  # a full disk can also cut the log short, before the error
        if free is not None and free < FULL_BYTES:
            return f"no space left on the device holding {self.log_path.parent} (the log may be cut short)"
        lines = [ln for ln in text.splitlines()[-40:] if ln.strip()]
        return lines[-1].strip() if lines else self.describe()


def run_child(
    cmd: list[str],
    log_path: Path,
    *,
    timeout_s: float | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    watch: Callable[[int], Callable[[], None]] | None = None,
    interval_s: float = 0.05,
    on_tick: Callable[[], None] | None = None,
    tick_s: float = 0.5,
) -> ChildOutcome:
    """Run `cmd` (stdout+stderr into `log_path`) in its own session until it ends or `timeout_s` passes.

    `watch(pid)` returns a function called every `interval_s` while the child runs (the bench's samplers);
    `on_tick` is called every `tick_s` (progress). The process group is killed at the end, so nothing the
    child started outlives it.
    """
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    oom_before = oom.kill_counts()  # the counters rise before the kernel sends its SIGKILL
    start = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                cwd=cwd, start_new_session=True)
    poll = watch(proc.pid) if watch else None
    timed_out, last_tick, status = False, start, 0
    try:
        while True:
            pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                break
            if STOP.is_set():
                raise ChildStopped(f"{Path(cmd[0]).name} was stopped: the run was interrupted")
            if poll is not None:
                with contextlib.suppress(Exception):
                    poll()
            now = time.monotonic()
            if timeout_s and now - start > timeout_s:
                timed_out = True
                kill_group(proc.pid)
                _, status, _ = os.wait4(proc.pid, 0)
                break
            if on_tick and now - last_tick >= tick_s:
                last_tick = now
                on_tick()
            time.sleep(interval_s)
    except BaseException:  # interrupted: never leave the child running
        kill_group(proc.pid)
        with contextlib.suppress(ChildProcessError):
            os.wait4(proc.pid, 0)
        proc.returncode = -9
        raise
    kill_group(proc.pid)  # grandchildren it left behind
    outcome = outcome_of(status, timed_out, start, log_path, oom_before)
    proc.returncode = outcome.exit_code if outcome.exit_code is not None else -(outcome.signal or 0)  # reaped here
    return outcome


def outcome_of(status: int, timed_out: bool, start: float, log_path: Path | None,
               oom_before: dict[str, int]) -> ChildOutcome:
    """The ChildOutcome of a child reaped with wait status `status`, started at monotonic time `start`; a SIGKILL
    while an OOM-kill counter rose since `oom_before` (``edgemed.process.oom.kill_counts()``) reads as out of memory."""
    sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
    oom_killed = oom.killed_for_memory(oom_before, oom.kill_counts()) if sig == signal.SIGKILL and not timed_out \
        else False
    return ChildOutcome(exit_code=code, signal=sig, timed_out=timed_out, wall_s=time.monotonic() - start,
                        log_path=log_path, oom_killed=oom_killed)


def kill_group(pid: int) -> None:
    """SIGKILL the process group `pid` leads and every other process of the session it leads: a child started in a
    session of its own (``start_new_session``) may put its children in groups of their own (ninja and make run each
    compiler in one), which a stop of the group alone would leave running."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    for other in session_members(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(other, signal.SIGKILL)


def session_members(sid: int) -> list[int]:
    """The processes (Linux: read from /proc) whose session is `sid`, this one excepted; [] elsewhere."""
    me, found = os.getpid(), []
    if sid <= 1:
        return found
    try:
        names = os.listdir("/proc")
    except OSError:
        return found
    for name in names:
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 3 and fields[3] == str(sid).encode():  # state, ppid, pgrp, session
            found.append(int(name))
    return found


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
