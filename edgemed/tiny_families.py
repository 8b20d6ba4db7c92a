"""The model families edgemed builds a tiny random model of (``tiny-random-<family>``, built by
edgemed.builtin_models): each family's real transformers classes, a shrunk config that keeps its quirks, its
special tokens and its chat template. The templates are written in the format the family's instruct models
document and ship (what matters for edgemed: roles, system handling, BOS, thinking flags, turn ends)."""

from __future__ import annotations

from dataclasses import dataclass, field

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
