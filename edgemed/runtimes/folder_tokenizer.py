"""A model folder's tokenizer without transformers: ``tokenizer.json`` through the Rust ``tokenizers`` package,
plus what transformers reads beside it (special tokens, end-of-sequence and pad ids, the chat template, the
decode clean-up), so that ids and text match the transformers tokenizer. Used by the onnxruntime runtime, whose
import chain must stay free of torch and transformers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgemed import fsutil
from edgemed.errors import EdgemedError
from edgemed.registry import runtime_module

# transformers' clean_up_tokenization (applied on decode when tokenizer_config.json asks for it)
_CLEANUPS = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
             (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path` ({} when the file is absent); a clear error when it is not JSON."""
    if not path.is_file():
        return {}
    data = fsutil.read_json(path, "tokenizer file", "re-export the artifact")
    return data if isinstance(data, dict) else {}


def _token_text(value: Any) -> str | None:
    """A special token as tokenizer_config.json stores it: a string or an AddedToken dict."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _ids(value: Any) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, int) and not isinstance(v, bool)]
    return []


class FolderTokenizer:
    """tokenizer.json + tokenizer_config.json (+ special_tokens_map.json, chat_template.jinja) of one folder."""

    def __init__(self, folder: Path, config: dict[str, Any], generation_config: dict[str, Any],
                 runtime: str = "onnxruntime"):
        tokenizers = runtime_module(runtime, "tokenizers")  # missing: exit 2 naming `runtime`'s extra
        self.folder = Path(folder)
        self.config, self.generation_config = config, generation_config
        self.tokenizer_config = read_json(self.folder / "tokenizer_config.json")
        tok_file = self.folder / "tokenizer.json"
        if not tok_file.is_file():
            raise EdgemedError(f"{self.folder} has no tokenizer.json; re-export the artifact (the runtime reads it)")
        try:
            self.tokenizer = tokenizers.Tokenizer.from_file(str(tok_file))
        except Exception as exc:  # the Rust side raises a bare Exception for unreadable files
            raise EdgemedError(f"{tok_file} could not be read ({exc}); re-export the artifact") from None
        self.tokenizer.no_padding()  # transformers ignores the padding/truncation a tokenizer.json may carry
        self.tokenizer.no_truncation()
        self.clean_up_spaces = bool(self.tokenizer_config.get("clean_up_tokenization_spaces", False))
        self.eos_ids = self._eos_ids()
        self.pad_id = self._pad_id()

    def _token_id(self, text: str | None) -> int | None:
        return self.tokenizer.token_to_id(text) if text else None

    def _special(self, key: str) -> str | None:
        special_map = read_json(self.folder / "special_tokens_map.json")
        return _token_text(self.tokenizer_config.get(key)) or _token_text(special_map.get(key))

    def _eos_ids(self) -> frozenset[int]:
        ids = _ids(self._token_id(self._special("eos_token")))
        ids += _ids(self.generation_config.get("eos_token_id")) + _ids(self.config.get("eos_token_id"))
        return frozenset(ids)

    def _pad_id(self) -> int:
        for candidate in (self._token_id(self._special("pad_token")), self.generation_config.get("pad_token_id"),
                          self.config.get("pad_token_id")):
            if isinstance(candidate, int) and not isinstance(candidate, bool):
                return candidate
        eos = self._token_id(self._special("eos_token"))
        return eos if eos is not None else (min(self.eos_ids) if self.eos_ids else 0)

    def encode(self, text: str, add_special: bool = True) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=add_special).ids)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=True)]

    def decode(self, ids: list[int]) -> str:
        text = self.tokenizer.decode(list(ids), skip_special_tokens=False)
        if self.clean_up_spaces:
            for old, new in _CLEANUPS:
                text = text.replace(old, new)
        return text

    def chat_template(self) -> str | None:
        jinja = self.folder / "chat_template.jinja"
        if jinja.is_file():
            return jinja.read_text(encoding="utf-8")
        template = self.tokenizer_config.get("chat_template")
        if isinstance(template, list):  # named templates: [{"name": "default", "template": ...}, ...]
            named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
            template = named.get("default")
        return template if isinstance(template, str) else None
