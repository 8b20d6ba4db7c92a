"""llama.cpp runtime (llama-cpp-python) for GGUF artifacts. Needs only the ``gguf`` extra: nothing on this
module's import chain may import torch or transformers (a test enforces it).

- Tokens come from llama.cpp itself (``special=True`` so chat markers are single tokens; BOS added only when
  the GGUF's ``tokenizer.ggml.add_bos_token`` says so), so what is scored is what llama.cpp would run.
- Next-token log-probs: the KV cache is cleared, the prompt evaluated, the last logits row read.
- Weight repacking ("extra buffer types"): with it, llama.cpp's AMX path segfaults at the first decode of
  quantized GGUFs (q8_0 and q4_k_m, measured on a 2-core Xeon with AMX, llama-cpp-python 0.3.36); float
  files (f32/f16/bf16) run fine and faster. So on CPUs reporting AMX, repacking is off for quantized files only
  (``repack=None`` = auto; the file type is read from the GGUF header before loading), on everywhere else as in
  llama.cpp. ``info()["kernel_path"]`` records which path ran.
- Flash attention: ``flash_attn="auto"`` (default) follows llama.cpp's own default (llama-bench ``-fa auto``),
  which enables it wherever the backend supports it, as the CPU backend does; llama-cpp-python can only say
  on or off, so auto is passed as on. ``"off"`` is llama-cpp-python's own default.
- OpenMP wait policy: llama.cpp's worker threads spin between graph runs by default (fast on a quiet machine,
  very slow on a busy one). This module never changes it: the engine runs with its own default unless the
  user set OMP_WAIT_POLICY (``edgemed bench --omp-wait-policy``); ``info()["omp_wait_policy"]`` records what
  was in force when llama.cpp loaded.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np

from edgemed.errors import EdgemedError
from edgemed.gguf_header import read_header
from edgemed.registry import runtime_module
from edgemed.runtimes.base import Runtime, TextDecoder, omp_wait_policy
from edgemed.runtimes.logits import log_softmax_rows

_PARAMS_LOCK = threading.Lock()
_OMP_POLICY: str | None = None  # OMP_WAIT_POLICY in force when llama.cpp was loaded in this process


def _load_llama_cpp():
    """Import llama_cpp, noting the OMP_WAIT_POLICY its OpenMP runtime reads at load (never changing it)."""
    global _OMP_POLICY
    if _OMP_POLICY is None:
        _OMP_POLICY = omp_wait_policy()
        if "llama_cpp" in sys.modules:
            _OMP_POLICY += " (llama_cpp was imported before edgemed)"
    return runtime_module(LlamaCppRuntime.name, "llama_cpp")


def gguf_file(path: Path) -> Path:
    """The .gguf file of an artifact (the file itself, or the single .gguf in its folder), its header checked."""
    return open_gguf(path)[0]


def open_gguf(path: Path) -> tuple[Path, dict[str, Any]]:
    """The .gguf file of an artifact and its header (:func:`edgemed.gguf_header.read_header`): a malformed header
    (bad magic, cut short, counts past the end) is refused naming the file, before llama.cpp reads it."""
    path = Path(path)
    if path.is_file():
        found = path
    else:
        files = sorted(p for p in path.glob("*.gguf") if not p.name.startswith("."))
        if len(files) != 1:
            raise EdgemedError(
                f"{path} holds {len(files)} .gguf files; give the path of the one to load"
                if files else f"{path} has no .gguf file; export one with 'edgemed export --formats gguf-q4_k_m'"
            )
        found = files[0]
    return found, read_header(found)


FLOAT_FILE_TYPES = (0, 1, 32)  # llama_ftype ALL_F32, MOSTLY_F16, MOSTLY_BF16


def file_type_of(header: dict[str, Any]) -> int | None:
    """``general.file_type`` of a GGUF header (None when the file does not say)."""
    value = header["kv"].get("general.file_type")
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def cpu_has_amx() -> bool:
    from edgemed.sysinfo import cpu_flags

    return any(f.startswith("amx") for f in cpu_flags())


@contextlib.contextmanager
def _model_params(llama_cpp_lib, **fields: Any):
    """Make ``Llama()`` build its llama_model_params with `fields` set (it exposes no kwarg for them)."""
    original = llama_cpp_lib.llama_model_default_params

    def patched():
        params = original()
        for key, value in fields.items():
            setattr(params, key, value)
        return params

    with _PARAMS_LOCK:
        llama_cpp_lib.llama_model_default_params = patched
        try:
            yield
        finally:
            llama_cpp_lib.llama_model_default_params = original


class LlamaCppRuntime(Runtime):
    name = "llama.cpp"

    def __init__(self, path: Path, threads: int | None = None, device: str = "auto", **options: Any):
        super().__init__(path, threads, device, **options)
        llama_cpp = _load_llama_cpp()
        import llama_cpp.llama_cpp as lib

        self.lib = lib
        self.file, header = open_gguf(self.path)
        repack = options.get("repack")
        self.amx = cpu_has_amx()
        self.file_type = file_type_of(header)
        quantized = self.file_type not in FLOAT_FILE_TYPES
        self.repack = not (self.amx and quantized) if repack is None else bool(repack)
        self.flash_attn = str(options.get("flash_attn", "auto"))
        if self.flash_attn not in ("auto", "on", "off"):
            raise EdgemedError(f"flash_attn must be auto, on or off, not {self.flash_attn!r}")
        gpu_layers = -1 if (device.startswith("cuda") or device == "mps") and lib.llama_supports_gpu_offload() else 0
        self.gpu_layers = gpu_layers
        self.n_ctx = int(options.get("n_ctx", 2048))
        try:
            with _model_params(lib, use_extra_bufts=self.repack):
                self.llm = llama_cpp.Llama(
                    str(self.file),
                    n_ctx=self.n_ctx,
                    n_batch=512,
                    n_threads=threads,
                    n_threads_batch=threads,
                    n_gpu_layers=gpu_layers,
                    logits_all=False,
                    flash_attn=self.flash_attn != "off",
                    seed=int(options.get("seed", 0)),
                    verbose=bool(options.get("verbose", False)),
                )
        except (ValueError, RuntimeError) as exc:
            raise EdgemedError(
                f"llama.cpp could not load {self.file} ({str(exc).splitlines()[0]}): the file is truncated or "
                "corrupt, or from a newer llama.cpp; re-export it"
            ) from None
        self.metadata: dict[str, str] = dict(self.llm.metadata or {})
        self.vocab = lib.llama_model_get_vocab(self.llm.model)
        self.n_vocab = self.llm.n_vocab()
        self._template_tokens: dict[str, Any] | None = None
        self.template_tokens()

    # --- tokens ---------------------------------------------------------------------------------
    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        # add_bos here is llama.cpp's add_special: it adds BOS only when the GGUF's metadata asks for it.
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=add_special, special=True))

    def detokenize(self, ids: list[int]) -> str:
        return self.llm.detokenize(ids, special=True).decode("utf-8", errors="ignore")

    def text_decoder(self) -> TextDecoder:
        return _PieceDecoder(self)

    def chat_template(self) -> str | None:
        return self.metadata.get("tokenizer.chat_template")

    def template_tokens(self) -> dict[str, Any]:
        """BOS/EOS texts and whether the tokenizer adds BOS, read once while the model is loaded (a closed runtime
        still answers its prompt style)."""
        if self._template_tokens is None:
            def text(key: str) -> str | None:
                value = self.metadata.get(key)
                return self.detokenize([int(value)]) if value is not None and str(value).isdigit() else None

            adds_bos = str(self.metadata.get("tokenizer.ggml.add_bos_token", "")).lower() == "true"
            self._template_tokens = {"bos_token": text("tokenizer.ggml.bos_token_id"),
                                     "eos_token": text("tokenizer.ggml.eos_token_id"), "adds_bos": adds_bos}
        return self._template_tokens

    # --- model ----------------------------------------------------------------------------------
    def decode(self, token: int) -> np.ndarray:
        return self._eval([token])

    def _check_room(self, n: int) -> None:
        if n > self.n_ctx:
            raise EdgemedError(
                f"prompt of {n} tokens exceeds the llama.cpp context of {self.n_ctx}; pass a larger n_ctx"
            )

    def _eval(self, ids: list[int]) -> np.ndarray:
        """Feed `ids` after what is in the KV cache; the float32 logits of the last one (a view until the next eval)."""
        self._check_room(self.llm.n_tokens + len(ids))
        self.llm.eval(ids)
        ptr = self.lib.llama_get_logits_ith(self.llm.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    def _clear_cache(self) -> None:
        self.llm.reset()
        self.llm._ctx.kv_cache_seq_rm(-1, 0, -1)

    @property
    def vocab_size(self) -> int:
        return self.n_vocab

    @property
    def context_length(self) -> int | None:
        return self.n_ctx

    def sequence_logprobs(self, ids: list[int]) -> np.ndarray:
        """Every position's log-softmax of a fresh sequence, with llama.cpp computing logits for all of them."""
        if not ids:
            raise EdgemedError("empty sequence: llama.cpp needs at least one token")
        self._check_room(len(ids))
        self._clear_cache()
        rows = np.empty((len(ids), self.n_vocab), dtype=np.float32)
        batch = self.llm._batch  # llama-cpp-python's own batch of n_batch slots
        step = self.llm.n_batch
        for start in range(0, len(ids), step):
            chunk = ids[start : start + step]
            batch.set_batch(batch=chunk, n_past=start, logits_all=True)
            self.llm._ctx.decode(batch)
            for i in range(len(chunk)):
                ptr = self.lib.llama_get_logits_ith(self.llm.ctx, i)
                rows[start + i] = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))
        self._clear_cache()  # what is cached no longer matches llm.input_ids
        return log_softmax_rows(rows, out=rows)

    def prefill(self, ids: list[int]) -> np.ndarray:
        self.llm.reset()  # the next eval drops every cached position from 0 on
        if not ids:
            raise EdgemedError("empty prompt: llama.cpp needs at least one token")
        return self._eval(ids)

    def next_token_logprobs(self, prompts: list[str]) -> np.ndarray:
        rows = [np.array(self.prefill(self.tokenize(prompt)), dtype=np.float32) for prompt in prompts]
        return log_softmax_rows(np.stack(rows)).astype(np.float64) if rows else np.zeros((0, self.n_vocab))

    def is_end(self, token: int) -> bool:
        return bool(self.lib.llama_vocab_is_eog(self.vocab, token))

    def info(self) -> dict[str, Any]:
        system = self.lib.llama_print_system_info().decode(errors="ignore").strip()
        path = "gpu offload" if self.gpu_layers else "cpu"
        path += " + weight repacking (extra buffer types)" if self.repack else " without weight repacking"
        if self.amx and not self.repack:
            path += " (AMX guard: quantized file)"
        return {
            "runtime": self.name,
            "file": str(self.file),
            "device": "cuda" if self.gpu_layers else "cpu",
            "n_gpu_layers": self.gpu_layers,
            "threads": self.llm.context_params.n_threads,
            "threads_batch": self.llm.context_params.n_threads_batch,
            "n_ctx": self.n_ctx,
            "n_batch": self.llm.n_batch,
            "n_ubatch": self.llm.context_params.n_ubatch,
            "flash_attn": f"{self.flash_attn} -> "
                          + {0: "off", 1: "on"}.get(self.llm.context_params.flash_attn_type, "auto"),
            "dtype": self.metadata.get("general.file_type"),
            "repack": self.repack,
            "cpu_amx": self.amx,
            "kernel_path": path,
            "omp_wait_policy": _OMP_POLICY,
            "system_info": system,
            "file_type": self.metadata.get("general.file_type"),
            "add_bos": self.metadata.get("tokenizer.ggml.add_bos_token"),
            "tokenizer_model": self.metadata.get("tokenizer.ggml.model"),
            "tokenizer_pre": self.metadata.get("tokenizer.ggml.pre"),
        }

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            llm.close()
            self.llm = None


class _PieceDecoder(TextDecoder):
    """llama-cpp-python's detokenize of a list is its tokens' pieces (bytes) concatenated, decoded with errors
    ignored, except that a leading space is dropped after a first BOS and that detokenizing BOS alone drops its own:
    so the pieces are kept and only the bytes decoded again at each token, and a list holding BOS is detokenized
    whole."""

    def __init__(self, runtime: LlamaCppRuntime):
        super().__init__(runtime)
        self.raw = bytearray()
        self.bos = runtime.llm.token_bos()
        self.whole = False

    def add(self, token: int) -> str:
        self.whole = self.whole or token == self.bos
        if self.whole:
            return super().add(token)
        self.ids.append(token)
        self.raw += self.runtime.llm.detokenize([token], special=True)
        self.text = self.raw.decode("utf-8", errors="ignore")
        return self.text
