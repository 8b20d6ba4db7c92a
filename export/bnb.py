"""``bnb-int8`` / ``bnb-nf4``: bitsandbytes quantization at load time, saved with ``save_pretrained``.

Saved BEFORE any forward pass: bitsandbytes >= 0.49 repacks 4-bit weights for the CPU kernels on the
first forward (on CPUs with AVX512-BF16), and a save after that writes weights that no longer load right.
Verification then reloads the artifact from disk, so what is checked is what was written.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any

from edgemed.export.base import Exporter, copy_tokenizer


class _BnbExporter(Exporter):
    requires = ("transformers", "torch", "bitsandbytes", "accelerate")

    @abc.abstractmethod
    def quantization_config(self, settings: dict[str, Any]):
        """The BitsAndBytesConfig for these settings."""

    def export(self, source: Path, dest: Path, settings: dict[str, Any]) -> dict[str, Any]:
        from edgemed.models import load_model, pick_device

        choice = pick_device("auto", "float32")
        quant = self.quantization_config(settings)
        model = load_model(str(source), choice, quantization_config=quant, device_map={"": choice.device})
        model.save_pretrained(dest, safe_serialization=True)  # before any forward (see the module doc)
        copy_tokenizer(source, dest)
        footprint = int(model.get_memory_footprint())
        del model
        return {"device": choice.device, "quantization_config": quant.to_dict(), "memory_footprint_bytes": footprint}


class BnbInt8Exporter(_BnbExporter):
    """LLM.int8(): int8 weights with fp outlier columns above ``llm_int8_threshold``."""

    defaults = {"llm_int8_threshold": 6.0, "skip_modules": ["lm_head"]}

    def quantization_config(self, settings: dict[str, Any]):
        from transformers import BitsAndBytesConfig

        return BitsAndBytesConfig(
            load_in_8bit=True,
            llm_int8_threshold=float(settings["llm_int8_threshold"]),
            llm_int8_skip_modules=list(settings["skip_modules"]) or None,
        )


class BnbNf4Exporter(_BnbExporter):
    """4-bit NormalFloat weights; double quantization of the scales; compute in ``compute_dtype``."""

    defaults = {"double_quant": True, "compute_dtype": "float32", "skip_modules": ["lm_head"]}

    def quantization_config(self, settings: dict[str, Any]):
        import torch
        from transformers import BitsAndBytesConfig

        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=bool(settings["double_quant"]),
            bnb_4bit_compute_dtype=getattr(torch, settings["compute_dtype"]),
            llm_int8_skip_modules=list(settings["skip_modules"]) or None,
        )
