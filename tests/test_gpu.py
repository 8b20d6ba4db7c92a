"""On a CUDA GPU, for real: a LoRA training step in the GPU's default dtype, a --qlora step, the merge on the GPU,
and bitsandbytes inference (tiny-random, a few steps). Each test is skipped, with its reason, without CUDA
(scripts/check_gpu.sh runs them with the notebook's scenario)."""

from __future__ import annotations

import json
import math

import pytest

torch = pytest.importorskip("torch")

CUDA = torch.cuda.is_available()
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not CUDA, reason=f"needs a CUDA GPU; torch {torch.__version__} "
                                        f"(CUDA build: {torch.version.cuda or 'none, a CPU build'}) sees none"),
]


def needs(module: str):
    import importlib.util

    return pytest.mark.skipif(importlib.util.find_spec(module) is None, reason=f"needs {module} (pip install "
                                                                               f"'edgemed[bnb]')")


@pytest.fixture(scope="module")
def gpu_run(tmp_path_factory):
    """A LoRA run of tiny-random on cuda with default flags (two steps)."""
    from edgemed.train.recipe import train_lora

    out = tmp_path_factory.mktemp("gpu") / "run"
    metrics = train_lora("tiny-random", "sample", out, max_steps=2, limit=24, eval_limit=4, batch_size=4)
    return out, metrics


def _default_dtype() -> str:
    from edgemed.devices import cuda_native_bf16

    return "bfloat16" if cuda_native_bf16() else "float16"


def test_lora_trains_on_cuda_in_the_gpus_default_dtype(gpu_run):
    out, metrics = gpu_run
    record = json.loads((out / "edgemed-run.json").read_text())["device"]
    assert record["device"] == "cuda" and record["dtype"] == _default_dtype()
    assert record["grad_scaler"] == (record["dtype"] == "float16")
    assert record["gpu"]["name"] == torch.cuda.get_device_name(0)
    assert metrics["steps"] == 2 and metrics["dtype"] == record["dtype"]
    assert all(math.isfinite(p["loss"]) for p in metrics["train_loss"])
    assert math.isfinite(metrics["eval_loss_after"])


@needs("bitsandbytes")
def test_qlora_trains_on_cuda(tmp_path):
    from edgemed.train.recipe import train_lora

    out = tmp_path / "qlora"
    metrics = train_lora("tiny-random", "sample", out, max_steps=2, limit=24, eval_limit=4, batch_size=4, qlora=True)
    record = json.loads((out / "edgemed-run.json").read_text())
    assert record["options"]["qlora"] and record["device"]["device"] == "cuda"
    assert metrics["steps"] == 2 and math.isfinite(metrics["eval_loss_after"])
    assert (out / "adapter" / "adapter_model.safetensors").is_file()


def test_merge_on_cuda_matches_the_adapter(gpu_run, tmp_path):
    from edgemed.merging import merge_adapter

    out, _ = gpu_run
    record = merge_adapter(adapter=out, out=tmp_path / "merged", device="cuda")
    assert record["verification"]["max_abs_logit_diff"] <= 1e-3
    assert (tmp_path / "merged" / "config.json").is_file()


@needs("bitsandbytes")
@pytest.mark.parametrize("fmt", ["bnb-int8", "bnb-nf4"])
def test_bitsandbytes_inference_on_cuda(gpu_run, tmp_path, fmt):
    import numpy as np

    from edgemed.export.run import run_export
    from edgemed.merging import merge_adapter
    from edgemed.runtimes.hf import TransformersRuntime

    out, _ = gpu_run
    merged = tmp_path / "merged"
    merge_adapter(adapter=out, out=merged, device="cuda")
    results = run_export(merged, [fmt], tmp_path / "artifacts", verify=True)
    assert [r["status"] for r in results] == ["exported"], results
    runtime = TransformersRuntime(tmp_path / "artifacts" / fmt, device="auto")
    try:
        info = runtime.info()
        assert info["device"] == "cuda" and info["dtype"] == _default_dtype() and info["quantization"]
        logprobs = runtime.next_token_logprobs(["The capital of France is", "Vitamin C deficiency causes"])
        assert logprobs.shape[0] == 2 and np.isfinite(logprobs).all()
        assert np.allclose(np.exp(logprobs).sum(-1), 1.0, atol=1e-3)
    finally:
        runtime.close()
