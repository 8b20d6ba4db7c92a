"""Which build of llama.cpp's tools a machine needs, and whether a cached one is intact: the build key
(llama-cpp-python's version, the compilers, the CPU's features, the CMake flags), where the cache lives, and the
check of an entry's files against the sha256 its stamp records. The build itself is in
:mod:`edgemed.export.gguf.tools`."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from edgemed.errors import EdgemedError, install_message
from edgemed.fsutil import sha256_file
from edgemed.registry import runtime_spec

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


def llama_cpp_version() -> str:
    """The installed llama-cpp-python's version (read from its metadata: nothing is loaded)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llama-cpp-python")
    except PackageNotFoundError:
        raise EdgemedError("building llama.cpp's tools (from the installed llama-cpp-python's sources) "
                           + install_message(["llama-cpp-python"], runtime_spec("llama.cpp").extra)) from None


# Build-tree RPATHs relative to each binary ($ORIGIN), so the binaries and libraries keep finding each other once
# copied out of the temporary build folder into the cache entry. Not in CMAKE_FLAGS: it changes no code.
RELOCATABLE = ("-DCMAKE_BUILD_RPATH_USE_ORIGIN=ON",)
CACHE_ENV = "EDGEMED_LLAMA_TOOLS_CACHE"
STAMP = "edgemed-build.json"


def cache_base() -> Path:
    """The folder that holds every cached build: $EDGEMED_LLAMA_TOOLS_CACHE, else <edgemed's cache>/llama.cpp."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    from edgemed.models import cache_root as edgemed_cache

    return edgemed_cache() / "llama.cpp"


def _output(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def _compiler(env_var: str, names: tuple[str, ...]) -> str:
    """The --version text of the compiler CMake would pick ($CC/$CXX, else the first found; "" when none is)."""
    for name in filter(None, (os.environ.get(env_var), *names)):
        path = shutil.which(name)
        if path:
            return _output([path, "--version"]) or path
    return ""


def compiler_name(version_text: str) -> str:
    """A compiler's --version text as a short name: ``gcc-12.2.0``, ``clang-17.0.6``, ``none``."""
    if not version_text:
        return "none"
    first = version_text.splitlines()[0]
    family = ("clang" if "clang" in version_text.lower() else
              "gcc" if "Free Software Foundation" in version_text or "gcc" in first or "g++" in first else "cc")
    stated = re.search(r"version (\d+\.\d+(?:\.\d+)?)", first)  # clang; gcc ends its first line with it
    versions = [stated.group(1)] if stated else re.findall(r"\b\d+\.\d+(?:\.\d+)?\b", first)
    return f"{family}-{versions[-1]}" if versions else family


def cpu_features() -> str:
    """What GGML_NATIVE compiles for: the CPU's feature flags (Linux: /proc/cpuinfo; elsewhere its model name)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("flags", "Features"):
                return f"{platform.machine()}: {' '.join(sorted(value.split()))}"
    model = _output(["sysctl", "-n", "machdep.cpu.brand_string"]) if sys.platform == "darwin" else ""
    return f"{platform.machine()}: {model or platform.processor()}"


@dataclass(frozen=True)
class BuildKey:
    """What a build depends on: the llama.cpp sources (llama-cpp-python's version), the compilers, the CPU (native
    code) and the CMake flags. Two machines or environments with the same key can share one build."""

    version: str
    cc: str  # the C compiler's --version text ("" when none is found)
    cxx: str  # the same for the C++ compiler
    cpu: str

    @property
    def compiler(self) -> str:
        return compiler_name(self.cxx)

    @cached_property
    def digest(self) -> str:
        text = json.dumps([self.cc, self.cxx, self.cpu, list(CMAKE_FLAGS), list(RELOCATABLE)])
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def name(self) -> str:
        return f"{self.version}-{self.compiler}-{self.digest[:12]}"

    def to_dict(self) -> dict[str, object]:
        return {"llama_cpp_python": self.version, "cc": self.cc, "cxx": self.cxx, "cpu_sha256":
                hashlib.sha256(self.cpu.encode()).hexdigest(), "cmake_flags": [*CMAKE_FLAGS, *RELOCATABLE],
                "key": self.name}


def build_key(ver: str | None = None) -> BuildKey:
    """This machine's key for llama-cpp-python `ver` (default: the installed one)."""
    cc = _compiler("CC", ("cc", "gcc", "clang"))
    cxx = _compiler("CXX", ("c++", "g++", "clang++"))
    return BuildKey(ver or llama_cpp_version(), cc, cxx, cpu_features())


def cache_root(ver: str | None = None) -> Path:
    """The cache entry of this machine's build of llama-cpp-python `ver`'s tools (it may not exist yet)."""
    return cache_base() / build_key(ver).name


VERIFIED: dict[Path, tuple] = {}  # entry -> the (name, size, mtime) of its files when their hashes last matched


def file_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every regular file under folder/bin (a symlink records its target instead)."""
    out = {}
    for path in sorted((folder / "bin").iterdir()):
        rel = f"bin/{path.name}"
        out[rel] = f"-> {os.readlink(path)}" if path.is_symlink() else sha256_file(path)
    return out


def damage(entry: Path, key: BuildKey, names: tuple[str, ...] = TOOLS) -> str | None:
    """None when `entry` holds a complete build for `key` whose files match their recorded sha256, else what is
    wrong with it ("" when there is no entry at all)."""
    stamp = entry / STAMP
    if not entry.is_dir():
        return ""
    try:
        record = json.loads(stamp.read_text())
        files: dict[str, str] = record["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"its stamp {stamp} is missing or unreadable ({exc.__class__.__name__})"
    if {k: v for k, v in record.items() if k in key.to_dict()} != key.to_dict():
        return f"its stamp {stamp} was written for another llama-cpp-python, compiler, CPU or flag set"
    for name in names:
        if f"bin/{name}" not in files or not os.access(entry / "bin" / name, os.X_OK):
            return f"{name} is missing"
    try:
        signature = tuple((p.name, p.lstat().st_size, p.lstat().st_mtime_ns) for p in sorted((entry / "bin").iterdir()))
    except OSError as exc:
        return f"its bin folder cannot be read ({exc.strerror})"
    if VERIFIED.get(entry) == signature:
        return None
    try:
        actual = file_hashes(entry)
    except OSError as exc:
        return f"a file cannot be read ({exc.strerror})"
    changed = sorted(set(files) ^ set(actual) | {f for f in files if actual.get(f) != files[f]})
    if changed:
        return f"{', '.join(changed[:3])} {'does' if len(changed) == 1 else 'do'} not match the stamp's sha256"
    VERIFIED[entry] = signature
    return None


def env_root(ver: str) -> Path:
    """The in-environment build folder of llama-cpp-python `ver`'s tools (sdist/, build/, .built)."""
    return Path(sys.prefix) / "opt" / f"llama.cpp-{ver}"


def env_tools(ver: str, names: tuple[str, ...]) -> dict[str, Path] | None:
    """The tools of a build inside the environment whose stamp (version and CMake flags) holds, else None."""
    root = env_root(ver)
    try:
        same = (root / ".built").read_text() == "\n".join([ver, *CMAKE_FLAGS]) + "\n"
    except OSError:
        return None
    paths = {n: root / "build" / "bin" / n for n in names}
    return paths if same and all(os.access(p, os.X_OK) for p in paths.values()) else None
