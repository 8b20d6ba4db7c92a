"""The registry's entries: every runtime (:data:`RUNTIMES`), every format (:data:`FORMATS`, and :data:`GGUF_ANY` with
the tolerance of any other llama.cpp type), and what an engine cannot do for a model architecture
(:data:`ARCHITECTURE_LIMITS`). Each entry holds all its facts, in keyword form (:mod:`edgemed.specs` says what each
field means); :mod:`edgemed.registry` looks them up. Adding a format is one entry here, its exporter and its runtime.
"""

from __future__ import annotations

from edgemed.specs import ArchitectureLimit, FormatSpec, RuntimeSpec, has_file, quantized

_BNB_ON_CPU = ("bitsandbytes is built for CUDA GPUs and runs on a CPU through its fallback backend (on the 2-core "
               "Xeon bnb-int8 decoded at half the hf reference's speed, in more memory)")
_ONNX = (".onnx", ".onnx_data", ".onnx.data")
_OPENVINO = (".bin",)  # the IR's weights (the .xml is the graph)
_OV_INT4 = (b'element_type="u4"', b'element_type="i4"')
_OV_INT8 = (b'element_type="u8"', b'element_type="i8"')
_TRANSFORMERS = {"runtime": "transformers", "export_chain": "first", "verify_route": "forkserver",
                 "weight_suffixes": (".safetensors",)}
_BNB = {**_TRANSFORMERS, "extra": "bnb", "run_extra": "bnb", "needs": ("bitsandbytes",), "export_memory": 1.5,
        "cpu_fallback": _BNB_ON_CPU}
_ONNX_EXPORT = {"runtime": "onnxruntime", "extra": "onnx-export", "run_extra": "onnx", "weight_suffixes": _ONNX,
                "export_memory": 3.2}
_GGUF = {"exporter": "edgemed.export.gguf.exporter:GgufExporter", "runtime": "llama.cpp", "extra": "gguf",
         "run_extra": "gguf", "weight_suffixes": (".gguf",), "export_chain": "beside"}
_OV = {"runtime": "openvino", "extra": "openvino-export", "run_extra": "openvino", "weight_suffixes": _OPENVINO,
       "default": False, "export_memory": 3.0}
FORMATS: dict[str, FormatSpec] = {
    s.name: s
    for s in [
        FormatSpec(name="hf", exporter="edgemed.export.hf:HFExporter", **_TRANSFORMERS, extra="train",
                   run_extra="train", tolerance=1e-4, description="merged model, safetensors (reference)",
                   detect=quantized(None), reference=True, detect_rank=90),  # any transformers folder: tried last
        FormatSpec(name="bnb-int8", exporter="edgemed.export.bnb:BnbInt8Exporter", **_BNB, tolerance=0.75,
                   description="bitsandbytes LLM.int8", detect=quantized("load_in_8bit"), rows_independent=False,
                   detect_rank=30),
        FormatSpec(name="bnb-nf4", exporter="edgemed.export.bnb:BnbNf4Exporter", **_BNB, tolerance=2.5,
                   description="bitsandbytes 4-bit NF4", detect=quantized("load_in_4bit"), detect_rank=40),
        FormatSpec(name="onnx", exporter="edgemed.export.onnx:OnnxExporter", **_ONNX_EXPORT, tolerance=1e-3,
                   description="ONNX with KV cache (Optimum)", detect=has_file("model.onnx"), detect_rank=20,
                   marks=("model.onnx", (), (b"MatMulNBits", b"MatMulInteger"))),
        FormatSpec(name="onnx-int8", exporter="edgemed.export.onnx:OnnxInt8Exporter", **_ONNX_EXPORT, tolerance=1.0,
                   description="ONNX, onnxruntime dynamic int8", rows_independent=False,  # files: same as onnx
                   marks=("model.onnx", (b"MatMulInteger",), (b"MatMulNBits",))),
        FormatSpec(name="gguf-f16", **_GGUF, tolerance=0.05, description="GGUF f16 for llama.cpp"),
        FormatSpec(name="gguf-q8_0", **_GGUF, tolerance=0.2, description="GGUF q8_0 for llama.cpp"),
        FormatSpec(name="gguf-q4_k_m", **_GGUF, tolerance=2.0, description="GGUF q4_k_m for llama.cpp"),
        # what edge engineers ship beside GGUF; exported when named (--formats), not by default
        FormatSpec(name="onnx-int4", exporter="edgemed.export.onnx_int4:OnnxInt4Exporter", **_ONNX_EXPORT,
                   tolerance=3.0, description="ONNX, MatMulNBits int4 (onnxruntime RTN, block 32)", default=False,
                   marks=("model.onnx", (b"MatMulNBits",), ())),
        FormatSpec(name="openvino-int8", exporter="edgemed.export.openvino:OpenVinoInt8Exporter", **_OV,
                   tolerance=0.4, description="OpenVINO IR, NNCF int8 weights",
                   marks=("openvino_model.xml", _OV_INT8, _OV_INT4)),
        FormatSpec(name="openvino-int4", exporter="edgemed.export.openvino:OpenVinoInt4Exporter", **_OV,
                   tolerance=2.5, description="OpenVINO IR, NNCF int4 weights (int8 embedding/lm_head)",
                   marks=("openvino_model.xml", _OV_INT4, ())),
        FormatSpec(name="openvino-int4-awq", exporter="edgemed.export.openvino:OpenVinoInt4AwqExporter", **_OV,
                   tolerance=2.5, description="OpenVINO IR, NNCF int4, AWQ + scale estimation on the training text",
                   marks=("openvino_model.xml", _OV_INT4, ())),
    ]
}
# Any other llama.cpp file type is a format too, ``gguf-<type>``, verified against a tolerance by type family.
GGUF_TOLERANCE_BY_PREFIX = (
    ("f32", 0.01), ("f16", 0.05), ("bf16", 0.1), ("q8", 0.2), ("q6", 0.5), ("q5", 1.0), ("q4", 2.0),
    ("iq4", 2.0), ("q3", 3.0), ("iq3", 3.0), ("q2", 4.0), ("iq2", 4.0), ("iq1", 6.0), ("tq", 6.0),
)
# A folder or file without a manifest whose llama.cpp type is unknown is the generic "gguf" format.
GGUF_ANY = FormatSpec(name="gguf", **_GGUF, tolerance=2.0, description="GGUF for llama.cpp (type not recorded)",
                      detect=has_file("*.gguf"), detect_rank=10)

# Every runtime (a board with only a runtime's extra installed can evaluate and benchmark its formats).
RUNTIMES: dict[str, RuntimeSpec] = {
    s.name: s
    for s in [
        RuntimeSpec(name="transformers", runtime="edgemed.runtimes.hf:TransformersRuntime", extra="train",
                    needs=("torch", "transformers"), engine="torch", cuda_fix="install a CUDA build of torch",
                    gpu_probe="edgemed.resources:torch_sees_cuda"),
        RuntimeSpec(name="llama.cpp", runtime="edgemed.runtimes.llamacpp:LlamaCppRuntime", extra="gguf",
                    needs=("llama_cpp",), engine="llama.cpp",
                    cuda_fix="install a CUDA build of llama-cpp-python (CMAKE_ARGS=-DGGML_CUDA=on)",
                    tune_name="gguf", builds_on="gguf-f16", gpu_probe="edgemed.resources:llamacpp_offloads"),
        RuntimeSpec(name="onnxruntime", runtime="edgemed.runtimes.onnx:OnnxRuntime", extra="onnx",
                    needs=("onnxruntime", "tokenizers"), engine="onnxruntime", cuda_fix="install onnxruntime-gpu",
                    tune_name="onnx", builds_on="onnx", gpu_probe="edgemed.resources:onnxruntime_sees_cuda"),
        RuntimeSpec(name="openvino", runtime="edgemed.runtimes.openvino:OpenVinoRuntime", extra="openvino",
                    needs=("openvino", "tokenizers"), engine="openvino", tune_name="openvino",
                    builds_on="onnx"),  # its CPU plugin only here (auto -> cpu)
    ]
}


# What an engine cannot do for a model architecture (measured: docs/families.md), refused before any work.
ARCHITECTURE_LIMITS: list[ArchitectureLimit] = [
    ArchitectureLimit(formats="gguf", architecture="Gemma2ForCausalLM", engine="llama.cpp's converter",
                      package="llama-cpp-python", missing="reads Gemma 2's vocabulary only from a SentencePiece "
                      "tokenizer.model (this model folder has none)", unless_file="tokenizer.model"),
]
