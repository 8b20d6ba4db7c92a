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
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from edgemed.batching import AnswerOnlyCollator, encode_questions
from edgemed.data.split import EVAL_FRACTION
from edgemed.errors import EdgemedError
from edgemed.fsutil import atomic_dir, atomic_write_json

RUN_CONFIG = "edgemed-run.json"
METRICS = "metrics.json"
ADAPTER = "adapter"
CHECKPOINTS = "checkpoints"
EVAL_BEFORE = "edgemed-eval-before.json"  # inside checkpoints/, so --resume keeps the step-0 eval loss
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
        target_modules: module names to adapt, comma-separated.
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
    gradient_checkpointing: bool = False
    qlora: bool = False
    skip_bad_rows: bool = False
    cop_base: Literal["auto", "0", "1"] = "auto"
    trust_remote_code: bool = False
    prompt_style: Literal["plain", "chatml", "llama3"] | None = None
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    target_modules: tuple[str, ...] = field(default=LORA_TARGETS)
    eval_steps: int | None = None
    save_steps: int | None = None
    logging_steps: int = 1
    threads: int | None = None
    resume: bool = False
    force: bool = False

    def __post_init__(self):
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
        if self.max_steps is None and self.epochs <= 0:
            raise EdgemedError(f"--epochs must be positive, not {self.epochs}")
        if self.lr <= 0:
            raise EdgemedError(f"--lr must be positive, not {self.lr}")
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


# --- run folder ----------------------------------------------------------------------------------


def run_state(out: Path) -> str:
    """'new' (absent or empty), 'finished', 'unfinished' or 'foreign' (a non-empty folder that is no run)."""
    out = Path(out)
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return "new"
    if not out.is_dir() or not (out / RUN_CONFIG).exists():
        return "foreign"
    if (out / METRICS).exists() and (out / ADAPTER / "adapter_config.json").exists():
        return "finished"
    return "unfinished"


def read_run(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / RUN_CONFIG
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise EdgemedError(
            f"{run_dir} is not an edgemed run folder (no {RUN_CONFIG}); give the --out of a train run"
        ) from None
    except json.JSONDecodeError:
        raise EdgemedError(f"{path} is corrupt (not JSON); re-run edgemed train with --force") from None


def _check_out(out: Path, config: TrainConfig) -> str:
    state = run_state(out)
    if state == "foreign" and not config.force:
        raise EdgemedError(
            f"{out} exists and is not an edgemed run folder; choose another --out or pass --force to replace it"
        )
    if state == "finished" and not (config.resume or config.force):
        raise EdgemedError(
            f"{out} already holds a finished run; pass --resume to continue it (e.g. with a larger --max-steps) "
            "or --force to replace it, or choose another --out"
        )
    if state == "unfinished" and not (config.resume or config.force):
        raise EdgemedError(
            f"{out} holds an unfinished run; pass --resume to continue from its last checkpoint "
            "or --force to start over"
        )
    return state


def _check_resumable(recorded: dict[str, Any], current: dict[str, Any], out: Path) -> None:
    """Refuse --resume when anything that changes the data, the model or the optimisation differs."""
    diffs = []
    for section in ("base_model", "data", "eval", "prompt_style", "lora"):
        old, new = recorded.get(section), current.get(section)
        if section == "base_model":
            old, new = (old or {}).get("resolved"), new.get("resolved")
        if old != new:
            diffs.append(section)
    old_opts, new_opts = recorded.get("options", {}), current["options"]
    diffs += [k for k in new_opts if k not in RESUMABLE and old_opts.get(k) != new_opts[k]]
    if diffs:
        raise EdgemedError(
            f"--resume: {', '.join(diffs)} differ(s) from the run in {out}; resume with the recorded settings "
            f"(see {out / RUN_CONFIG}) or pass --force to start over"
        )


# --- data ----------------------------------------------------------------------------------------


def _load_splits(data: str, config: TrainConfig) -> tuple[list, list, dict[str, Any], dict[str, Any]]:
    """(train questions, eval questions, data record, eval record)."""
    from edgemed.data import load_questions, split_questions
    from edgemed.lineage import questions_sha256, source_name

    questions, problems = load_questions(
        data, "train", cop_base=config.cop_base, skip_bad=config.skip_bad_rows, limit=config.limit
    )
    data_rec = {"source": source_name(data), "split": "train", "cop_base": config.cop_base, "limit": config.limit,
                "skip_bad_rows": config.skip_bad_rows, "bad_rows_skipped": len({p.row for p in problems}),
                "questions": len(questions), "sha256": questions_sha256(questions)}
    if config.eval_data:
        eval_qs, eval_problems = load_questions(
            config.eval_data, "validation", cop_base=config.cop_base, skip_bad=config.skip_bad_rows
        )
        held = {q.id for q in eval_qs}
        overlap = [q.id for q in questions if q.id in held]
        train_qs = [q for q in questions if q.id not in held]
        eval_rec = {"mode": "separate", "source": source_name(config.eval_data), "split": "validation",
                    "seed": None, "fraction": None, "sha256": questions_sha256(eval_qs),
                    "bad_rows_skipped": len({p.row for p in eval_problems}), "dropped_from_train": len(overlap)}
        if overlap:
            from edgemed.console import err_console

            err_console.print(f"[yellow]{len(overlap)} training questions share ids with --eval-data; not trained on")
    else:
        train_qs, eval_qs = split_questions(questions, config.eval_fraction, config.seed)
        eval_rec = {"mode": "split", "source": data_rec["source"], "split": "train", "seed": config.seed,
                    "fraction": config.eval_fraction, "sha256": data_rec["sha256"]}
    if not train_qs:
        raise EdgemedError(f"no training questions left in '{data}' after holding out eval questions")
    if not eval_qs:
        raise EdgemedError(
            f"the eval split of '{data}' is empty; raise --eval-fraction, drop --limit or pass --eval-data"
        )
    eval_rec.update(limit=config.eval_limit, questions=len(eval_qs))
    assert not {q.id for q in train_qs} & {q.id for q in eval_qs}, "train and eval questions overlap"
    return train_qs, eval_qs, data_rec, eval_rec


def _model_signature(path: str) -> dict[str, Any]:
    """Architecture facts of a model folder, to refuse adapters trained on another base."""
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(path)
    keys = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "intermediate_size", "vocab_size")
    return {k: getattr(cfg, k, None) for k in keys}


# --- Trainer pieces ------------------------------------------------------------------------------


def progress_callback():
    """A TrainerCallback that drives edgemed.console.progress (train steps, and eval batches)."""
    from transformers import TrainerCallback

    from edgemed.console import err_console, progress

    class RichProgress(TrainerCallback):
        def __init__(self):
            self.bar = None
            self.task = None
            self.eval_task = None
            self.loss = None

        def _start(self, state):
            if self.bar is None and state.is_world_process_zero:
                self.bar = progress()
                self.bar.start()

        def on_train_begin(self, args, state, control, **kw):
            self._start(state)
            if self.bar is not None:
                self.task = self.bar.add_task("train", total=state.max_steps, completed=state.global_step)

        def on_step_end(self, args, state, control, **kw):
            if self.bar is not None and self.task is not None:
                loss = f" loss {self.loss:.3f}" if self.loss is not None else ""
                self.bar.update(self.task, completed=state.global_step, description=f"train{loss}")

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                self.loss = logs["loss"]

        def on_prediction_step(self, args, state, control, eval_dataloader=None, **kw):
            self._start(state)
            if self.bar is None:
                return
            if self.eval_task is None:
                total = len(eval_dataloader) if eval_dataloader is not None else None
                self.eval_task = self.bar.add_task("eval", total=total)
            self.bar.advance(self.eval_task)

        def on_evaluate(self, args, state, control, metrics=None, **kw):
            if state.is_world_process_zero and metrics and "eval_loss" in metrics:
                loss = f", train loss {self.loss:.4f}" if self.loss is not None else ""
                where = f"step {state.global_step}/{state.max_steps}" if state.max_steps else "before training"
                err_console.print(f"{where}: eval loss {metrics['eval_loss']:.4f}{loss}")
            if self.bar is not None and self.eval_task is not None:
                self.bar.remove_task(self.eval_task)
                self.eval_task = None
            if self.bar is not None and self.task is None:  # eval outside training: close the bar
                self.close()

        def on_train_end(self, args, state, control, **kw):
            self.close()

        def close(self):
            if self.bar is not None:
                self.bar.stop()
            self.bar = self.task = self.eval_task = None

    return RichProgress()


def _dist():
    from accelerate import PartialState

    return PartialState()


def _load_base(path: str, choice, config: TrainConfig):
    import os

    import torch

    from edgemed.models import load_model

    kwargs: dict[str, Any] = {}
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if choice.device.startswith("cuda"):
        # one whole copy per process: accelerate/DDP moves nothing afterwards
        kwargs["device_map"] = {"": local if choice.device == "cuda" else choice.device}
    if config.qlora:
        from transformers import BitsAndBytesConfig

        from edgemed.errors import require

        require("bitsandbytes", "bnb", "--qlora")
        compute = torch.bfloat16 if choice.dtype == "bfloat16" else torch.float16
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute,
        )
    model = load_model(path, choice, trust_remote_code=config.trust_remote_code, **kwargs)
    model.config.use_cache = False
    if config.qlora:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
    elif config.gradient_checkpointing:
        model.enable_input_require_grads()
    return model


def _lora(model, config: TrainConfig):
    from peft import LoraConfig, get_peft_model

    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [t for t in config.target_modules if t not in present]
    if missing:
        raise EdgemedError(
            f"the model has no module(s) named {', '.join(missing)}; pass --target-modules with names it has"
        )
    lora = LoraConfig(
        r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules), bias="none", task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def _training_args(work: Path, choice, config: TrainConfig, steps_hint: int):
    from transformers import TrainingArguments

    every = config.eval_steps or max(1, steps_hint // 5)
    return TrainingArguments(
        output_dir=str(work / CHECKPOINTS),
        max_steps=config.max_steps or -1,
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.lr,
        lr_scheduler_type="linear",
        warmup_ratio=config.warmup_ratio,
        weight_decay=config.weight_decay,
        eval_strategy="steps",
        eval_steps=every,
        save_strategy="steps",
        save_steps=config.save_steps or every,
        save_total_limit=2,
        logging_strategy="steps",
        logging_steps=config.logging_steps,
        seed=config.seed,
        data_seed=config.seed,
        bf16=choice.dtype == "bfloat16",
        fp16=choice.dtype == "float16",
        use_cpu=choice.device == "cpu",
        gradient_checkpointing=config.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if config.gradient_checkpointing else None,
        prediction_loss_only=True,
        remove_unused_columns=False,
        include_num_input_tokens_seen="non_padding",
        disable_tqdm=True,
        report_to=[],
        dataloader_num_workers=0,
        save_safetensors=True,
    )


def _curves(log_history: list[dict[str, Any]]) -> tuple[list[dict], list[dict]]:
    train, evals = [], {}
    for entry in log_history:
        if "loss" in entry:
            train.append({"step": entry["step"], "loss": entry["loss"], "learning_rate": entry.get("learning_rate"),
                          "grad_norm": entry.get("grad_norm"), "epoch": entry.get("epoch")})
        if "eval_loss" in entry:
            evals[entry["step"]] = entry["eval_loss"]
    return train, [{"step": s, "loss": v} for s, v in sorted(evals.items())]


# --- the run -------------------------------------------------------------------------------------


def train_lora(
    model: str = "smollm2-135m", data: str = "sample", out: Path | str | None = None, **options: Any
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
    from transformers import PrinterCallback, Trainer, set_seed
    from transformers.trainer_utils import get_last_checkpoint

    dist = _dist()
    main = dist.is_main_process
    choice = pick_device(config.device, config.dtype)
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
                   "threads": torch.get_num_threads()},
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
    per_step = config.batch_size * config.grad_accum * dist.num_processes
    steps_hint = config.max_steps or max(1, int(config.epochs * -(-len(train_ex) // per_step)))
    args = _training_args(work, choice, config, steps_hint)
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_ex,
        eval_dataset=eval_ex,
        data_collator=AnswerOnlyCollator(tokenizer.pad_token_id),
        callbacks=[progress_callback()],
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
    }
    if main:
        unwrapped = trainer.accelerator.unwrap_model(trainer.model)
        with atomic_dir(work / ADAPTER, force=True) as tmp:
            unwrapped.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
        record.update(status="finished", finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"), steps=final)
        atomic_write_json(work / RUN_CONFIG, record)
        atomic_write_json(work / METRICS, metrics)  # last: marks the run finished
    dist.wait_for_everyone()
    return metrics


def _step_of(checkpoint: str | None) -> int:
    if not checkpoint:
        return 0
    with contextlib.suppress(ValueError):
        return int(Path(checkpoint).name.rsplit("-", 1)[-1])
    return 0
