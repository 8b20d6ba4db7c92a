"""The onnxruntime and llama.cpp runtimes on the tiny model: agreement with transformers, generation,
token parity, the GGUF-only and ONNX-only import chains, the repacking crash guard, and corrupt inputs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from edgemed.data import load_questions
from edgemed.prompts import get_style

PROMPTS = [get_style("chatml").prompt(q) for q in load_questions("sample")[0][:5]]


@pytest.fixture(scope="module")
def reference(tiny_model):
    from edgemed.runtimes.hf import TransformersRuntime

    rt = TransformersRuntime(tiny_model, threads=2, device="cpu", dtype="float32")
    yield rt
    rt.close()


@pytest.fixture(scope="module")
def onnx_dir(tiny_exports, tmp_path_factory):
    """What export_onnx(tiny_model, dest, OnnxExporter.defaults) writes: the shared export's onnx artifact (made by
    that call) without its edgemed.json."""
    out, _ = tiny_exports
    dest = tmp_path_factory.mktemp("onnx") / "onnx"
    shutil.copytree(out / "onnx", dest, ignore=shutil.ignore_patterns("edgemed.json"))
    return dest


@pytest.fixture(scope="module")
def ggufs(tiny_exports, tmp_path_factory):
    """f16.gguf (llama.cpp's converter) and q4_k_m.gguf (llama_model_quantize of it on 2 threads) of the tiny model:
    the files of the shared export's gguf-f16 and gguf-q4_k_m artifacts, made by those calls."""
    out, _ = tiny_exports
    dest = tmp_path_factory.mktemp("gguf")
    shutil.copy(next((out / "gguf-f16").glob("*.gguf")), dest / "f16.gguf")
    shutil.copy(next((out / "gguf-q4_k_m").glob("*.gguf")), dest / "q4_k_m.gguf")
    return dest


def test_onnx_matches_transformers_batched_and_single(onnx_dir, reference):
    from edgemed.runtimes.onnx import OnnxRuntime

    with OnnxRuntime(onnx_dir, threads=2) as rt:
        batched = rt.letter_logprobs(PROMPTS, batch_size=8)  # different lengths: left padding + positions
        single = rt.letter_logprobs(PROMPTS, batch_size=1)
        assert np.abs(batched - single).max() < 1e-4
        assert np.abs(batched - reference.letter_logprobs(PROMPTS)).max() < 1e-3
        assert rt.tokenize(PROMPTS[0]) == reference.tokenize(PROMPTS[0])
        digits = "Dose 12.5 mg/kg q8h, 2024 cases; 37.5°C — naïve<|im_end|>\n<|im_start|>assistant\n"
        for text in [*PROMPTS[1:], digits]:  # the Rust tokenizer gives the transformers tokenizer's ids
            ids = rt.tokenize(text)
            assert ids == reference.tokenize(text), text
            assert rt.tokenize(text, add_special=False) == reference.tokenize(text, add_special=False)
            assert rt.detokenize(ids) == reference.detokenize(ids)
        assert rt.letter_ids == reference.letter_ids
        assert rt.chat_template() == reference.chat_template() and rt.prompt_style == "chatml"
        eos = reference.tokenizer.eos_token_id
        assert rt.is_end(eos) and not rt.is_end(rt.letter_ids[0])
        info = rt.info()
        assert info["intra_op_num_threads"] == 2 and info["provider"] == "CPUExecutionProvider"
        assert info["threads"] == 2 and info["dtype"] == "float32" and info["device"] == "cpu"
        assert info["takes_position_ids"] is True and "omp_wait_policy" in info and info["onnxruntime"]


def test_onnx_greedy_generation_matches_transformers(onnx_dir, reference):
    from edgemed.runtimes.onnx import OnnxRuntime

    with OnnxRuntime(onnx_dir, threads=2) as rt:
        got = rt.generate(PROMPTS[1], max_new_tokens=6)
    want = reference.generate(PROMPTS[1], max_new_tokens=6)
    assert got.text == want.text and got.new_tokens == want.new_tokens
    assert len(got.token_times) == got.new_tokens
    assert got.token_times == sorted(got.token_times) and got.total_s >= got.ttft_s > 0


def test_onnx_sequence_logprobs_match_transformers(onnx_dir, tiny_model):
    import torch
    from transformers import AutoModelForCausalLM

    from edgemed.runtimes.onnx import OnnxRuntime

    with OnnxRuntime(onnx_dir, threads=2) as rt:
        ids = rt.tokenize(PROMPTS[2])
        got = rt.sequence_logprobs(ids)
        assert rt.vocab_size == got.shape[1]
        # the last row is what next_token_logprobs and a fresh prefill see
        assert np.abs(got[-1] - rt.next_token_logprobs([PROMPTS[2]])[0]).max() < 1e-4
        first = rt.prefill(ids)
        assert first.dtype == np.float32 and rt.decode(ids[0]).dtype == np.float32
    assert got.dtype == np.float32 and got.shape == (len(ids), rt.vocab_size)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model), dtype=torch.float32).eval()
    with torch.inference_mode():
        want = model(torch.tensor([ids])).logits[0].float().log_softmax(-1).numpy()
    assert np.abs(got - want).max() < 1e-3


def test_onnx_runtime_needs_no_torch_transformers_or_optimum(onnx_dir, reference, tmp_path):
    """Open an ONNX artifact, score letters, take sequence log-probs and generate with torch, transformers and
    optimum made unimportable (what `pip install 'edgemed[onnx]'` gives)."""
    artifact = tmp_path / "onnx"
    shutil.copytree(onnx_dir, artifact)
    want = reference.letter_logprobs(PROMPTS[:3])
    proc = _run_py(f"""
        import importlib.abc, json, sys
        BANNED = ("torch", "transformers", "optimum")
        class Forbid(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BANNED:
                    raise RuntimeError("forbidden import: " + name)
        sys.meta_path.insert(0, Forbid())
        from edgemed.data import load_questions
        from edgemed.prompts import get_style
        from edgemed.runtimes.base import open_runtime
        qs = load_questions("sample")[0][:3]
        with open_runtime({str(artifact)!r}, threads=1) as rt:
            prompts = [get_style(rt.prompt_style).prompt(q) for q in qs]
            lp = rt.letter_logprobs(prompts)
            seq = rt.sequence_logprobs(rt.tokenize(prompts[0]))
            g = rt.generate(prompts[0], max_new_tokens=3)
            info = rt.info()
        print(json.dumps({{"lp": lp.tolist(), "seq": list(seq.shape), "vocab": rt.vocab_size, "n": g.new_tokens,
                          "style": rt.prompt_style, "runtime": info["runtime"], "dtype": info["dtype"],
                          "loaded": sorted(m for m in sys.modules if m.split(".")[0] in BANNED)}}))
    """)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["loaded"] == [] and out["style"] == "chatml" and out["n"] >= 1
    assert out["runtime"] == "onnxruntime" and out["dtype"] == "float32"
    assert out["seq"][1] == out["vocab"] and out["seq"][0] > 1
    assert np.abs(np.array(out["lp"]) - want).max() < 1e-3


def test_llamacpp_tokens_and_letters_match_transformers(ggufs, reference):
    from edgemed.runtimes.llamacpp import LlamaCppRuntime

    digits = "Dose 12.5 mg/kg q8h, 2024 cases; 37.5°C — naïve<|im_end|>\n<|im_start|>assistant\n"
    with LlamaCppRuntime(ggufs / "f16.gguf", threads=1) as rt:
        for text in [*PROMPTS, digits]:
            assert rt.tokenize(text) == reference.tokenize(text), text
        assert rt.letter_ids == reference.letter_ids
        lp = rt.letter_logprobs(PROMPTS)
        assert np.abs(lp - reference.letter_logprobs(PROMPTS)).max() < 0.05
        # the KV cache is reset between prompts: scoring one prompt alone gives the same numbers
        assert np.allclose(rt.letter_logprobs(PROMPTS[2:3]), lp[2:3], atol=1e-4)
        assert rt.chat_template() and rt.prompt_style == "chatml"


def test_llamacpp_generation_and_stop(ggufs):
    from edgemed.runtimes.llamacpp import LlamaCppRuntime

    with LlamaCppRuntime(ggufs / "f16.gguf", threads=1) as rt:
        g = rt.generate(PROMPTS[0], max_new_tokens=5)
        assert g.new_tokens == len(g.token_times) >= 1
        assert g.token_times == sorted(g.token_times) and g.prompt_tokens == len(rt.tokenize(PROMPTS[0]))
        again = rt.generate(PROMPTS[0], max_new_tokens=5)
        assert again.text == g.text  # greedy and reset: deterministic
        if len(g.text) > 1:
            stop = g.text[1:]
            cut = rt.generate(PROMPTS[0], max_new_tokens=5, stop=[stop])
            assert cut.text == g.text[: g.text.find(stop)] and cut.new_tokens < g.new_tokens
        info = rt.info()
        assert info["threads"] == 1 and "kernel_path" in info and info["tokenizer_pre"] == "smollm"


def _run_py(code: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("repack", [None, False])
def test_quantized_gguf_decodes_in_a_subprocess(ggufs, repack):
    """The AMX repacking crash hit at the first decode of K-quant GGUFs: decode for real, out of process."""
    proc = _run_py(f"""
        import json
        from edgemed.runtimes.llamacpp import LlamaCppRuntime, cpu_has_amx
        rt = LlamaCppRuntime({str(ggufs / "q4_k_m.gguf")!r}, threads=1, repack={repack!r})
        g = rt.generate("Question: 2+2?\\nAnswer:", max_new_tokens=3)
        print(json.dumps({{"n": g.new_tokens, "repack": rt.info()["repack"], "amx": cpu_has_amx()}}))
    """)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["n"] >= 1
    assert out["repack"] is (False if repack is False else not out["amx"])


def test_gguf_runtime_needs_neither_torch_nor_transformers(ggufs, tmp_path):
    """Open a GGUF artifact, score letters and generate with torch and transformers made unimportable."""
    artifact = tmp_path / "gguf-q4_k_m"
    artifact.mkdir()
    shutil.copy(ggufs / "q4_k_m.gguf", artifact / "model-q4_k_m.gguf")
    proc = _run_py(f"""
        import importlib.abc, json, sys
        class Forbid(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "transformers"):
                    raise RuntimeError("forbidden import: " + name)
        sys.meta_path.insert(0, Forbid())
        from edgemed.data import load_questions
        from edgemed.prompts import get_style
        from edgemed.runtimes.base import open_runtime
        qs = load_questions("sample")[0][:3]
        with open_runtime({str(artifact)!r}, threads=1) as rt:
            lp = rt.letter_logprobs([get_style(rt.prompt_style).prompt(q) for q in qs])
            g = rt.generate(get_style(rt.prompt_style).prompt(qs[0]), max_new_tokens=2)
        print(json.dumps({{"shape": list(lp.shape), "n": g.new_tokens, "style": rt.prompt_style,
                          "loaded": sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers"))}}))
    """)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"shape": [3, 4], "n": out["n"], "style": "chatml", "loaded": []} and out["n"] >= 1


def test_truncated_and_foreign_gguf_give_one_clear_error(ggufs, tmp_path):
    src = ggufs / "q4_k_m.gguf"
    half = tmp_path / "half.gguf"
    half.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    fake = tmp_path / "fake.gguf"
    fake.write_text("not a model")
    for path, words in ((half, "truncated or corrupt"), (fake, "not a GGUF file")):
        proc = _run_py(f"""
            import sys
            from edgemed.errors import EdgemedError
            from edgemed.runtimes.base import open_runtime
            try:
                open_runtime({str(path)!r}, threads=2)
            except EdgemedError as exc:
                print(exc); sys.exit(2)
        """)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert words in proc.stdout and len(proc.stdout.strip().splitlines()) == 1


def test_manifest_size_check_catches_a_truncated_artifact(ggufs, tmp_path):
    from edgemed.errors import EdgemedError
    from edgemed.manifest import MANIFEST, file_entries, new_manifest
    from edgemed.runtimes.base import open_runtime

    artifact = tmp_path / "gguf-q4_k_m"
    artifact.mkdir()
    shutil.copy(ggufs / "q4_k_m.gguf", artifact / "model-q4_k_m.gguf")
    m = new_manifest("gguf-q4_k_m", "llama.cpp", {}, {})
    m["files"] = file_entries(artifact)
    (artifact / MANIFEST).write_text(json.dumps(m))
    with open(artifact / "model-q4_k_m.gguf", "r+b") as fh:
        fh.truncate(1000)
    with pytest.raises(EdgemedError, match="corrupt"):
        open_runtime(artifact)


def test_onnx_runtime_refuses_a_truncated_graph(onnx_dir, tmp_path):
    from edgemed.errors import EdgemedError
    from edgemed.runtimes.onnx import OnnxRuntime

    broken = tmp_path / "onnx"
    shutil.copytree(onnx_dir, broken)
    data = (broken / "model.onnx").read_bytes()
    (broken / "model.onnx").write_bytes(data[: len(data) // 3])
    with pytest.raises(EdgemedError, match="truncated or corrupt"):
        OnnxRuntime(broken)


def test_gguf_package_and_converter_coexist(ggufs, tiny_model):
    """transformers still reads GGUFs with the PyPI gguf package while the converter's copy stays apart."""
    import gguf
    from transformers import AutoModelForCausalLM

    from edgemed.export.gguf.exporter import converter_path

    assert Path(gguf.__file__).resolve().parent.parent != converter_path().parent.resolve()
    model = AutoModelForCausalLM.from_pretrained(str(ggufs), gguf_file="f16.gguf")
    assert model.config.hidden_size == 64 and model.config.num_hidden_layers == 2


@pytest.mark.slow
def test_smollm2_q4_k_m_has_real_k_quants_and_decodes(smollm2_model, tmp_path):
    """The tiny model's widths all fall back to legacy types; SmolLM2's FFN (1536) gets real Q4_K/Q6_K blocks,
    the kernels the repacking crash was in. Decode with them, out of process."""
    from edgemed.export.gguf.exporter import convert, quantize, tensor_types

    convert(smollm2_model, tmp_path / "f16.gguf", "f16")
    quantize(tmp_path / "f16.gguf", tmp_path / "q4_k_m.gguf", "q4_k_m", threads=2)
    types = tensor_types(tmp_path / "q4_k_m.gguf")["types"]
    assert "Q4_K" in types and (set(types) - {"Q4_K", "Q6_K", "F32"}), types  # K-quants plus fallbacks
    proc = _run_py(f"""
        from edgemed.runtimes.llamacpp import LlamaCppRuntime
        rt = LlamaCppRuntime({str(tmp_path / "q4_k_m.gguf")!r}, threads=1)
        g = rt.generate("<|im_start|>user\\nWhat is 2+2?<|im_end|>\\n<|im_start|>assistant\\n", max_new_tokens=4)
        print(g.new_tokens)
    """)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert int(proc.stdout.split()[-1]) >= 1
