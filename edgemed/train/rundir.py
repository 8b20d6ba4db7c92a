"""The run folder of ``edgemed train``: its files, its state (new/finished/unfinished/foreign), the checks
before --resume/--force, the run record (``edgemed-run.json``) and the loss curves read from the Trainer's log
history.

A run folder holds::

    adapter/           adapter safetensors + adapter_config.json + the tokenizer
    edgemed-run.json   the exact config: base model (given and resolved), data, split, style, hyperparameters
    metrics.json       train/eval loss curves by step, eval loss before and after, seconds, steps, tokens
    lineage.json       what every later stage reads (edgemed.lineage)
    checkpoints/       Trainer checkpoints, for --resume

``metrics.json`` is written last: its presence marks a finished run.
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgemed.console import err_console
from edgemed.errors import EdgemedError
from edgemed.fsutil import atomic_dir, atomic_write_json, read_json
from edgemed.train.config import RESUMABLE

if TYPE_CHECKING:
    from edgemed.train.config import TrainConfig

RUN_CONFIG = "edgemed-run.json"

METRICS = "metrics.json"

ADAPTER = "adapter"

CHECKPOINTS = "checkpoints"

EVAL_BEFORE = "edgemed-eval-before.json"  # inside checkpoints/, so --resume keeps the step-0 eval loss


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
    """The run record of `run_dir` (exit 2 when there is none or it is corrupt)."""
    path = Path(run_dir) / RUN_CONFIG
    if not path.exists():
        raise EdgemedError(f"{run_dir} is not an edgemed run folder (no {RUN_CONFIG}); give the --out of a train run")
    return read_json(path, "run record", "re-run edgemed train with --force")


def check_out(out: Path, config: TrainConfig) -> str:
    """The state of `out` (see :func:`run_state`) when `config` may write there (--resume/--force), else exit 2."""
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


def check_resumable(recorded: dict[str, Any], current: dict[str, Any], out: Path) -> None:
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
    old_dev, new_dev = recorded.get("device") or {}, current.get("device") or {}
    if old_dev.get("device") == new_dev.get("device") and old_dev.get("dtype") != new_dev.get("dtype"):
        diffs.append(f"dtype ({old_dev.get('dtype')} -> {new_dev.get('dtype')}; pass --dtype {old_dev.get('dtype')})")
    if diffs:
        raise EdgemedError(
            f"--resume: {', '.join(diffs)} differ(s) from the run in {out}; resume with the recorded settings "
            f"(see {out / RUN_CONFIG}) or pass --force to start over"
        )


def model_signature(path: str) -> dict[str, Any]:
    """Architecture facts of a model folder (recorded in the run), to refuse adapters trained on another base."""
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(path)
    keys = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "intermediate_size", "vocab_size")
    return {k: getattr(cfg, k, None) for k in keys}


def run_record(config: TrainConfig, base_model: dict[str, Any], data: dict[str, Any], evaluation: dict[str, Any],
               prompt_style: str, device: dict[str, Any], examples: dict[str, int]) -> dict[str, Any]:
    """The run record (``edgemed-run.json``) of a run that is starting: status 'running'."""
    from edgemed.manifest import versions

    options = asdict(config)
    options["target_modules"] = list(config.target_modules)
    return {
        "schema": 1,
        "kind": "edgemed-lora-run",
        "status": "running",
        "base_model": base_model,
        "data": data,
        "eval": evaluation,
        "prompt_style": prompt_style,
        "lora": {"r": config.lora_r, "alpha": config.lora_alpha, "dropout": config.lora_dropout,
                 "target_modules": list(config.target_modules)},
        "options": options,
        "device": device,
        "examples": examples,
        "versions": versions(),
        "argv": sys.argv,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def last_checkpoint(work: Path) -> str | None:
    """The newest Trainer checkpoint under ``work/checkpoints`` (None when there is none yet)."""
    from transformers.trainer_utils import get_last_checkpoint

    folder = Path(work) / CHECKPOINTS
    return get_last_checkpoint(str(folder)) if folder.is_dir() else None


def resume_point(work: Path, record: dict[str, Any], main: bool) -> str | None:
    """The checkpoint --resume continues from (None: from step 0), after checking the settings match the run's."""
    check_resumable(read_run(work), record, work)
    checkpoint = last_checkpoint(work)
    if checkpoint is None and main:
        err_console.print(f"[yellow]{work} has no checkpoint yet; training from step 0")
    return checkpoint


def read_eval_before(work: Path) -> float | None:
    """The step-0 eval loss an interrupted run recorded (None when it has none)."""
    path = Path(work) / CHECKPOINTS / EVAL_BEFORE
    if not path.exists():
        return None
    return read_json(path, "step-0 eval loss", "re-run edgemed train with --force", want_object=True)["eval_loss"]


def write_eval_before(work: Path, loss: float) -> None:
    atomic_write_json(Path(work) / CHECKPOINTS / EVAL_BEFORE, {"step": 0, "eval_loss": loss})


def curves(log_history: list[dict[str, Any]]) -> tuple[list[dict], list[dict]]:
    """(train loss curve, eval loss curve) from the Trainer's log history."""
    train, evals = [], {}
    for entry in log_history:
        if "loss" in entry:
            train.append({"step": entry["step"], "loss": entry["loss"], "learning_rate": entry.get("learning_rate"),
                          "grad_norm": entry.get("grad_norm"), "epoch": entry.get("epoch")})
        if "eval_loss" in entry:
            evals[entry["step"]] = entry["eval_loss"]
    return train, [{"step": s, "loss": v} for s, v in sorted(evals.items())]


def step_of(checkpoint: str | None) -> int:
    """The step of a ``checkpoint-N`` folder (0 for None or another name)."""
    if not checkpoint:
        return 0
    with contextlib.suppress(ValueError):
        return int(Path(checkpoint).name.rsplit("-", 1)[-1])
    return 0


def save_finished(work: Path, trainer: Any, tokenizer: Any, record: dict[str, Any], metrics: dict[str, Any]) -> None:
    """Write the adapter, the finished run record and, last (it marks the run finished), metrics.json."""
    unwrapped = trainer.accelerator.unwrap_model(trainer.model)
    with atomic_dir(Path(work) / ADAPTER, force=True) as tmp:
        unwrapped.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    record.update(status="finished", finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"), steps=metrics["steps"],
                  throughput=metrics["throughput"])
    atomic_write_json(Path(work) / RUN_CONFIG, record)
    atomic_write_json(Path(work) / METRICS, metrics)
