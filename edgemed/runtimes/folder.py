"""The base of the runtimes that run an exported model folder without transformers (onnxruntime, OpenVINO): the
folder's model file, ``config.json`` and ``generation_config.json``, its tokenizer
(:class:`~edgemed.runtimes.folder_tokenizer.FolderTokenizer`), and what follows from them alike for every engine:
tokens, end tokens, the chat template, the vocabulary width, the context length, and the left-padded batch of
prompts the letter scores are read from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgemed.errors import EdgemedError
from edgemed.runtimes.base import Runtime
from edgemed.runtimes.folder_tokenizer import FolderTokenizer, read_json


class FolderRuntime(Runtime):
    """A :class:`Runtime` over a model folder; a subclass runs the graph (``prefill``/``decode``, logits)."""

    folder: Path
    config: dict[str, Any]
    generation_config: dict[str, Any]
    tok: FolderTokenizer
    _vocab: int
    _mask_ones: np.ndarray

    def _model_file(self, name: str, fmt: str) -> Path:
        """The model file: the artifact path itself when it is one (its suffix), else `name` in the artifact's
        folder (set as ``self.folder``); missing: exit 2 naming the export that writes it."""
        self.folder = self.path if self.path.is_dir() else self.path.parent
        model_file = self.path if self.path.suffix == Path(name).suffix and self.path.is_file() else self.folder / name
        if not model_file.is_file():
            raise EdgemedError(f"{self.folder} has no {name}; export it with 'edgemed export --formats {fmt}'")
        return model_file

    def _read_configs(self) -> None:
        self.config = read_json(self.folder / "config.json")
        self.generation_config = read_json(self.folder / "generation_config.json")

    def _read_tokenizer(self) -> None:
        self.tok = FolderTokenizer(self.folder, self.config, self.generation_config, runtime=self.name)
        self.eos_ids, self.pad_id = self.tok.eos_ids, self.tok.pad_id

    # --- tokens ---------------------------------------------------------------------------------------
    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        return self.tok.encode(text, add_special)

    def detokenize(self, ids: list[int]) -> str:
        return self.tok.decode(ids)

    def is_end(self, token: int) -> bool:
        return token in self.eos_ids

    def chat_template(self) -> str | None:
        return self.tok.chat_template()

    # --- shapes ---------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self._vocab

    @property
    def context_length(self) -> int | None:
        n = self.config.get("max_position_embeddings") if isinstance(self.config, dict) else None
        return int(n) if isinstance(n, int) and n > 0 else None

    def _ones(self, n: int) -> np.ndarray:
        """A (1, n) attention mask of ones: a slice of one array grown by doubling, not a new array per token."""
        if self._mask_ones.shape[1] < n:
            self._mask_ones = np.ones((1, max(n, 2 * self._mask_ones.shape[1], 256)), dtype=self._mask_ones.dtype)
        return self._mask_ones[:, :n]

    def _left_padded(self, prompts: list[str], ids_type: type, mask_type: type, engine: str
                     ) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and attention mask of `prompts` as one batch, left-padded with the pad id, so that the last
        column is every prompt's last token."""
        encoded = self.tok.encode_batch(prompts)
        width = max(len(e) for e in encoded)
        if width == 0:
            raise EdgemedError(f"empty prompt: {engine} needs at least one token")
        ids = np.full((len(encoded), width), self.pad_id, dtype=ids_type)
        mask = np.zeros((len(encoded), width), dtype=mask_type)
        for row, e in enumerate(encoded):
            if e:
                ids[row, width - len(e):] = e
                mask[row, width - len(e):] = 1
        return ids, mask
