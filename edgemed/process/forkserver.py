"""A child process that imports heavy modules once, then forks a fresh process for each job.

Export verification opens every transformers artifact (hf, bnb-*) in a process of its own, so that a native crash
fails one format, never the export. Each such process used to spend most of its life importing torch,
transformers and bitsandbytes (about 9 s on 2 cores, against 1-3 s of work). :class:`ForkServer` starts one
``python -P -m edgemed.process.forkserver MODULE...`` that imports them, runs nothing else (a fork after a
multi-threaded torch operation would hang in GNU OpenMP), and forks a child per job: the child starts with the modules
imported and nothing run, as a fresh process that had just imported them would, in its own session, its output
in the job's log. Its outcome is an :class:`edgemed.process.child.ChildOutcome` like
:func:`edgemed.process.child.run_child`'s;
``run`` answers None when the server cannot take the job (it failed to start or died), and the caller runs the
job in a fresh process instead.

Protocol (JSON lines): the parent writes ``{"target": "module:function", "args": [...], "log": path}``; the
server answers ``{"ready": ...}`` once at start, then ``{"pid": n}`` for each job and ``{"pid": n, "status": s}``
(the raw wait status) when it ends. The function's return value is the child's exit code.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

READY_TIMEOUT_S = 300.0  # the imports of a cold disk


class ForkServer:
    """The parent's handle on one server process (start it early: its imports run beside the caller's work)."""

    def __init__(self, preload: list[str], log_path: Path, env: dict[str, str] | None = None):
        from edgemed.process.child import python_module

        log_path = Path(log_path)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "wb") as log:
            self._proc: subprocess.Popen | None = subprocess.Popen(
                python_module("edgemed.process.forkserver", *preload), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=log, env=env, start_new_session=True)
        self._buf = b""
        self.ready: dict[str, Any] | None = None

    def _recv(self, timeout_s: float | None) -> dict[str, Any] | None:
        """The server's next message; None on timeout or when it has gone."""
        proc = self._proc
        if proc is None or proc.stdout is None:
            return None
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        fd = proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if left == 0.0:
                return None
            readable, _, _ = select.select([fd], [], [], left)
            if not readable:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def _usable(self) -> bool:
        if self._proc is None or self._proc.poll() is not None:
            return False
        if self.ready is None:
            self.ready = self._recv(READY_TIMEOUT_S)
            if self.ready is None:
                self.close()
                return False
        return True

    def run(self, target: str, args: list[str], log_path: Path, timeout_s: float | None = None):
        """Run ``target(*args)`` in a child forked by the server; its ChildOutcome, or None (run it elsewhere)."""
        from edgemed.process import oom
        from edgemed.process.child import ChildOutcome, kill_group, outcome_of

        if not self._usable():
            return None
        log_path = Path(log_path)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        oom_before = oom.kill_counts()
        start = time.monotonic()
        try:
            assert self._proc is not None and self._proc.stdin is not None
            self._proc.stdin.write(json.dumps({"target": target, "args": list(args), "log": str(log_path)}).encode()
                                   + b"\n")
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self.close()
            return None
        started = self._recv(60.0)
        if started is None or "pid" not in started:
            self.close()
            return None
        pid, timed_out = int(started["pid"]), False
        try:
            ended = self._recv(timeout_s)
            if ended is None and self._proc is not None and self._proc.poll() is None:  # timed out
                timed_out = True
                kill_group(pid)
                ended = self._recv(30.0)
        except BaseException:  # interrupted: never leave the child running
            kill_group(pid)
            self.close()
            raise
        if ended is None:  # the server died under the job: the job's end is unknown
            kill_group(pid)
            self.close()
            return ChildOutcome(exit_code=None, signal=signal.SIGKILL, timed_out=timed_out,
                                wall_s=time.monotonic() - start, log_path=log_path, oom_killed=None)
        kill_group(pid)  # grandchildren it left behind
        return outcome_of(int(ended["status"]), timed_out, start, log_path, oom_before)

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            if proc.stdin is not None:
                proc.stdin.close()  # the server ends at the end of its input
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            from edgemed.process.child import kill_group

            kill_group(proc.pid)
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def __enter__(self) -> ForkServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --- the server side ------------------------------------------------------------------------------------------
def _child(job: dict[str, Any]) -> int:
    """In the forked child: its own session, output into the job's log, then ``target(*args)``."""
    os.setsid()
    fd = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the child's whole life
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    module, _, name = job["target"].partition(":")
    import importlib

    try:
        code = getattr(importlib.import_module(module), name)(*job["args"])
        return int(code or 0)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - reported as the job's exit code 3, with its traceback in the log
        import traceback

        traceback.print_exc()
        return 3
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()


def serve(preload: list[str]) -> int:
    import importlib

    out = sys.stdout.buffer
    loaded, missing = [], []
    for name in preload:
        try:
            importlib.import_module(name)
            loaded.append(name)
        except ImportError:  # an extra this install lacks: the job imports what it needs itself
            missing.append(name)

    def say(msg: dict[str, Any]) -> None:
        out.write(json.dumps(msg).encode() + b"\n")
        out.flush()

    say({"ready": True, "loaded": loaded, "missing": missing})
    for line in sys.stdin.buffer:
        if not line.strip():
            continue
        job = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 3
            try:
                code = _child(job)
            finally:
                os._exit(code)
        say({"pid": pid})
        _, status = os.waitpid(pid, 0)
        say({"pid": pid, "status": status})
    return 0


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1:]))
