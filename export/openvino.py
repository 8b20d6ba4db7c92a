"""``openvino-int8`` / ``openvino-int4``: OpenVINO IR with NNCF weight compression, without optimum-intel.

The merged model goes through Optimum's ONNX export (the ``onnx`` artifact of the same run when there is one), then
``openvino.convert_model`` reads that graph (inputs ``input_ids``, ``attention_mask``, ``position_ids``,
``past_key_values.N.key/value``; outputs ``logits``, ``present.N.*``) and ``nncf.compress_weights`` compresses the
weights of every MatMul and of the embedding:

- ``openvino-int8``: ``INT8_ASYM``, per output channel (NNCF's default mode; data-free);
- ``openvino-int4``: ``INT4_ASYM`` in groups of ``group_size`` (128, as optimum-intel's default; a weight whose
  input width is not a multiple of it gets the largest power of two that fits, ``group_size_fallback``), on a
  ``ratio`` of the layers; the embedding and the last MatMul (lm_head) keep NNCF's int8 backup unless
  ``all_layers``. ``data_aware`` adds AWQ and scale estimation (``awq``, ``scale_estimation``) computed on the
  training text recorded in the lineage: the training questions with their answers in the recorded prompt style,
  never an evaluation question (a model edgemed did not train has none: refused);
- ``openvino-int4-awq``: ``openvino-int4`` with ``data_aware`` on (its own format, so both can be benchmarked).

Why not optimum-intel: 2.2 requires optimum 2.3 (and pulls torchvision) while optimum-onnx 0.1.0 pins optimum 2.1;
the path here needs only openvino and nncf next to what the ``onnx`` format already uses. After compression the
graph is made stateful (the KV cache lives in OpenVINO variables, as optimum-intel and openvino-genai use it:
``make_stateful``), saved with its weights as compressed (``compress_to_fp16=False``: the non-compressed tensors
stay fp32) and run by ``edgemed.runtimes.openvino`` (openvino + tokenizers, no torch).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

from edgemed.errors import EdgemedError
from edgemed.export.base import Exporter, source_lineage
from edgemed.export.onnx import ONNX_FILE, OnnxExporter, fp32_graph
from edgemed.export.onnx_int4 import copy_beside
from edgemed.registry import get_format, require_module

XML_FILE = "openvino_model.xml"
BIN_FILE = "openvino_model.bin"
INT4_MODES = ("int4_asym", "int4_sym")
FALLBACKS = ("adjust", "ignore", "error")


class OpenVinoExporter(Exporter):
    """Shared by both formats: ONNX export (or the sibling), convert, compress, save."""

    requires = (*OnnxExporter.requires, "openvino", "nncf")

    def export(self, source: Path, dest: Path, settings: dict[str, Any]) -> dict[str, Any]:
        require_module("openvino", get_format(self.name).extra, "OpenVINO export")
        kwargs, record = self.compression(source, settings)
        fp32, built_here = fp32_graph(self, source, dest)
        try:
            details = convert_and_compress(fp32, dest, kwargs, self.calibration_texts(source, settings))
            copy_beside(fp32, dest)
        finally:
            if built_here:
                shutil.rmtree(fp32, ignore_errors=True)
        return {"from": "fresh fp32 export" if built_here else "onnx artifact", "converter": "openvino.convert_model "
                "(ONNX frontend) + nncf.compress_weights", **record, **details}

    def compression(self, source: Path, settings: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(keyword arguments of nncf.compress_weights, as names), (what goes in the manifest)."""
        raise NotImplementedError

    def calibration_texts(self, source: Path, settings: dict[str, Any]) -> list[str] | None:
        return None


class OpenVinoInt8Exporter(OpenVinoExporter):
    defaults = {"mode": "int8_asym"}

    def check(self, source: Path | None = None) -> None:
        if self.settings["mode"] not in ("int8_asym", "int8_sym"):
            raise EdgemedError(f"openvino-int8: mode must be int8_asym or int8_sym, not {self.settings['mode']!r}")

    def compression(self, source: Path, settings: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        self.check()
        return {"mode": settings["mode"]}, {"mode": settings["mode"], "group_size": "per channel",
                                            "dataset": None}


class OpenVinoInt4Exporter(OpenVinoExporter):
    defaults = {"mode": "int4_asym", "group_size": 128, "group_size_fallback": "adjust", "ratio": 1.0,
                "all_layers": False, "data_aware": False, "awq": True, "scale_estimation": True,
                "calibration_questions": 32}  # 32: AWQ + scale estimation took 8 min on SmolLM2-135M, 2 shared cores

    def check(self, source: Path | None = None) -> None:
        s = self.settings
        if s["mode"] not in INT4_MODES:
            raise EdgemedError(f"openvino-int4: mode must be one of {', '.join(INT4_MODES)}, not {s['mode']!r}")
        if s["group_size_fallback"] not in FALLBACKS:
            raise EdgemedError(f"openvino-int4: group_size_fallback must be one of {', '.join(FALLBACKS)}, not "
                               f"{s['group_size_fallback']!r}")
        group = s["group_size"]
        if not isinstance(group, int) or isinstance(group, bool) or (group < 1 and group != -1):
            raise EdgemedError(f"openvino-int4: group_size must be a positive integer (e.g. 32, 64, 128) or -1 (per "
                               f"channel), not {group!r}")
        if not isinstance(s["ratio"], int | float) or isinstance(s["ratio"], bool) or not 0 < s["ratio"] <= 1:
            raise EdgemedError(f"openvino-int4: ratio (the share of layers in int4) must be in (0, 1], not "
                               f"{s['ratio']!r}")
        if not isinstance(s["calibration_questions"], int) or s["calibration_questions"] < 1:
            raise EdgemedError("openvino-int4: calibration_questions must be a positive integer, not "
                               f"{s['calibration_questions']!r}")

    def compression(self, source: Path, settings: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        s = settings
        self.check()
        kwargs = {"mode": s["mode"], "group_size": s["group_size"], "ratio": float(s["ratio"]),
                  "all_layers": bool(s["all_layers"]), "group_size_fallback": s["group_size_fallback"]}
        if s["data_aware"]:
            kwargs.update(awq=bool(s["awq"]), scale_estimation=bool(s["scale_estimation"]))
        record = dict(kwargs)
        record["backup"] = "int8_asym (embedding and lm_head)" if not s["all_layers"] else "none: all layers int4"
        record["dataset"] = None
        if s["data_aware"]:
            self._calibration = training_texts(source, s["calibration_questions"])
            record["dataset"] = self._calibration[1]
        return kwargs, record

    def calibration_texts(self, source: Path, settings: dict[str, Any]) -> list[str] | None:
        return self._calibration[0] if settings["data_aware"] else None


class OpenVinoInt4AwqExporter(OpenVinoInt4Exporter):
    """``openvino-int4-awq``: openvino-int4 with AWQ and scale estimation on the lineage's training text."""

    defaults = {**OpenVinoInt4Exporter.defaults, "data_aware": True}


def training_texts(source: Path, limit: int) -> tuple[list[str], dict[str, Any]]:
    """The lineage's training questions with their answers in the recorded prompt style (what training saw),
    `limit` of them spread evenly, and their provenance. No evaluation question is ever among them."""
    from edgemed.data import load_questions
    from edgemed.prompts import get_style

    lineage = source_lineage(source)
    data = lineage.data or {}
    if not lineage.trained or not data.get("source"):
        raise EdgemedError(f"{source}: data-aware compression uses the training text recorded in the lineage, and "
                           "this model has none (edgemed did not train it); drop data_aware")
    questions, _ = load_questions(data["source"], data.get("split") or "train", cop_base=data.get("cop_base", "auto"),
                                  skip_bad=bool(data.get("skip_bad_rows")), limit=data.get("limit"))
    held = set(lineage.eval_ids or [])
    by_id = {q.id: q for q in questions}
    train = [by_id[i] for i in lineage.train_ids or [] if i in by_id and i not in held]
    if not train:
        raise EdgemedError(f"{source}: none of the lineage's {len(lineage.train_ids or [])} training ids is in "
                           f"{data['source']} any more; re-train or drop data_aware")
    step = max(len(train) / limit, 1.0)
    picked = [train[int(i * step)] for i in range(min(limit, len(train)))]
    style = get_style(lineage.prompt_style)
    ids_hash = hashlib.sha256("\n".join(q.id for q in picked).encode()).hexdigest()
    return [style.prompt(q) + style.target(q) for q in picked], {
        "text": "training questions with their answers (prompt + training target)", "source": data["source"],
        "split": data.get("split") or "train", "prompt_style": lineage.prompt_style, "questions": len(picked),
        "of_training_questions": len(train), "ids_sha256": ids_hash, "evaluation_questions": 0}


def _nncf_args(kwargs: dict[str, Any]) -> dict[str, Any]:
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedCompressionParameters, GroupSizeFallbackMode

    args = dict(kwargs)
    args["mode"] = getattr(nncf.CompressWeightsMode, args["mode"].upper())
    fallback = args.pop("group_size_fallback", None)
    if fallback is not None:
        args["advanced_parameters"] = AdvancedCompressionParameters(
            group_size_fallback_mode=getattr(GroupSizeFallbackMode, fallback.upper()))
    return args


def convert_and_compress(fp32: Path, dest: Path, kwargs: dict[str, Any], texts: list[str] | None) -> dict[str, Any]:
    """ONNX -> OpenVINO model -> NNCF weight compression -> IR in `dest`; the weight types it holds."""
    import logging

    with telemetry_off() as telemetry:
        import nncf
        import openvino as ov

        model = ov.convert_model(str(fp32 / ONNX_FILE))
    args = _nncf_args(kwargs)
    tokens = None
    if texts is not None:
        feeds = calibration_feeds(model, fp32, texts)
        tokens = sum(int(f["input_ids"].shape[1]) for f in feeds)
        args["dataset"] = nncf.Dataset(feeds)
        args["subset_size"] = len(feeds)
    nncf_log = logging.getLogger("nncf")
    level = nncf_log.level
    nncf_log.setLevel(logging.ERROR)  # its per-layer bit-width table goes to the manifest instead
    try:
        model = nncf.compress_weights(model, **args)
    finally:
        nncf_log.setLevel(level)
    kv = make_stateful(model)
    ov.save_model(model, str(dest / XML_FILE), compress_to_fp16=False)
    if not (dest / BIN_FILE).is_file():
        raise EdgemedError(f"OpenVINO wrote no {BIN_FILE} beside {XML_FILE}")
    out: dict[str, Any] = {"weights": weight_types(model), "stateful": {"kv_cache_variables": kv},
                           "openvino": ov.__version__, "nncf": nncf.__version__, "usage_telemetry": telemetry}
    if tokens is not None:
        out["calibration_tokens"] = tokens
    return out


TELEMETRY_OPT_IN = "EDGEMED_OPENVINO_TELEMETRY"


@contextlib.contextmanager
def telemetry_off():
    """Keep OpenVINO's converter and NNCF from sending usage events while they run here: without a consent file
    both count as consent (openvino-telemetry's ``enable_opt_in_dialog=False``), and offline the sender only waits
    and fails. Their own switches, set for this block only and then put back: ``CI=true`` (ovc's
    ``disable_in_ci``) and ``NNCF_CI`` (read when nncf is first imported). ``EDGEMED_OPENVINO_TELEMETRY=1``
    leaves the libraries' own defaults alone. Yields the effective setting (recorded in the manifest)."""
    if os.environ.get(TELEMETRY_OPT_IN) == "1":
        yield f"the libraries' defaults ({TELEMETRY_OPT_IN}=1)"
        return
    saved = {k: os.environ.get(k) for k in ("CI", "NNCF_CI")}
    os.environ.update(CI="true", NNCF_CI="1")
    try:
        yield "off (CI=true and NNCF_CI=1 around the conversion)"
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def make_stateful(model) -> int:
    """Keep the KV cache inside the model, as optimum-intel's stateful export does: each ``past_key_values.N.*``
    input becomes a ReadValue of a variable (initialised to an empty [batch, heads, 0, dim] from input_ids' batch)
    and each ``present.N.*`` output an Assign to it; only ``logits`` is returned. The number of variables."""
    import numpy as np
    import openvino as ov
    import openvino.opset13 as ops
    from openvino.op import assign, read_value
    from openvino.op.util import Variable, VariableInfo

    batch = ops.gather(ops.shape_of(model.input("input_ids")), ops.constant(np.array([0], np.int64)),
                       ops.constant(np.int64(0)))
    sinks, variables = [], []
    for port in list(model.inputs):
        name = port.get_any_name()
        if not name.startswith("past_key_values."):
            continue
        shape = port.get_partial_shape()
        heads, dim = shape[1].get_length(), shape[3].get_length()
        empty = ops.broadcast(ops.constant(np.float32(0)),
                              ops.concat([batch, ops.constant(np.array([heads, 0, dim], np.int64))], 0))
        info = VariableInfo()
        info.variable_id, info.data_type = name, ov.Type.f32
        info.data_shape = ov.PartialShape([-1, heads, -1, dim])
        variable = Variable(info)
        state = read_value(empty, variable)
        for target in list(port.get_target_inputs()):
            target.replace_source_output(state.output(0))
        result = model.output("present." + name[len("past_key_values."):]).get_node()
        sinks.append(assign(result.input_value(0).get_node(), variable))
        variables.append(variable)
        model.remove_result(result)
        model.remove_parameter(port.get_node())
    model.add_variables(variables)
    model.add_sinks(sinks)
    return len(variables)


def calibration_feeds(model, fp32: Path, texts: list[str]) -> list[dict[str, Any]]:
    """One input dict per text for the converted graph: its tokens from an empty cache (batch 1)."""
    import numpy as np

    from edgemed.runtimes.folder_tokenizer import FolderTokenizer, read_json

    tok = FolderTokenizer(fp32, read_json(fp32 / "config.json"), read_json(fp32 / "generation_config.json"))
    past = {}
    for port in model.inputs:
        name = port.get_any_name()
        if name.startswith("past_key_values."):
            shape = port.get_partial_shape()
            past[name] = (shape[1].get_length(), shape[3].get_length())
    names = {p.get_any_name() for p in model.inputs}
    feeds = []
    for text in texts:
        ids = np.asarray([tok.encode(text)], dtype=np.int64)
        n = ids.shape[1]
        feed = {"input_ids": ids, "attention_mask": np.ones((1, n), dtype=np.int64)}
        if "position_ids" in names:
            feed["position_ids"] = np.arange(n, dtype=np.int64)[None, :]
        feed.update({k: np.zeros((1, h, 0, d), dtype=np.float32) for k, (h, d) in past.items()})
        feeds.append(feed)
    return feeds


def weight_types(model) -> dict[str, dict[str, int]]:
    """Constant tensors of the compressed model by element type: how many and their bytes (what the IR holds)."""
    out: dict[str, dict[str, int]] = {}
    for op in model.get_ops():
        if op.get_type_name() != "Constant":
            continue
        t = op.get_output_element_type(0)
        shape = op.get_output_shape(0)
        n = 1
        for d in shape:
            n *= int(d)
        if n < 1024:  # shapes, axes, scalars
            continue
        entry = out.setdefault(t.get_type_name(), {"tensors": 0, "elements": 0})
        entry["tensors"] += 1
        entry["elements"] += n
    return out
