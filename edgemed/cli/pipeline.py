"""``edgemed pipeline``: train -> merge -> export -> bench on one model, resumable."""

from __future__ import annotations

from edgemed.pipeline import PipelineConfig, exit_code, run_pipeline


def pipeline(config: PipelineConfig) -> int:
    """Train a LoRA adapter, merge it, export every format and benchmark them all (resumable).

    With no options this runs on the embedded defaults (SmolLM2-135M-Instruct, the bundled sample) and
    writes everything under runs/pipeline. Re-running skips the steps already finished with the same settings.
    The training options --device, --dtype, --qlora, --batch-size, --grad-accum, --lora-r and --eval-limit are
    edgemed train's (a change of any of them retrains).
    """
    return exit_code(config, run_pipeline(config))
