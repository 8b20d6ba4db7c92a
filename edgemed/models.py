"""Resolve --model (alias, local folder or hub id) and load models (edgemed.devices: where). The aliases, and the
models edgemed builds for them: edgemed.builtin_models. Heavy imports live inside functions.
"""

from __future__ import annotations

import os
from pathlib import Path

from edgemed.builtin_models import ALIASES, build_alias
from edgemed.devices import DeviceChoice, pick_device  # noqa: F401  (their home: edgemed.devices)
from edgemed.errors import EdgemedError
from edgemed.fsutil import atomic_dir
from edgemed.registry import require_train

DEFAULT_MODEL = "smollm2-135m"
REAL_MODEL_EXAMPLE = "meta-llama/Llama-3.2-1B-Instruct"


def cache_root() -> Path:
    """Where built models live: $EDGEMED_CACHE, else the user cache dir."""
    env = os.environ.get("EDGEMED_CACHE")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgemed"
    return base.expanduser()


def is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file()


def resolve_model(name: str) -> str:
    """A local folder path (built for aliases) or a hub id, as a string transformers can load."""
    if name in ALIASES:
        target = cache_root() / "models" / name
        if not is_model_dir(target):
            require_train(f"the model alias '{name}' (built once with transformers into {target})")
            with atomic_dir(target, force=True) as tmp:
                build_alias(name, tmp)
        return str(target)
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir() or not is_model_dir(path):
            raise EdgemedError(
                f"{path} is not a model folder (no config.json); give a folder saved with "
                f"save_pretrained, a hub id, or an alias ({', '.join(ALIASES)})"
            )
        return str(path)
    parts = name.split("/")
    if len(parts) == 2 and all(parts) and not name.startswith((".", "~")):
        return name
    import difflib

    close = difflib.get_close_matches(name, list(ALIASES), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise EdgemedError(
        f"unknown model '{name}': not an alias ({', '.join(ALIASES)}), a local folder or a "
        f"hub id like {REAL_MODEL_EXAMPLE}{hint}"
    )


def load_tokenizer(path: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError, TypeError) as exc:  # e.g. a config.json without model_type
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise EdgemedError(f"could not load a tokenizer from {path}: {first}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(
    path: str,
    choice: DeviceChoice | None = None,
    trust_remote_code: bool = False,
    **kwargs,
):
    """A causal LM from a folder or hub id, safetensors only, remote code off by default."""
    import torch
    from transformers import AutoModelForCausalLM

    choice = choice or pick_device()
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path,
            dtype=getattr(torch, choice.dtype),
            trust_remote_code=trust_remote_code,
            use_safetensors=True,
            **kwargs,
        )
    except Exception as exc:
        if not (isinstance(exc, OSError | ValueError) or is_corrupt_weights(exc)):
            raise
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise EdgemedError(f"could not load a model from {path} ({type(exc).__name__}: {first}); the weights are "
                           "corrupt or not a model's: re-create them (re-export, re-merge or re-train)") from None
    if "device_map" not in kwargs and "quantization_config" not in kwargs:
        model.to(choice.device)
    model.eval()
    return model


def is_corrupt_weights(exc: BaseException) -> bool:
    """A safetensors file that cannot be parsed (safetensors raises its own SafetensorError, no OSError)."""
    return type(exc).__name__ in ("SafetensorError", "HeaderTooLarge", "InvalidHeaderDeserialization")
