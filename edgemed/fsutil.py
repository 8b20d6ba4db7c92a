"""Atomic file and folder writes: nothing half-written is ever left under a final name."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgemed.errors import (  # noqa: F401 (the environment errors are re-exported: fsutil's callers import them)
    DISK_FULL_TEXT,
    WRITE_ERRNOS,
    EdgemedError,
    describe_os_error,
    environment_error,
)


def atomic_write_text(path: Path, text: str) -> Path:
    """Write text to a temp file beside `path`, then rename it into place (a character device such as /dev/null
    is written to directly: renaming over it would replace the device node)."""
    import stat

    path = Path(path)
    try:
        device = stat.S_ISCHR(path.stat().st_mode)
    except OSError:
        device = False
    if device:  # a failed write (/dev/full: no space) is raised, never answered by renaming over the node
        try:
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, str(path)) from exc  # name the device in the message
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are meant to be read by others
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_json(path: Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_partials(final: Path) -> list[Path]:
    """Remove the temp folders a killed run (SIGKILL, power loss) left beside `final`: ``.NAME.PID.*.partial`` whose
    process is gone (and pid-less ``.NAME.*.partial`` ones). A live run's folder is left alone."""
    final = Path(final)
    removed = []
    if not final.parent.is_dir():
        return removed
    for stale in final.parent.glob(f".{glob.escape(final.name)}.*.partial"):
        middle = stale.name[len(final.name) + 2 : -len(".partial")]
        pid = middle.split(".", 1)[0]
        if stale.is_dir() and not (pid.isdigit() and "." in middle and _alive(int(pid))):
            shutil.rmtree(stale, ignore_errors=True)
            removed.append(stale)
    return removed


@contextlib.contextmanager
def atomic_dir(final: Path, force: bool = False) -> Iterator[Path]:
    """Yield a temp folder beside `final`; on success it replaces `final`, on failure it is removed. Temp folders a
    killed earlier run left (its process gone) are removed first."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.{os.getpid()}.", suffix=".partial", dir=final.parent))
    tmp.chmod(0o755)
    try:
        yield tmp
        if final.exists():
            if not force:
                raise FileExistsError(final)
            old = final.with_name(f".{final.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def json_problem(text: str) -> tuple[Any, str | None]:
    """(value, None) for a JSON text, else (None, what is wrong with it): the one place edgemed catches corrupt JSON.

    The reason is 'not JSON (<parser message> at line N)', 'nested too deeply to be read' or 'cannot be read
    (<why>)' (an integer of more than 4300 digits, say)."""
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        return None, f"not JSON ({exc.msg} at line {exc.lineno})"
    except RecursionError:
        return None, "nested too deeply to be read"
    except ValueError as exc:
        return None, f"cannot be read ({exc})"


def read_json(path: Path, what: str, fix: str, want_object: bool = False) -> Any:
    """The JSON value in `path`. A missing, unreadable or corrupt file raises EdgemedError (exit 2) naming the file,
    `what` it is (e.g. "run record") and `fix` (e.g. "re-run edgemed train with --force"); with `want_object`, a
    value that is not a JSON object is refused too."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EdgemedError(f"{path} does not exist (the {what}); {fix}") from None
    except IsADirectoryError:
        raise EdgemedError(f"{path} is a folder, not the {what} file; {fix}") from None
    except UnicodeDecodeError:
        raise EdgemedError(f"{path} is corrupt: the {what} is not UTF-8 text (not JSON); {fix}") from None
    except OSError as exc:
        raise EdgemedError(f"{path} cannot be read ({exc.strerror or exc}); the {what} is needed: {fix}") from None
    value, problem = json_problem(text)
    if problem is not None:
        raise EdgemedError(f"{path} is corrupt: the {what} is {problem}; {fix}")
    if want_object and not isinstance(value, dict):
        raise EdgemedError(f"{path} is corrupt: the {what} is not a JSON object; {fix}")
    return value


def try_json(path: Path) -> Any | None:
    """The JSON value in `path`, or None when the file is absent, unreadable or not JSON (for optional records)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return json_problem(text)[0]


def read_jsonl(path: Path, fix: str) -> list[tuple[int, Any]]:
    """(line number, object) per non-blank line; a line that is not JSON raises EdgemedError naming it and `fix`."""
    rows = []
    n = 0
    try:
        with open(path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, start=1):  # noqa: B007 - n names the line in the errors below
                if not line.strip():
                    continue
                value, problem = json_problem(line)
                if problem is not None:
                    problem = problem.replace("not JSON (", "not valid JSON (").replace(" at line 1)", ")")
                    raise EdgemedError(f"{path}: line {n} is {problem}; {fix}")
                rows.append((n, value))
    except UnicodeDecodeError:
        raise EdgemedError(f"{path}: line {n + 1} is not UTF-8 text (a binary file?); give a UTF-8 JSON-lines file"
                           ) from None
    except IsADirectoryError:
        raise EdgemedError(f"{path} is a folder; give a JSON-lines file") from None
    return rows


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def dir_size(path: Path) -> int:
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def fmt_bytes(n: float | None, missing: str = "-") -> str:
    """A byte count as people read it: ``123.4 MB`` (decimal units, like file managers and the size budgets);
    `missing` for None."""
    if n is None:
        return missing
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return f"{n:.1f} GB"  # pragma: no cover


MIN_FREE_BYTES = 1 << 20  # an output folder with less free space than this is refused before the work starts


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def free_bytes(path: Path) -> int | None:
    try:
        st = os.statvfs(path)
    except (OSError, AttributeError):
        return None
    return st.f_bavail * st.f_frsize


def check_output_dir(path: Path, flag: str = "--out", need_bytes: int = MIN_FREE_BYTES) -> Path:
    """Make sure `path` is a writable folder, or can be created as one, before any work starts (exit 2 otherwise):
    not a file, not on a read-only file system, writable by this user, with at least `need_bytes` free.
    Creates nothing: a run that stops on bad input leaves no folder behind."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise EdgemedError(f"{flag} {path} is a file, not a folder; give a folder path")
    existing = path
    while not existing.exists() and existing != existing.parent:
        if existing.is_symlink():  # a dangling symlink: following it would write somewhere unexpected
            raise EdgemedError(f"{flag} {path}: {existing} is a broken symbolic link; give a real folder path")
        existing = existing.parent
    if not existing.is_dir():
        raise EdgemedError(f"{flag} {path}: {existing} is a file, not a folder; give a folder path")
    if _read_only(existing):
        raise EdgemedError(f"{flag} {path}: {existing} is on a read-only file system; give a writable folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise EdgemedError(f"{flag} {path}: {existing} is not writable; give a folder you can write to")
    free = free_bytes(existing)
    if free is not None and free < need_bytes:
        raise EdgemedError(f"{flag} {path}: no space left on the device of {existing} ({free} bytes free, "
                           f"{need_bytes} needed at least); free some space or give a folder on another disk")
    if existing == path:
        try:
            fd, probe = tempfile.mkstemp(dir=path, prefix=".edgemed-write-check.")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise EdgemedError(f"{flag} {path} cannot be written ({exc.strerror or exc}); "
                               "give a writable folder") from None
    return path


def check_output_file(path: Path, flag: str) -> Path:
    """The same for a file output (e.g. --junit): not a folder, an existing file writable, its folder writable."""
    path = Path(path)
    if path.is_dir():
        raise EdgemedError(f"{flag} {path} is a folder; give a file path (e.g. {path / 'results.xml'})")
    if path.exists() and not path.is_file() and not path.is_char_device():  # a pipe would block the write
        raise EdgemedError(f"{flag} {path} is not a regular file (a pipe or socket); give a file path")
    if path.exists() and not os.access(path, os.W_OK):
        raise EdgemedError(f"{flag} {path} exists and is not writable; give a file path you can write to")
    parent = path.parent if str(path.parent) else Path(".")
    check_output_dir(parent, f"{flag} {path}: its folder")
    return path


def require_regular_file(path: Path, what: str) -> Path:
    """Refuse (exit 2) an input that exists but is a pipe, socket or device: reading one can block forever."""
    import stat

    path = Path(path)
    try:
        mode = path.stat().st_mode
    except OSError:
        return path  # absent or unreadable: the reader says so in its own words
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        raise EdgemedError(f"{what} {path} is not a regular file (a pipe, socket or device); give a file")
    return path
