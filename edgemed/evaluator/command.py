"""What ``edgemed eval`` does, from a validated :class:`EvalConfig` to the results it shows and writes: resolve the
artifact, read the questions (and the reference run), score them in the artifact's runtime, compare, and write
results.json, predictions.jsonl and sweep.json atomically. The CLI module only builds the config and prints."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgemed.console import err_console
from edgemed.errors import EdgemedError
from edgemed.evaluator.config import EvalConfig
from edgemed.fsutil import atomic_write_json, atomic_write_text


@dataclass
class EvalOutcome:
    """One ``edgemed eval``: results.json's body, the predictions (predictions.jsonl), the sweep (or None)."""

    results: dict[str, Any]
    predictions: list[dict[str, Any]]
    sweep: dict[str, Any] | None


def resolve_artifact(artifact: str) -> Path:
    """An artifact folder, model folder or .gguf file as given, else a model alias built into the cache."""
    path = Path(artifact).expanduser()
    if path.exists():
        from edgemed.manifest import check_artifact

        check_artifact(path)  # the manifest against its files (format, hashes, GGUF type): exit 2 before scoring
        return path
    from edgemed.models import resolve_model

    resolved = resolve_model(artifact)  # raises a did-you-mean error for unknown names
    if not Path(resolved).exists():
        raise EdgemedError(
            f"'{artifact}' is a hub id; edgemed eval reads local artifacts only: download it first "
            "(huggingface-cli download) or give an exported artifact folder, model folder or .gguf file"
        )
    return Path(resolved)


def run_eval(artifact: str, config: EvalConfig) -> EvalOutcome:
    """Validate the config, score the artifact on its questions, and compare with the reference run if given."""
    from edgemed.lineage import read_lineage, scoring_questions
    from edgemed.resources import resolved

    config.validate()
    where = resolved(config.threads, config.device)  # one resolution for eval, bench and pipeline
    path = resolve_artifact(artifact)
    questions, data_info = scoring_questions(
        config.data, config.split, {str(path): read_lineage(path)}, include_trained=config.include_trained,
        cop_base=config.cop_base, skip_bad_rows=config.skip_bad_rows, limit=config.limit,
    )
    ref_preds = ref_path = None
    if config.reference is not None:
        from edgemed.evaluator.compare import load_predictions

        ref_preds, ref_path = load_predictions(config.reference)
    if data_info.get("selection"):
        err_console.print(f"[dim]{data_info['selection']}: {len(questions)} questions[/dim]")
    result, sweep_result, int8 = _score(path, questions, config, where)
    results: dict[str, Any] = {"artifact": str(path), "artifact_arg": artifact, **result.to_dict(), "data": data_info}
    if ref_preds is not None:
        from edgemed.evaluator.analysis import test_size_plan
        from edgemed.evaluator.compare import compare

        cmp = compare(ref_preds, result.predictions)
        cmp["reference"] = str(ref_path)
        results["comparison"] = cmp
        results["metrics"]["test_size"] = test_size_plan(result.accuracy, cmp["discordant_rate"])
    if int8 is not None:
        results["int8_kernel_check"] = int8
    selective = _selective(path, result.predictions, config, data_info, result.config.get("prompt_style"))
    if selective is not None:
        results["selective"] = selective
    from edgemed.sysinfo import environment

    results.update(resources=where, predictions_file="predictions.jsonl", environment=environment())
    if sweep_result is not None:
        sweep_result = {"artifact": str(path), "data": data_info, **sweep_result}
    return EvalOutcome(results, result.predictions, sweep_result)


def _selective(path: Path, predictions: list[dict[str, Any]], config: EvalConfig,
               data_info: dict[str, Any], prompt_style: str | None) -> dict[str, Any] | None:
    """The abstention threshold calibrated on these (evaluation-side) questions, tied to the artifact's sha256 and
    to the prompt style its probabilities were read with."""
    from edgemed.artifact_digest import artifact_sha256
    from edgemed.evaluator.selective import selective_block

    block = selective_block(predictions, config.target_error, config.target_coverage)
    if block is None:
        return None
    calibrated_on = {k: data_info.get(k) for k in ("source", "split", "selection", "questions",
                                                   "trained_questions_included")}
    return {"artifact_sha256": artifact_sha256(path), "prompt_style": prompt_style, "calibrated_on": calibrated_on,
            **block}


def _score(path: Path, questions, config: EvalConfig, where: dict[str, Any]):
    """(EvalResult, sweep result or None, int8 kernel check or None) of the artifact on `questions`."""
    from edgemed.evaluator.run import evaluate as run_eval
    from edgemed.evaluator.sweep import sweep as run_sweep
    from edgemed.lineage import prompt_style_for
    from edgemed.runtimes.base import open_runtime

    options = config.runtime_options(path)
    with open_runtime(path, threads=where["threads"], device=where["device"], requested_device=config.device,
                      **options) as runtime:
        style, source = ((config.prompt_style, "--prompt-style") if config.prompt_style
                         else prompt_style_for(path, runtime.chat_template))
        result = run_eval(runtime, questions, scoring=config.scoring, style=style, batch_size=config.batch_size,
                          show_progress=config.progress, **config.generation)
        result.config["prompt_style_source"] = source
        int8 = _int8_check(path, runtime, style, where["threads"])
        sweep_result = None
        if config.sweep:
            sweep_result = run_sweep(
                runtime, questions, temperatures=config.sweep_temperatures, max_new_tokens=config.sweep_max_new_tokens,
                repeats=config.sweep_repeats, style=style, top_p=config.top_p if config.top_p is not None else 1.0,
                seed=config.seed, show_progress=config.progress,
            )
    return result, sweep_result, int8


def _int8_check(path: Path, runtime, style: str, threads: int | None) -> dict[str, Any] | None:
    """Warn when an int8 artifact's weights can saturate this CPU's kernel, and measure what that costs here."""
    risk = (runtime.info() or {}).get("int8_saturation_risk")
    if not risk:
        return None
    from edgemed.int8_kernels import check_here

    err_console.print(f"warning: {risk}", style="yellow", markup=False, highlight=False)
    check = {"risk": risk, **check_here(path, runtime, style, threads)}
    if check["measured"]:
        verdict = "within" if check["within_tolerance"] else "BEYOND"
        at_export = check["max_abs_delta_at_export"]
        err_console.print(f"on this CPU: max |delta log p| {check['max_abs_delta']:.3g} against {check['against']} "
                          f"on {check['prompts']} verification prompts, {verdict} the tolerance {check['tolerance']:g}"
                          + (f" (at export: {at_export:.3g})" if at_export is not None else ""),
                          style="yellow", markup=False, highlight=False)
    else:
        err_console.print(f"not measured here: {check['why']}", style="yellow", markup=False, highlight=False)
    return check


def write_outcome(out: Path, outcome: EvalOutcome) -> None:
    """predictions.jsonl, sweep.json (if swept), then results.json, each written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in outcome.predictions)
    atomic_write_text(out / "predictions.jsonl", lines)
    if outcome.sweep is not None:
        atomic_write_json(out / "sweep.json", outcome.sweep)
    atomic_write_json(out / "results.json", outcome.results)
