"""edgemed.memory_plan: a step that cannot fit this machine's memory is refused before any work, with its estimate
and the flag that helps. A model folder with Llama 3.1 70B's config (and no weights: nothing is loaded before the
refusal) is too large for any machine these tests run on; the 1B shape fits a 24 GB one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edgemed.memory_plan import GB, Shape, check_pipeline, merge_need, model_shape, train_need

LLAMA31_70B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8192, "intermediate_size": 28672,
    "num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8, "vocab_size": 128256,
    "max_position_embeddings": 131072, "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}


@pytest.fixture(scope="module")
def huge_model(tmp_path_factory, tiny_model) -> Path:
    """70B's config.json beside tiny-random's tokenizer, and a one-number safetensors file in place of its weights
    (export wants a weight file to be there; nothing reads it before the refusal)."""
    import numpy as np
    from safetensors.numpy import save_file

    folder = tmp_path_factory.mktemp("llama-70b-shape")
    for f in Path(tiny_model).iterdir():
        if f.is_file() and not f.name.endswith(".safetensors") and f.name != "config.json":
            shutil.copy(f, folder / f.name)
    (folder / "config.json").write_text(json.dumps(LLAMA31_70B))
    save_file({"placeholder": np.zeros(1, dtype=np.float32)}, str(folder / "model.safetensors"))
    return folder


def test_shapes_are_counted_without_weights(huge_model):
    one_b = model_shape("llama32-1b-shape")  # not built: its config is known
    assert one_b == Shape(params=1_235_814_400, layers=16, hidden=2048, intermediate=8192, vocab=128256,
                          stored_bytes=2)
    huge = model_shape(str(huge_model))
    assert huge is not None and 70.5e9 < huge.params < 70.6e9  # Llama 3.1 70B: 70.55B parameters
    assert model_shape("no/such-model-anywhere") is None  # not cached here: not estimated


def test_the_1b_shape_fits_24_gb_and_the_estimate_names_its_parts():
    shape = model_shape("llama32-1b-shape")
    need = train_need(shape, 4, batch_size=8, longest=142, gradient_checkpointing=False)  # the bundled sample
    assert 10 * GB < need.total < 20 * GB  # measured: 12.0 GB peak (docs/measurements.md)
    assert set(need.parts) == {"weights", "activations (8 x 142 tokens)", "runtime"}
    need.check(available=24 * 2**30)  # no refusal on a 24 GB machine
    assert 7 * GB < merge_need(shape).total < 10 * GB  # measured: 7.5 GB (8.0 with the pipeline process)
    qwen3 = model_shape("qwen3-0.6b-shape")  # a 151,936-entry vocabulary: the check's logits count
    assert 5.4 * GB < merge_need(qwen3).total < 8 * GB  # measured: 5.3 GB (5.9 with the pipeline process)
    check_pipeline("llama32-1b-shape", ["hf", "bnb-int8", "bnb-nf4", "onnx", "onnx-int8", "gguf-f16", "gguf-q8_0",
                                        "gguf-q4_k_m"])
    checkpointed = train_need(shape, 4, 8, 142, gradient_checkpointing=True)
    assert checkpointed.total < need.total - 5 * GB


def test_refusal_names_the_estimate_and_a_batch_size_that_fits():
    from edgemed.errors import EdgemedError

    shape = model_shape("llama32-1b-shape")
    with pytest.raises(EdgemedError) as info:
        train_need(shape, 4, 8, 512, gradient_checkpointing=False).check(available=16 * 10**9)
    text = str(info.value)
    assert "training needs about" in text and "more than this machine's 16.0 GB" in text
    assert "--gradient-checkpointing" in text and "--max-length" in text


@pytest.mark.slow  # over ~20 s on 2 cores
def test_train_export_and_pipeline_refuse_before_any_work(cli, huge_model, tmp_path):
    train = cli("train", "--model", huge_model, "--max-steps", "1", "--out", tmp_path / "t")
    assert train.returncode == 2, train.stderr
    assert "training needs about" in train.stderr and "--gradient-checkpointing" in train.stderr
    assert "Traceback" not in train.stderr and not (tmp_path / "t").exists()

    export = cli("export", huge_model, "--formats", "gguf-f16", "--out", tmp_path / "e")
    assert export.returncode == 2, export.stderr
    assert "exporting gguf-f16 needs about" in export.stderr and not (tmp_path / "e").exists()

    pipeline = cli("pipeline", "--model", huge_model, "--out", tmp_path / "p")
    assert pipeline.returncode == 2, pipeline.stderr
    assert "merging needs about" in pipeline.stderr and not (tmp_path / "p").exists()  # before training
