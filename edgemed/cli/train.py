"""``edgemed train``: LoRA fine-tuning with answer-only loss, dynamic padding, checkpoints and --resume."""

from __future__ import annotations

from pathlib import Path

from edgemed.console import console
from edgemed.fsutil import check_output_dir
from edgemed.models import DEFAULT_MODEL
from edgemed.registry import require_train
from edgemed.train.config import TrainConfig

# How to go on after an interruption (edgemed.cli.main prints it).
RESUME = "re-run the same command with --resume to continue from the last checkpoint"


def train(
    model: str = DEFAULT_MODEL,
    data: str = "sample",
    out: Path = Path("runs/train"),
    config: TrainConfig = TrainConfig(),
) -> int:
    """Fine-tune a LoRA adapter on MedMCQA-schema questions (loss on the answer tokens only).

    Writes RUN_DIR/adapter (adapter + tokenizer), edgemed-run.json (exact config), metrics.json (loss curves,
    eval loss before/after), lineage.json (prompt style, split, train/eval ids: carried into every artifact) and
    checkpoints/. For several GPUs run the same command under accelerate:
    'accelerate launch -m edgemed.cli.main train ...' (the Trainer distributes; only rank 0 writes).

    Args:
        model: model alias (smollm2-135m, tiny-random, llama32-1b-shape), local folder or hub id
            (e.g. meta-llama/Llama-3.2-1B-Instruct).
        data: training data: 'sample', a local MedMCQA-schema .jsonl/.json/.parquet/.csv, or a hub id.
        out: run folder to write (RUN_DIR).
    """
    from edgemed.train import recipe

    require_train("edgemed train")

    check_output_dir(Path(out), "--out")
    from edgemed.devices import pick_device

    # --device cuda without CUDA, a dtype or --qlora the device cannot train in: exit 2 now, not after the data loads
    pick_device(config.device, config.dtype, "train", qlora=config.qlora)

    metrics = recipe.train(model, data, Path(out), config)
    console.print(
        f"eval loss {metrics['eval_loss_before']:.4f} -> {metrics['eval_loss_after']:.4f}, "
        f"{metrics['steps']} steps, {metrics['tokens']} tokens, {metrics['train_seconds']:.1f} s; run in {out}"
    )
    return 0
