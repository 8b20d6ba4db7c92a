"""Start a command from a small, freshly exec'd process and report the kernel's accounting of it.

Why: Linux carries a process's peak-RSS high-water mark across fork and exec, so a child spawned
straight from a big parent (torch imported, large buffers) reports at least the parent's peak as its own
``ru_maxrss``. Spawned from this stdlib-only launcher (a few MB), the child's ``wait4`` figure is its own,
the way GNU ``/usr/bin/time`` gets it. Run as a script with ``python -S``, never imported.

Usage: ``python -S launch.py RUSAGE.json PROGRAM ARGS...``; exits like the program (same code, same signal).
"""

import json
import os
import signal
import sys


def main() -> None:
    rusage_path, cmd = sys.argv[1], sys.argv[2:]
    pid = os.posix_spawn(cmd[0], cmd, dict(os.environ))
    while True:
        try:
            _, status, ru = os.wait4(pid, 0)
            break
        except InterruptedError:  # pragma: no cover - retried by Python itself since 3.5
            continue
    info = {"ru_maxrss": ru.ru_maxrss, "ru_utime": ru.ru_utime, "ru_stime": ru.ru_stime,
            "exit_code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
            "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None}
    tmp = f"{rusage_path}.tmp"
    with open(tmp, "w") as fh:
        json.dump(info, fh)
    os.replace(tmp, rusage_path)
    if info["signal"] is not None:  # die the same way, so the parent sees the crash
        if info["signal"] != signal.SIGKILL:  # SIGKILL (the OOM killer's) has no handler to reset: EINVAL
            signal.signal(info["signal"], signal.SIG_DFL)
        os.kill(os.getpid(), info["signal"])
    sys.exit(info["exit_code"] or 0)


if __name__ == "__main__":
    main()
