"""Errors the CLI turns into one clear line and an exit code, and the environment's write errors (a full disk, a
read-only file system, permissions) told apart from bugs (:func:`environment_error`, :func:`describe_os_error`)."""

from __future__ import annotations

import errno
from collections.abc import Iterable


class EdgemedError(Exception):
    """Bad usage or bad input: the message names the problem and the fix. Exit code 2."""

    exit_code = 2


class CheckFailed(EdgemedError):
    """A check failed: an artifact did not verify, an export or a merge check did not hold. Exit code 1."""

    exit_code = 1


class BudgetBroken(CheckFailed):
    """A budget the user set was broken. Exit code 1."""


class Terminated(BaseException):
    """SIGTERM/SIGHUP arrived. A BaseException, like Ctrl-C: it unwinds through every ``except BaseException`` cleanup
    (temp files and folders removed, child processes killed) instead of dying with half-written outputs."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def install_message(missing: Iterable[str], extra: str) -> str:
    """The one "install the extra" message: ``needs <modules>: pip install 'edgemed[<extra>]'``."""
    return f"needs {', '.join(missing)}: pip install 'edgemed[{extra}]'"


class MissingDependency(EdgemedError):
    """An optional dependency for this command is not installed: `what` needs `package`, and the extra that brings
    it (the one wording, :func:`install_message`)."""

    def __init__(self, package: str, extra: str, what: str = ""):
        super().__init__(f"{what} {install_message([package], extra)}" if what else install_message([package], extra))


# errno values that mean "this environment cannot take the write", not a bug: the CLI answers them with exit 2.
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.ENOTDIR,
                errno.EISDIR, errno.ENAMETOOLONG, errno.ELOOP}


# how a full disk reads in an exception or a child process's log
DISK_FULL_TEXT = ("No space left on device", "os error 28", "[Errno 28]", "Disk quota exceeded", "file write failed")


def environment_error(exc: BaseException) -> OSError | None:
    """The environment write error behind `exc` (full disk, read-only, permissions), else None. Native libraries
    (tokenizers, safetensors, torch.save) report a full disk as a plain Exception/RuntimeError: matched by text."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:
            return exc
        if any(t in str(exc) for t in DISK_FULL_TEXT):
            return OSError(errno.ENOSPC, "No space left on device")
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def describe_os_error(exc: OSError, where: str | None = None) -> str:
    """One line for an environment error (full disk, read-only, permissions): what, where, what was kept, the fix."""
    target = exc.filename or where or "the output folder"
    kept = "finished outputs are kept and nothing half-written is left (partial files go under temporary names)"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return (f"no space left on the device while writing {target}; {kept}; free some space (or choose an --out "
                "on another disk) and re-run")
    if exc.errno == errno.EROFS:
        return f"{target} is on a read-only file system; {kept}; choose a writable --out"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied: {target}; {kept}; check its permissions or choose paths you can read and write"
    return f"{exc.strerror or exc}: {target}; check the path"
