"""onnxruntime runtime for ONNX artifacts (Optimum's ``text-generation-with-past`` export: one ``model.onnx``
taking ``past_key_values.N.key/value`` and returning ``logits`` and ``present.N.key/value``).

Needs only the ``onnx`` extra (onnxruntime, tokenizers, numpy): nothing on this module's import chain may import
torch, transformers or optimum (a test enforces it); exporting still needs ``onnx-export``.

- Tokens come from the artifact's ``tokenizer.json`` through the Rust ``tokenizers`` package, with the padding
  and truncation saved in it switched off (as transformers does), so ids match the transformers tokenizer.
- Letter log-probs run batched with left padding, the attention mask and position ids (when the graph takes
  them: cumsum of the mask - 1, clamped at 0), like the transformers runtime.
- Generation feeds the ``present`` arrays onnxruntime returns back as the next step's past, so every token is
  one ``session.run`` on numpy arrays and is timed.
- Threads: onnxruntime's own intra-op pool (no OpenMP, so OMP_WAIT_POLICY does not reach it) spins between runs
  by default; ``allow_spinning=False`` turns that off (``info()["intra_op_spinning"]`` records it).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np

from edgemed.errors import EdgemedError
from edgemed.registry import runtime_module
from edgemed.runtimes.base import omp_wait_policy
from edgemed.runtimes.folder import FolderRuntime
from edgemed.runtimes.logits import log_softmax_rows

ONNX_FILE = "model.onnx"
PAST_PREFIX = "past_key_values."
_NUMPY_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
}


def _numpy_type(ort_type: str, name: str) -> type:
    try:
        return _NUMPY_TYPES[ort_type]
    except KeyError:
        raise EdgemedError(f"onnxruntime runtime: input/output '{name}' has type {ort_type}, which numpy cannot "
                           "hold; export the model in float32 or float16") from None


class OnnxRuntime(FolderRuntime):
    name = "onnxruntime"

    def __init__(self, path: Path, threads: int | None = None, device: str = "auto", **options: Any):
        super().__init__(path, threads, device, **options)
        ort = runtime_module(self.name, "onnxruntime")
        self.ort = ort
        model_file = self.model_file = self._model_file(ONNX_FILE, "onnx")
        self._read_configs()

        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
        spinning = options.get("allow_spinning")  # None: onnxruntime's default (its pool spins between runs)
        if spinning is not None:
            so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        self.allow_spinning = spinning
        available = ort.get_available_providers()
        want_cuda = device.startswith("cuda") or (device == "auto" and "CUDAExecutionProvider" in available)
        if want_cuda and "CUDAExecutionProvider" not in available:
            raise EdgemedError(f"device '{device}' asks for CUDA but this onnxruntime has no CUDAExecutionProvider "
                               f"(available: {', '.join(available)}); install onnxruntime-gpu or use --device cpu")
        if want_cuda:
            index = device.partition(":")[2]
            cuda_opts = {"device_id": int(index)} if index.isdigit() else {}
            providers: list[Any] = [("CUDAExecutionProvider", cuda_opts), "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        with _engine_stderr() as said:
            try:
                self.session = ort.InferenceSession(str(model_file), so, providers=providers)
            except Exception as exc:  # onnxruntime raises its own exception types for corrupt graphs
                first = str(exc).splitlines()[0] if str(exc) else ""
                raise EdgemedError(
                    f"onnxruntime could not load {model_file} ({type(exc).__name__}: {first}); "
                    f"the file is truncated or corrupt, re-export it{said.note()}"
                ) from None
        self.provider = self.session.get_providers()[0]
        self._read_graph()
        self._read_tokenizer()
        self._past: dict[str, np.ndarray] = {}
        self._length = 0

    # --- graph ------------------------------------------------------------------------------------
    def _read_graph(self) -> None:
        """Input/output names and types, and the shape of an empty past, from the session (config.json fallback)."""
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = [o.name for o in self.session.get_outputs()]
        missing = [n for n in ("input_ids", "attention_mask") if n not in inputs] + (
            [] if "logits" in outputs else ["logits (output)"])
        if missing:
            raise EdgemedError(f"{self.model_file} is not a text-generation graph (no {', '.join(missing)}); "
                               "export it with 'edgemed export --formats onnx'")
        self.input_types = {name: _numpy_type(i.type, name) for name, i in inputs.items()}
        self.takes_positions = "position_ids" in inputs
        self.takes_cache_branch = "use_cache_branch" in inputs
        past_names = [n for n in inputs if n.startswith(PAST_PREFIX)]
        self.output_names = ["logits"]
        self._present_of: list[tuple[str, int]] = []  # (past input, index of the present output feeding it)
        for name in past_names:
            present = "present." + name[len(PAST_PREFIX):]
            if present not in outputs:
                raise EdgemedError(f"{self.model_file}: input {name} has no matching output {present}; "
                                   "re-export it with the text-generation-with-past task")
            self._present_of.append((name, len(self.output_names)))
            self.output_names.append(present)
        cfg = self.config
        heads = cfg.get("num_attention_heads")
        kv_heads = cfg.get("num_key_value_heads") or heads
        head_dim = cfg.get("head_dim") or (cfg["hidden_size"] // heads if cfg.get("hidden_size") and heads else None)
        self._past_shapes: dict[str, tuple[int, int]] = {}
        for name in past_names:
            shape = inputs[name].shape
            dims = [d if isinstance(d, int) else None for d in (shape[1], shape[3])] if len(shape) == 4 else []
            h = dims[0] if dims and dims[0] else kv_heads
            d = dims[1] if dims and dims[1] else head_dim
            if not h or not d:
                raise EdgemedError(f"{self.model_file}: the shape of {name} is not static and config.json lacks "
                                   "num_key_value_heads/head_dim; re-export the artifact with its config.json")
            self._past_shapes[name] = (int(h), int(d))
        logits_out = self.session.get_outputs()[outputs.index("logits")]
        self.logits_type = logits_out.type
        width = logits_out.shape[-1] if logits_out.shape else None
        self._vocab = int(width) if isinstance(width, int) else int(cfg.get("vocab_size") or 0)
        self.past_type = inputs[past_names[0]].type if past_names else logits_out.type
        self._mask_ones = np.ones((1, 0), dtype=self.input_types["attention_mask"])

    def _empty_past(self, batch: int) -> dict[str, np.ndarray]:
        return {name: np.zeros((batch, h, 0, d), dtype=self.input_types[name])
                for name, (h, d) in self._past_shapes.items()}

    def _run(self, ids: np.ndarray, mask: np.ndarray, past: dict[str, np.ndarray]) -> list[np.ndarray]:
        """One session.run: `ids` after `past` (whose length is mask.shape[1] - ids.shape[1])."""
        feed: dict[str, np.ndarray] = {"input_ids": ids, "attention_mask": mask}
        if self.takes_positions:
            if ids.shape[0] == 1 and mask.all():
                start = mask.shape[1] - ids.shape[1]
                pos = np.arange(start, mask.shape[1], dtype=self.input_types["position_ids"])[None, :]
            else:
                pos = np.maximum(np.cumsum(mask, axis=-1) - 1, 0)[:, -ids.shape[1]:]
            feed["position_ids"] = pos.astype(self.input_types["position_ids"], copy=False)
        if self.takes_cache_branch:
            feed["use_cache_branch"] = np.array([mask.shape[1] > ids.shape[1]], dtype=np.bool_)
        feed.update(past)
        return self.session.run(self.output_names, feed)

    def _ids_array(self, ids: list[int]) -> np.ndarray:
        return np.asarray([ids], dtype=self.input_types["input_ids"])

    # --- model ------------------------------------------------------------------------------------
    def next_token_logprobs(self, prompts: list[str]) -> np.ndarray:
        if not prompts:
            return np.zeros((0, self.vocab_size), dtype=np.float32)
        ids, mask = self._left_padded(prompts, self.input_types["input_ids"], self.input_types["attention_mask"],
                                      "onnxruntime")
        logits = self._run(ids, mask, self._empty_past(len(ids)))[0]
        return log_softmax_rows(logits[:, -1, :])

    def sequence_logprobs(self, ids: list[int]) -> np.ndarray:
        if not ids:
            return np.zeros((0, self.vocab_size), dtype=np.float32)
        logits = self._run(self._ids_array(ids), self._ones(len(ids)), self._empty_past(1))[0]
        return log_softmax_rows(logits[0])

    def _step(self, ids: list[int]) -> np.ndarray:
        self._length += len(ids)
        out = self._run(self._ids_array(ids), self._ones(self._length), self._past)
        self._past = {name: out[i] for name, i in self._present_of}
        logits = out[0][0, -1]
        return logits if logits.dtype == np.float32 else logits.astype(np.float32)

    def prefill(self, ids: list[int]) -> np.ndarray:
        if not ids:
            raise EdgemedError("empty prompt: onnxruntime needs at least one token")
        self._past, self._length = self._empty_past(1), 0
        return self._step(ids)

    def decode(self, token: int) -> np.ndarray:
        return self._step([token])

    # --- reporting --------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        opts = self.session.get_session_options()
        intra = opts.intra_op_num_threads
        if intra > 0:
            threads: int | None = intra
        else:  # 0: onnxruntime sizes its pool to the physical cores
            import psutil

            threads = psutil.cpu_count(logical=False) or psutil.cpu_count()
        dtype = _NUMPY_TYPES.get(self.past_type)
        return {
            "runtime": self.name,
            "provider": self.provider,
            "providers": self.session.get_providers(),
            "device": (self.device if self.device.startswith("cuda") else "cuda")
            if self.provider == "CUDAExecutionProvider" else "cpu",
            "threads": threads,
            "intra_op_num_threads": intra,
            "inter_op_num_threads": opts.inter_op_num_threads,
            "intra_op_spinning": "default (on)" if self.allow_spinning is None else
                                 ("on" if self.allow_spinning else "off"),
            "dtype": np.dtype(dtype).name if dtype is not None else self.past_type,
            "onnxruntime": self.ort.__version__,
            "omp_wait_policy": omp_wait_policy(),
            "takes_position_ids": self.takes_positions,
            "use_cache_branch": self.takes_cache_branch,
            "model_file": str(self.model_file),
            **self.int8_kernel(),
        }

    def int8_kernel(self) -> dict[str, Any]:
        """For an int8 artifact: the u8s8 kernel this CPU runs, and the saturation risk of its weights here."""
        from edgemed.int8_kernels import kernel_of, probe_u8s8, saturation_risk

        manifest = self.manifest
        if manifest.get("format") != "onnx-int8":
            return {}
        int8 = (manifest.get("export") or {}).get("int8") or {}
        return {"int8_kernel": kernel_of(), "int8_kernel_probe": probe_u8s8(),
                "int8_weights_for": int8.get("for_kernel", "unrecorded"),
                "int8_saturation_risk": saturation_risk(manifest)}

    def close(self) -> None:
        self._past = {}
        self.session = None


class _Said:
    """What an engine wrote to stderr while loading (see :func:`_engine_stderr`)."""

    def __init__(self, path: Path):
        self.path = path

    def note(self) -> str:
        try:
            has = self.path.stat().st_size > 0
        except OSError:
            has = False
        return f" (onnxruntime's own log: {self.path})" if has else ""


@contextlib.contextmanager
def _engine_stderr():
    """Hold what onnxruntime's C++ logger writes to stderr (file descriptor 2) while a session loads: written out
    as it was when the load succeeds; kept in a log file, named by edgemed's one error line, when it fails (its own
    ``[E:onnxruntime:...]`` line would otherwise come before edgemed's)."""
    import os
    import sys
    import tempfile

    fd, name = tempfile.mkstemp(prefix="edgemed-onnxruntime-", suffix=".log")
    said = _Said(Path(name))
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(fd, 2)
    failed = True
    try:
        yield said
        failed = False
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(fd)
        if not failed:
            with contextlib.suppress(OSError):
                text = said.path.read_bytes()
                if text:
                    os.write(2, text)
                said.path.unlink()
        elif not said.note():
            said.path.unlink(missing_ok=True)
