"""The registry owns every per-format fact: a new format is one exporter module, one runtime (here an existing one)
and one registry entry, with nothing else to edit; detection and generic GGUF types come from the registry too."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest

EXPORTER = textwrap.dedent('''
    from edgemed.export.base import Exporter, copy_tokenizer


    class Fp16Exporter(Exporter):
        """The merged model stored in float16: a format the project does not ship."""

        requires = ("torch", "transformers")

        def export(self, source, dest, settings):
            import torch
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float16)
            model.save_pretrained(dest, safe_serialization=True)
            copy_tokenizer(source, dest)
            return {"dtype": "float16"}
''')


def test_a_format_registered_in_a_temporary_registry_exports_verifies_and_runs(tmp_path, monkeypatch, tiny_model):
    from edgemed import registry

    (tmp_path / "fp16_exporter.py").write_text(EXPORTER)
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = registry.FormatSpec("hf-fp16", "fp16_exporter:Fp16Exporter", "transformers", "train", "train", 0.05,
                               "merged model in float16", (".safetensors",))
    monkeypatch.setitem(registry.FORMATS, "hf-fp16", spec)

    from edgemed.export.run import run_export
    from edgemed.manifest import detect_runtime
    from edgemed.runtimes.base import open_runtime

    out = tmp_path / "out"
    [result] = run_export(tiny_model, ["hf-fp16"], out, force=False, verify=True, threads=1)
    assert result["status"] == "exported", result
    assert result["verification"]["tolerance"] == 0.05  # the registry's, nowhere else
    art = out / "hf-fp16"
    assert json.loads((art / "edgemed.json").read_text())["format"] == "hf-fp16"
    assert detect_runtime(art) == ("hf-fp16", "transformers")
    assert registry.weight_bytes(art, "hf-fp16") > 0
    with open_runtime(art, threads=1, device="cpu") as rt:
        lp = rt.letter_logprobs(["Question: 2+2?\nA. 3\nB. 4\nC. 5\nD. 6\nAnswer:"])
    assert lp.shape == (1, 4) and np.isfinite(lp).all()


def test_detection_without_a_manifest_and_generic_gguf_types(tmp_path):
    from edgemed.errors import EdgemedError
    from edgemed.registry import detect_format, get_format

    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "m.gguf").write_bytes(b"GGUF")
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "model.onnx").write_bytes(b"")
    for name, quant in (("h", None), ("i8", {"load_in_8bit": True}), ("n4", {"load_in_4bit": True})):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps({"quantization_config": quant} if quant else {}))
    assert [detect_format(tmp_path / n).name for n in ("g", "o", "h", "i8", "n4")] == \
        ["gguf", "onnx", "hf", "bnb-int8", "bnb-nf4"]
    assert detect_format(tmp_path / "g" / "m.gguf").name == "gguf" and detect_format(tmp_path) is None
    q5 = get_format("gguf-q5_k_m")  # any llama.cpp type: tolerance by family, everything else from gguf
    assert (q5.runtime, q5.extra, q5.tolerance, q5.weight_suffixes) == ("llama.cpp", "gguf", 1.0, (".gguf",))
    with pytest.raises(EdgemedError, match="did you mean 'gguf-q4_k_m'"):
        get_format("gguf-q4km")
