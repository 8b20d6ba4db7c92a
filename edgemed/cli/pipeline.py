"""``edgemed pipeline``: train -> merge -> export -> bench on one model, resumable."""

from __future__ import annotations

from pathlib import Path

from edgemed.errors import BudgetBroken, CheckFailed
from edgemed.models import DEFAULT_MODEL


def pipeline(
    model: str = DEFAULT_MODEL,
    data: str = "sample",
    out: Path = Path("runs/pipeline"),
    max_steps: int = 20,
    eval_data: str | None = None,
    limit: int | None = None,
    formats: list[str] | None = None,
    threads: int | None = None,
    repetitions: int = 3,
    n_gen: int = 64,
    budget: Path | None = None,
    seed: int = 0,
    force: bool = False,
    tune: list[str] | None = None,
) -> int:
    """Train a LoRA adapter, merge it, export every format and benchmark them all (resumable).

    With no options this runs on the embedded defaults (SmolLM2-135M-Instruct, the bundled sample) and
    writes everything under runs/pipeline. Re-running skips the steps already finished with the same settings.

    Args:
        model: model alias (smollm2-135m, tiny-random), local folder or hub id (e.g. meta-llama/Llama-3.2-1B-Instruct).
        data: training data: 'sample', a local MedMCQA-schema file, or a hub id (openlifescienceai/medmcqa).
        out: folder for the run, the merged model, the artifacts and the bench results.
        max_steps: LoRA training steps.
        eval_data: separate evaluation source (e.g. a validation file); default: the held-out split of --data.
        limit: number of evaluation questions scored per artifact in the bench (default: all held-out ones).
        formats: export formats (default: every format whose extras are installed); 'ladder' names llama.cpp's
            type ladder (gguf-f16, q2_k ... q8_0, and gguf-<type>-imatrix for each type that takes a matrix).
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
    from edgemed.bench.budget import load_budgets
    from edgemed.bench.config import BenchConfig
    from edgemed.pipeline import Step, run_steps

    out = Path(out)
    from edgemed.fsutil import check_output_dir

    check_output_dir(out, "--out")
    run_dir, merged_dir, artifacts_dir, bench_dir = out / "train", out / "merged", out / "artifacts", out / "bench"
    # the bench's settings and budgets are checked now, not after training and exporting
    bench_config = BenchConfig(limit=limit,  # questions: the evaluation side the train step records
                               threads=threads, repetitions=repetitions, n_gen=n_gen, budget=budget, resume=True,
                               out=bench_dir, latency_prompts=-(-20 // max(repetitions, 1))).validate()  # >= 20
    if budget is not None:
        load_budgets(budget)
    if formats:  # an unknown format name is refused now, not after training and merging
        from edgemed.registry import expand_formats, get_format

        for name in expand_formats(formats) or []:  # named sets too: --formats ladder
            get_format(name)

    tune_config = None
    if tune:  # checked now, not after training and merging
        from edgemed.bench.tune_config import TuneConfig
        from edgemed.errors import EdgemedError

        if formats:
            raise EdgemedError("--tune searches the formats itself; drop --formats (or --tune)")
        tune_config = TuneConfig.from_pairs(tune, out=out / "tune", threads=threads, limit=limit, resume=True)

    def train_step() -> dict:
        from edgemed.registry import require_train

        require_train("the pipeline's train step")
        from edgemed.train import recipe
        from edgemed.train.config import TrainConfig

        config = TrainConfig(max_steps=max_steps, seed=seed, eval_data=eval_data, threads=threads, force=True,
                             eval_steps=max(1, max_steps // 2))  # loss curve: start, middle, end
        metrics = recipe.train(model, data, run_dir, config)
        return {k: metrics.get(k) for k in ("eval_loss_before", "eval_loss_after", "train_seconds") if k in metrics}

    def merge_step() -> dict:
        from edgemed.registry import require_train

        require_train("the pipeline's merge step")
        from edgemed.merging import merge_adapter

        return merge_adapter(adapter=run_dir, out=merged_dir, force=True)

    def export_step() -> dict:
        from edgemed.export.run import run_export

        results = run_export(merged_dir, formats, artifacts_dir, force=False, verify=True, threads=threads)
        statuses = {r["format"]: r["status"] for r in results}
        # a failed format is retried on the next run; the others are kept (export skips unchanged artifacts)
        return {"formats": statuses, "complete": "failed" not in statuses.values()}

    def bench_step() -> dict:
        from edgemed.bench.run import run_bench

        result = run_bench([artifacts_dir], bench_config)
        return {"exit_code": result.get("exit_code", 0)}

    def tune_step() -> dict:
        from edgemed.bench.tune import run_tune

        doc = run_tune(merged_dir, tune_config)
        return {"exit_code": doc["exit_code"], "choice": doc.get("choice"), "answer": doc["answer"]["text"]}

    common = {"model": model, "data": data, "seed": seed, "lineage": 1}  # runs before lineage.json: redone
    steps = [
        Step("train", run_dir / "metrics.json", {**common, "max_steps": max_steps, "eval_data": eval_data}, train_step),
        Step("merge", merged_dir / "edgemed-merge.json", common, merge_step),
        Step("export", artifacts_dir / "export.json", {**common, "formats": formats}, export_step),
        Step(
            "bench",
            bench_dir / "bench.json",
            {**common, "eval_data": eval_data, "limit": limit, "threads": threads, "repetitions": repetitions,
             "n_gen": n_gen, "budget": _file_fingerprint(budget)},
            bench_step,
        ),
    ]
    if tune_config is not None:  # tune in place of the fixed format list: export and bench are its own
        steps = [*steps[:2], Step("tune", out / "tune" / "tune.json", {**common, **tune_config.to_dict()}, tune_step)]
        state = run_steps(out, steps, force=force)
        if state["steps"]["tune"]["result"].get("exit_code", 0) == 1:
            raise BudgetBroken(f"no candidate meets the tune's budgets; see {out / 'tune' / 'tune.md'}")
        return 0
    state = run_steps(out, steps, force=force)
    code = state["steps"]["bench"]["result"].get("exit_code", 0)
    if code == 1:
        raise BudgetBroken(f"a budget was broken; see {bench_dir / 'bench.md'}")
    failed = [f for f, s in state["steps"]["export"]["result"]["formats"].items() if s == "failed"]
    if failed:
        where = artifacts_dir / "export.json"
        raise CheckFailed(f"export failed for {', '.join(failed)} (see {where}); re-run to retry them")
    return code


def _file_fingerprint(path: Path | None) -> str | None:
    if path is None:
        return None
    from edgemed.fsutil import sha256_file

    return f"{path}:{sha256_file(path)}" if Path(path).is_file() else str(path)
