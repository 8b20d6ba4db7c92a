"""Shared fixtures: an isolated model cache, the tiny random model, the real MedMCQA sample, the CLI, a memory
cgroup to be killed in."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_MEDMCQA = REPO.parent / "shared" / "data" / "medmcqa"


@pytest.fixture(scope="session", autouse=True)
def edgemed_cache(tmp_path_factory) -> Path:
    """Build aliases into a per-session cache so tests never read or write the user's model cache. llama.cpp's tools
    stay in the machine's cache (built once per machine, verified by their stamp's sha256 before use)."""
    from edgemed.llama_tools import CACHE_ENV, cache_base

    os.environ.setdefault(CACHE_ENV, str(cache_base()))  # where they live with the user's EDGEMED_CACHE
    cache = Path(os.environ.get("EDGEMED_TEST_CACHE") or tmp_path_factory.mktemp("edgemed-cache"))
    os.environ["EDGEMED_CACHE"] = str(cache)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    # Tests run several engines at once on a small shared CPU: OpenMP threads that spin would starve each other.
    # The product never sets this (engines keep their own default); tests may, through the environment.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return cache


@pytest.fixture(scope="session")
def tiny_model(edgemed_cache) -> Path:
    from edgemed.models import resolve_model

    return Path(resolve_model("tiny-random"))


@pytest.fixture(scope="session")
def smollm2_model(edgemed_cache) -> Path:
    from edgemed.models import resolve_model

    return Path(resolve_model("smollm2-135m"))


@pytest.fixture(scope="session")
def medmcqa() -> Path:
    if not SHARED_MEDMCQA.is_dir():
        pytest.skip(f"real MedMCQA sample not found at {SHARED_MEDMCQA} (../shared beside the repo)")
    return SHARED_MEDMCQA


def run_cli(
    *args: str, timeout: float = 900, env: dict | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    """Run the real `edgemed` command in a subprocess (in `cwd` if given); returns the completed process."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "edgemed.cli.main", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=cwd,
    )


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture
def memory_cgroup() -> Iterator[Callable[[int], Path]]:
    """``make(mb)``: a new memory cgroup under this process's own, limited to `mb` MiB (swap included), so that the
    kernel OOM-kills what outgrows it; a process joins by writing its pid to ``FOLDER/cgroup.procs``. Skipped
    where no writable memory cgroup exists (root on cgroup v1, or a delegated v2 subtree); removed afterwards."""
    from edgemed.oom import memory_cgroups

    made: list[Path] = []

    def make(mb: int) -> Path:
        groups = memory_cgroups()
        if not groups:
            pytest.skip("no memory cgroup found (/proc/self/cgroup, /proc/self/mountinfo)")
        parent, counter = groups[0]
        folder = parent / f"edgemed-test-{os.getpid()}-{len(made)}"
        limits = (["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"] if counter == "memory.oom_control"
                  else ["memory.max", "memory.swap.max"])
        try:
            folder.mkdir()
        except OSError as exc:
            pytest.skip(f"memory cgroup {parent} is not writable here ({exc.strerror}); the OOM test needs root")
        made.append(folder)
        try:
            (folder / limits[0]).write_text(str(mb << 20))
            if (folder / limits[1]).exists():  # no swapping out instead of being killed
                (folder / limits[1]).write_text(str(mb << 20) if counter == "memory.oom_control" else "0")
        except OSError as exc:
            pytest.skip(f"cannot set a memory limit in {folder} ({exc.strerror})")
        return folder

    yield make
    for folder in reversed(made):
        for pid in (folder / "cgroup.procs").read_text().split():  # none expected: move any left to the parent
            with contextlib.suppress(OSError):
                (folder.parent / "cgroup.procs").write_text(pid)
        for _ in range(50):  # a killed process leaves the cgroup once reaped
            try:
                folder.rmdir()
                break
            except OSError:
                time.sleep(0.1)


def load_script(path: Path):
    """A script of scripts/dev/ (not a package) imported as a module of its file's name."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(module)
    return module
