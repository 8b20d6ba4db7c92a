"""``edgemed train``: LoRA fine-tuning with answer-only loss, dynamic padding, checkpoints and --resume."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from edgemed.data.split import EVAL_FRACTION
from edgemed.training import LORA_TARGETS


def train(
    model: str = "smollm2-135m",
    data: str = "sample",
    out: Path = Path("runs/train"),
    max_steps: int | None = None,
    epochs: float = 1.0,
    limit: int | None = None,
    seed: int = 0,
    lr: float = 2e-4,
    batch_size: int = 8,
    grad_accum: int = 1,
    eval_fraction: float = EVAL_FRACTION,
    eval_data: str | None = None,
    eval_limit: int | None = None,
    max_length: int = 512,
    device: str = "auto",
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto",
    gradient_checkpointing: bool = False,
    qlora: bool = False,
    skip_bad_rows: bool = False,
    cop_base: Literal["auto", "0", "1"] = "auto",
    trust_remote_code: bool = False,
    prompt_style: Literal["plain", "chatml", "llama3"] | None = None,
    lora_r: int = 16,
    lora_alpha: int = 32,
    lora_dropout: float = 0.1,
    target_modules: list[str] | None = None,
    warmup_ratio: float = 0.03,
    eval_steps: int | None = None,
    save_steps: int | None = None,
    logging_steps: int = 1,
    threads: int | None = None,
    resume: bool = False,
    force: bool = False,
) -> int:
    """Fine-tune a LoRA adapter on MedMCQA-schema questions (loss on the answer tokens only).

    Writes RUN_DIR/adapter (adapter + tokenizer), edgemed-run.json (exact config), metrics.json (loss curves,
    eval loss before/after), eval_ids.json and checkpoints/. For several GPUs run the same command under
    accelerate: 'accelerate launch -m edgemed.cli.main train ...' (the Trainer distributes; only rank 0 writes).

    Args:
        model: model alias (smollm2-135m, tiny-random), local folder or hub id (e.g. meta-llama/Llama-3.2-1B-Instruct).
        data: training data: 'sample', a local MedMCQA-schema .jsonl/.json/.parquet/.csv, or a hub id.
        out: run folder to write (RUN_DIR).
        max_steps: optimizer steps; overrides --epochs.
        epochs: passes over the training questions (when --max-steps is not given).
        limit: use only the first N questions of --data.
        seed: seed for the train/eval split, LoRA init and data order.
        lr: peak learning rate (linear decay after warm-up).
        batch_size: questions per device per step.
        grad_accum: gradient accumulation steps.
        eval_fraction: share of --data held out for the eval loss (ignored with --eval-data).
        eval_data: separate eval source (e.g. a validation file); then --data is not split.
        eval_limit: compute the eval loss on the first N eval questions only (keeps evals cheap).
        max_length: longest example in tokens; longer questions are skipped (and counted), never cut.
        device: auto, cpu, cuda, cuda:N or mps; for several GPUs run this command unchanged under
            'accelerate launch -m edgemed.cli.main train ...'.
        dtype: weights/autocast dtype; auto = bfloat16/float16 on GPUs, float32 on CPU.
        gradient_checkpointing: trade compute for activation memory.
        qlora: 4-bit NF4 base via bitsandbytes (CUDA only).
        skip_bad_rows: skip invalid rows instead of refusing the data.
        cop_base: label convention of 'cop': auto, 0 (0..3) or 1 (1..4).
        trust_remote_code: allow model code from the hub (off: safe by default).
        prompt_style: prompt format; default: detected from the tokenizer's chat template.
        lora_r: LoRA rank.
        lora_alpha: LoRA alpha (scale = alpha / r).
        lora_dropout: dropout on the LoRA input.
        target_modules: module names to adapt (default: q/k/v/o and gate/up/down projections).
        warmup_ratio: share of the steps used for linear warm-up.
        eval_steps: steps between eval-loss measurements (default: 5 evals per run).
        save_steps: steps between checkpoints (default: --eval-steps).
        logging_steps: steps between train-loss records.
        threads: CPU threads for torch (default: all cores).
        resume: continue the run in --out from its last checkpoint (settings must match).
        force: replace a finished run in --out (the old one stays until the new one finishes).
    """
    from edgemed.console import console
    from edgemed.training import train_lora

    metrics = train_lora(
        model, data, out,
        max_steps=max_steps, epochs=epochs, limit=limit, seed=seed, lr=lr, batch_size=batch_size,
        grad_accum=grad_accum, eval_fraction=eval_fraction, eval_data=eval_data, eval_limit=eval_limit,
        max_length=max_length, device=device, dtype=dtype, gradient_checkpointing=gradient_checkpointing,
        qlora=qlora, skip_bad_rows=skip_bad_rows, cop_base=cop_base, trust_remote_code=trust_remote_code,
        prompt_style=prompt_style, lora_r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
        target_modules=tuple(target_modules or LORA_TARGETS), warmup_ratio=warmup_ratio, eval_steps=eval_steps,
        save_steps=save_steps, logging_steps=logging_steps, threads=threads, resume=resume, force=force,
    )
    console.print(
        f"eval loss {metrics['eval_loss_before']:.4f} -> {metrics['eval_loss_after']:.4f}, "
        f"{metrics['steps']} steps, {metrics['tokens']} tokens, {metrics['train_seconds']:.1f} s; run in {out}"
    )
    return 0
