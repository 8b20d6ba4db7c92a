"""onnxruntime runtime for ONNX artifacts (Optimum's ORTModelForCausalLM with a KV cache).

Letter log-probs run batched with left padding, the attention mask and position ids (when the graph takes
them), like the transformers runtime. Generation is a manual loop over ORTModel forward calls that feeds
the returned ``past_key_values`` back, so every token is timed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgemed.errors import EdgemedError, require
from edgemed.runtimes.base import Generation, Runtime, cut_at_stop, pick_token


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
        self._manifest = _manifest_of(self.path)

    def chat_template(self) -> str | None:
        return getattr(self.tokenizer, "chat_template", None)

    @property
    def prompt_style(self) -> str:
        return self._manifest.get("prompt_style") or super().prompt_style

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
        rng = np.random.default_rng(seed)
        ids = self.tokenize(prompt)
        eos = self.tokenizer.eos_token_id
        new: list[int] = []
        times: list[float] = []
        text = ""
        start = time.perf_counter()
        step_ids = torch.tensor([ids])
        mask = torch.ones_like(step_ids)
        past = None
        for step in range(max_new_tokens):
            out = self._forward(step_ids, mask, past)
            past = out.past_key_values
            token = pick_token(out.logits[0, -1].float().numpy(), temperature, top_p, rng)
            times.append(time.perf_counter() - start)
            if token == eos:
                break
            new.append(token)
            text, stopped = cut_at_stop(self.tokenizer.decode(new, skip_special_tokens=False), stop)
            if stopped or step == max_new_tokens - 1:
                break
            step_ids = torch.tensor([[token]])
            mask = torch.cat([mask, torch.ones((1, 1), dtype=mask.dtype)], dim=1)
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


def _manifest_of(path: Path) -> dict[str, Any]:
    try:
        return json.loads((Path(path) / "edgemed.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}
