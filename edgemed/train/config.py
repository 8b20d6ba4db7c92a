"""The options of a LoRA run (``edgemed train``'s --help is generated from :class:`TrainConfig`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, make_dataclass
from typing import Any, Literal

from edgemed.data.split import EVAL_FRACTION
from edgemed.errors import EdgemedError

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# Options that may differ when a run is resumed (they do not change what the model sees or how).
RESUMABLE = {
    "max_steps", "epochs", "device", "eval_steps", "save_steps", "logging_steps",
    "gradient_checkpointing", "threads", "resume", "force",
}



@dataclass(frozen=True)
class TrainConfig:
    """Every option of a LoRA run except the model, the data and the output folder (``edgemed train``'s options,
    declared once: its --help is generated from this class).

    Args:
        max_steps: optimizer steps; overrides --epochs.
        epochs: passes over the training questions (when --max-steps is not given).
        limit: use only the first N questions of --data.
        seed: seed for the train/eval split, LoRA init and data order.
        lr: peak learning rate (linear decay after warm-up).
        batch_size: questions per device per step.
        grad_accum: gradient accumulation steps.
        warmup_ratio: share of the steps used for linear warm-up.
        weight_decay: AdamW weight decay.
        eval_fraction: share of --data held out for the eval loss (ignored with --eval-data).
        eval_data: separate eval source (e.g. a validation file); then --data is not split.
        eval_limit: compute the eval loss on the first N eval questions only (keeps evals cheap).
        max_length: longest example in tokens; longer questions are skipped (and counted), never cut.
        device: auto, cpu, cuda, cuda:N or mps; for several GPUs run this command unchanged under
            'accelerate launch -m edgemed.cli.main train ...'.
        dtype: the frozen model's dtype and autocast (LoRA weights and optimizer state stay float32); auto =
            bfloat16 on CUDA GPUs that compute it natively, else float16 (with a grad scaler), float32 on Apple
            silicon (MPS), bfloat16 on CPUs with AVX512-BF16 or AMX, float32 on other CPUs.
        group_by_length: batch questions of similar length together (seeded; less padding per step).
        gradient_checkpointing: trade compute for activation memory.
        qlora: 4-bit NF4 base via bitsandbytes (CUDA only); it computes in --dtype.
        skip_bad_rows: skip invalid rows instead of refusing the data.
        cop_base: label convention of 'cop': auto, 0 (0..3) or 1 (1..4).
        trust_remote_code: allow model code from the hub (off: safe by default).
        prompt_style: prompt format; default: the model's own chat template (plain when it has none).
        lora_r: LoRA rank.
        lora_alpha: LoRA alpha (scale = alpha / r).
        lora_dropout: dropout on the LoRA input.
        target_modules: module names to adapt, comma-separated; default: the linear layers of the model's decoder
            blocks, read from its modules (q/k/v/o and gate/up/down projections; Phi-3: qkv_proj, gate_up_proj).
        eval_steps: steps between eval-loss measurements (default: 5 evals per run).
        save_steps: steps between checkpoints (default: --eval-steps).
        logging_steps: steps between train-loss records.
        threads: CPU threads for torch (default: all cores).
        resume: continue the run in --out from its last checkpoint (settings must match).
        force: replace a finished run in --out (the old one stays until the new one finishes).
    """

    max_steps: int | None = None
    epochs: float = 1.0
    limit: int | None = None
    seed: int = 0
    lr: float = 2e-4
    batch_size: int = 8
    grad_accum: int = 1
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    eval_fraction: float = EVAL_FRACTION
    eval_data: str | None = None
    eval_limit: int | None = None
    max_length: int = 512
    device: str = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    group_by_length: bool = True
    gradient_checkpointing: bool = False
    qlora: bool = False
    skip_bad_rows: bool = False
    cop_base: Literal["auto", "0", "1"] = "auto"
    trust_remote_code: bool = False
    prompt_style: Literal["plain", "chatml", "llama3"] | None = None
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    target_modules: tuple[str, ...] | None = None
    eval_steps: int | None = None
    save_steps: int | None = None
    logging_steps: int = 1
    threads: int | None = None
    resume: bool = False
    force: bool = False

    def __post_init__(self):
        if self.target_modules is not None:
            object.__setattr__(self, "target_modules", tuple(self.target_modules))
        positive = {"batch_size": self.batch_size, "grad_accum": self.grad_accum, "max_length": self.max_length,
                    "lora_r": self.lora_r, "logging_steps": self.logging_steps}
        for name, value in positive.items():
            if value < 1:
                raise EdgemedError(f"--{name.replace('_', '-')} must be at least 1, not {value}")
        for name in ("max_steps", "limit", "eval_limit", "eval_steps", "save_steps", "threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise EdgemedError(f"--{name.replace('_', '-')} must be at least 1 (or left out), not {value}")
        if not math.isfinite(self.epochs) or (self.max_steps is None and self.epochs <= 0):
            raise EdgemedError(f"--epochs must be a positive number, not {self.epochs}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise EdgemedError(f"--lr must be a positive finite number, not {self.lr}")
        if not 0.0 <= self.warmup_ratio <= 1.0:
            raise EdgemedError(f"--warmup-ratio must be between 0 and 1, not {self.warmup_ratio}")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise EdgemedError(f"--weight-decay must be a finite number >= 0, not {self.weight_decay}")
        if self.lora_alpha < 1:
            raise EdgemedError(f"--lora-alpha must be at least 1 (the LoRA scale is alpha / r), not {self.lora_alpha}")
        if self.threads is not None:
            from edgemed.resources import resolve_threads

            resolve_threads(self.threads)  # a runaway count makes torch abort
        if not 0.0 < self.eval_fraction < 1.0:
            raise EdgemedError(f"--eval-fraction must be between 0 and 1, not {self.eval_fraction}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise EdgemedError(f"--lora-dropout must be in [0, 1), not {self.lora_dropout}")
        if self.resume and self.force:
            raise EdgemedError("--resume and --force contradict each other; pass one of them")

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise EdgemedError(f"unknown training option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**options)


# The training flags `edgemed pipeline` takes beside its own: TrainConfig's fields of these names (types, defaults
# and help derived below, never restated).
PIPELINE_TRAIN_FLAGS = ("device", "dtype", "qlora", "batch_size", "grad_accum", "lora_r", "eval_limit")


def config_subset(name: str, names: tuple[str, ...], summary: str) -> type:
    """A frozen dataclass holding the TrainConfig fields `names` with their types, defaults and ``Args:`` help (a
    command expands it into the same flags as ``edgemed train``'s)."""
    import typing

    from edgemed.cli.signature import parse_doc

    hints = typing.get_type_hints(TrainConfig)
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    _, helps = parse_doc(TrainConfig)
    cls = make_dataclass(name, [(n, hints[n], field(default=defaults[n])) for n in names], frozen=True)
    cls.__doc__ = f"{summary}\n\nArgs:\n" + "".join(f"    {n}: {helps[n]}\n" for n in names)
    cls.__module__ = __name__
    return cls


TrainingFlags = config_subset("TrainingFlags", PIPELINE_TRAIN_FLAGS,
                              "The training options of `edgemed pipeline` (TrainConfig's, same names and defaults).")
