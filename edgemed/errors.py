"""Errors the CLI turns into one clear line and an exit code."""

from __future__ import annotations

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
