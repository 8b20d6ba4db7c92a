"""LoRA fine-tuning on MedMCQA-schema data with peft and the transformers Trainer.

The loss is on the answer only: each example is ``style.prompt(q)`` (labels -100) followed by
``style.target(q)`` (the letter first, then the option text and the end of turn). Batches are padded
to their own longest sequence, never to a fixed length.

A run folder holds::

    adapter/           adapter safetensors + adapter_config.json + the tokenizer
    edgemed-run.json   the exact config: base model (given and resolved), data, split, style, hyperparameters
    metrics.json       train/eval loss curves by step, eval loss before and after, seconds, steps, tokens
    lineage.json       what every later stage reads: base model, prompt style, data and its hash, the split
                       (seed, fraction or a separate source) and the train/eval question ids (edgemed.lineage)
    checkpoints/       Trainer checkpoints, for --resume

``metrics.json`` is written last: its presence marks a finished run. Multi-GPU runs work unchanged
under ``accelerate launch -m edgemed.cli.main train ...``: the Trainer does the distribution and only
the main process writes the run files.

This module is the recipe (:func:`train_lora`); the pieces: ``train_config`` (the options),
``train_run`` (the run folder), ``train_data`` (questions, split, length-grouped order),
``train_parts`` (model, LoRA, TrainingArguments, progress line), ``train_loop`` (the Trainer subclass:
answer-position loss, throughput meter), ``train_cpu`` (CPU dtypes and kernels).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

from edgemed.batching import AnswerOnlyCollator, encode_questions
from edgemed.errors import EdgemedError
from edgemed.fsutil import atomic_dir, atomic_write_json
from edgemed.models import DEFAULT_MODEL
from edgemed.train_config import LORA_TARGETS, RESUMABLE, TrainConfig
from edgemed.train_data import _load_splits, _model_signature
from edgemed.train_parts import _dist, _load_base, _lora, _training_args, progress_callback
from edgemed.train_run import (
    ADAPTER,
    CHECKPOINTS,
    EVAL_BEFORE,
    METRICS,
    RUN_CONFIG,
    _check_out,
    _check_resumable,
    _curves,
    _step_of,
    read_run,
    run_state,
)

__all__ = [  # what other modules import from here (the pieces live in train_config/train_run/train_data/...)
    "ADAPTER", "CHECKPOINTS", "EVAL_BEFORE", "LORA_TARGETS", "METRICS", "RESUMABLE", "RUN_CONFIG", "TrainConfig",
    "_model_signature", "progress_callback", "read_run", "run_state", "train_lora",
]


def train_lora(
    model: str = DEFAULT_MODEL, data: str = "sample", out: Path | str | None = None, **options: Any
) -> dict[str, Any]:
    """Train a LoRA adapter of `model` on `data` into the run folder `out`; returns the metrics.

    `options` are the fields of TrainConfig (max_steps, epochs, limit, seed, lr, batch_size, ...).
    """
    if out is None:
        raise EdgemedError("train_lora needs out=RUN_DIR, the folder to write the run into")
    config = TrainConfig.from_options(options)
    out = Path(out)
    state = _check_out(out, config)
    if config.force and state != "new":
        dist = _dist()
        # Build the new run beside the old one; the old one is only replaced once the new one is finished.
        staging = out.with_name(f".{out.name}.force-partial")
        if dist.is_main_process:
            shutil.rmtree(staging, ignore_errors=True)
        dist.wait_for_everyone()
        try:
            metrics = _train(model, data, staging, config, resume=False)
        except BaseException:
            if dist.is_main_process:
                shutil.rmtree(staging, ignore_errors=True)
            raise
        dist.wait_for_everyone()
        if dist.is_main_process:
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            if out.exists():
                out.replace(old)
            staging.replace(out)
            shutil.rmtree(old, ignore_errors=True)
        return metrics
    return _train(model, data, out, config, resume=config.resume and state != "new")


def _train(model_name: str, data: str, work: Path, config: TrainConfig, resume: bool) -> dict[str, Any]:
    from edgemed.console import err_console
    from edgemed.manifest import versions
    from edgemed.models import load_tokenizer, pick_device, resolve_model
    from edgemed.prompts import detect_style, get_style

    started = time.time()
    # bad model names and data fail here, before torch is even imported
    resolved = resolve_model(model_name)
    train_qs, eval_qs, data_rec, eval_rec = _load_splits(data, config)

    import torch
    from transformers import PrinterCallback, set_seed
    from transformers.trainer_utils import get_last_checkpoint

    from edgemed.models import DeviceChoice
    from edgemed.train_cpu import recipe, train_dtype
    from edgemed.train_loop import EdgemedTrainer, Throughput

    dist = _dist()
    main = dist.is_main_process
    choice = pick_device(config.device, config.dtype)
    choice = DeviceChoice(choice.device, train_dtype(choice.device, config.dtype))
    if config.qlora and not choice.device.startswith("cuda"):
        raise EdgemedError(f"--qlora needs a CUDA GPU (4-bit bitsandbytes base); this run is on {choice.device}: "
                           "drop --qlora to train a plain LoRA")
    if choice.dtype == "float16" and not choice.device.startswith("cuda"):
        raise EdgemedError(f"float16 training needs CUDA; on {choice.device} use --dtype float32 or bfloat16")
    if config.threads:
        torch.set_num_threads(config.threads)
    tokenizer = load_tokenizer(resolved, trust_remote_code=config.trust_remote_code)
    tokenizer.padding_side = "right"
    style_name = config.prompt_style or detect_style(getattr(tokenizer, "chat_template", None))
    style = get_style(style_name)
    if main:
        err_console.print(f"edgemed train: {model_name} on {choice}, prompt style {style.name}, "
                          f"{len(train_qs)} train / {len(eval_qs)} eval questions")

    train_ex, long_train = encode_questions(tokenizer, style, train_qs, config.max_length)
    loss_qs = eval_qs[: config.eval_limit] if config.eval_limit else eval_qs
    eval_ex, long_eval = encode_questions(tokenizer, style, loss_qs, config.max_length)
    if not train_ex or not eval_ex:
        raise EdgemedError(f"every {'training' if not train_ex else 'eval'} question is longer than "
                           f"--max-length {config.max_length} tokens; raise --max-length")
    if (long_train or long_eval) and main:
        err_console.print(f"[yellow]skipped {len(long_train)} train / {len(long_eval)} eval questions longer than "
                          f"--max-length {config.max_length}")

    options = asdict(config)
    options["target_modules"] = list(config.target_modules)
    record = {
        "schema": 1,
        "kind": "edgemed-lora-run",
        "status": "running",
        "base_model": {"given": model_name, "resolved": resolved, "signature": _model_signature(resolved)},
        "data": data_rec,
        "eval": eval_rec,
        "prompt_style": style.name,
        "lora": {"r": config.lora_r, "alpha": config.lora_alpha, "dropout": config.lora_dropout,
                 "target_modules": list(config.target_modules)},
        "options": options,
        "device": {"device": choice.device, "dtype": choice.dtype, "world_size": dist.num_processes,
                   "threads": torch.get_num_threads(), "recipe": recipe(choice.device, choice.dtype)},
        "examples": {"train": len(train_ex), "eval": len(eval_ex), "too_long_train": len(long_train),
                     "too_long_eval": len(long_eval)},
        "versions": versions(),
        "argv": sys.argv,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    checkpoint = None
    if resume:
        _check_resumable(read_run(work), record, work)
        if (work / CHECKPOINTS).is_dir():
            checkpoint = get_last_checkpoint(str(work / CHECKPOINTS))
        if checkpoint is None and main:
            err_console.print(f"[yellow]{work} has no checkpoint yet; training from step 0")
    if main:
        from edgemed.lineage import Lineage, write_lineage

        write_lineage(work, Lineage(
            prompt_style=style.name,
            style_source="train --prompt-style" if config.prompt_style else "chat template at train",
            base_model={"given": model_name, "resolved": resolved}, data=data_rec,
            evaluation={**eval_rec, "loss_ids": [q.id for q in loss_qs]},
            train_ids=[q.id for q in train_qs], eval_ids=[q.id for q in eval_qs], run=str(work.resolve()),
        ))
        atomic_write_json(work / RUN_CONFIG, record)
    dist.wait_for_everyone()

    set_seed(config.seed)
    base = _load_base(resolved, choice, config)
    model = _lora(base, config)
    if choice.device == "cpu":
        from edgemed.train_cpu import fast_lora_dropout, lora_inputs_as_is

        fast_lora_dropout(model)
        if choice.dtype == "bfloat16":
            lora_inputs_as_is(model)  # the Trainer runs every forward under bf16 autocast
    per_step = config.batch_size * config.grad_accum * dist.num_processes
    steps_hint = config.max_steps or max(1, int(config.epochs * -(-len(train_ex) // per_step)))
    args = _training_args(work, choice, config, steps_hint)
    meter = Throughput()
    trainer = EdgemedTrainer(
        model=model,
        args=args,
        train_dataset=train_ex,
        eval_dataset=eval_ex,
        data_collator=AnswerOnlyCollator(tokenizer.pad_token_id),
        callbacks=[meter, progress_callback(meter)],  # the meter first: the progress line reads it
        meter=meter,
        group_by_length=config.group_by_length,
    )
    trainer.remove_callback(PrinterCallback)

    before_file = work / CHECKPOINTS / EVAL_BEFORE
    if checkpoint and before_file.exists():
        eval_before = json.loads(before_file.read_text())["eval_loss"]
    else:
        eval_before = trainer.evaluate()["eval_loss"]
        if main:
            atomic_write_json(before_file, {"step": 0, "eval_loss": eval_before})
    with warnings.catch_warnings():
        # transformers 4.57 copies a tensor with torch.tensor() when counting input tokens: harmless, noisy
        warnings.filterwarnings("ignore", message="To copy construct from a tensor", category=UserWarning)
        result = trainer.train(resume_from_checkpoint=checkpoint)
    final = trainer.state.global_step
    train_curve, eval_curve = _curves(trainer.state.log_history)
    if not eval_curve or eval_curve[-1]["step"] != final:
        eval_curve.append({"step": final, "loss": trainer.evaluate()["eval_loss"]})
    eval_curve = [{"step": 0, "loss": eval_before}] + [e for e in eval_curve if e["step"] != 0]

    metrics = {
        "eval_loss_before": eval_before,
        "eval_loss_after": eval_curve[-1]["loss"],
        "train_loss": train_curve,
        "eval_loss": eval_curve,
        "steps": final,
        "epochs": trainer.state.epoch,
        "train_seconds": result.metrics.get("train_runtime"),
        "seconds": time.time() - started,
        "seconds_per_step": (result.metrics.get("train_runtime") or 0) / max(1, final - _step_of(checkpoint)),
        "tokens": trainer.state.num_input_tokens_seen,
        "train_examples": len(train_ex),
        "eval_examples": len(eval_ex),
        "resumed_from": checkpoint and Path(checkpoint).name,
        "device": str(choice),
        "dtype": choice.dtype,
        # the steps of this invocation (since --resume): step time only, tokens summed over processes
        "throughput": trainer.throughput(),
    }
    if main:
        unwrapped = trainer.accelerator.unwrap_model(trainer.model)
        with atomic_dir(work / ADAPTER, force=True) as tmp:
            unwrapped.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
        record.update(status="finished", finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"), steps=final,
                      throughput=metrics["throughput"])
        atomic_write_json(work / RUN_CONFIG, record)
        atomic_write_json(work / METRICS, metrics)  # last: marks the run finished
    dist.wait_for_everyone()
    return metrics

