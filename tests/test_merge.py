"""Merging: the merged model gives the adapter model's logits; wrong or missing adapters are refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edgemed.errors import CheckFailed, EdgemedError


@pytest.fixture(scope="module")
def run(tiny_run) -> Path:
    """The session's shared LoRA run of tiny-random (conftest; lr 5e-3 moves it): read-only."""
    return tiny_run


@pytest.fixture(scope="module")
def other_base(tmp_path_factory, tiny_model) -> Path:
    """A second small Llama with another width: an adapter of tiny-random cannot fit it."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    dest = tmp_path_factory.mktemp("other-base")
    torch.manual_seed(1)
    config = LlamaConfig(vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(dest, safe_serialization=True)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(dest)
    return dest


def _prompt_batch(model_dir: Path):
    from edgemed.data import load_questions
    from edgemed.models import load_tokenizer
    from edgemed.prompts import get_style

    tok = load_tokenizer(str(model_dir))
    tok.padding_side = "right"
    qs, _ = load_questions("sample", limit=3)
    texts = [get_style("chatml").prompt(q) for q in qs]
    return tok(texts, return_tensors="pt", padding=True)


def test_merged_model_matches_the_adapter_model(run, tmp_path, cli):
    import torch
    from peft import PeftModel

    from edgemed.models import load_model, pick_device

    out = tmp_path / "merged"
    proc = cli("merge", "--adapter", run, "--out", out)  # --base comes from edgemed-run.json
    assert proc.returncode == 0, proc.stderr
    record = json.loads((out / "edgemed-merge.json").read_text())
    assert record["base_model"]["given"] == "tiny-random"
    lineage = json.loads((run / "lineage.json").read_text())
    assert record["lineage"] == lineage  # carried whole, not re-derived
    assert lineage["prompt_style"] == json.loads((run / "edgemed-run.json").read_text())["prompt_style"]
    v = record["verification"]
    assert v["passed"] and v["max_abs_logit_diff"] <= v["tolerance"] == 1e-3
    eval_ids = set(lineage["eval_ids"])
    assert v["questions"] and set(v["questions"]) <= eval_ids  # verified on held-out questions
    assert v["adapter_effect_max_abs"] > 1e-4  # the trained adapter really changes the logits
    assert (out / "model.safetensors").exists() and (out / "tokenizer.json").exists()
    assert not list(out.glob("adapter_*"))  # a plain model, no adapter left

    # independent check: reload both and compare logits on the non-padded positions
    cpu = pick_device("cpu", "float32")
    batch = _prompt_batch(out)
    mask = batch["attention_mask"].bool()
    adapter_model = PeftModel.from_pretrained(load_model(record["base_model"]["resolved"], cpu), run / "adapter")
    merged = load_model(str(out), cpu)
    with torch.inference_mode():
        a = adapter_model(**batch).logits[mask]
        m = merged(**batch).logits[mask]
        with adapter_model.disable_adapter():
            b = adapter_model(**batch).logits[mask]
    assert (a - m).abs().max().item() < 1e-3
    assert (a - b).abs().max().item() > 1e-4


def test_merge_refuses_an_adapter_of_another_base(run, other_base, cli, tmp_path):
    out = tmp_path / "merged"
    proc = cli("merge", "--adapter", run, "--out", out, "--base", other_base)
    assert proc.returncode == 2
    assert "hidden_size" in proc.stderr and "--base" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()
    # a bare adapter folder (no run record): the shapes themselves do not fit
    bare = tmp_path / "bare-adapter"
    shutil.copytree(run / "adapter", bare)
    proc = cli("merge", "--adapter", bare, "--out", out, "--base", other_base)
    assert proc.returncode == 2, proc.stderr
    assert "does not fit" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists() and not list(tmp_path.glob(".merged.*"))


def test_merge_disagreement_fails_and_writes_nothing(run, tmp_path, monkeypatch):
    """A merge that changes the model (here: a corrupted weight) is caught by the logit check."""
    import torch
    from peft.tuners.tuners_utils import BaseTuner

    from edgemed.merging import merge_adapter

    real = BaseTuner.merge_and_unload

    def broken(self, *args, **kwargs):
        model = real(self, *args, **kwargs)
        with torch.no_grad():
            model.model.layers[0].mlp.down_proj.weight.add_(0.05)
        return model

    monkeypatch.setattr(BaseTuner, "merge_and_unload", broken)
    out = tmp_path / "merged"
    with pytest.raises(CheckFailed, match="verification failed"):
        merge_adapter(run, out)
    assert not out.exists() and not list(tmp_path.glob(".merged.*"))


def test_merge_bad_inputs_exit_2(run, cli, tmp_path):
    out = tmp_path / "merged"
    proc = cli("merge", "--adapter", tmp_path / "nope", "--out", out)
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = cli("merge", "--adapter", empty, "--out", out)
    assert proc.returncode == 2 and "no LoRA adapter" in proc.stderr
    no_weights = tmp_path / "no-weights"
    shutil.copytree(run / "adapter", no_weights)
    (no_weights / "adapter_model.safetensors").unlink()
    proc = cli("merge", "--adapter", no_weights, "--out", out)
    assert proc.returncode == 2 and "adapter_model.safetensors" in proc.stderr
    assert not out.exists()
    out.mkdir()
    proc = cli("merge", "--adapter", run, "--out", out)
    assert proc.returncode == 2 and "--force" in proc.stderr
    for p in (proc,):
        assert "Traceback" not in p.stderr


def test_merge_api_force_replaces(run, tmp_path):
    from edgemed.merging import merge_adapter

    out = tmp_path / "merged"
    (out / "stale").mkdir(parents=True)
    with pytest.raises(EdgemedError, match="--force"):
        merge_adapter(run, out)
    record = merge_adapter(run, out, force=True, prompts=2)
    assert record["verification"]["passed"] and len(record["verification"]["questions"]) == 2
    assert not (out / "stale").exists() and (out / "edgemed-merge.json").exists()


def test_stale_partial_of_a_killed_merge_is_removed_on_the_next_run(run, cli, tmp_path):
    """A SIGKILLed merge leaves .merged.PID.*.partial; the next merge into the same --out removes it (a live run's
    temp folder is left alone)."""
    import os

    stale = tmp_path / ".merged.999999999.abc123.partial"  # no such pid
    legacy = tmp_path / ".merged.k2j4h5.partial"  # written before temp names carried the pid
    live = tmp_path / f".merged.{os.getpid()}.xyz.partial"
    for d in (stale, legacy, live):
        d.mkdir()
        (d / "model.safetensors").write_bytes(b"half")
    proc = cli("merge", "--adapter", run, "--out", tmp_path / "merged", "--tolerance", "-1")  # stops on bad input
    assert proc.returncode == 2 and "--tolerance" in proc.stderr
    assert not stale.exists() and not legacy.exists() and live.exists()


def test_merge_device_cuda_without_cuda_exits_2(run, cli, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = cli("merge", "--adapter", run, "--out", tmp_path / "merged", "--device", "cuda")
    assert proc.returncode == 2 and "--device cuda" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "merged").exists()
