"""onnxruntime runtime for ONNX artifacts (Optimum's ORTModelForCausalLM with a KV cache).

Letter log-probs run batched with left padding, the attention mask and position ids (when the graph takes
them), like the transformers runtime. Generation is a manual loop over ORTModel forward calls that feeds
the returned ``past_key_values`` back, so every token is timed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgemed.errors import EdgemedError, require
from edgemed.runtimes.base import Runtime


class OnnxRuntime(Runtime):
    name = "onnxruntime"

    def __init__(self, path: Path, threads: int | None = None, device: str = "auto", **options: Any):
        super().__init__(path, threads, device, **options)
        ort = require("onnxruntime", "onnx", "ONNX artifacts")
        require("optimum.onnxruntime", "onnx", "ONNX artifacts")
        import torch
        from optimum.onnxruntime import ORTModelForCausalLM

        from edgemed.models import load_tokenizer

        self.torch = torch
        self.ort = ort
        if not (self.path / "model.onnx").is_file():
            raise EdgemedError(f"{self.path} has no model.onnx; export it with 'edgemed export --formats onnx'")
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = int(threads)
            so.inter_op_num_threads = 1
        providers = ort.get_available_providers()
        self.provider = (
            "CUDAExecutionProvider"
            if device.startswith("cuda") or (device == "auto" and "CUDAExecutionProvider" in providers)
            else "CPUExecutionProvider"
        )
        try:
            self.model = ORTModelForCausalLM.from_pretrained(
                str(self.path),
                file_name="model.onnx",
                provider=self.provider,
                session_options=so,
                use_cache=True,
                use_io_binding=False,
                local_files_only=True,
            )
        except Exception as exc:  # onnxruntime raises its own exception types for corrupt graphs
            raise EdgemedError(
                f"onnxruntime could not load {self.path / 'model.onnx'} ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}); the file is truncated or corrupt, re-export it"
            ) from None
        self.tokenizer = load_tokenizer(str(self.path))
        self.tokenizer.padding_side = "left"
        self.takes_positions = "position_ids" in self.model.input_names

    def chat_template(self) -> str | None:
        return getattr(self.tokenizer, "chat_template", None)

    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=add_special)["input_ids"])

    def _forward(self, ids, mask, past=None):
        torch = self.torch
        kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": mask, "use_cache": True}
        if self.takes_positions:
            pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
            kwargs["position_ids"] = pos[:, -ids.shape[1]:]
        if past is not None:
            kwargs["past_key_values"] = past
        with torch.inference_mode():
            return self.model(**kwargs)

    def next_token_logprobs(self, prompts: list[str]) -> np.ndarray:
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True)
        out = self._forward(enc["input_ids"], enc["attention_mask"])
        logits = out.logits[:, -1, :].double()
        return self.torch.log_softmax(logits, dim=-1).numpy()

    def _step(self, ids: list[int]) -> np.ndarray:
        torch = self.torch
        self._mask = torch.cat([self._mask, torch.ones((1, len(ids)), dtype=self._mask.dtype)], dim=1)
        out = self._forward(torch.tensor([ids]), self._mask, self._past)
        self._past = out.past_key_values
        return out.logits[0, -1].float().numpy()

    def _prefill(self, ids: list[int]) -> np.ndarray:
        self._past, self._mask = None, self.torch.ones((1, 0), dtype=self.torch.long)
        return self._step(ids)

    def _decode(self, token: int) -> np.ndarray:
        return self._step([token])

    def detokenize(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def is_end(self, token: int) -> bool:
        return token == self.tokenizer.eos_token_id

    def info(self) -> dict[str, Any]:
        session = self.model.model  # the InferenceSession
        opts = session.get_session_options()
        return {
            "runtime": self.name,
            "provider": session.get_providers()[0],
            "threads": self.threads,
            "intra_op_num_threads": opts.intra_op_num_threads,
            "takes_position_ids": self.takes_positions,
            "onnxruntime": self.ort.__version__,
        }

    def close(self) -> None:
        self.model = None

