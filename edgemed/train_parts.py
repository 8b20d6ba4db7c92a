"""Trainer pieces of ``edgemed train``: the progress callback, the base model and its LoRA, the
TrainingArguments. Heavy imports (torch, transformers, peft, accelerate) stay inside the functions."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgemed.errors import EdgemedError
from edgemed.train_run import CHECKPOINTS

if TYPE_CHECKING:
    from edgemed.train_config import TrainConfig


def progress_callback(meter=None):
    """A TrainerCallback that drives edgemed.console.progress (train steps, and eval batches); with `meter`
    (an edgemed.train_loop.Throughput, registered before this callback) the train line and the eval lines
    also show trained/padded tokens per second, seconds per step and peak RSS."""
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
                speed = meter.line() if meter is not None else ""
                self.bar.update(self.task, completed=state.global_step, description=f"train{loss}{speed}")

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
                speed = meter.line() if meter is not None and self.task is not None else ""
                err_console.print(f"{where}: eval loss {metrics['eval_loss']:.4f}{loss}{speed}")
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
    if choice.device == "cpu" and choice.dtype == "bfloat16":
        # the frozen model in bf16 under autocast, LoRA weights float32, the attention in float32
        # (edgemed.train_cpu; scripts/bench_train_speed.py measures each lever)
        from edgemed.train_cpu import register_fp32_sdpa

        kwargs.setdefault("attn_implementation", register_fp32_sdpa())
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
    import os

    from accelerate.state import AcceleratorState
    from transformers import TrainingArguments

    # TrainingArguments writes its mixed precision into ACCELERATE_MIXED_PRECISION and never clears it, and
    # accelerate keeps it in a singleton: a float32 run after a bf16 one in the same process (the bench, the
    # tests, a notebook) would silently train under bf16 autocast. The recorded dtype decides, here too.
    os.environ["ACCELERATE_MIXED_PRECISION"] = {"bfloat16": "bf16", "float16": "fp16"}.get(choice.dtype, "no")
    AcceleratorState._reset_state()
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

