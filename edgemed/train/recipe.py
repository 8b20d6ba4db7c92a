"""The LoRA recipe of ``edgemed train``, read top to bottom: validate -> set up -> run -> clean up.

The loss is on the answer only: each example is ``style.prompt(q)`` (labels -100) followed by
``style.target(q)`` (the letter first, then the option text and the end of turn). Batches are padded
to their own longest sequence, never to a fixed length. What the run folder holds: edgemed.train.rundir.

Multi-GPU runs work unchanged under ``accelerate launch -m edgemed.cli.main train ...``: the Trainer does the
distribution and only the main process writes the run files.

The pieces: ``config`` (the options), ``rundir`` (the run folder, its record, resume checks), ``data``
(questions, split, encoding, length-grouped order), ``loop`` (device, model, LoRA, TrainingArguments, the
Trainer subclass), ``progress`` (throughput meter, progress line), ``cpu`` (CPU kernels). Device and dtype:
edgemed.devices.
"""

from __future__ import annotations

import shutil
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edgemed.console import err_console
from edgemed.devices import DeviceChoice
from edgemed.errors import EdgemedError
from edgemed.fsutil import atomic_write_json
from edgemed.models import DEFAULT_MODEL, load_tokenizer, resolve_model
from edgemed.train.config import TrainConfig
from edgemed.train.data import encode_splits, load_splits
from edgemed.train.rundir import (
    RUN_CONFIG,
    check_out,
    curves,
    model_signature,
    read_eval_before,
    resume_point,
    run_record,
    save_finished,
    step_of,
    write_eval_before,
)


@dataclass
class Inputs:
    """What :func:`validate` found: the model and the questions, before torch is imported."""

    model_name: str
    resolved: str
    train_qs: list
    eval_qs: list
    data_rec: dict[str, Any]
    eval_rec: dict[str, Any]


@dataclass
class Setup:
    """What :func:`set_up` decided (:func:`plan`, before any weights load) and built (the Trainer): everything
    :func:`run` and :func:`clean_up` need."""

    work: Path
    config: TrainConfig
    dist: Any
    choice: DeviceChoice
    tokenizer: Any
    record: dict[str, Any]
    checkpoint: str | None
    started: float
    train_ex: list
    eval_ex: list
    load: dict[str, Any]  # edgemed.models.load_model's arguments for the base model
    args: dict[str, Any]  # the Trainer's TrainingArguments, as keywords
    trainer: Any = None


def train_lora(
    model: str = DEFAULT_MODEL, data: str = "sample", out: Path | str | None = None, **options: Any
) -> dict[str, Any]:
    """:func:`train` with the fields of TrainConfig as keywords (max_steps, epochs, limit, seed, lr, ...)."""
    if out is None:
        raise EdgemedError("train_lora needs out=RUN_DIR, the folder to write the run into")
    return train(model, data, Path(out), TrainConfig.from_options(options))


def train(model: str, data: str, out: Path, config: TrainConfig) -> dict[str, Any]:
    """Train a LoRA adapter of `model` on `data` into the run folder `out`; returns the metrics."""
    out = Path(out)
    state = check_out(out, config)
    if config.force and state != "new":
        return _replace(model, data, out, config)
    return _recipe(model, data, out, config, resume=config.resume and state != "new")


def _recipe(model_name: str, data: str, work: Path, config: TrainConfig, resume: bool) -> dict[str, Any]:
    started = time.time()
    inputs = validate(model_name, data, config)
    setup = set_up(inputs, work, config, resume, started)
    metrics = run(setup)
    clean_up(setup, metrics)
    return metrics


def _replace(model_name: str, data: str, out: Path, config: TrainConfig) -> dict[str, Any]:
    """--force over an existing run: build the new run beside the old one; the old one is only replaced once the
    new one is finished."""
    from edgemed.train.loop import dist_state

    dist = dist_state()
    staging = out.with_name(f".{out.name}.force-partial")
    if dist.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
    dist.wait_for_everyone()
    try:
        metrics = _recipe(model_name, data, staging, config, resume=False)
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


# 1. validate: bad model names and data fail here, before torch is even imported


def validate(model_name: str, data: str, config: TrainConfig) -> Inputs:
    """Resolve the model and load the train/eval questions (exit 2 on a bad name or bad data)."""
    resolved = resolve_model(model_name)
    train_qs, eval_qs, data_rec, eval_rec = load_splits(data, config)
    return Inputs(model_name, resolved, train_qs, eval_qs, data_rec, eval_rec)


# 2. set up: device, tokenizer and prompt style, examples, run record and lineage, model, Trainer


def set_up(inputs: Inputs, work: Path, config: TrainConfig, resume: bool, started: float) -> Setup:
    """Everything the run needs; the run record and lineage are written (main process) before the model loads."""
    setup = plan(inputs, work, config, resume, started)
    setup.dist.wait_for_everyone()
    setup.trainer = build_trainer(setup)
    return setup


def plan(inputs: Inputs, work: Path, config: TrainConfig, resume: bool, started: float) -> Setup:
    """Every decision of the run before any weights load: device and dtype, tokenizer, prompt style, examples, the
    memory check, the run record and lineage (written by the main process), and the exact arguments of the base
    model's load and of the TrainingArguments (what :func:`build_trainer` passes on unchanged)."""
    import torch

    from edgemed.devices import describe
    from edgemed.memory_plan import check_training
    from edgemed.prompts import detect_style_for_tokenizer, get_style
    from edgemed.train.cpu import recipe
    from edgemed.train.loop import base_load_arguments, dist_state, training_arguments, training_device
    from edgemed.train.targets import lora_targets

    dist = dist_state()
    main = dist.is_main_process
    choice = training_device(config)
    tokenizer = load_tokenizer(inputs.resolved, trust_remote_code=config.trust_remote_code)
    tokenizer.padding_side = "right"
    style = get_style(config.prompt_style or detect_style_for_tokenizer(tokenizer, inputs.model_name))
    targets, targets_source = lora_targets(inputs.resolved, config.target_modules, config.trust_remote_code)
    config = replace(config, target_modules=targets)
    if main:
        err_console.print(f"edgemed train: {inputs.model_name} on {choice}, prompt style {style.name}, "
                          f"LoRA on {','.join(targets)} ({targets_source}), "
                          f"{len(inputs.train_qs)} train / {len(inputs.eval_qs)} eval questions")
    train_ex, eval_ex, loss_qs, counts = encode_splits(tokenizer, style, inputs.train_qs, inputs.eval_qs, config,
                                                       main)
    check_training(inputs.resolved, choice.device, choice.dtype, config.batch_size, config.gradient_checkpointing,
                   train_ex)  # exit 2 with the estimate before anything is written or loaded
    record = run_record(
        config,
        base_model={"given": inputs.model_name, "resolved": inputs.resolved,
                    "signature": model_signature(inputs.resolved)},
        data=inputs.data_rec, evaluation=inputs.eval_rec, prompt_style=style.name,
        device={**describe(choice, config.device, config.dtype), "world_size": dist.num_processes,
                "threads": torch.get_num_threads(), "recipe": recipe(choice.device, choice.dtype)},
        examples=counts,
    )
    record["lora"]["target_modules_source"] = targets_source
    checkpoint = resume_point(work, record, main) if resume else None
    if main:
        write_start(work, inputs, config, style.name, loss_qs, record)
    per_step = config.batch_size * config.grad_accum * dist.num_processes
    steps_hint = config.max_steps or max(1, int(config.epochs * -(-len(train_ex) // per_step)))
    return Setup(work, config, dist, choice, tokenizer, record, checkpoint, started, train_ex, eval_ex,
                 load=base_load_arguments(inputs.resolved, choice, config),
                 args=training_arguments(work, choice, config, steps_hint))


def write_start(work: Path, inputs: Inputs, config: TrainConfig, style: str, loss_qs: list,
                record: dict[str, Any]) -> None:
    """lineage.json (what every later stage reads) and the run record with status 'running'."""
    from edgemed.lineage import Lineage, write_lineage

    write_lineage(work, Lineage(
        prompt_style=style,
        style_source="train --prompt-style" if config.prompt_style else "chat template at train",
        base_model={"given": inputs.model_name, "resolved": inputs.resolved}, data=inputs.data_rec,
        evaluation={**inputs.eval_rec, "loss_ids": [q.id for q in loss_qs]},
        train_ids=[q.id for q in inputs.train_qs], eval_ids=[q.id for q in inputs.eval_qs], run=str(work.resolve()),
    ))
    atomic_write_json(work / RUN_CONFIG, record)


def build_trainer(setup: Setup) -> Any:
    """The seeded base model (loaded with ``setup.load``) with its LoRA (CPU kernels on a CPU) inside an
    EdgemedTrainer (its TrainingArguments: ``setup.args``)."""
    from transformers import PrinterCallback, set_seed

    from edgemed.batching import AnswerOnlyCollator
    from edgemed.train.loop import EdgemedTrainer, add_lora, load_base, training_args
    from edgemed.train.progress import Throughput, progress_callback

    config, choice = setup.config, setup.choice
    set_seed(config.seed)
    model = add_lora(load_base(setup.load, config), config)
    if choice.device == "cpu":
        from edgemed.train.cpu import fast_lora_dropout, lora_inputs_as_is

        fast_lora_dropout(model)
        if choice.dtype == "bfloat16":
            lora_inputs_as_is(model)  # the Trainer runs every forward under bf16 autocast
    meter = Throughput()
    trainer = EdgemedTrainer(
        model=model,
        args=training_args(setup.args),
        train_dataset=setup.train_ex,
        eval_dataset=setup.eval_ex,
        data_collator=AnswerOnlyCollator(setup.tokenizer.pad_token_id),
        callbacks=[meter, progress_callback(meter)],  # the meter first: the progress line reads it
        meter=meter,
        group_by_length=config.group_by_length,
    )
    trainer.remove_callback(PrinterCallback)
    return trainer


# 3. run: the eval loss before training, the training, the curves and the metrics


def run(setup: Setup) -> dict[str, Any]:
    """Train (from the checkpoint when resuming); returns the metrics (what metrics.json holds)."""
    trainer, work = setup.trainer, setup.work
    eval_before = read_eval_before(work) if setup.checkpoint else None
    if eval_before is None:
        eval_before = trainer.evaluate()["eval_loss"]
        if setup.dist.is_main_process:
            write_eval_before(work, eval_before)
    with warnings.catch_warnings():
        # transformers 4.57 copies a tensor with torch.tensor() when counting input tokens: harmless, noisy
        warnings.filterwarnings("ignore", message="To copy construct from a tensor", category=UserWarning)
        result = trainer.train(resume_from_checkpoint=setup.checkpoint)
    final = trainer.state.global_step
    train_curve, eval_curve = curves(trainer.state.log_history)
    if not eval_curve or eval_curve[-1]["step"] != final:
        eval_curve.append({"step": final, "loss": trainer.evaluate()["eval_loss"]})
    eval_curve = [{"step": 0, "loss": eval_before}] + [e for e in eval_curve if e["step"] != 0]
    train_runtime = result.metrics.get("train_runtime")
    return {
        "eval_loss_before": eval_before,
        "eval_loss_after": eval_curve[-1]["loss"],
        "train_loss": train_curve,
        "eval_loss": eval_curve,
        "steps": final,
        "epochs": trainer.state.epoch,
        "train_seconds": train_runtime,
        "seconds": time.time() - setup.started,
        "seconds_per_step": (train_runtime or 0) / max(1, final - step_of(setup.checkpoint)),
        "tokens": trainer.state.num_input_tokens_seen,
        "train_examples": setup.record["examples"]["train"],
        "eval_examples": setup.record["examples"]["eval"],
        "resumed_from": setup.checkpoint and Path(setup.checkpoint).name,
        "device": str(setup.choice),
        "dtype": setup.choice.dtype,
        # the steps of this invocation (since --resume): step time only, tokens summed over processes
        "throughput": trainer.throughput(),
    }


# 4. clean up: the adapter, the finished record, metrics.json last (it marks the run finished)


def clean_up(setup: Setup, metrics: dict[str, Any]) -> None:
    """Save the finished run (main process), then wait for every process."""
    if setup.dist.is_main_process:
        save_finished(setup.work, setup.trainer, setup.tokenizer, setup.record, metrics)
    setup.dist.wait_for_everyone()
