"""Shared fixtures: an isolated model cache, the tiny random model, the real MedMCQA sample, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_MEDMCQA = REPO.parent / "shared" / "data" / "medmcqa"


@pytest.fixture(scope="session", autouse=True)
def edgemed_cache(tmp_path_factory) -> Path:
    """Build aliases into a per-session cache so tests never read or write the user's cache."""
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
