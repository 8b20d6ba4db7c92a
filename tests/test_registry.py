"""The registry owns every per-format and per-runtime fact: a new format is one exporter module, one runtime (here an
existing one) and one registry entry; a new runtime is one runtime module and one registry entry; with nothing else
to edit. Detection and generic GGUF types come from the registry too."""

from __future__ import annotations

import json
import shutil
import textwrap
from dataclasses import replace

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


TOY_RUNTIME = textwrap.dedent(r'''
    """A runtime the project does not ship: a table of next-token logits in model.toy, and the exporter writing it."""
    import json
    import re

    import numpy as np

    from edgemed.export.base import Exporter
    from edgemed.runtimes.base import Runtime
    from edgemed.runtimes.logits import log_softmax_rows

    VOCAB = ["<unk>", "<end>", " A", " B", " C", " D"]


    class ToyRuntime(Runtime):
        name = "toy"

        def __init__(self, path, threads=None, device="auto", **options):
            super().__init__(path, threads, device, **options)
            folder = self.path if self.path.is_dir() else self.path.parent
            self.logits = np.asarray(json.loads((folder / "model.toy").read_text())["logits"], dtype=np.float32)

        def tokenize(self, text, add_special=True):
            return [VOCAB.index(w) if w in VOCAB else 0 for w in re.findall(r"\s*\S+", text)]

        def detokenize(self, ids):
            return "".join(VOCAB[i] for i in ids)

        @property
        def vocab_size(self):
            return len(VOCAB)

        def next_token_logprobs(self, prompts):
            return log_softmax_rows(np.tile(self.logits, (len(prompts), 1)))

        def sequence_logprobs(self, ids):
            return log_softmax_rows(np.tile(self.logits, (len(ids), 1)))

        def prefill(self, ids):
            return self.logits

        def decode(self, token):
            return self.logits

        def is_end(self, token):
            return token == 1

        def chat_template(self):
            return None


    class ToyExporter(Exporter):
        def export(self, source, dest, settings):
            (dest / "model.toy").write_text(json.dumps({"logits": [0, -5, 1, 3, 0, 0]}))
            return {}
''')
PROMPT = "Question: 2+2?\nA. 3\nB. 4\nC. 5\nD. 6\nAnswer:"


@pytest.fixture
def scratch_registry():
    """The registry as it was, after the test (registrations are process-wide)."""
    from edgemed import registry

    saved = dict(registry.RUNTIMES), dict(registry.FORMATS)
    yield registry
    for table, before in zip((registry.RUNTIMES, registry.FORMATS), saved, strict=True):
        table.clear()
        table.update(before)


def test_adding_a_runtime_is_one_module_and_one_entry(tmp_path, monkeypatch, scratch_registry):
    """One runtime module (written here) and one registry entry (RuntimeSpec + its FormatSpec): manifests, detection,
    open_runtime, the device rule, weight sizes and `edgemed info`'s row work, and a machine without the runtime's
    engine is told which extra to install, with nothing else edited."""
    from edgemed.cli.info import format_row
    from edgemed.errors import EdgemedError
    from edgemed.manifest import MANIFEST, check_known_format, detect_runtime, file_entries, new_manifest
    from edgemed.resources import device_for_runtime
    from edgemed.runtimes.base import open_runtime

    registry = scratch_registry
    (tmp_path / "toy_runtime.py").write_text(TOY_RUNTIME)
    monkeypatch.syspath_prepend(str(tmp_path))
    runtime = registry.register_runtime(registry.RuntimeSpec("toy", "toy_runtime:ToyRuntime", "toy", ("numpy",),
                                                             "toy-engine"))
    fmt = registry.register_format(registry.FormatSpec("toy-f32", "toy_runtime:ToyExporter", "toy", "toy", "toy",
                                                       0.0, "a table of logits", (".toy",),
                                                       registry.has_file("model.toy")))

    art = tmp_path / "toy-f32"  # an exported artifact: the files and a manifest naming format and runtime
    art.mkdir()
    registry.exporter_class("toy-f32")("toy-f32").export(tmp_path, art, {})
    manifest = new_manifest("toy-f32", "toy", {}, {})
    manifest["files"] = file_entries(art)
    (art / MANIFEST).write_text(json.dumps(manifest))
    check_known_format(art)  # what eval and bench check first
    assert detect_runtime(art) == ("toy-f32", "toy")
    bare = tmp_path / "bare"  # the same file without a manifest: the entry's detection rule
    bare.mkdir()
    shutil.copy(art / "model.toy", bare)
    assert registry.detect_format(bare) == fmt and detect_runtime(bare) == ("toy-f32", "toy")
    assert device_for_runtime("toy", "cpu") == "cpu"
    assert registry.weight_bytes(art, "toy-f32") == (art / "model.toy").stat().st_size
    for path in (art, bare):
        with open_runtime(path, threads=1, device="cpu") as rt:
            assert type(rt).__name__ == "ToyRuntime"
            lp = rt.letter_logprobs([PROMPT])
            assert lp.shape == (1, 4) and int(np.argmax(lp)) == 1  # B
            assert rt.generate(PROMPT, max_new_tokens=2).text == " B B"
    row = format_row(fmt)  # edgemed info's row for the format
    assert (row["runtime"], row["can_run"], row["can_export"], row["run_extra"]) == ("toy", True, True, "toy")

    registry.register_runtime(replace(runtime, needs=("toy_engine_not_installed",)))  # a machine without the engine
    hint = "needs toy_engine_not_installed: pip install 'edgemed[toy]'"
    assert format_row(fmt)["missing_to_run"] == hint
    with pytest.raises(EdgemedError, match=r"toy-f32; running it needs toy_engine_not_installed: pip install "
                                           r"'edgemed\[toy\]'"):
        open_runtime(art)


def test_runtime_facts_live_in_the_registry():
    """Engines, extras, tune names and the reference format: one table each, the registry's."""
    from edgemed.bench.tune.space import RUNTIMES as TUNE_RUNTIMES
    from edgemed.bench.tune.stage1 import BASE_OF
    from edgemed.export.gguf.types import format_name, parse_format
    from edgemed.registry import RUNTIMES, engine_of, is_reference, reference_format

    assert {n: s.engine for n, s in RUNTIMES.items()} == {
        "transformers": "torch", "llama.cpp": "llama.cpp", "onnxruntime": "onnxruntime", "openvino": "openvino"}
    assert engine_of("llama.cpp") == "llama.cpp" and engine_of("tflite") is None
    assert TUNE_RUNTIMES == {"gguf": "llama.cpp", "onnx": "onnxruntime", "openvino": "openvino"}
    assert BASE_OF == {"gguf": "gguf-f16", "onnx": "onnx", "openvino": "onnx"}
    assert reference_format() == "hf" and is_reference("hf") and not is_reference("gguf-f16")
    assert parse_format("gguf-q4_k_m-imatrix") == ("q4_k_m", True) and parse_format("gguf-f16") == ("f16", False)
    assert parse_format("gguf") is None and parse_format("onnx") is None and parse_format("gguf-") is None
    assert format_name("q4_k_m", True) == "gguf-q4_k_m-imatrix"
