"""Optional modules: whether one is importable here, importing one or naming the extra that installs it, and
``"module:attr"`` loading (the lazy entries of the registry and of the CLI's command table).

Which extra a format or runtime needs is the registry's (:mod:`edgemed.registry`); this module only answers for a
module name and an extra it is given.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterable

from edgemed.errors import EdgemedError, MissingDependency, install_message

# What the commands that load a model with transformers import (train, merge, export's reference, building an
# alias): the `train` extra. A board install (one run extra) lacks it; those commands then exit 2 naming it.
TRAIN_EXTRA = "train"
TRAIN_NEEDS = ("torch", "transformers", "peft", "accelerate", "safetensors")
# Extras that belong to no runtime or format, named in install_message by the code that needs them.
DATA_EXTRA = "data"  # datasets (hub sources) and pyarrow (.parquet files)
PLOT_EXTRA = "plot"  # matplotlib (pareto.png of edgemed bench and edgemed tune)


def load_object(target: str):
    """Import ``"module:attr"`` lazily (the one loader: registry entries and the CLI's command table)."""
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def importable(module: str) -> bool:
    """Whether `module` can be imported here, found without importing it (a dotted name whose parent package is
    missing, or a finder that refuses it, is not importable)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing_modules(modules: Iterable[str]) -> list[str]:
    """The modules of `modules` that cannot be imported here (found without importing them)."""
    return [m for m in modules if not importable(m)]


def require_module(module: str, extra: str, what: str):
    """Import an optional module, or raise MissingDependency (exit 2): `what` needs it, and which extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependency(module.split(".")[0], extra, what) from exc


def require_train(what: str) -> None:
    """Raise EdgemedError (exit 2) naming the `train` extra when a package it brings is missing."""
    missing = missing_modules(TRAIN_NEEDS)
    if missing:
        raise EdgemedError(f"{what} {install_message(missing, TRAIN_EXTRA)} (this install lacks them)")
