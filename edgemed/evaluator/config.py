"""``EvalConfig``: every option of ``edgemed eval``, declared once and checked before any scoring.

The CLI's ``--help`` is generated from its fields and the ``Args:`` section below; ``validate()`` refuses a bad
value (exit 2, naming the flag) before a model is loaded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from edgemed.errors import EdgemedError
from edgemed.fsutil import check_output_dir


@dataclass
class EvalConfig:
    """Evaluate an artifact on MedMCQA: accuracy with a 95% Wilson interval, calibration, failures.

    Args:
        data: questions to score: 'sample', a .jsonl/.json/.parquet/.csv file or folder, or a hub id (default: the
            evaluation side recorded when the artifact was trained; the whole sample for a model edgemed never trained).
        split: split to read from a folder or hub source (default: the recorded one, else validation).
        include_trained: score questions the artifact was trained on (refused by default: they inflate accuracy).
        limit: score only the first N questions.
        scoring: logprob (letter log-probs after 'Answer:', deterministic), generate (greedy text, strict letter
            parse) or legacy (the notebook's sampled text + substring judge, for comparison only).
        batch_size: prompts per forward pass in logprob scoring.
        threads: CPU threads of the runtime (default: physical cores, as in edgemed bench).
        device: auto, cpu, cuda, cuda:N or mps (auto: a CUDA GPU if an installed engine sees one, for every runtime).
        dtype: transformers artifacts only: weights dtype (auto = float32 on CPU; bfloat16 is much faster on CPUs
            with AVX512-BF16/AMX, with slightly different log-probs).
        prompt_style: override the prompt style (default: recorded at training/export, else the chat template).
        max_new_tokens: generate/legacy: tokens to generate (defaults 12 / 100).
        temperature: generate/legacy: sampling temperature (defaults 0 / 0.7).
        top_p: generate/legacy: nucleus sampling mass (default 1.0).
        seed: sampling seed (each question's seed derives from it and its id).
        reference: an earlier eval's predictions.jsonl, results.json or --out folder to compare with.
        sweep: also run the generation-parameter sweep (writes sweep.json).
        sweep_temperatures: sweep temperatures (default 0 0.3 0.7 1.0).
        sweep_max_new_tokens: sweep max_new_tokens values (default 8 32).
        sweep_repeats: generations per question and setting in the sweep.
        cop_base: label convention of 'cop': auto, 0 (Hugging Face copy, 0..3) or 1 (original release, 1..4).
        skip_bad_rows: skip invalid rows (counted in results.json) instead of refusing the data.
        target_error: selective prediction: calibrate the abstention threshold so that the error among answered
            questions is certified at most this (default 0.10; results.json 'selective', read by edgemed serve).
        target_coverage: selective prediction: calibrate the threshold to answer this share of questions instead
            (its error is measured, not bounded).
        examples: failure examples to print per kind (results.json keeps 5).
        progress: show a progress bar.
        out: folder for results.json, predictions.jsonl (and sweep.json); without it nothing is written.
    """

    data: str | None = None
    split: str | None = None
    include_trained: bool = False
    limit: int | None = None
    scoring: Literal["logprob", "generate", "legacy"] = "logprob"
    batch_size: int = 8
    threads: int | None = None
    device: str = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    prompt_style: Literal["plain", "chatml", "llama3"] | None = None
    max_new_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int = 0
    reference: Path | None = None
    sweep: bool = False
    sweep_temperatures: list[float] | None = None
    sweep_max_new_tokens: list[int] | None = None
    sweep_repeats: int = 3
    cop_base: Literal["auto", "0", "1"] = "auto"
    skip_bad_rows: bool = False
    target_error: float | None = None
    target_coverage: float | None = None
    examples: int = 3
    progress: bool = True
    out: Path | None = None

    def __post_init__(self) -> None:
        self.sweep_temperatures = self.sweep_temperatures or [0.0, 0.3, 0.7, 1.0]
        self.sweep_max_new_tokens = self.sweep_max_new_tokens or [8, 32]

    def validate(self) -> EvalConfig:
        """Raise EdgemedError (exit 2) naming the flag for any value out of range or out of place; return self."""
        for name, low in (("limit", 1), ("batch_size", 1), ("examples", 0), ("max_new_tokens", 1)):
            value = getattr(self, name)
            if value is not None and value < low:
                raise EdgemedError(f"--{name.replace('_', '-')} must be at least {low}, not {value}")
        if self.scoring == "logprob" and any(v is not None for v in (self.max_new_tokens, self.temperature,
                                                                     self.top_p)):
            raise EdgemedError("--max-new-tokens/--temperature/--top-p apply to generate and legacy scoring only")
        if self.temperature is not None and not (self.temperature >= 0 and math.isfinite(self.temperature)):
            raise EdgemedError(f"--temperature must be a finite number >= 0, not {self.temperature}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise EdgemedError(f"--top-p must be in (0, 1], not {self.top_p}")
        if self.target_error is not None and not 0 < self.target_error < 1:
            raise EdgemedError(f"--target-error is a share in (0, 1), not {self.target_error}")
        if self.target_coverage is not None and not 0 < self.target_coverage <= 1:
            raise EdgemedError(f"--target-coverage is a share in (0, 1], not {self.target_coverage}")
        if self.target_error is not None and self.target_coverage is not None:
            raise EdgemedError("--target-error and --target-coverage are two ways to set one threshold; give one")
        if self.sweep:  # checked now, not after the whole evaluation
            from edgemed.evaluator.sweep import check_sweep

            check_sweep(self.sweep_temperatures, self.sweep_max_new_tokens, self.sweep_repeats)
        if self.out is not None:
            check_output_dir(Path(self.out), "--out")
        return self

    def runtime_options(self, artifact: Path) -> dict[str, Any]:
        """The options the artifact's runtime is opened with. The one check that needs the artifact (so validate()
        cannot make it): --dtype applies to plain transformers models only (exit 2 otherwise)."""
        if self.dtype == "auto":
            return {}
        from edgemed.manifest import detect_runtime

        fmt, runtime_name = detect_runtime(artifact)
        if runtime_name != "transformers" or fmt.startswith("bnb"):
            raise EdgemedError(f"--dtype applies to plain transformers models only, not {fmt}; drop --dtype")
        return {"dtype": self.dtype}

    @property
    def generation(self) -> dict[str, Any]:
        """The generation options given (generate/legacy scoring); {} for logprob scoring."""
        if self.scoring == "logprob":
            return {}
        given = {"max_new_tokens": self.max_new_tokens, "temperature": self.temperature, "top_p": self.top_p,
                 "seed": self.seed}
        return {k: v for k, v in given.items() if v is not None}
