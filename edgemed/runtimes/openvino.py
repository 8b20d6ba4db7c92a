"""OpenVINO runtime for OpenVINO IR artifacts (``openvino_model.xml`` + ``openvino_model.bin``, written by
``edgemed.export.openvino`` from Optimum's ONNX graph, made stateful: inputs ``input_ids``, ``attention_mask``,
``position_ids``; output ``logits``; the KV cache in OpenVINO variables, as optimum-intel and openvino-genai run it).

Needs only the ``openvino`` extra (openvino, tokenizers, numpy): nothing on this module's import chain imports
torch, transformers, optimum or nncf (a test enforces it).

- Tokens come from the artifact's ``tokenizer.json`` through ``edgemed.runtimes.folder_tokenizer`` (the same
  reader as the onnxruntime runtime), so ids match transformers.
- The model is compiled for OpenVINO's CPU plugin with its own defaults (performance hint, streams, inference
  precision: f32 on this kind of CPU, bf16 where the CPU has AMX/AVX512-BF16); only ``threads`` (as
  ``INFERENCE_NUM_THREADS``) and an explicit ``dtype`` (``INFERENCE_PRECISION_HINT``) are set. ``info()`` records
  what the compiled model reports.
- The KV cache stays inside the infer request (stateful): a new sequence starts with ``reset_state()``, then one
  ``infer`` per prompt and per generated token, timed. The CPU plugin stores it in its own precision
  (``KV_CACHE_PRECISION``, u8 by default in OpenVINO 2026 on x86), recorded in ``info()``.
- The IR is checked before OpenVINO reads it: the ``.xml`` must parse and the ``.bin`` must hold every weight it
  points to (a missing or truncated ``.bin`` is refused naming the file, exit 2).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np

from edgemed.errors import EdgemedError
from edgemed.registry import runtime_module
from edgemed.runtimes.base import omp_wait_policy
from edgemed.runtimes.folder import FolderRuntime
from edgemed.runtimes.logits import log_softmax_rows

XML_FILE = "openvino_model.xml"
_PRECISIONS = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}
_REPORTED = ("INFERENCE_NUM_THREADS", "NUM_STREAMS", "INFERENCE_PRECISION_HINT", "PERFORMANCE_HINT",
             "EXECUTION_MODE_HINT", "ENABLE_CPU_PINNING", "ENABLE_HYPER_THREADING", "SCHEDULING_CORE_TYPE",
             "KV_CACHE_PRECISION", "DYNAMIC_QUANTIZATION_GROUP_SIZE", "OPTIMAL_NUMBER_OF_INFER_REQUESTS")


def check_ir(xml: Path) -> Path:
    """The IR's .bin, after checking that the .xml parses and the .bin holds every weight it points to."""
    bin_file = xml.with_suffix(".bin")
    if not bin_file.is_file():
        raise EdgemedError(f"{bin_file} is missing: an OpenVINO IR needs its weights beside {xml.name}; re-export it")
    try:
        root = ET.parse(xml).getroot()
    except (ET.ParseError, OSError) as exc:
        raise EdgemedError(f"{xml} is truncated or corrupt (not XML: {exc}); re-export it") from None
    if root.tag != "net":
        raise EdgemedError(f"{xml} is not an OpenVINO IR (root <{root.tag}>, expected <net>); re-export it")
    need = 0
    for data in root.iter("data"):
        offset, size = data.get("offset"), data.get("size")
        if offset is not None and size is not None:
            try:
                need = max(need, int(offset) + int(size))
            except ValueError:
                raise EdgemedError(f"{xml} is corrupt (weight offset {offset!r}, size {size!r}); re-export it"
                                   ) from None
    have = bin_file.stat().st_size
    if have < need:
        raise EdgemedError(f"{bin_file} is truncated: {have} bytes, {xml.name} needs {need}; re-export it")
    return bin_file


class OpenVinoRuntime(FolderRuntime):
    name = "openvino"

    def __init__(self, path: Path, threads: int | None = None, device: str = "auto", **options: Any):
        super().__init__(path, threads, device, **options)
        if device.startswith(("cuda", "mps")):
            raise EdgemedError(f"--device {device}: the openvino runtime runs on the CPU here; use --device cpu")
        xml = self.model_file = self._model_file(XML_FILE, "openvino-int8")
        bin_file = check_ir(xml)  # before any work: a broken IR is bad input naming the file
        self._read_configs()
        self._read_tokenizer()
        self.ov = runtime_module(self.name, "openvino")
        self.requested = self._compile_config(options)
        self.core = self.ov.Core()
        try:
            model = self.core.read_model(str(xml), str(bin_file))
            self.compiled = self.core.compile_model(model, "CPU", self.requested)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise EdgemedError(f"OpenVINO could not load {xml} ({first[:300]}); the IR is corrupt, re-export it"
                               ) from None
        self.request = self.compiled.create_infer_request()
        self._read_graph()
        self._length = 0
        self._mask_ones = np.ones((1, 0), dtype=np.int64)

    def _compile_config(self, options: dict[str, Any]) -> dict[str, Any]:
        """What edgemed asks of the CPU plugin: threads and an explicit dtype only (the rest: OpenVINO's defaults)."""
        config: dict[str, Any] = {}
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = int(self.threads)
        dtype = options.get("dtype")
        if dtype:
            if dtype not in _PRECISIONS:
                raise EdgemedError(f"openvino runtime: dtype {dtype!r} is not one of {', '.join(_PRECISIONS)}")
            config["INFERENCE_PRECISION_HINT"] = _PRECISIONS[dtype]
        return config

    # --- graph ------------------------------------------------------------------------------------
    def _read_graph(self) -> None:
        inputs = {p.get_any_name() for p in self.compiled.inputs}
        outputs = [p.get_any_name() for p in self.compiled.outputs]
        missing = [n for n in ("input_ids", "attention_mask") if n not in inputs] + (
            [] if "logits" in outputs else ["logits (output)"])
        if missing:
            raise EdgemedError(f"{self.model_file} is not a text-generation graph (no {', '.join(missing)}); "
                               "export it with 'edgemed export --formats openvino-int8'")
        if any(n.startswith("past_key_values.") for n in inputs) or not self.request.query_state():
            raise EdgemedError(f"{self.model_file} is not a stateful LLM graph (its KV cache is not kept in "
                               "variables); re-export it with 'edgemed export --formats openvino-int8'")
        self.takes_positions = "position_ids" in inputs
        self.logits_index = outputs.index("logits")
        width = self.compiled.outputs[self.logits_index].get_partial_shape()[-1]
        self._vocab = width.get_length() if width.is_static else int(self.config.get("vocab_size") or 0)

    def _run(self, ids: np.ndarray, mask: np.ndarray, fresh: bool) -> np.ndarray:
        """One infer of `ids` after what the state holds (mask.shape[1] - ids.shape[1] tokens); the logits.
        `fresh` empties the state first (a new sequence, any batch size)."""
        if fresh:
            self.request.reset_state()
        feed: dict[str, np.ndarray] = {"input_ids": ids, "attention_mask": mask}
        if self.takes_positions:
            if ids.shape[0] == 1 and mask.all():
                start = mask.shape[1] - ids.shape[1]
                pos = np.arange(start, mask.shape[1], dtype=np.int64)[None, :]
            else:
                pos = np.maximum(np.cumsum(mask, axis=-1) - 1, 0)[:, -ids.shape[1]:]
            feed["position_ids"] = np.ascontiguousarray(pos, dtype=np.int64)
        self.request.infer(feed, share_inputs=True)
        return self.request.get_output_tensor(self.logits_index).data

    # --- model ------------------------------------------------------------------------------------
    def next_token_logprobs(self, prompts: list[str]) -> np.ndarray:
        if not prompts:
            return np.zeros((0, self.vocab_size), dtype=np.float32)
        ids, mask = self._left_padded(prompts, np.int64, np.int64, "OpenVINO")
        logits = self._run(ids, mask, fresh=True)
        return log_softmax_rows(logits[:, -1, :])

    def sequence_logprobs(self, ids: list[int]) -> np.ndarray:
        if not ids:
            return np.zeros((0, self.vocab_size), dtype=np.float32)
        arr = np.asarray([ids], dtype=np.int64)
        logits = self._run(arr, self._ones(len(ids)), fresh=True)
        return log_softmax_rows(logits[0])

    def _step(self, ids: list[int], fresh: bool) -> np.ndarray:
        self._length = len(ids) if fresh else self._length + len(ids)
        logits = self._run(np.asarray([ids], dtype=np.int64), self._ones(self._length), fresh)[0, -1]
        return logits.astype(np.float32)  # a copy: the output tensor is reused by the next infer

    def prefill(self, ids: list[int]) -> np.ndarray:
        if not ids:
            raise EdgemedError("empty prompt: OpenVINO needs at least one token")
        return self._step(ids, fresh=True)

    def decode(self, token: int) -> np.ndarray:
        return self._step([token], fresh=False)

    # --- reporting --------------------------------------------------------------------------------
    def _property(self, name: str) -> Any:
        try:
            value = self.compiled.get_property(name)
        except RuntimeError:  # not a property of this plugin/version
            return None
        if hasattr(value, "get_type_name"):  # an element type (INFERENCE_PRECISION_HINT): 'f32', 'bf16'
            return value.get_type_name()
        return value if isinstance(value, bool | int | float | str) or value is None else str(value)

    def info(self) -> dict[str, Any]:
        compiled = {k: v for k in _REPORTED if (v := self._property(k)) is not None}
        threads = compiled.get("INFERENCE_NUM_THREADS")
        precision = str(compiled.get("INFERENCE_PRECISION_HINT", "")).lower()
        try:
            cpu = self.core.get_property("CPU", "FULL_DEVICE_NAME")
            caps = [str(c) for c in self.core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")]
        except RuntimeError:
            cpu, caps = None, []
        return {
            "runtime": self.name,
            "device": "cpu",
            "plugin": "CPU",
            "cpu": cpu,
            "optimization_capabilities": caps,
            "threads": int(threads) if isinstance(threads, int) and threads > 0 else self.threads,
            "dtype": {"f32": "float32", "bf16": "bfloat16", "f16": "float16"}.get(precision, precision or None),
            "compile_config_set_by_edgemed": dict(self.requested),
            "compiled_model": compiled,
            "stateful": True,
            "kv_cache_variables": len(self.request.query_state()) if self.request is not None else None,
            "openvino": self.ov.__version__,
            "omp_wait_policy": omp_wait_policy(),
            "takes_position_ids": self.takes_positions,
            "model_file": str(self.model_file),
        }

    def close(self) -> None:
        self.request = None
        self.compiled = None
