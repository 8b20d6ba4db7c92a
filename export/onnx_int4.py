"""``onnx-int4``: MatMulNBits 4-bit weights written by onnxruntime's own ``MatMulNBitsQuantizer``.

What Microsoft publishes for CPUs as ``cpu-int4-rtn-block-32-acc-level-4`` (onnxruntime-genai's model builder,
``-p int4 -e cpu``): every MatMul with a constant weight becomes a ``com.microsoft.MatMulNBits`` node holding the
weight in 4-bit blocks of ``block_size`` along the input dimension, one scale per block (and a zero point when
asymmetric); ``accuracy_level`` 4 lets onnxruntime's CPU kernel quantize the activations to int8 per block and
run the dot products in integers (1 fp32, 2 fp16, 3 bf16 compute).

Algorithms (``algorithm``): ``rtn`` (the default: block-wise round-to-nearest, onnxruntime's C++
``DefaultWeightOnlyQuantConfig``, what the builder's int4 is), ``hqq`` (half-quadratic, needs torch at export)
and ``k_quant`` (onnxruntime's in-tree k-quant search). None needs calibration data.

Built on the ``onnx`` artifact of the same export run when there is one (else a fresh fp32 export in its temp
folder); run by the same torch-free onnxruntime runtime as ``onnx`` (``edgemed.runtimes.onnx``).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from edgemed.errors import EdgemedError
from edgemed.export.base import Exporter
from edgemed.export.onnx import ONNX_FILE, OnnxExporter, fp32_graph
from edgemed.registry import get_format, require_module

ALGORITHMS = ("rtn", "hqq", "k_quant")
_TWO_GB = 2 * 2**30


class OnnxInt4Exporter(Exporter):
    requires = (*OnnxExporter.requires, "onnx", "onnx_ir")  # the quantizer imports onnx and onnx_ir
    # Microsoft's published CPU setting: RTN, block 32, symmetric, accuracy level 4 (int8 compute).
    # keep_fp32: MatMul nodes whose name contains one of these stay fp32 (none by default: measured, see verify.py).
    # tied_lm_head: with tied embeddings Optimum's graph feeds lm_head a Transpose of the embedding, which the
    # quantizer cannot see as a constant weight: "int4" gives lm_head its own (transposed) weight and quantizes it
    # like the builder does, "fp32" leaves it. embedding: "fp32" (the Gather keeps the float table) or "int4"
    # (GatherBlockQuantized, the builder's int4 embedding).
    defaults = {"bits": 4, "block_size": 32, "algorithm": "rtn", "symmetric": True, "accuracy_level": 4,
                "tied_lm_head": "int4", "embedding": "fp32", "keep_fp32": [], "external_data": "auto"}

    def check(self, source: Path | None = None) -> None:
        check_settings(self.settings)

    def export(self, source: Path, dest: Path, settings: dict[str, Any]) -> dict[str, Any]:
        check_settings(settings)
        require_module("onnx_ir", get_format("onnx-int4").extra, "ONNX int4 export")
        fp32, built_here = fp32_graph(self, source, dest)
        try:
            details = quantize_int4(fp32 / ONNX_FILE, dest / ONNX_FILE, settings)
            copy_beside(fp32, dest)
        finally:
            if built_here:
                shutil.rmtree(fp32, ignore_errors=True)
        return {"from": "fresh fp32 export" if built_here else "onnx artifact", **details}


def check_settings(settings: dict[str, Any]) -> None:
    """Bad settings are bad input (exit 2), named before any work."""
    if settings["algorithm"] not in ALGORITHMS:
        raise EdgemedError(f"onnx-int4: algorithm must be one of {', '.join(ALGORITHMS)}, not "
                           f"{settings['algorithm']!r}")
    if settings["bits"] not in (4, 8):
        raise EdgemedError(f"onnx-int4: bits must be 4 or 8, not {settings['bits']!r}")
    block = settings["block_size"]
    if not isinstance(block, int) or isinstance(block, bool) or block < 16 or block & (block - 1):
        raise EdgemedError(f"onnx-int4: block_size must be a power of two >= 16 (32 as published), not {block!r}")
    if settings["accuracy_level"] not in (0, 1, 2, 3, 4):
        raise EdgemedError("onnx-int4: accuracy_level must be 0-4 (1 fp32, 2 fp16, 3 bf16, 4 int8 compute), not "
                           f"{settings['accuracy_level']!r}")
    for key in ("tied_lm_head", "embedding"):
        if settings[key] not in ("int4", "fp32"):
            raise EdgemedError(f"onnx-int4: {key} must be int4 or fp32, not {settings[key]!r}")
    if settings["embedding"] == "int4" and (settings["algorithm"] != "rtn" or settings["bits"] != 4):
        raise EdgemedError("onnx-int4: embedding int4 (GatherBlockQuantized) needs algorithm rtn and bits 4")
    if settings["external_data"] not in ("auto", True, False):
        raise EdgemedError(f"onnx-int4: external_data must be auto, true or false, not {settings['external_data']!r}")


def _algo_config(settings: dict[str, Any]):
    from onnxruntime.quantization import matmul_nbits_quantizer as mnq

    algo = settings["algorithm"]
    if algo == "hqq":
        return mnq.HQQWeightOnlyQuantConfig(block_size=settings["block_size"], bits=settings["bits"])
    if algo == "k_quant":
        return mnq.KQuantWeightOnlyQuantConfig()
    ops = ("MatMul", "Gather") if settings["embedding"] == "int4" else ("MatMul",)
    return mnq.DefaultWeightOnlyQuantConfig(block_size=settings["block_size"], is_symmetric=bool(settings["symmetric"]),
                                            accuracy_level=settings["accuracy_level"] or None, bits=settings["bits"],
                                            op_types_to_quantize=ops)


def untie_lm_head(model) -> list[str]:
    """Give every MatMul fed by a Transpose of an initializer (a tied lm_head) its own transposed initializer,
    so the quantizer sees a constant weight; drops Transposes left without consumers. The MatMuls' names."""
    from onnx import numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    transposed = {n.output[0]: n for n in graph.node if n.op_type == "Transpose" and n.input[0] in inits
                  and all(a.name != "perm" or list(a.ints) == [1, 0] for a in n.attribute)}
    untied = []
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[1] not in transposed:
            continue
        source = inits[transposed[node.input[1]].input[0]]
        weight = numpy_helper.from_array(numpy_helper.to_array(source).T.copy(), name=f"{node.name}.weight_untied")
        graph.initializer.append(weight)
        node.input[1] = weight.name
        untied.append(node.name)
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    dead = [n for n in graph.node if n.op_type == "Transpose" and n.output[0] in transposed and n.output[0] not in used]
    for n in dead:
        graph.node.remove(n)
    return untied


def quantize_int4(src: Path, out: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """MatMulNBitsQuantizer over `src` into `out`; what it did, for the manifest."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    model = onnx.load(str(src))
    untied = untie_lm_head(model) if settings["tied_lm_head"] == "int4" else []
    inits = {i.name for i in model.graph.initializer}
    weighted = [n for n in model.graph.node if n.op_type == "MatMul" and any(i in inits for i in n.input)]
    keep = [n.name for n in weighted if any(k in n.name for k in settings["keep_fp32"])]
    big = src.stat().st_size + sum(p.stat().st_size for p in src.parent.glob(src.name + "*data")) > _TWO_GB
    external = big if settings["external_data"] == "auto" else bool(settings["external_data"])
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # per-node "skip"/"start to quantize" chatter
    try:
        quant = MatMulNBitsQuantizer(model, bits=settings["bits"], block_size=settings["block_size"],
                                     is_symmetric=bool(settings["symmetric"]),
                                     accuracy_level=settings["accuracy_level"] or None,
                                     nodes_to_exclude=keep, algo_config=_algo_config(settings))
        quant.process()
        quant.model.save_model_to_file(str(out), use_external_data_format=external)
    finally:
        root.setLevel(level)
    graph = onnx.load(str(out), load_external_data=False).graph
    nbits = [n for n in graph.node if n.op_type == "MatMulNBits"]
    left = sorted(n.name for n in graph.node if n.op_type == "MatMul" and n.name in {w.name for w in weighted})
    return {
        "quantizer": "onnxruntime.quantization.matmul_nbits_quantizer.MatMulNBitsQuantizer",
        "published_as": f"cpu-int{settings['bits']}-{settings['algorithm']}-block-{settings['block_size']}"
                        f"-acc-level-{settings['accuracy_level']}",
        "quantized_nodes": len(nbits), "fp32_matmuls": left, "fp32_nodes_kept": len(keep),
        "lm_head_quantized": any("lm_head" in n.name for n in nbits), "lm_head_untied": untied,
        "embedding": "GatherBlockQuantized int4" if any(n.op_type == "GatherBlockQuantized" for n in graph.node)
        else "fp32 Gather",
        "external_data": external,
    }


def copy_beside(fp32: Path, dest: Path) -> list[str]:
    """Config, generation config and tokenizer files of the fp32 export: everything but its graph and manifest."""
    copied = []
    for path in fp32.iterdir():
        if path.is_file() and not path.name.startswith((ONNX_FILE, "edgemed", ".")):
            shutil.copy2(path, dest / path.name)
            copied.append(path.name)
    return copied
