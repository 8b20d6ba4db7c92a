"""llama.cpp's own command-line tools (llama-imatrix, llama-quantize, llama-bench, llama-perplexity), built once.

They are compiled from the llama.cpp sources vendored in the sdist of the installed llama-cpp-python, with the
build options llama-cpp-python uses by default (Release, GGML_NATIVE on, OpenMP on, llamafile sgemm on, shared
libraries), so they run the same ggml kernels as edgemed's llama.cpp runtime. The cache lives beside the
environment, ``<sys.prefix>/opt/llama.cpp-<version>/`` (``sdist/``, ``src/``, ``build/``, ``build.log``,
``.built``): a second call only returns the paths. ``edgemed export`` builds them on first use (calibrated GGUF
needs llama-imatrix and llama-quantize); ``python -m edgemed.llama_tools`` (and scripts/build_llama_tools.sh)
builds them by hand and prints the four paths, llama-bench then llama-perplexity last.

Needs cmake and a C/C++ compiler; downloads only the sdist (pip, from the package index).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from edgemed.errors import EdgemedError

TOOLS = ("llama-imatrix", "llama-quantize", "llama-bench", "llama-perplexity")
# llama-cpp-python's defaults (its CMakeLists only forces LLAMA_BUILD_COMMON=ON, LLAMA_CURL=OFF and
# BUILD_SHARED_LIBS=On; scikit-build-core builds Release). GGML_NATIVE/OPENMP/LLAMAFILE are llama.cpp's defaults,
# spelled out. Server, app and web UI are off because their configure steps can download assets, OpenSSL because
# nothing here needs HTTPS. The stamp holds the version and these flags: the same text scripts/build_llama_tools.sh
# wrote before it called this module, so a cache it built is reused.
CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=ON",
    "-DGGML_NATIVE=ON",
    "-DGGML_OPENMP=ON",
    "-DGGML_LLAMAFILE=ON",
    "-DLLAMA_BUILD_COMMON=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_SERVER=OFF",
    "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_OPENSSL=OFF",
)
PREFIX = "llama.cpp tools"


def llama_cpp_version() -> str:
    """The installed llama-cpp-python's version (read from its metadata: nothing is loaded)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llama-cpp-python")
    except PackageNotFoundError:
        from edgemed.registry import install_message, runtime_spec

        raise EdgemedError("building llama.cpp's tools (from the installed llama-cpp-python's sources) "
                           + install_message(["llama-cpp-python"], runtime_spec("llama.cpp").extra)) from None


def cache_root(ver: str | None = None) -> Path:
    return Path(sys.prefix) / "opt" / f"llama.cpp-{ver or llama_cpp_version()}"


def stamp_text(ver: str) -> str:
    return "\n".join([ver, *CMAKE_FLAGS]) + "\n"


def binary(name: str, ver: str | None = None) -> Path:
    return cache_root(ver) / "build" / "bin" / name


def _built(ver: str, names: tuple[str, ...]) -> bool:
    stamp = cache_root(ver) / ".built"
    try:
        same = stamp.read_text() == stamp_text(ver)
    except OSError:
        return False
    return same and all(os.access(binary(n, ver), os.X_OK) for n in names)


def _say(text: str) -> None:
    from edgemed.console import err_console

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
    """The paths of llama.cpp's `names` tools, built first when the cache lacks them (one build makes all four).

    Raises EdgemedError (exit 2) when llama-cpp-python, cmake or a compiler is missing, or the build fails (the
    message names the log)."""
    unknown = set(names) - set(TOOLS)
    if unknown:
        raise EdgemedError(f"unknown llama.cpp tool(s) {', '.join(sorted(unknown))}; known: {', '.join(TOOLS)}")
    ver = llama_cpp_version()
    if not force and _built(ver, names):
        return {n: binary(n, ver) for n in names}
    missing = missing_build_tools()
    if missing:
        raise EdgemedError(f"building llama.cpp's {', '.join(names)} (from llama-cpp-python {ver}'s sources) needs "
                           f"{' and '.join(missing)}, which this machine lacks: install them (Debian/Ubuntu: "
                           "apt-get install cmake build-essential) and re-run")
    root = cache_root(ver)
    root.mkdir(parents=True, exist_ok=True)
    with _lock(root / ".lock"):
        if force or not _built(ver, names):  # another process may have built them while this one waited
            _build(ver, root, jobs or int(os.environ.get("JOBS") or 2), force, say)
    return {n: binary(n, ver) for n in names}


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive file lock: two processes never build into the same folder at once."""
    import fcntl

    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _sources(ver: str, root: Path, say: Callable[[str], None]) -> Path:
    """The vendored llama.cpp source folder, downloading and unpacking the sdist when not cached."""
    src = root / "src"
    if (src / "vendor" / "llama.cpp" / "CMakeLists.txt").is_file():
        return src / "vendor" / "llama.cpp"
    tarball = root / "sdist" / f"llama_cpp_python-{ver}.tar.gz"
    if not tarball.is_file():
        say(f"downloading the llama-cpp-python {ver} sdist (its vendored llama.cpp sources)")
        _run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", "llama-cpp-python",
              f"llama-cpp-python=={ver}", "-d", str(root / "sdist")], root / "download.log",
             f"could not download the llama-cpp-python {ver} sdist from the package index")
        if not tarball.is_file():
            raise EdgemedError(f"pip download did not produce {tarball}; see {root / 'download.log'}")
    tmp = root / "src.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(src, ignore_errors=True)
    tmp.mkdir()
    try:
        with tarfile.open(tarball) as tar:
            members = []
            for m in tar.getmembers():
                m.name = m.name.split("/", 1)[1] if "/" in m.name else ""
                if m.name:
                    members.append(m)
            kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(tmp, members=members, **kw)
    except (tarfile.TarError, OSError, EOFError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise EdgemedError(f"{tarball} cannot be unpacked ({exc}); delete it and re-run to download it again") from None
    if not (tmp / "vendor" / "llama.cpp" / "tools" / "imatrix").is_dir():
        shutil.rmtree(tmp, ignore_errors=True)
        raise EdgemedError(f"{tarball} has no vendor/llama.cpp/tools/imatrix; delete it and re-run")
    tmp.rename(src)
    return src / "vendor" / "llama.cpp"


def _run(cmd: list[str], log: Path, what: str, env: dict[str, str] | None = None) -> None:
    from edgemed.child import run_child

    outcome = run_child(cmd, log, env=env)
    if not outcome.ok:
        raise EdgemedError(f"{what}: {outcome.why()}; the full log is {log}")


def _build(ver: str, root: Path, jobs: int, force: bool, say: Callable[[str], None]) -> None:
    """Configure and build every tool of TOOLS into root/build, then write the stamp."""
    source = _sources(ver, root, say)
    build, log = root / "build", root / "build.log"
    (root / ".built").unlink(missing_ok=True)
    if force and (build / "CMakeCache.txt").is_file():  # a changed generator or flag set cannot reuse it in place
        shutil.rmtree(build)
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}  # it would turn GGML_NATIVE off
    say(f"building {', '.join(TOOLS)} from llama-cpp-python {ver}'s llama.cpp sources with -j {jobs} "
        f"(once; 7-20 minutes on 2 cores) into {build}; log: {log}")
    start = time.monotonic()
    _run(["cmake", "-S", str(source), "-B", str(build), *generator, *CMAKE_FLAGS], root / "configure.log",
         "cmake could not configure llama.cpp", env=env)
    _run(["cmake", "--build", str(build), "--target", *TOOLS, "-j", str(jobs)], log,
         "building llama.cpp's tools failed", env=env)
    for name in TOOLS:
        _check_runs(binary(name, ver))
    (root / ".built").write_text(stamp_text(ver))
    say(f"built in {time.monotonic() - start:.0f} s")


def _check_runs(path: Path) -> None:
    """The binary exists and starts (its usage exits 0 or 1; a missing shared library exits 127)."""
    import subprocess

    if not os.access(path, os.X_OK):
        raise EdgemedError(f"the llama.cpp build finished but {path} is missing; see {path.parents[2] / 'build.log'}")
    try:
        rc = subprocess.run([str(path), "--help"], capture_output=True, timeout=60).returncode
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EdgemedError(f"{path} does not run ({exc}); rebuild with FORCE=1 scripts/build_llama_tools.sh") from None
    if rc not in (0, 1):
        raise EdgemedError(f"{path} does not run (exit {rc}); rebuild with FORCE=1 scripts/build_llama_tools.sh")


def main(argv: list[str] | None = None) -> int:
    """python -m edgemed.llama_tools [--jobs N] [--force]: build (or find) the tools, print one path a line."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m edgemed.llama_tools", description=__doc__.splitlines()[0])
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
    say(f"llama.cpp tools of llama-cpp-python {llama_cpp_version()} are ready in {cache_root()}")
    for name in TOOLS:  # llama-bench then llama-perplexity last: scripts/dev/crosscheck_*.py read the last two lines
        print(paths[name])
    return 0


if __name__ == "__main__":
    sys.exit(main())
