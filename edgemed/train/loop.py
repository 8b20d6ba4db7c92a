"""The training loop's pieces: the base model and its LoRA, the TrainingArguments, and the Trainer edgemed trains
with (length-grouped batches, logits only where the loss is, the throughput meter). (The CPU kernels
and dtypes it trains with: edgemed.train.cpu.)

- Data order: :class:`edgemed.train.data.LengthGroupedSampler` (seeded, resumable) when grouping is on,
  else the Trainer's own seeded random sampler.
- Loss: the answer-only loss reads the logits of the answer positions only, so the language-model head
  (576 x 49152 on SmolLM2, the largest single matmul) runs on those positions instead of every
  position of the batch (``logits_to_keep`` with the positions any row of the batch trains on). Same
  value as the model's own loss (sum of cross-entropies / number of label tokens, ``num_items_in_batch``
  honoured as the Trainer does).
- Throughput and the progress line: :mod:`edgemed.train.progress`.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from transformers import Trainer

from edgemed.batching import IGNORE
from edgemed.devices import DeviceChoice, pick_device
from edgemed.errors import EdgemedError
from edgemed.registry import get_format, require_module
from edgemed.train.data import LengthGroupedSampler
from edgemed.train.progress import Throughput
from edgemed.train.rundir import CHECKPOINTS

if TYPE_CHECKING:
    from edgemed.train.config import TrainConfig


def _accepts_logits_to_keep(model) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return "logits_to_keep" in inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return False


def answer_loss(model, inputs: dict[str, Any], num_items_in_batch=None):
    """(loss, outputs): the causal-LM loss computed from the logits of the trained positions only.

    Position p predicts token p+1; the kept positions are those where any row of the batch has a label
    at p+1. Equal to the model's own loss (float32 cross-entropy, summed, divided by num_items_in_batch
    or by the number of label tokens).
    """
    labels = inputs["labels"]
    keep = (labels[:, 1:] != IGNORE).any(0).nonzero().squeeze(-1)
    rest = {k: v for k, v in inputs.items() if k != "labels"}
    outputs = model(**rest, logits_to_keep=keep)
    target = labels[:, keep + 1]
    logits = outputs.logits.float()
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1).to(logits.device),
                           ignore_index=IGNORE, reduction="sum")
    if num_items_in_batch is None:
        loss = loss / (target != IGNORE).sum().clamp(min=1)
    else:
        if torch.is_tensor(num_items_in_batch):
            num_items_in_batch = num_items_in_batch.to(loss.device)
        loss = loss / num_items_in_batch
    return loss, outputs


class EdgemedTrainer(Trainer):
    """A Trainer with the length-grouped sampler, the answer-position loss and the throughput meter."""

    def __init__(self, *args, meter: Throughput | None = None, group_by_length: bool = True,
                 answer_logits: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.meter = meter
        self.group_lengths = group_by_length
        self.answer_logits = answer_logits and _accepts_logits_to_keep(self.model)

    def _get_train_sampler(self, train_dataset=None):
        dataset = self.train_dataset if train_dataset is None else train_dataset
        if not self.group_lengths or dataset is None:
            return super()._get_train_sampler(train_dataset)
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        lengths = [len(ex["input_ids"]) for ex in dataset]
        return LengthGroupedSampler(lengths, self.args.per_device_train_batch_size, seed)

    def training_step(self, model, inputs, num_items_in_batch=None):
        if self.meter is not None:
            self.meter.count(inputs)
        return super().training_step(model, inputs, num_items_in_batch)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not self.answer_logits or "labels" not in inputs or self.label_smoother is not None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        loss, outputs = answer_loss(model, inputs, num_items_in_batch)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * (self.accelerator.num_processes if self.args.n_gpu <= 1 else self.args.n_gpu)
        return (loss, outputs) if return_outputs else loss

    def throughput(self) -> dict[str, Any] | None:
        """The meter's summary with token counts summed over processes (collective: call on every rank)."""
        if self.meter is None:
            return None
        m = self.meter
        totals = (m.trained, m.real, m.padded)
        world = self.accelerator.num_processes
        if world > 1:
            t = torch.tensor(totals, device=self.accelerator.device)
            totals = tuple(int(x) for x in self.accelerator.reduce(t, reduction="sum").tolist())
        return m.summary(world, totals)


def dist_state():
    """accelerate's PartialState: which process this is, how many there are, and the barrier."""
    from accelerate import PartialState

    return PartialState()


def training_device(config: TrainConfig) -> DeviceChoice:
    """The device and the dtype this run trains in (edgemed.devices: exit 2 where the asked-for dtype or --qlora
    cannot work there, or --qlora's modules are missing); sets --threads."""
    choice = pick_device(config.device, config.dtype, "train", qlora=config.qlora)
    if config.qlora:
        nf4 = get_format("bnb-nf4")  # --qlora loads the base model as bnb-nf4 does: the same modules and extra
        for module in nf4.needs:
            require_module(module, nf4.extra, "--qlora")
    if config.threads:
        torch.set_num_threads(config.threads)
    return choice


def base_load_arguments(path: str, choice, config: TrainConfig) -> dict[str, Any]:
    """The keywords of :func:`edgemed.models.load_model` for the frozen base model on `choice`: one whole copy per
    process on a GPU, 4-bit NF4 with --qlora (computing in the run's dtype), the attention in float32 under CPU
    bf16."""
    kwargs: dict[str, Any] = {"path": path, "choice": choice, "trust_remote_code": config.trust_remote_code}
    if choice.device.startswith("cuda"):
        # one whole copy per process: accelerate/DDP moves nothing afterwards
        local = int(os.environ.get("LOCAL_RANK", "0"))
        kwargs["device_map"] = {"": local if choice.device == "cuda" else choice.device}
    if config.qlora:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=getattr(torch, choice.dtype),
        )
    if choice.device == "cpu" and choice.dtype == "bfloat16":
        # the frozen model in bf16 under autocast, LoRA weights float32, the attention in float32
        # (edgemed.train.cpu; scripts/dev/bench_train_speed.py measures each lever)
        from edgemed.train.cpu import register_fp32_sdpa

        kwargs["attn_implementation"] = register_fp32_sdpa()
    return kwargs


def load_base(load: dict[str, Any], config: TrainConfig):
    """The frozen base model loaded with `load` (:func:`base_load_arguments`), ready for its LoRA."""
    from edgemed.models import load_model

    model = load_model(**load)
    model.config.use_cache = False
    if config.qlora:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
    elif config.gradient_checkpointing:
        model.enable_input_require_grads()
    return model


def add_lora(model, config: TrainConfig):
    """`model` wrapped by peft with the LoRA of `config` (exit 2 when a target module is missing)."""
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


def training_arguments(work: Path, choice, config: TrainConfig, steps_hint: int) -> dict[str, Any]:
    """The keywords of the Trainer's TrainingArguments for `config` on `choice` (checkpoints go to
    ``work/checkpoints``): bf16 or fp16 (the grad scaler) mixed precision as the resolved dtype says."""
    every = config.eval_steps or max(1, steps_hint // 5)
    return dict(
        output_dir=str(Path(work) / CHECKPOINTS),
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


def training_args(arguments: dict[str, Any]):
    """The TrainingArguments of `arguments` (:func:`training_arguments`), with accelerate's mixed precision set to
    match.

    TrainingArguments writes its mixed precision into ACCELERATE_MIXED_PRECISION and never clears it, and
    accelerate keeps it in a singleton: a float32 run after a bf16 one in the same process (the bench, the tests, a
    notebook) would silently train under bf16 autocast. The recorded dtype decides, here too."""
    import os

    from accelerate.state import AcceleratorState
    from transformers import TrainingArguments

    os.environ["ACCELERATE_MIXED_PRECISION"] = ("bf16" if arguments["bf16"] else "fp16" if arguments["fp16"]
                                                else "no")
    AcceleratorState._reset_state()
    return TrainingArguments(**arguments)
