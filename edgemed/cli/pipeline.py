"""``edgemed pipeline``: train -> merge -> export -> bench on one model, resumable."""

from __future__ import annotations

from pathlib import Path

from edgemed.models import DEFAULT_MODEL
from edgemed.train.config import TrainingFlags


def pipeline(
    model: str = DEFAULT_MODEL,
    data: str = "sample",
    out: Path = Path("runs/pipeline"),
    max_steps: int = 10,
    eval_data: str | None = None,
    limit: int | None = None,
    formats: list[str] | None = None,
    bench_formats: list[str] | None = None,
    threads: int | None = None,
    repetitions: int = 3,
    n_gen: int = 64,
    budget: Path | None = None,
    seed: int = 0,
    force: bool = False,
    tune: list[str] | None = None,
    training: TrainingFlags = TrainingFlags(),
) -> int:
    """Train a LoRA adapter, merge it, export every format and benchmark them all (resumable).

    With no options this runs on the embedded defaults (SmolLM2-135M-Instruct, the bundled sample) and
    writes everything under runs/pipeline. Re-running skips the steps already finished with the same settings.
    The training options --device, --dtype, --qlora, --batch-size, --grad-accum, --lora-r and --eval-limit are
    edgemed train's (a change of any of them retrains).

    Args:
        model: model alias (smollm2-135m, tiny-random, llama32-1b-shape), local folder or hub id
            (e.g. meta-llama/Llama-3.2-1B-Instruct).
        data: training data: 'sample', a local MedMCQA-schema file, or a hub id (openlifescienceai/medmcqa).
        out: folder for the run, the merged model, the artifacts and the bench results.
        max_steps: LoRA training steps (on the bundled sample 10 take the eval loss from 0.374 to 0.203, 20 to
            0.193 in twice the training time).
        eval_data: separate evaluation source (e.g. a validation file); default: the held-out split of --data.
        limit: number of evaluation questions scored per artifact in the bench (default: all held-out ones).
        formats: export formats (default: every format whose extras are installed); 'ladder' names llama.cpp's
            type ladder (gguf-f16, q2_k ... q8_0, and gguf-<type>-imatrix for each type that takes a matrix).
        bench_formats: exported formats the bench step measures, or 'all' (default: every exported one, except on a
            machine without a CUDA GPU the bitsandbytes formats, which run on a CPU only through a fallback: they are
            exported and verified, and bench.md says they were left out).
        threads: CPU threads for training, export checks and every benchmarked runtime (default: all cores).
        repetitions: repetitions of each bench throughput test (pp512, tg) per artifact.
        n_gen: tokens of the bench's generation test (tg); edgemed bench defaults to llama-bench's 128.
        budget: TOML budgets file; a broken budget makes the command exit 1.
        seed: seed for the train/eval split and training.
        force: redo every step even when it finished earlier with the same settings.
        tune: run edgemed tune on the merged model instead of exporting --formats and benching them: its budgets
            and options as KEY=VALUE (e.g. max-kld=0.19,objective=size; a list value takes ';': runtimes=gguf;onnx);
            results in OUT/tune, exit 1 when no candidate meets the budgets.
    """
    from edgemed.pipeline import PipelineConfig, run_pipeline

    return run_pipeline(PipelineConfig(
        model=model, data=data, out=Path(out), max_steps=max_steps, eval_data=eval_data, limit=limit, formats=formats,
        bench_formats=bench_formats, threads=threads, repetitions=repetitions, n_gen=n_gen, budget=budget,
        seed=seed, force=force, tune=tune, training=training))
