"""Shared fixtures: an isolated model cache, the tiny random model, its training run, merge and exports (built once
per session, read-only), the real MedMCQA sample, the CLI, a memory cgroup to be killed in."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_MEDMCQA = REPO.parent / "shared" / "data" / "medmcqa"


# Fixtures that take more than ~20 s to build on 2 cores (a training run, an export, a pipeline, a bench, tune or
# scale-check run, a wheel, the bad-input corpus's fixtures). Every test that uses one, directly or through another
# fixture, is marked slow, so that `-m "not slow"` (the quick loop) never builds them; the whole suite runs them all.
SLOW_FIXTURES = frozenset({
    "tiny_training", "tiny_exports", "tiny_hf_gguf",  # and what is built on them (tiny_run, tiny_merged, ...)
    "corpus_env", "chain", "wheel", "pipeline_run", "onnx_dir", "ggufs", "scale_run", "first",
})


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config) -> None:
    """A pytest-xdist worker's temporary folder is the run's folder + ``popen-gwN``; the worker uses the run's folder
    + ``N`` instead, so the paths a test prints are about as long as in a run without workers (a command's console
    folds its lines at 80 columns, and a test may look for a whole path in them)."""
    worker, base = os.environ.get("PYTEST_XDIST_WORKER"), config.option.basetemp
    if worker and base:
        config.option.basetemp = str(Path(base).with_name(worker.removeprefix("gw")))


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    if os.environ.get("PYTEST_XDIST_WORKER"):
        heaviest_files_first(items)


def heaviest_files_first(items: list) -> None:
    """Order the files by how many of their tests are slow, most first (a file's own order kept): scripts/test.sh
    hands whole files to its pytest-xdist workers in this order, so the long files start first and the short ones
    fill the end, instead of one long file running alone at the end. Every worker sorts the same collection alike."""
    slow: dict[str, int] = {}
    for item in items:
        file = item.nodeid.split("::")[0]
        slow[file] = slow.get(file, 0) + bool(item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow[item.nodeid.split("::")[0]])


@pytest.fixture(scope="session", autouse=True)
def edgemed_cache(tmp_path_factory) -> Path:
    """Build aliases into a per-session cache so tests never read or write the user's model cache. llama.cpp's tools
    stay in the machine's cache (built once per machine, verified by their stamp's sha256 before use)."""
    from edgemed.export.gguf.tools import CACHE_ENV, cache_base

    os.environ.setdefault(CACHE_ENV, str(cache_base()))  # where they live with the user's EDGEMED_CACHE
    given = os.environ.get("EDGEMED_TEST_CACHE")
    # one cache per pytest-xdist worker: two workers building the same alias at once would replace each other's
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    cache = Path(given) / worker if given else tmp_path_factory.mktemp("edgemed-cache")
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


# --- expensive artifacts, built once per session and shared READ-ONLY -----------------------------------------------
# A test that changes one copies it first (shutil.copytree into its tmp_path); a module that needs other settings
# builds its own.


@pytest.fixture(scope="session")
def tiny_training(tiny_model, tmp_path_factory) -> tuple[Path, dict]:
    """(run folder, train_lora's metrics) of a LoRA run of tiny-random on the bundled sample: 4 steps of batch 4 at
    lr 5e-3, evaluated at steps 0, 2 and 4, one thread, the default split (seed 0, fraction 0.2), chatml."""
    from edgemed.train.recipe import train_lora

    out = tmp_path_factory.mktemp("tiny-run") / "run"
    metrics = train_lora("tiny-random", "sample", out, max_steps=4, batch_size=4, lr=5e-3, eval_steps=2, threads=1)
    return out, metrics


@pytest.fixture(scope="session")
def tiny_run(tiny_training) -> Path:
    """The run folder of :func:`tiny_training` (adapter/, checkpoints/, edgemed-run.json, lineage.json, metrics)."""
    return tiny_training[0]


@pytest.fixture(scope="session")
def tiny_merged(tiny_run, tmp_path_factory) -> Path:
    """:func:`tiny_run` merged into a plain model folder (edgemed-merge.json carries its lineage)."""
    from edgemed.merging import merge_adapter

    out = tmp_path_factory.mktemp("tiny-merged") / "merged"
    merge_adapter(adapter=tiny_run, out=out, force=True)
    return out


@pytest.fixture(scope="session")
def tiny_exports(tiny_model, tmp_path_factory) -> tuple[Path, list[dict]]:
    """(folder, results) of run_export of the untrained tiny model to every default format, verified, the GGUF
    chain overlapped with the ONNX one as the pipeline does: one artifact folder per format and export.json."""
    from edgemed.export.run import run_export

    out = tmp_path_factory.mktemp("tiny-exports")
    results = run_export(tiny_model, None, out, threads=2, show_progress=False, overlap=True)
    return out, results


@pytest.fixture(scope="session")
def tiny_hf_gguf(tiny_model, tmp_path_factory) -> Path:
    """hf + gguf-q8_0 of the tiny model written by the real `edgemed export --no-verify` (a folder of two artifact
    folders and export.json), what a bench or report test measures."""
    out = tmp_path_factory.mktemp("tiny-hf-gguf") / "exports"
    proc = run_cli("export", tiny_model, "--formats", "hf,gguf-q8_0", "--no-verify", "--out", out, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return out


def copy_artifacts(src: Path, dest: Path, names: list[str]) -> Path:
    """The artifact folders `names` of export folder `src` copied into `dest` (made), to export beside or change."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copytree(src / name, dest / name)
    return dest


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
    from edgemed.process.oom import memory_cgroups

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
