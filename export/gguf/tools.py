"""llama.cpp's own tools (llama-imatrix, llama-quantize, llama-bench, llama-perplexity), built once per machine.

They are compiled from the llama.cpp sources vendored in the sdist of the installed llama-cpp-python, with the
build options llama-cpp-python uses by default (Release, GGML_NATIVE on, OpenMP on, llamafile sgemm on, shared
libraries), so they run the same ggml kernels as edgemed's llama.cpp runtime.

The build is cached per machine, not per environment: ``<cache>/llama.cpp/<version>-<compiler>-<hash>/bin/``,
where ``<cache>`` is ``$EDGEMED_LLAMA_TOOLS_CACHE`` if set, else edgemed's cache (``$EDGEMED_CACHE``, else
``$XDG_CACHE_HOME/edgemed`` or ``~/.cache/edgemed``), and the key names the llama-cpp-python version, the C++
compiler and a hash of the CPU's features (GGML_NATIVE compiles for this CPU), both compilers and the CMake flags.
Every new virtual environment with the same llama-cpp-python on the same machine reuses it.

Safe to share: an entry is built in a temporary folder and renamed into place whole; its stamp
(``edgemed-build.json``) records the sha256 of every file, checked before the binaries are used (a damaged entry
is rebuilt, said on stderr); a lock file per key makes a second builder wait for the first and then reuse its
result. The in-environment location ``<sys.prefix>/opt/llama.cpp-<version>/build/bin/`` is read too: a build there
whose stamp (``.built``: the version and CMAKE_FLAGS) holds is used when the machine's cache has no entry.

``edgemed export`` builds them on first use (calibrated GGUF needs llama-imatrix and llama-quantize);
``python -m edgemed.export.gguf.tools`` (and scripts/build_llama_tools.sh) builds them by hand and prints the four
paths, llama-bench then llama-perplexity last. The build key and the cache's checks are
:mod:`edgemed.export.gguf.tools_cache`'s.

Needs cmake and a C/C++ compiler; downloads only the sdist (pip, from the package index).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from edgemed.console import err_console
from edgemed.errors import EdgemedError
from edgemed.export.gguf.tools_cache import (  # noqa: F401 (CACHE_ENV, cache_root, compiler_name: importable here)
    CACHE_ENV,
    CMAKE_FLAGS,
    RELOCATABLE,
    STAMP,
    TOOLS,
    VERIFIED,
    BuildKey,
    build_key,
    cache_base,
    cache_root,
    compiler_name,
    damage,
    env_root,
    env_tools,
    file_hashes,
    llama_cpp_version,
)

PREFIX = "llama.cpp tools"


def _say(text: str) -> None:
    err_console.print(f"{PREFIX}: {text}", markup=False, highlight=False)


def missing_build_tools() -> list[str]:
    """What a build needs and this machine lacks (cmake, a C compiler, a C++ compiler)."""
    missing = [] if shutil.which("cmake") else ["cmake"]
    if not any(shutil.which(c) for c in filter(None, (os.environ.get("CC"), "cc", "gcc", "clang"))):
        missing.append("a C compiler")
    if not any(shutil.which(c) for c in filter(None, (os.environ.get("CXX"), "c++", "g++", "clang++"))):
        missing.append("a C++ compiler")
    return missing


def ensure_tools(names: tuple[str, ...] = TOOLS, jobs: int | None = None, force: bool = False,
                 say: Callable[[str], None] = _say) -> dict[str, Path]:
    """The paths of llama.cpp's `names` tools, built first when this machine's cache lacks them (one build makes all
    four); a cache entry is used only once its files match the sha256 its stamp records.

    Raises EdgemedError (exit 2) when llama-cpp-python, cmake or a compiler is missing, or the build fails (the
    message names the log)."""
    unknown = set(names) - set(TOOLS)
    if unknown:
        raise EdgemedError(f"unknown llama.cpp tool(s) {', '.join(sorted(unknown))}; known: {', '.join(TOOLS)}")
    ver = llama_cpp_version()
    key = build_key(ver)
    entry = cache_base() / key.name
    if not force:
        why = damage(entry, key, names)
        if why is None:
            return {n: entry / "bin" / n for n in names}
        in_env = None if why else env_tools(ver, names)  # a damaged entry is rebuilt, not worked around
        if in_env:
            return in_env
    missing = missing_build_tools()
    if missing:
        raise EdgemedError(f"building llama.cpp's {', '.join(names)} (from llama-cpp-python {ver}'s sources) needs "
                           f"{' and '.join(missing)}, which this machine lacks: install them (Debian/Ubuntu: "
                           "apt-get install cmake build-essential) and re-run")
    entry.parent.mkdir(parents=True, exist_ok=True)
    with _lock(entry.parent / f"{key.name}.lock"):
        why = None if force else damage(entry, key, names)  # another process may have built them meanwhile
        if force or why is not None:
            if why:
                say(f"the cached build in {entry} is damaged ({why}); building it again")
            _build(key, entry, jobs or int(os.environ.get("JOBS") or 2), say)
    return {n: entry / "bin" / n for n in names}


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive file lock: two processes never build the same entry at once."""
    import fcntl

    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _sdist(ver: str, base: Path, say: Callable[[str], None]) -> Path:
    """llama-cpp-python `ver`'s sdist: in the cache, else copied from an in-environment build, else downloaded."""
    tarball = base / "sdist" / f"llama_cpp_python-{ver}.tar.gz"
    if tarball.is_file():
        return tarball
    tarball.parent.mkdir(parents=True, exist_ok=True)
    tmp = base / "sdist" / f".download-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        local = env_root(ver) / "sdist" / tarball.name
        if local.is_file():
            shutil.copy2(local, tmp / tarball.name)
        else:
            say(f"downloading the llama-cpp-python {ver} sdist (its vendored llama.cpp sources)")
            _run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", "llama-cpp-python",
                  f"llama-cpp-python=={ver}", "-d", str(tmp)], base / "sdist" / "download.log",
                 f"could not download the llama-cpp-python {ver} sdist from the package index")
        if not (tmp / tarball.name).is_file():
            raise EdgemedError(f"pip download did not produce {tarball.name}; see {base / 'sdist' / 'download.log'}")
        (tmp / tarball.name).rename(tarball)  # whole or not at all
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return tarball


def _unpack(tarball: Path, dest: Path) -> Path:
    """The sdist unpacked into dest (its top folder stripped); the vendored llama.cpp source folder."""
    try:
        with tarfile.open(tarball) as tar:
            members = []
            for m in tar.getmembers():
                m.name = m.name.split("/", 1)[1] if "/" in m.name else ""
                if m.name:
                    members.append(m)
            kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(dest, members=members, **kw)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise EdgemedError(f"{tarball} cannot be unpacked ({exc}); delete it and re-run to download it again") from None
    if not (dest / "vendor" / "llama.cpp" / "tools" / "imatrix").is_dir():
        raise EdgemedError(f"{tarball} has no vendor/llama.cpp/tools/imatrix; delete it and re-run")
    return dest / "vendor" / "llama.cpp"


def _run(cmd: list[str], log: Path, what: str, env: dict[str, str] | None = None) -> None:
    from edgemed.process.child import run_child

    outcome = run_child(cmd, log, env=env)
    if not outcome.ok:
        raise EdgemedError(f"{what}: {outcome.why()}; the full log is {log}")


def _build(key: BuildKey, entry: Path, jobs: int, say: Callable[[str], None]) -> None:
    """Configure and build every tool of TOOLS in a temporary folder beside `entry`, copy the binaries and shared
    libraries into a staged entry, check they start with the build folder gone, stamp their sha256 and rename the
    staged entry into place (replacing an old one). Called with the key's lock held."""
    base = entry.parent
    for stale in base.glob(f".{key.name}.*"):  # left by a killed build: only lock holders create them
        shutil.rmtree(stale, ignore_errors=True)
    work, stage = base / f".{key.name}.build-{os.getpid()}", base / f".{key.name}.new-{os.getpid()}"
    configure_log, log = base / f"{key.name}.configure.log", base / f"{key.name}.build.log"
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}  # it would turn GGML_NATIVE off
    try:
        source = _unpack(_sdist(key.version, base, say), work / "src")
        build = work / "build"
        say(f"building {', '.join(TOOLS)} from llama-cpp-python {key.version}'s llama.cpp sources with -j {jobs} "
            f"(once per machine; 7-20 minutes on 2 cores) into {entry}; log: {log}")
        start = time.monotonic()
        _run(["cmake", "-S", str(source), "-B", str(build), *generator, *CMAKE_FLAGS, *RELOCATABLE], configure_log,
             "cmake could not configure llama.cpp", env=env)
        _run(["cmake", "--build", str(build), "--target", *TOOLS, "-j", str(jobs)], log,
             "building llama.cpp's tools failed", env=env)
        (stage / "bin").mkdir(parents=True)
        for path in (build / "bin").iterdir():
            if path.name in TOOLS or path.name.startswith("lib"):  # the tools and the shared libraries they load
                shutil.copy2(path, stage / "bin" / path.name, follow_symlinks=False)
        shutil.rmtree(work)  # the binaries must start without it
        for name in TOOLS:
            _check_runs(stage / "bin" / name, log)
        seconds = round(time.monotonic() - start, 1)
        record = {**key.to_dict(), "cpu": key.cpu, "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": seconds,
                  "files": file_hashes(stage)}
        (stage / STAMP).write_text(json.dumps(record, indent=1) + "\n")
        old = base / f".{key.name}.old-{os.getpid()}"
        if entry.exists():
            entry.rename(old)
        stage.rename(entry)
        shutil.rmtree(old, ignore_errors=True)
        VERIFIED.pop(entry, None)
        say(f"built in {seconds:.0f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(stage, ignore_errors=True)


def _check_runs(path: Path, log: Path) -> None:
    """The binary exists and starts (its usage exits 0 or 1; a missing shared library exits 127)."""
    if not os.access(path, os.X_OK):
        raise EdgemedError(f"the llama.cpp build finished but {path.name} is missing; see {log}")
    try:
        rc = subprocess.run([str(path), "--help"], capture_output=True, timeout=60).returncode
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EdgemedError(f"{path} does not run ({exc}); rebuild with FORCE=1 scripts/build_llama_tools.sh") from None
    if rc not in (0, 1):
        raise EdgemedError(f"{path} does not run (exit {rc}); rebuild with FORCE=1 scripts/build_llama_tools.sh")


def main(argv: list[str] | None = None) -> int:
    """python -m edgemed.export.gguf.tools [--jobs N] [--force]: build (or find) the tools, print one path a line."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m edgemed.export.gguf.tools", description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=int(os.environ.get("JOBS") or 2), help="parallel compile jobs")
    p.add_argument("--force", action="store_true", default=os.environ.get("FORCE") == "1",
                   help="rebuild even when the cached binaries are there")
    a = p.parse_args(argv)

    def say(text: str) -> None:
        print(f"build_llama_tools: {text}", file=sys.stderr)

    try:
        if a.jobs < 1:
            raise EdgemedError(f"--jobs must be at least 1, got {a.jobs}")
        paths = ensure_tools(TOOLS, jobs=a.jobs, force=a.force, say=say)
    except EdgemedError as exc:
        print(f"build_llama_tools: error: {exc}", file=sys.stderr)
        return exc.exit_code
    say(f"llama.cpp tools of llama-cpp-python {llama_cpp_version()} are ready in {paths[TOOLS[0]].parent}")
    for name in TOOLS:  # llama-bench then llama-perplexity last: scripts/dev/crosscheck_*.py read the last two lines
        print(paths[name])
    return 0


if __name__ == "__main__":
    sys.exit(main())
