"""``onnx`` / ``onnx-int8``: ONNX with a KV cache through Optimum, and onnxruntime dynamic int8 on top of it.

``onnx`` is Optimum's ``text-generation-with-past`` export (one ``model.onnx`` taking ``past_key_values``),
fp32, tokenizer saved beside. ``onnx-int8`` quantizes that model's weights to int8 with
``onnxruntime.quantization.quantize_dynamic`` (activations quantized on the fly); it reuses the ``onnx``
artifact of the same export run when there is one, else exports fp32 ONNX first into its temp folder.

Exporting needs the ``onnx-export`` extra (Optimum, torch, transformers); evaluating and benchmarking the
artifacts needs only ``onnx`` (onnxruntime + tokenizers, see ``edgemed.runtimes.onnx``).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from edgemed.errors import EdgemedError
from edgemed.export.base import Exporter, copy_tokenizer
from edgemed.registry import get_format, require_module

ONNX_FILE = "model.onnx"
_TWO_GB = 2 * 2**30


class OnnxExporter(Exporter):
    requires = ("optimum.exporters.onnx", "onnxruntime", "torch", "transformers")
    defaults = {"opset": None, "task": "text-generation-with-past"}

    def export(self, source: Path, dest: Path, settings: dict[str, Any]) -> dict[str, Any]:
        export_onnx(source, dest, settings)
        return {"task": settings["task"], "files": sorted(p.name for p in dest.iterdir())}


def export_onnx(source: Path, dest: Path, settings: dict[str, Any]) -> None:
    import logging
    import warnings

    main_export = require_module("optimum.exporters.onnx", get_format("onnx").extra, "ONNX export").main_export

    from edgemed.memory_plan import model_shape

    shape = model_shape(str(source))
    large = shape is not None and shape.fp32_bytes > _TWO_GB  # its graph cannot be one protobuf
    logging.getLogger("optimum").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            main_export(
                str(source),
                output=str(dest),
                task=settings.get("task", "text-generation-with-past"),
                opset=settings.get("opset"),
                device="cpu",
                do_validation=False,
                local_files_only=True,
                trust_remote_code=False,
                no_post_process=large,  # its post-processing sizes the whole proto, which fails past 2 GB
            )
    except (ValueError, OSError, KeyError) as exc:
        raise EdgemedError(f"ONNX export of {source} failed: {str(exc).splitlines()[0]}") from None
    if not (dest / ONNX_FILE).is_file():
        raise EdgemedError(f"ONNX export of {source} wrote no {ONNX_FILE}; this model type may not be supported")
    if large:
        tie_large_graph(source, dest)
    copy_tokenizer(source, dest)


def tie_large_graph(source: Path, dest: Path) -> bool:
    """What Optimum's post-processing does for a graph under 2 GB, for one over it: the tied embedding and LM head
    stored once (the head's MatMul reads a Transpose of the embedding), all weights in one ``model.onnx_data``.
    Optimum's own step computes the whole proto's size first, which protobuf cannot past 2 GB. Uses Optimum's own
    matching of tied initializers (the meta-device model says which parameters are tied). True if it tied any."""
    import onnx
    import torch
    from accelerate.utils import find_tied_parameters
    from optimum.onnx.graph_transformations import (
        _deduplicate_gather_matmul,
        _find_matching_initializers,
        _get_weights_to_tie,
    )
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(source))
    model.tie_weights()
    tied = find_tied_parameters(model)
    if not tied:
        return False
    graph_path, data_path = dest / ONNX_FILE, dest / (ONNX_FILE + "_data")
    proto = onnx.load(str(graph_path))  # with its external data: the model's size in memory, once
    with_op, to_tie, _ = _get_weights_to_tie(tied, model)
    index = {init.name: i for i, init in enumerate(proto.graph.initializer)}
    proto = _deduplicate_gather_matmul(proto, to_tie, _find_matching_initializers(with_op, proto, index), index)
    graph_path.unlink()
    data_path.unlink(missing_ok=True)
    onnx.save(proto, str(graph_path), save_as_external_data=True, all_tensors_to_one_file=True,
              location=data_path.name, convert_attribute=True, size_threshold=100)
    onnx.checker.check_model(str(graph_path))
    return True


def fp32_graph(exporter: Exporter, source: Path, dest: Path) -> tuple[Path, bool]:
    """(folder of the fp32 ONNX graph to quantize, built here?): the ``onnx`` artifact of the same export run when
    there is one, else a fresh export into ``dest/.fp32`` (the caller removes it when built here)."""
    sibling = exporter.sibling("onnx")
    if sibling is not None:
        return sibling, False
    fp32 = dest / ".fp32"
    fp32.mkdir()
    export_onnx(source, fp32, OnnxExporter.defaults)
    return fp32, True


class OnnxInt8Exporter(Exporter):
    requires = OnnxExporter.requires
    # keep_fp32: MatMuls whose node name contains one of these stay fp32. The MLP down projection reads the
    # SiLU(gate)*up product, whose outliers wreck per-tensor activation quantization: on SmolLM2-135M
    # quantizing it moves letter log-probs by 4.0 nats, keeping it fp32 by 0.48, for +35% size.
    # kernel: the CPU kernel the weights are made exact for (edgemed.int8_kernels): auto (this CPU), vnni, avx2 or
    # arm; resolved when the exporter is made, so the export cache and the manifest hold the concrete kernel.
    # weight_type/reduce_range None: the kernel's scheme (uint8 weights for avx2's saturating VPMADDUBSW, else
    # full-range int8; edgemed.int8_kernels.scheme_for).
    defaults = {"weight_type": None, "per_channel": True, "reduce_range": None, "op_types": ["MatMul"],
                "keep_fp32": ["down_proj"], "kernel": "auto"}

    def __init__(self, name: str, threads: int | None = None, siblings: Path | None = None, **settings: Any):
        super().__init__(name, threads, siblings, **settings)
        from edgemed.int8_kernels import KERNELS, resolve_target

        if self.settings["kernel"] not in KERNELS:
            self.settings["kernel"], self.kernel_chosen_by = resolve_target(self.settings["kernel"])
        else:
            self.kernel_chosen_by = "given"
        from edgemed.int8_kernels import scheme_for

        scheme = scheme_for(self.settings["kernel"])
        for key in ("weight_type", "reduce_range"):
            if self.settings[key] is None:
                self.settings[key] = scheme[key]

    def export(self, source: Path, dest: Path, settings: dict[str, Any]) -> dict[str, Any]:
        import logging

        require_module("onnx", get_format("onnx-int8").extra, "ONNX int8 export")  # onnxruntime.quantization imports it
        from onnxruntime.quantization import QuantType, quantize_dynamic

        fp32, built_here = fp32_graph(self, source, dest)
        weight_type = {"qint8": QuantType.QInt8, "quint8": QuantType.QUInt8}.get(settings["weight_type"])
        if weight_type is None:
            raise EdgemedError(f"onnx-int8: weight_type must be qint8 or quint8, not {settings['weight_type']!r}")
        import onnx

        graph = onnx.load(str(fp32 / ONNX_FILE), load_external_data=False).graph
        ops = set(settings["op_types"]) or {"MatMul"}
        keep = [n.name for n in graph.node
                if n.op_type in ops and any(k in n.name for k in settings["keep_fp32"])]
        big = sum(p.stat().st_size for p in fp32.iterdir() if p.name.startswith(ONNX_FILE)) > _TWO_GB
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # its "consider pre-processing" advice is for CNNs
        try:
            quantize_dynamic(
                fp32 / ONNX_FILE,
                dest / ONNX_FILE,
                op_types_to_quantize=list(settings["op_types"]) or None,
                per_channel=bool(settings["per_channel"]),
                reduce_range=bool(settings["reduce_range"]),
                weight_type=weight_type,
                use_external_data_format=big,
                nodes_to_exclude=keep or None,
            )
        finally:
            root.setLevel(level)
        for path in fp32.iterdir():  # config, generation config, tokenizer: everything but the fp32 graph
            if path.is_file() and not path.name.startswith((ONNX_FILE, "edgemed")):
                shutil.copy2(path, dest / path.name)
        if built_here:
            shutil.rmtree(fp32)
        quantized = sum(1 for n in graph.node if n.op_type in ops) - len(keep)
        return {"from": "onnx artifact" if not built_here else "fresh fp32 export", "external_data": big,
                "quantized_nodes": quantized, "fp32_nodes_kept": len(keep), "int8": self._scheme(settings)}

    def _scheme(self, settings: dict[str, Any]) -> dict[str, Any]:
        """What the manifest records of the int8 scheme: for which kernel, chosen how, exact where."""
        from edgemed.int8_kernels import KERNELS, exact_on, kernel_of, probe_u8s8, scheme_for

        kernel, reduce_range = settings["kernel"], bool(settings["reduce_range"])
        scheme = scheme_for(kernel)
        if reduce_range != scheme["reduce_range"] or settings["weight_type"] != scheme["weight_type"]:
            scheme = {**scheme, "name": "custom", "why": "weight_type/reduce_range set by hand"}
        return {**scheme, "weight_type": settings["weight_type"], "reduce_range": reduce_range,
                "chosen_by": self.kernel_chosen_by, "exporting_cpu_kernel": kernel_of(),
                "exporting_cpu_probe": probe_u8s8(),
                "exact_on": [k for k in KERNELS if exact_on(k, settings["weight_type"], reduce_range)]}
