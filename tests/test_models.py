"""Model aliases, the fixed SmolLM2 tokenizer, device choice, model-name errors."""

from __future__ import annotations

import json

import pytest

from edgemed.errors import EdgemedError
from edgemed.models import load_tokenizer, pick_device, resolve_model


def test_tiny_random_is_a_llama_with_the_smollm2_tokenizer(tiny_model):
    config = json.loads((tiny_model / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert config["num_hidden_layers"] == 2
    assert (tiny_model / "model.safetensors").exists()
    assert not list(tiny_model.glob("*.bin"))  # safetensors only


def test_fixed_tokenizer(tiny_model):
    tok = load_tokenizer(str(tiny_model))
    assert tok.eos_token == tok.pad_token == "<|im_end|>"
    ids = tok("<|im_start|>user\nDose 12 mg<|im_end|>")["input_ids"]
    assert ids[0] == tok.convert_tokens_to_ids("<|im_start|>")  # no extra BOS in front
    assert ids.count(ids[0]) == 1
    assert ids[-1] == tok.eos_token_id
    pieces = tok.convert_ids_to_tokens(ids)
    assert "1" in pieces and "2" in pieces  # digits split one by one, as llama.cpp's smollm pre-tokenizer does
    assert tok.decode(ids) == "<|im_start|>user\nDose 12 mg<|im_end|>"  # byte-level decoder round-trips
    for letter in "ABCD":
        assert len(tok(f" {letter}", add_special_tokens=False)["input_ids"]) == 1


def test_alias_is_cached(tiny_model):
    assert resolve_model("tiny-random") == str(tiny_model)


def test_local_folder_and_hub_id_pass_through(tiny_model, tmp_path):
    assert resolve_model(str(tiny_model)) == str(tiny_model)
    assert resolve_model("meta-llama/Llama-3.2-1B-Instruct") == "meta-llama/Llama-3.2-1B-Instruct"
    with pytest.raises(EdgemedError, match="not a model folder"):
        resolve_model(str(tmp_path))


def test_unknown_model_suggests_alias():
    with pytest.raises(EdgemedError, match="did you mean 'smollm2-135m'"):
        resolve_model("smollm2")


def test_pick_device_cpu():
    choice = pick_device("cpu")
    assert (choice.device, choice.dtype) == ("cpu", "float32")
    with pytest.raises(EdgemedError):
        pick_device("tpu")


@pytest.mark.slow
def test_smollm2_loads_with_fixed_tokenizer(smollm2_model):
    tok = load_tokenizer(str(smollm2_model))
    config = json.loads((smollm2_model / "config.json").read_text())
    assert config["num_hidden_layers"] == 30 and config["hidden_size"] == 576
    assert tok.eos_token == "<|im_end|>"
    assert "<|im_start|>" in (tok.chat_template or "")


def test_llama32_1b_shape_is_llama_3_2_1b():
    """The alias's configuration is Llama 3.2 1B Instruct's: same parameter count (1,235,814,400, tied embeddings),
    vocabulary, attention layout and llama3 rope scaling. Counted on the meta device: no 5 GB of weights."""
    import torch
    from transformers import LlamaForCausalLM

    from edgemed.builtin_models import llama32_1b_config
    from edgemed.models import ALIASES

    assert "llama32-1b-shape" in ALIASES
    config = llama32_1b_config()
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    assert sum(p.numel() for p in model.parameters()) == 1_235_814_400
    assert (config.vocab_size, config.hidden_size, config.intermediate_size) == (128256, 2048, 8192)
    assert (config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads) == (16, 32, 8)
    assert config.tie_word_embeddings and config.head_dim == 64
    assert config.rope_scaling["rope_type"] == "llama3" and config.rope_scaling["factor"] == 32.0
    assert config.rope_theta == 500000.0 and config.max_position_embeddings == 131072


def test_qwen3_shape_is_qwen3_0_6b():
    """qwen3-0.6b-shape's configuration is Qwen3 0.6B's: 596,049,920 parameters (tied embeddings), 28 layers, a
    151,936-token vocabulary, QK norm, 16 query / 8 KV heads of 128; the memory plan reads it without building it."""
    import torch
    from transformers import Qwen3ForCausalLM

    from edgemed.builtin_models import SHAPES, shape_config
    from edgemed.memory_plan import Shape, model_shape
    from edgemed.models import ALIASES

    assert "qwen3-0.6b-shape" in ALIASES and SHAPES["qwen3-0.6b-shape"].family == "qwen3"
    config = shape_config("qwen3-0.6b-shape")
    with torch.device("meta"):
        model = Qwen3ForCausalLM(config)
    assert sum(p.numel() for p in model.parameters()) == 596_049_920
    assert any("q_norm" in n for n, _ in model.named_parameters())
    assert (config.vocab_size, config.hidden_size, config.intermediate_size) == (151936, 1024, 3072)
    assert (config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads) == (28, 16, 8)
    assert config.tie_word_embeddings and config.head_dim == 128 and config.rope_theta == 1000000.0
    assert model_shape("qwen3-0.6b-shape") == Shape(params=596_049_920, layers=28, hidden=1024, intermediate=3072,
                                                    vocab=151936, stored_bytes=2)
