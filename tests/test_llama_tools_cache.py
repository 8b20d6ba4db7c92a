"""The per-machine cache of llama.cpp's tools: built once, checked by its stamp's sha256, built atomically, shared by
concurrent builders.

The build is real (cmake and the C compiler) but of a stand-in source tree with the layout of llama-cpp-python's
sdist: four small programs named like the tools, linked against a shared library in the same bin folder, as
llama.cpp's are; building llama.cpp itself takes 7-20 minutes on 2 cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from edgemed.export.gguf import tools as llama_tools

VERSION = "0.0.0+edgemed.test"
CMAKE = """cmake_minimum_required(VERSION 3.14)
project(standin C)
set(CMAKE_RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)
set(CMAKE_LIBRARY_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)
add_library(standin SHARED lib.c)
foreach(tool llama-imatrix llama-quantize llama-bench llama-perplexity)
  add_executable(${tool} tool.c)
  target_link_libraries(${tool} standin)
endforeach()
"""

pytestmark = pytest.mark.skipif(bool(llama_tools.missing_build_tools()), reason="needs cmake and a C/C++ compiler")


@pytest.fixture
def standin(tmp_path, monkeypatch) -> Path:
    """A cache folder holding the stand-in sdist; llama_tools reads VERSION as the installed llama-cpp-python."""
    top = tmp_path / "pkg" / f"llama_cpp_python-{VERSION}"
    src = top / "vendor" / "llama.cpp"
    (src / "tools" / "imatrix").mkdir(parents=True)
    (src / "CMakeLists.txt").write_text(CMAKE)
    (src / "lib.c").write_text("int standin_answer(void) { return 1; }\n")
    (src / "tool.c").write_text("int standin_answer(void);\nint main(void) { return standin_answer(); }\n")
    cache = tmp_path / "cache"
    (cache / "sdist").mkdir(parents=True)
    with tarfile.open(cache / "sdist" / f"llama_cpp_python-{VERSION}.tar.gz", "w:gz") as tar:
        tar.add(top, arcname=top.name)
    monkeypatch.setenv(llama_tools.CACHE_ENV, str(cache))
    monkeypatch.setattr(llama_tools, "llama_cpp_version", lambda: VERSION)
    return cache


def test_built_once_then_reused_and_relocated_out_of_the_build_folder(standin):
    said: list[str] = []
    paths = llama_tools.ensure_tools(say=said.append)
    entry = standin / llama_tools.build_key(VERSION).name
    assert set(paths) == set(llama_tools.TOOLS) and all(p.parent == entry / "bin" for p in paths.values())
    assert any("building" in s for s in said)
    # only the entry, its logs, the lock and the sdist remain: no temporary build folder
    assert sorted(p.name for p in standin.iterdir() if p.name.startswith(".")) == []
    for path in paths.values():  # the build tree is gone: the binaries find their library next to them
        assert subprocess.run([str(path)]).returncode == 1
    stamp = json.loads((entry / llama_tools.STAMP).read_text())
    assert stamp["key"] == entry.name and stamp["llama_cpp_python"] == VERSION
    assert {f"bin/{n}" for n in llama_tools.TOOLS} <= set(stamp["files"])
    assert any(name.startswith("bin/lib") for name in stamp["files"])
    said.clear()
    assert llama_tools.ensure_tools(say=said.append) == paths and said == []  # the second call only checks


def test_the_key_names_version_compiler_and_a_hash_of_cpu_and_flags(standin, monkeypatch):
    key = llama_tools.build_key(VERSION)
    assert key.name.startswith(f"{VERSION}-{key.compiler}-") and key.compiler != "none"
    other_cpu = llama_tools.BuildKey(key.version, key.cc, key.cxx, key.cpu + " avx9000")
    assert other_cpu.name != key.name and other_cpu.name.startswith(f"{VERSION}-{key.compiler}-")
    assert llama_tools.compiler_name("clang version 17.0.6 (https://github.com/llvm)\nTarget: x86_64") == "clang-17.0.6"
    assert llama_tools.compiler_name("g++ (Debian 12.2.0-14) 12.2.0\nCopyright (C) 2022 Free Software "
                                     "Foundation, Inc.") == "gcc-12.2.0"
    monkeypatch.setenv(llama_tools.CACHE_ENV, "")
    monkeypatch.setenv("EDGEMED_CACHE", str(standin / "elsewhere"))
    assert llama_tools.cache_base() == standin / "elsewhere" / "llama.cpp"


def test_a_damaged_entry_is_rebuilt_and_said_not_used(standin):
    paths = llama_tools.ensure_tools(say=lambda _: None)
    entry = paths["llama-bench"].parents[1]
    lib = next(p for p in (entry / "bin").iterdir() if p.name.startswith("lib") and not p.is_symlink())
    lib.write_bytes(lib.read_bytes() + b"\0")  # one byte more: the recorded sha256 no longer holds
    assert "does not match the stamp's sha256" in llama_tools.damage(entry, llama_tools.build_key(VERSION))
    said: list[str] = []
    assert llama_tools.ensure_tools(say=said.append) == paths
    assert "damaged" in said[0] and lib.name in said[0]
    assert llama_tools.damage(entry, llama_tools.build_key(VERSION)) is None
    (entry / llama_tools.STAMP).write_text("{not json")
    assert "stamp" in llama_tools.damage(entry, llama_tools.build_key(VERSION))


def test_a_failed_build_leaves_no_entry_and_names_its_log(standin):
    tarball = next((standin / "sdist").glob("*.tar.gz"))
    top = standin.parent / "pkg" / f"llama_cpp_python-{VERSION}"  # the stand-in's sources, made broken
    (top / "vendor" / "llama.cpp" / "tool.c").write_text("this is not C\n")
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(top, arcname=top.name)
    with pytest.raises(llama_tools.EdgemedError, match="building llama.cpp's tools failed") as exc:
        llama_tools.ensure_tools(say=lambda _: None)
    log = Path(str(exc.value).rsplit("the full log is ", 1)[1])
    assert log.is_file() and "error" in log.read_text().lower()
    assert not (standin / llama_tools.build_key(VERSION).name).exists()
    assert not [p for p in standin.iterdir() if p.name.startswith(".")]  # no half-built folder left


def test_concurrent_builders_build_once_and_agree(standin):
    script = (f"import sys, edgemed.export.gguf.tools as t; t.llama_cpp_version = lambda: {VERSION!r}; "
              "p = t.ensure_tools(say=lambda s: print('SAID', s, file=sys.stderr)); print(p['llama-bench'])")
    env = {**os.environ, llama_tools.CACHE_ENV: str(standin)}
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert outs[0][0] == outs[1][0]
    builds = sum(err.count("SAID building") for _, err in outs)
    assert builds == 1, outs  # the second waited on the lock, then found the first's entry
