"""transformers runtime: the merged model (fp32/bf16/fp16) and bitsandbytes 8-bit/4-bit folders."""

from __future__ import annotations

import inspect
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgemed.errors import EdgemedError
from edgemed.runtimes.base import Generation, Runtime, cut_at_stop, pick_token


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
        if self.quantization:
            from edgemed.errors import require

            require("bitsandbytes", "bnb", "bitsandbytes artifacts")
        trust = bool(options.get("trust_remote_code", False))
        self.tokenizer = load_tokenizer(str(path), trust_remote_code=trust)
        self.tokenizer.padding_side = "left"
        extra = {"device_map": {"": self.choice.device}} if self.quantization else {}
        self.model = load_model(str(path), self.choice, trust_remote_code=trust, **extra)

    def chat_template(self) -> str | None:
        return getattr(self.tokenizer, "chat_template", None)

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
        # only the last position's logits are needed: skip the vocabulary projection of every other position
        keep = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(self.model.forward).parameters else {}
        with torch.inference_mode():
            logits = self.model(input_ids=ids, attention_mask=mask, position_ids=position_ids, **keep).logits[:, -1, :]
        return torch.log_softmax(logits.float(), dim=-1).cpu().numpy()

    def generate(
        self,
        prompt: str,
        max_new_tokens: int = 16,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int = 0,
        stop: list[str] | None = None,
    ) -> Generation:
        torch = self.torch
        from transformers import DynamicCache

        rng = np.random.default_rng(seed)
        ids = self.tokenize(prompt)
        dev = self._device_of_inputs()
        eos = self.tokenizer.eos_token_id
        new: list[int] = []
        times: list[float] = []
        cache = DynamicCache()
        start = time.perf_counter()
        step = torch.tensor([ids], device=dev)
        text = ""
        with torch.inference_mode():
            for _ in range(max_new_tokens):
                out = self.model(input_ids=step, past_key_values=cache, use_cache=True)
                logits = out.logits[0, -1].float().cpu().numpy()
                token = pick_token(logits, temperature, top_p, rng)
                times.append(time.perf_counter() - start)
                if token == eos:
                    break
                new.append(token)
                text, stopped = cut_at_stop(self.tokenizer.decode(new, skip_special_tokens=False), stop)
                if stopped:
                    break
                step = torch.tensor([[token]], device=dev)
        total = time.perf_counter() - start
        return Generation(
            text=text,
            prompt_tokens=len(ids),
            new_tokens=len(times),
            ttft_s=times[0] if times else total,
            total_s=total,
            token_times=times,
        )

    def info(self) -> dict[str, Any]:
        return {
            "runtime": self.name,
            "device": self.choice.device,
            "dtype": self.choice.dtype,
            "threads": self.torch.get_num_threads(),
            "quantization": self.quantization,
        }

    def close(self) -> None:
        self.model = None


def _quantization(path: Path) -> dict[str, Any] | None:
    config = Path(path) / "config.json"
    if not config.exists():
        return None
    try:
        return json.loads(config.read_text()).get("quantization_config")
    except json.JSONDecodeError:
        raise EdgemedError(f"{config} is corrupt (not JSON); re-export the artifact") from None
