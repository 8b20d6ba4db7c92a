"""The run folder of ``edgemed train``: its files, its state (new/finished/unfinished/foreign), the checks
before --resume/--force, and the loss curves read from the Trainer's log history."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgemed.errors import EdgemedError
from edgemed.train_config import RESUMABLE

if TYPE_CHECKING:
    from edgemed.train_config import TrainConfig

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
    path = Path(run_dir) / RUN_CONFIG
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise EdgemedError(
            f"{run_dir} is not an edgemed run folder (no {RUN_CONFIG}); give the --out of a train run"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
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
    old_dev, new_dev = recorded.get("device") or {}, current.get("device") or {}
    if old_dev.get("device") == new_dev.get("device") and old_dev.get("dtype") != new_dev.get("dtype"):
        diffs.append(f"dtype ({old_dev.get('dtype')} -> {new_dev.get('dtype')}; pass --dtype {old_dev.get('dtype')})")
    if diffs:
        raise EdgemedError(
            f"--resume: {', '.join(diffs)} differ(s) from the run in {out}; resume with the recorded settings "
            f"(see {out / RUN_CONFIG}) or pass --force to start over"
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


def _step_of(checkpoint: str | None) -> int:
    if not checkpoint:
        return 0
    with contextlib.suppress(ValueError):
        return int(Path(checkpoint).name.rsplit("-", 1)[-1])
    return 0

