"""The one runtime interface every artifact is evaluated and benchmarked through."""

from __future__ import annotations

import abc
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgemed.errors import EdgemedError
from edgemed.prompts import letter_texts
from edgemed.registry import require_runtime, rows_independent, runtime_class
from edgemed.runtimes.logits import pick_token


@dataclass
class Generation:
    """One generated answer with its timing (seconds)."""

    text: str
    prompt_tokens: int
    new_tokens: int
    ttft_s: float  # prompt in -> first new token out (prefill + one sample)
    total_s: float
    token_times: list[float] = field(default_factory=list)  # time of each new token since start

    @property
    def decode_s(self) -> float:
        return max(self.total_s - self.ttft_s, 0.0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class TextDecoder:
    """The text of a growing list of generated tokens, equal to ``runtime.detokenize(ids)`` after every token. This
    one detokenizes the whole list again at each token (right for any tokenizer); a runtime whose text is the
    concatenation of per-token bytes keeps those instead (no work growing with the length)."""

    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self.ids: list[int] = []
        self.text = ""

    def add(self, token: int) -> str:
        self.ids.append(token)
        self.text = self.runtime.detokenize(self.ids)
        return self.text


class Runtime(abc.ABC):
    """Load an artifact; letter log-probabilities for prompts; generation with timing."""

    name: str = "runtime"

    def __init__(self, path: Path, threads: int | None = None, device: str = "auto", **options: Any):
        self.path = Path(path)
        self.threads = threads
        self.device = device
        self.options = options
        self._letter_ids: list[int] | None = None

    # --- what each runtime implements ---------------------------------------------------------
    @abc.abstractmethod
    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        """Token ids as this runtime feeds them to the model (with BOS when the model adds one)."""

    @abc.abstractmethod
    def next_token_logprobs(self, prompts: list[str]) -> np.ndarray:
        """(len(prompts), vocab) log-softmax of the next token after each prompt."""

    @abc.abstractmethod
    def sequence_logprobs(self, ids: list[int]) -> np.ndarray:
        """(len(ids), vocab) float32 log-softmax at every position of one fresh sequence: row i is the
        distribution of the token after ids[:i+1] (what fidelity/KL divergence compares)."""

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int:
        """Rows of the output layer (the width of every logits vector)."""

    @property
    def context_length(self) -> int | None:
        """Most tokens one sequence may hold here (prompt and generated); None when the runtime sets no limit."""
        return None

    @abc.abstractmethod
    def prefill(self, ids: list[int]) -> np.ndarray:
        """Start a fresh sequence with `ids`; return the float32 logits of the next token (no float64 copy)."""

    @abc.abstractmethod
    def decode(self, token: int) -> np.ndarray:
        """Append one token to the current sequence; return the float32 logits of the next token."""

    @abc.abstractmethod
    def detokenize(self, ids: list[int]) -> str:
        """Text of generated ids, special tokens kept (stop strings are matched on it)."""

    def text_decoder(self) -> TextDecoder:
        """A decoder fed the generated tokens one at a time, whose text is always ``detokenize`` of all of them."""
        return TextDecoder(self)

    @abc.abstractmethod
    def is_end(self, token: int) -> bool:
        """Whether `token` ends generation (end of turn / end of sequence)."""

    @abc.abstractmethod
    def chat_template(self) -> str | None:
        """The model's chat template text, if it has one."""

    def template_tokens(self) -> dict[str, Any]:
        """What the chat template is rendered with: bos_token/eos_token texts, whether tokenize() adds BOS."""
        with_special, without = self.tokenize("a", True), self.tokenize("a", False)
        adds_bos = len(with_special) > len(without)
        return {"bos_token": self.detokenize(with_special[:1]) if adds_bos else None, "eos_token": None,
                "adds_bos": adds_bos}

    def info(self) -> dict[str, Any]:
        """The effective settings this runtime runs with, as the engine reports them: at least ``runtime``,
        ``device``, ``threads`` (and ``threads_batch`` where the engine has a separate prefill pool), ``dtype``
        where it applies, and the ``omp_wait_policy`` in force (``"unset (engine default)"`` when nobody set it)."""
        return {"runtime": self.name, "threads": self.threads, "device": self.device,
                "omp_wait_policy": omp_wait_policy()}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free the model."""

    # --- shared -------------------------------------------------------------------------------
    def generate(
        self,
        prompt: str,
        max_new_tokens: int = 16,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int = 0,
        stop: list[str] | None = None,
    ) -> Generation:
        """Generate after `prompt` (greedy when temperature is 0), timing each token. One loop for every runtime."""
        ids = self.tokenize(prompt)
        new: list[int] = []
        times: list[float] = []
        text = ""
        decoder = self.text_decoder() if stop else None  # text at every step only where a stop string can end it
        start = time.perf_counter()
        for token, _ in self.token_stream(ids, max_new_tokens, temperature, top_p, seed):
            times.append(time.perf_counter() - start)
            if self.is_end(token):
                break
            new.append(token)
            if decoder is not None:
                text, stopped = cut_at_stop(decoder.add(token), stop)
                if stopped:
                    break
        total = time.perf_counter() - start
        if not stop:
            text = self.detokenize(new)
        return Generation(
            text=text,
            prompt_tokens=len(ids),
            new_tokens=len(times),
            ttft_s=times[0] if times else total,
            total_s=total,
            token_times=times,
        )

    def token_stream(self, ids: list[int], max_new_tokens: int, temperature: float = 0.0, top_p: float = 1.0,
                     seed: int = 0) -> Iterator[tuple[int, np.ndarray]]:
        """The one decoding loop (``generate`` and ``edgemed serve`` both run it): prefill `ids`, then yield each
        sampled token with the float32 logits it was sampled from (valid until the next step). An end token is
        yielded too and ends the stream; a consumer may stop early (a stop string, a client gone) by not asking
        for more, and no further token is computed."""
        rng = np.random.default_rng(seed)
        logits = self.prefill(ids)
        for step in range(max_new_tokens):
            token = pick_token(logits, temperature, top_p, rng)
            yield token, logits
            if self.is_end(token) or step == max_new_tokens - 1:
                return
            logits = self.decode(token)

    @property
    def manifest(self) -> dict[str, Any]:
        """The artifact's edgemed.json ({} when there is none or it is unreadable)."""
        from edgemed.manifest import try_manifest

        return try_manifest(self.path if self.path.is_dir() else self.path.parent) or {}

    @property
    def rows_independent(self) -> bool:
        """Whether a position's logits here depend only on the tokens up to it (the registry's per-format fact): only
        then may prompts be batched with padding or letters be read from a longer sequence. A folder without a
        manifest (a plain model, a .gguf file) is its runtime's unquantized or weight-only format: independent."""
        fmt = (self.manifest or {}).get("format")
        return rows_independent(fmt) if fmt else True

    @property
    def prompt_style(self) -> str:
        """The style recorded in the artifact's lineage, else the one the chat template implies."""
        from edgemed.lineage import prompt_style_for

        return prompt_style_for(self.path, self.chat_template)[0]

    @property
    def letter_ids(self) -> list[int]:
        """Token id of each of ' A'..' D'; each must be a single token in this vocabulary."""
        if self._letter_ids is None:
            ids = []
            for text in letter_texts():
                toks = self.tokenize(text, add_special=False)
                if len(toks) != 1:
                    raise EdgemedError(
                        f"{self.name}: '{text}' is {len(toks)} tokens in this vocabulary; letter scoring "
                        "needs one token per answer letter"
                    )
                ids.append(toks[0])
            self._letter_ids = ids
        return self._letter_ids

    def letter_logprobs(self, prompts: list[str], batch_size: int = 8) -> np.ndarray:
        """(n, 4) log-probabilities of ' A'..' D' after each prompt (log-softmax over the vocabulary)."""
        rows = []
        for start in range(0, len(prompts), batch_size):
            lp = self.next_token_logprobs(prompts[start : start + batch_size])
            rows.append(lp[:, self.letter_ids])
        return np.concatenate(rows, axis=0) if rows else np.zeros((0, 4))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_runtime(path: Path, threads: int | None = None, device: str = "auto", requested_device: str | None = None,
                 **options: Any) -> Runtime:
    """Load an artifact with the runtime its manifest (or its files) names. `requested_device` is what the user
    asked for before resolution (auto falls back to the CPU for an engine that sees no GPU; cuda is refused)."""
    from edgemed.manifest import MANIFEST, check_files, detect_runtime, read_manifest

    path = Path(path)
    if not path.exists():
        raise EdgemedError(f"artifact {path} does not exist; check the path or export it first")
    if path.is_dir() and (path / MANIFEST).exists():
        check_files(path, read_manifest(path))
    fmt, runtime = detect_runtime(path)
    require_runtime(fmt, runtime, str(path))  # a board install without this format's extra: exit 2 naming it
    from edgemed.resources import device_for_runtime

    device = device_for_runtime(runtime, device, requested_device)
    return runtime_class(runtime)(path, threads=threads, device=device, **options)


def omp_wait_policy() -> str:
    """OMP_WAIT_POLICY as this process's OpenMP runtimes read it (at their load): never set by edgemed itself."""
    import os

    value = os.environ.get("OMP_WAIT_POLICY")
    return value if value else "unset (engine default)"


def cut_at_stop(text: str, stop: list[str] | None) -> tuple[str, bool]:
    """Text up to the first stop string, and whether one was found."""
    for s in stop or []:
        i = text.find(s)
        if i >= 0:
            return text[:i], True
    return text, False
