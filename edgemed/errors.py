"""Errors the CLI turns into one clear line and an exit code."""

from __future__ import annotations


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


class MissingDependency(EdgemedError):
    """An optional dependency for this command is not installed."""

    def __init__(self, package: str, extra: str, what: str = ""):
        what = f" for {what}" if what else ""
        super().__init__(
            f"the Python package '{package}' is needed{what} but is not installed; "
            f"install it with: pip install 'edgemed[{extra}]'"
        )


def require(module: str, extra: str, what: str = ""):
    """Import an optional module or raise MissingDependency naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependency(module.split(".")[0], extra, what) from exc
