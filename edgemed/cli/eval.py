"""``edgemed eval``: accuracy (with intervals, calibration, failures) of any artifact on MedMCQA.

Parses (the flags are :class:`EvalConfig`'s fields), calls :func:`edgemed.evaluator.command.run_eval`, prints;
the checks are ``EvalConfig.validate()``'s."""

from __future__ import annotations

from pathlib import Path

from edgemed.console import console, err_console
from edgemed.evaluator.command import resolve_artifact  # noqa: F401 - also importable from here
from edgemed.evaluator.config import EvalConfig


def evaluate(artifact: str, config: EvalConfig) -> int:
    """Evaluate an artifact on MedMCQA: accuracy with a 95% Wilson interval, calibration, failures. "The
    notebook" is edgemed's reference notebook: LoRA on meta-llama/Llama-3.2-1B-Instruct, judged on sampled text
    (docs/evaluation.md).

    Args:
        artifact: exported artifact folder (edgemed.json), model folder, .gguf file, or a model alias
            (tiny-random, smollm2-135m).
    """
    from edgemed.evaluator.command import run_eval, write_outcome
    from edgemed.evaluator.report import render, sweep_table

    outcome = run_eval(artifact, config)
    render(outcome.results, console, config.examples)
    if outcome.sweep is not None:
        console.print(sweep_table(outcome.sweep))
    from edgemed.evaluator.selective import describe

    if outcome.results.get("selective"):
        console.print(describe(outcome.results["selective"]), markup=False)
    if config.out is None:
        err_console.print("[dim]nothing written: pass --out DIR to keep results.json and predictions.jsonl[/dim]")
        return 0
    write_outcome(Path(config.out), outcome)
    console.print(f"wrote {Path(config.out) / 'results.json'} and predictions.jsonl"
                  + (" and sweep.json" if outcome.sweep else ""))
    return 0
