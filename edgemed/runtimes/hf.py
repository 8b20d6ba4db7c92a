"""transformers runtime: the merged model (fp32/bf16/fp16) and bitsandbytes 8-bit/4-bit folders."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np

from edgemed.fsutil import read_json
from edgemed.registry import detect_format, format_modules
from edgemed.runtimes.base import Runtime, omp_wait_policy


class TransformersRuntime(Runtime):
    name = "transformers"

    def __init__(self, path: Path, threads: int | None = None, device: str = "auto", **options: Any):
        super().__init__(path, threads, device, **options)
        import torch

        from edgemed.models import load_model, load_tokenizer, pick_device

        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.choice = pick_device(device, options.get("dtype", "auto"))
        self.quantization = _quantization(self.path)
        if self.quantization:  # bitsandbytes: the format's own modules, its extra named when one is missing
            spec = detect_format(self.path)
            if spec is not None:
                format_modules(spec.name)
        trust = bool(options.get("trust_remote_code", False))
        self.tokenizer = load_tokenizer(str(path), trust_remote_code=trust)
        self.tokenizer.padding_side = "left"
        extra = {"device_map": {"": self.choice.device}} if self.quantization else {}
        self.model = load_model(str(path), self.choice, trust_remote_code=trust, **extra)

    def chat_template(self) -> str | None:
        return getattr(self.tokenizer, "chat_template", None)

    def template_tokens(self) -> dict[str, Any]:
        from edgemed.prompts import tokenizer_special_tokens

        return tokenizer_special_tokens(self.tokenizer)

    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=add_special)["input_ids"])

    def _device_of_inputs(self):
        return self.model.get_input_embeddings().weight.device

    def next_token_logprobs(self, prompts: list[str]) -> np.ndarray:
        torch = self.torch
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True)
        dev = self._device_of_inputs()
        ids, mask = enc["input_ids"].to(dev), enc["attention_mask"].to(dev)
        position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            logits = self.model(input_ids=ids, attention_mask=mask, position_ids=position_ids,
                                **self._keep_last).logits[:, -1, :]
        return torch.log_softmax(logits.float(), dim=-1).cpu().numpy()

    @property
    def vocab_size(self) -> int:
        return int(self.model.get_output_embeddings().weight.shape[0])

    @property
    def context_length(self) -> int | None:
        n = getattr(self.model.config, "max_position_embeddings", None)
        return int(n) if isinstance(n, int) and n > 0 else None

    def sequence_logprobs(self, ids: list[int]) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            logits = self.model(input_ids=torch.tensor([ids], device=self._device_of_inputs())).logits[0]
            return torch.log_softmax(logits.float(), dim=-1).cpu().numpy()

    def _logits_after(self, ids: list[int]) -> np.ndarray:
        step = self.torch.tensor([ids], device=self._device_of_inputs())
        with self.torch.inference_mode():  # only the last position's logits: no vocabulary projection of the rest
            out = self.model(input_ids=step, past_key_values=self._cache, use_cache=True, **self._keep_last)
        return out.logits[0, -1].float().cpu().numpy()

    @property
    def _keep_last(self) -> dict[str, int]:
        if not hasattr(self, "_keep"):
            self._keep = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(
                self.model.forward).parameters else {}
        return self._keep

    def prefill(self, ids: list[int]) -> np.ndarray:
        from transformers import DynamicCache

        self._cache = DynamicCache()
        return self._logits_after(ids)

    def decode(self, token: int) -> np.ndarray:
        return self._logits_after([token])

    def detokenize(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def is_end(self, token: int) -> bool:
        return token == self.tokenizer.eos_token_id

    def info(self) -> dict[str, Any]:
        return {
            "runtime": self.name,
            "device": self.choice.device,
            "dtype": self.choice.dtype,
            "threads": self.torch.get_num_threads(),
            "interop_threads": self.torch.get_num_interop_threads(),
            "omp_wait_policy": omp_wait_policy(),
            "torch": self.torch.__version__,
            "quantization": self.quantization,
        }

    def close(self) -> None:
        self.model = None


def _quantization(path: Path) -> dict[str, Any] | None:
    config = Path(path) / "config.json"
    if not config.exists():
        return None
    data = read_json(config, "model config", "re-export the artifact")
    return data.get("quantization_config") if isinstance(data, dict) else None
