"""``edgemed eval``: accuracy (with intervals, calibration, failures) of any artifact on MedMCQA."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from edgemed.errors import EdgemedError


def resolve_artifact(artifact: str) -> Path:
    """An artifact folder, model folder or .gguf file as given, else a model alias built into the cache."""
    path = Path(artifact).expanduser()
    if path.exists():
        from edgemed.manifest import check_known_format

        check_known_format(path)  # an unknown format or schema in edgemed.json: exit 2 before scoring
        return path
    from edgemed.models import resolve_model

    resolved = resolve_model(artifact)  # raises a did-you-mean error for unknown names
    if not Path(resolved).exists():
        raise EdgemedError(
            f"'{artifact}' is a hub id; edgemed eval reads local artifacts only: download it first "
            "(huggingface-cli download) or give an exported artifact folder, model folder or .gguf file"
        )
    return Path(resolved)


def evaluate(
    artifact: str,
    data: str | None = None,
    split: str | None = None,
    include_trained: bool = False,
    limit: int | None = None,
    scoring: Literal["logprob", "generate", "legacy"] = "logprob",
    batch_size: int = 8,
    threads: int | None = None,
    device: str = "auto",
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto",
    prompt_style: Literal["plain", "chatml", "llama3"] | None = None,
    max_new_tokens: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    seed: int = 0,
    reference: Path | None = None,
    sweep: bool = False,
    sweep_temperatures: list[float] | None = None,
    sweep_max_new_tokens: list[int] | None = None,
    sweep_repeats: int = 3,
    cop_base: Literal["auto", "0", "1"] = "auto",
    skip_bad_rows: bool = False,
    examples: int = 3,
    progress: bool = True,
    out: Path | None = None,
) -> int:
    """Evaluate an artifact on MedMCQA: accuracy with a 95% Wilson interval, calibration, failures.

    Args:
        artifact: exported artifact folder (edgemed.json), model folder, .gguf file, or a model alias
            (tiny-random, smollm2-135m).
        data: questions to score: 'sample', a .jsonl/.json/.parquet/.csv file or folder, or a hub id (default: the
            evaluation side recorded when the artifact was trained; the whole sample for a model edgemed never trained).
        split: split to read from a folder or hub source (default: the recorded one, else validation).
        include_trained: score questions the artifact was trained on (refused by default: they inflate accuracy).
        limit: score only the first N questions.
        scoring: logprob (letter log-probs after 'Answer:', deterministic), generate (greedy text, strict letter
            parse) or legacy (the notebook's sampled text + substring judge, for comparison only).
        batch_size: prompts per forward pass in logprob scoring.
        threads: CPU threads of the runtime (default: physical cores, as in edgemed bench).
        device: auto, cpu, cuda, cuda:N or mps (auto: a CUDA GPU if an installed engine sees one, for every runtime).
        dtype: transformers artifacts only: weights dtype (auto = float32 on CPU; bfloat16 is much faster on CPUs
            with AVX512-BF16/AMX, with slightly different log-probs).
        prompt_style: override the prompt style (default: recorded at training/export, else the chat template).
        max_new_tokens: generate/legacy: tokens to generate (defaults 12 / 100).
        temperature: generate/legacy: sampling temperature (defaults 0 / 0.7).
        top_p: generate/legacy: nucleus sampling mass (default 1.0).
        seed: sampling seed (each question's seed derives from it and its id).
        reference: an earlier eval's predictions.jsonl, results.json or --out folder to compare with.
        sweep: also run the generation-parameter sweep (writes sweep.json).
        sweep_temperatures: sweep temperatures (default 0 0.3 0.7 1.0).
        sweep_max_new_tokens: sweep max_new_tokens values (default 8 32).
        sweep_repeats: generations per question and setting in the sweep.
        cop_base: label convention of 'cop': auto, 0 (Hugging Face copy, 0..3) or 1 (original release, 1..4).
        skip_bad_rows: skip invalid rows (counted in results.json) instead of refusing the data.
        examples: failure examples to print per kind (results.json keeps 5).
        progress: show a progress bar.
        out: folder for results.json, predictions.jsonl (and sweep.json); without it nothing is written.
    """
    from edgemed.console import console, err_console

    if limit is not None and limit < 1:
        raise EdgemedError(f"--limit must be at least 1, not {limit}")
    if batch_size < 1:
        raise EdgemedError(f"--batch-size must be at least 1, not {batch_size}")
    sweep_temperatures = sweep_temperatures or [0.0, 0.3, 0.7, 1.0]
    sweep_max_new_tokens = sweep_max_new_tokens or [8, 32]
    if sweep:  # checked now, not after the whole evaluation
        from edgemed.evaluator.sweep import check_sweep

        check_sweep(sweep_temperatures, sweep_max_new_tokens, sweep_repeats)
    if out is not None:
        from edgemed.fsutil import check_output_dir

        check_output_dir(Path(out), "--out")
    from edgemed.resources import resolved

    where = resolved(threads, device)  # one resolution for eval, bench and pipeline
    gen = {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p, "seed": seed}
    if scoring == "logprob" and any(v is not None for v in (max_new_tokens, temperature, top_p)):
        raise EdgemedError("--max-new-tokens/--temperature/--top-p apply to generate and legacy scoring only")
    import math

    if temperature is not None and not (temperature >= 0 and math.isfinite(temperature)):
        raise EdgemedError(f"--temperature must be a finite number >= 0, not {temperature}")
    if top_p is not None and not 0 < top_p <= 1:
        raise EdgemedError(f"--top-p must be in (0, 1], not {top_p}")
    if max_new_tokens is not None and max_new_tokens < 1:
        raise EdgemedError(f"--max-new-tokens must be at least 1, not {max_new_tokens}")
    if examples < 0:
        raise EdgemedError(f"--examples must be 0 or more, not {examples}")

    path = resolve_artifact(artifact)
    from edgemed.lineage import read_lineage, scoring_questions

    questions, data_info = scoring_questions(
        data, split, {str(path): read_lineage(path)}, include_trained=include_trained, cop_base=cop_base,
        skip_bad_rows=skip_bad_rows, limit=limit,
    )
    ref_preds = None
    if reference is not None:
        from edgemed.evaluator.compare import load_predictions

        ref_preds, ref_path = load_predictions(reference)

    from edgemed.evaluator.compare import compare
    from edgemed.evaluator.report import render, sweep_table
    from edgemed.evaluator.run import evaluate as run_eval
    from edgemed.evaluator.sweep import sweep as run_sweep
    from edgemed.lineage import prompt_style_for
    from edgemed.runtimes.base import open_runtime
    from edgemed.sysinfo import environment

    if data_info.get("selection"):
        err_console.print(f"[dim]{data_info['selection']}: {len(questions)} questions[/dim]")
    options = {}
    if dtype != "auto":
        from edgemed.manifest import detect_runtime

        fmt, runtime_name = detect_runtime(path)
        if runtime_name != "transformers" or fmt.startswith("bnb"):
            raise EdgemedError(f"--dtype applies to plain transformers models only, not {fmt}; drop --dtype")
        options["dtype"] = dtype
    with open_runtime(path, threads=where["threads"], device=where["device"], requested_device=device,
                      **options) as runtime:
        style, source = ((prompt_style, "--prompt-style") if prompt_style
                         else prompt_style_for(path, runtime.chat_template))
        result = run_eval(
            runtime, questions, scoring=scoring, style=style, batch_size=batch_size, show_progress=progress,
            **({k: v for k, v in gen.items() if v is not None} if scoring != "logprob" else {}),
        )
        result.config["prompt_style_source"] = source
        int8 = _int8_check(path, runtime, style, where["threads"])
        sweep_result = None
        if sweep:
            sweep_result = run_sweep(
                runtime, questions,
                temperatures=sweep_temperatures, max_new_tokens=sweep_max_new_tokens,
                repeats=sweep_repeats, style=style, top_p=top_p if top_p is not None else 1.0, seed=seed,
                show_progress=progress,
            )
            sweep_result = {"artifact": str(path), "data": data_info, **sweep_result}

    results: dict[str, Any] = {"artifact": str(path), "artifact_arg": artifact, **result.to_dict(), "data": data_info}
    if ref_preds is not None:
        from edgemed.evaluator.analysis import test_size_plan

        cmp = compare(ref_preds, result.predictions)
        cmp["reference"] = str(ref_path)
        results["comparison"] = cmp
        results["metrics"]["test_size"] = test_size_plan(result.accuracy, cmp["discordant_rate"])
    if int8 is not None:
        results["int8_kernel_check"] = int8
    results["resources"] = where
    results["predictions_file"] = "predictions.jsonl"
    results["environment"] = environment()

    render(results, console, examples)
    if sweep_result is not None:
        console.print(sweep_table(sweep_result))
    if out is not None:
        _write(Path(out), results, result.predictions, sweep_result)
        console.print(f"wrote {Path(out) / 'results.json'} and predictions.jsonl"
                      + (" and sweep.json" if sweep_result else ""))
    else:
        err_console.print("[dim]nothing written: pass --out DIR to keep results.json and predictions.jsonl[/dim]")
    return 0


def _int8_check(path: Path, runtime, style: str, threads: int | None) -> dict[str, Any] | None:
    """Warn when an int8 artifact's weights can saturate this CPU's kernel, and measure what that costs here."""
    risk = (runtime.info() or {}).get("int8_saturation_risk")
    if not risk:
        return None
    from edgemed.console import err_console
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


def _write(out: Path, results: dict, predictions: list[dict], sweep_result: dict | None) -> None:
    from edgemed.fsutil import atomic_write_json, atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in predictions)
    atomic_write_text(out / "predictions.jsonl", lines)
    if sweep_result is not None:
        atomic_write_json(out / "sweep.json", sweep_result)
    atomic_write_json(out / "results.json", results)
