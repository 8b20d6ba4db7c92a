"""A function run in a forked child process, its value or its exception sent back (:func:`call_in_child`): the
pipeline runs each step so, and its memory goes back to the OS when the step ends."""

from __future__ import annotations

import multiprocessing
import pickle
import signal
import sys
import traceback
from collections.abc import Callable
from typing import Any

from edgemed.errors import CheckFailed, EdgemedError
from edgemed.process import oom


def call_in_child(fn: Callable[[], Any], what: str) -> Any:
    """``fn()`` in a forked child process, its return value (or its exception) sent back: a step's memory (a 1B
    model's weights, the allocator's leftovers, mapped files) goes back to the OS when the step ends, instead of
    staying in this process under every later step and its children. The child inherits this process's modules,
    output and signals; an exception raised in it is raised here, with its class and message. A child that dies
    without an answer is an :class:`edgemed.errors.EdgemedError` saying how (out of memory: with the OOM wording).
    Off Linux (no fork there, or not a safe one) fn runs in this process.

    The caller must not have run a multi-threaded torch operation before: GNU OpenMP's thread pool does not survive
    a fork, and the child's first parallel operation would wait for threads it does not have. (The pipeline's
    process only imports torch, for the meta-device shape of the memory check.)"""
    if sys.platform != "linux" or "fork" not in multiprocessing.get_all_start_methods():
        return fn()
    ctx = multiprocessing.get_context("fork")
    reader, writer = ctx.Pipe(duplex=False)

    def target() -> None:
        reader.close()
        try:
            payload: tuple[str, Any] = ("ok", fn())
        except BaseException as exc:  # noqa: BLE001 - every outcome goes back to the parent
            if hasattr(exc, "add_note"):  # the child's frames, for EDGEMED_DEBUG=1 in the parent
                exc.add_note(f"in the {what} child process:\n{traceback.format_exc()}")
            payload = ("error", _portable(exc))
        try:
            writer.send(payload)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:  # an unpicklable result
            writer.send(("error", RuntimeError(f"{what}: its result cannot be sent back ({exc})")))
        writer.close()

    before = oom.kill_counts()
    proc = ctx.Process(target=target, name=f"edgemed {what}")
    proc.start()
    writer.close()
    try:
        payload = reader.recv()
    except EOFError:  # died without an answer
        payload = None
    except BaseException:  # interrupted: never leave the child running
        proc.kill()
        proc.join()
        raise
    proc.join()
    if payload is None:
        code = proc.exitcode
        if code == -signal.SIGKILL and oom.killed_for_memory(before, oom.kill_counts()):
            raise EdgemedError(f"{what} was {oom.describe()}; lower what it holds (a smaller --limit, fewer "
                               "--formats) or run it on a larger machine")
        how = f"killed by {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"
        raise EdgemedError(f"{what} ended without a result ({how})")
    kind, value = payload
    if kind == "error":
        raise value
    return value


def _portable(exc: BaseException) -> BaseException:
    """`exc` if it survives pickling both ways, else the same message in a class that does (an EdgemedError keeps
    its exit code: CheckFailed for 1, EdgemedError for 2)."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - any failure to round-trip
        pass
    if isinstance(exc, EdgemedError):
        return (CheckFailed if exc.exit_code == 1 else EdgemedError)(str(exc))
    return RuntimeError(f"{type(exc).__name__}: {exc}")
