"""The main job: train -> merge -> export every format -> bench, resumable step by step.

:class:`PipelineConfig` holds the job's settings (its fields are ``edgemed pipeline``'s flags); :func:`run_pipeline`
checks them all before any work, builds the steps (:func:`pipeline_steps`: train, merge, then export + bench, or tune
in their place) and runs them (:func:`edgemed.steps.run_steps`: each finished step recorded in ``pipeline.json`` with
a hash of its settings, skipped on a re-run while they are unchanged).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgemed.console import err_console
from edgemed.errors import BudgetBroken, CheckFailed, EdgemedError
from edgemed.fsutil import check_output_dir, sha256_file, try_json
from edgemed.models import DEFAULT_MODEL
from edgemed.registry import default_formats, expand_formats, get_format, require_train
from edgemed.steps import Step, run_steps
from edgemed.train.config import TrainingFlags

# What train, merge and export each import (about 8 s on 2 cores): imported once, before the first of them is forked
TORCH_STACK = ("torch", "transformers", "transformers.trainer", "peft")


def torch_stack() -> tuple[str, ...]:
    """What the parent imports before forking the train and merge steps: TORCH_STACK, less peft and the Trainer where
    torch is a CUDA (or ROCm) build. peft imports bitsandbytes, whose import reads every GPU's capability and so
    initialises CUDA, and a process forked from one that has initialised CUDA cannot use it."""
    try:
        import torch
    except ImportError:
        return TORCH_STACK
    if torch.version.cuda or getattr(torch.version, "hip", None):
        return ("torch", "transformers")
    return TORCH_STACK


@dataclass
class PipelineConfig:
    """The settings of one pipeline run: ``edgemed pipeline``'s flags (the training ones are TrainingFlags').

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

    model: str = DEFAULT_MODEL
    data: str = "sample"
    out: Path = Path("runs/pipeline")
    max_steps: int = 10
    eval_data: str | None = None
    limit: int | None = None
    formats: list[str] | None = None
    bench_formats: list[str] | None = None
    threads: int | None = None
    repetitions: int = 3
    n_gen: int = 64
    budget: Path | None = None
    seed: int = 0
    force: bool = False
    tune: list[str] | None = None
    training: TrainingFlags = field(default_factory=TrainingFlags)

    def __post_init__(self) -> None:
        self.out = Path(self.out)

    def train_config(self):
        """The train step's TrainConfig (its options checked when built)."""
        from edgemed.train.config import TrainConfig

        return TrainConfig(max_steps=self.max_steps, seed=self.seed, eval_data=self.eval_data, threads=self.threads,
                           force=True, eval_steps=self.max_steps,  # eval loss before and after (train loss: each step)
                           **asdict(self.training))

    def check_training(self) -> None:
        """The training options and the device and dtype they ask for (exit 2 where they cannot train here, or where
        this install lacks the train extra)."""
        from edgemed.devices import pick_device_unforked

        config = self.train_config()
        require_train("edgemed pipeline (its first step trains)")
        pick_device_unforked(config.device, config.dtype, "train", qlora=config.qlora)

    @property
    def run_dir(self) -> Path:
        return self.out / "train"

    @property
    def merged_dir(self) -> Path:
        return self.out / "merged"

    @property
    def artifacts_dir(self) -> Path:
        return self.out / "artifacts"

    @property
    def bench_dir(self) -> Path:
        return self.out / "bench"

    def export_config(self):
        """The export step's config: artifacts of an earlier merge are replaced, unchanged ones skipped (a failed
        format is retried on the next run); the GGUF chain overlaps the others where memory allows."""
        from edgemed.export.config import ExportConfig

        return ExportConfig(out=self.artifacts_dir, formats=self.formats, force=False, verify=True,
                            threads=self.threads, replace_stale=True, overlap=True)

    def bench_config(self):
        """The bench step's config, checked (its settings and budgets are refused now, not after training)."""
        from edgemed.bench.config import BenchConfig
        from edgemed.bench.measure.stats import factor_for_p95

        return BenchConfig(limit=self.limit,  # questions: the evaluation side the train step records
                           threads=self.threads, repetitions=self.repetitions, n_gen=self.n_gen, budget=self.budget,
                           resume=True, out=self.bench_dir,
                           latency_prompts=factor_for_p95(self.repetitions)).validate()  # p95 from >= 20

    def tune_config(self):
        """The tune step's config (None without --tune), checked now."""
        if not self.tune:
            return None
        from edgemed.bench.tune.config import TuneConfig

        if self.formats:
            raise EdgemedError("--tune searches the formats itself; drop --formats (or --tune)")
        return TuneConfig.from_pairs(self.tune, out=self.out / "tune", threads=self.threads, limit=self.limit,
                                     resume=True)

    def validate(self) -> tuple[Any, Any]:
        """Every check that needs no work, before any: the output folder, the bench's settings and budgets, the
        format names (named sets too: --formats ladder), the tune's options. (bench config, tune config or None)."""
        check_output_dir(self.out, "--out")
        self.check_training()
        bench = self.bench_config()
        if self.budget is not None:
            from edgemed.bench.gate.budget import load_budgets

            load_budgets(self.budget)
        formats = expand_formats(self.formats) if self.formats else default_formats()
        for name in formats:  # an unknown format name is refused now, not after training and merging
            get_format(name)
        if self.bench_formats and self.tune is not None:
            raise EdgemedError("--bench-formats chooses what the bench step measures; --tune has no bench step")
        if self.bench_formats and self.bench_formats != ["all"]:
            missing = [n for n in expand_formats(self.bench_formats) if n not in formats]
            if missing:
                raise EdgemedError(f"--bench-formats {', '.join(missing)}: not among the exported formats "
                                   f"({', '.join(formats)}); name exported ones, or 'all'")
        if self.tune is None:
            from edgemed.memory_plan import check_pipeline

            check_pipeline(self.model, formats)  # the merge and each export fit this machine's memory
        return bench, self.tune_config()


# --- the steps ------------------------------------------------------------------------------------------------
def train_step(c: PipelineConfig) -> dict[str, Any]:
    require_train("the pipeline's train step")
    from edgemed.train import recipe

    metrics = recipe.train(c.model, c.data, c.run_dir, c.train_config())
    return {k: metrics.get(k) for k in ("eval_loss_before", "eval_loss_after", "train_seconds") if k in metrics}


def merge_step(c: PipelineConfig) -> dict[str, Any]:
    require_train("the pipeline's merge step")
    from edgemed.merging import merge_adapter

    return merge_adapter(adapter=c.run_dir, out=c.merged_dir, force=True)


def export_step(c: PipelineConfig) -> dict[str, Any]:
    from edgemed.export.run import run_export

    doc = run_export(c.merged_dir, c.export_config())
    statuses = {r["format"]: r["status"] for r in doc["results"]}
    return {"formats": statuses, "complete": "failed" not in statuses.values()}


def bench_step(c: PipelineConfig, bench_config) -> dict[str, Any]:
    """Bench the artifacts this run's export step made or found up to date (export.json), never a folder left by
    an earlier run: a failed format's old folder or a format not asked for this time."""
    from edgemed.bench.run import run_bench
    from edgemed.export.run import SUMMARY

    summary = try_json(c.artifacts_dir / SUMMARY) or {}
    made = [r["format"] for r in summary.get("results", []) if r.get("status") in ("exported", "skipped")]
    if not made:
        raise CheckFailed(f"no artifact was exported (see {c.artifacts_dir / SUMMARY}); nothing to bench")
    chosen, left_out = bench_scope(c, made, bench_config.device)
    for name, why in left_out.items():
        err_console.print(f"[yellow]{name}: exported and verified, not benched: {why}[/yellow]")
    result = run_bench([c.artifacts_dir / name for name in chosen], bench_config, left_out=left_out)
    return {"exit_code": result.get("exit_code", 0), "artifacts": chosen, "left_out": left_out}


def bench_scope(c: PipelineConfig, made: list[str], device: str) -> tuple[list[str], dict[str, str]]:
    """(formats the bench step measures, {format: why not} for the others) among those exported (`made`): the ones
    named by --bench-formats ('all': every one); by default every one except, where the bench runs without a CUDA
    GPU, a format whose engine serves on a CPU only through a fallback (the registry's ``cpu_fallback``)."""
    from edgemed.resources import resolve_device

    if c.bench_formats:
        wanted = made if c.bench_formats == ["all"] else expand_formats(c.bench_formats)
        return [n for n in made if n in wanted], {}
    if resolve_device(device).startswith("cuda"):
        return list(made), {}
    left = {n: f"{get_format(n).cpu_fallback}; without a CUDA GPU its timings would describe that fallback. "
               f"Measure it anyway: --bench-formats all, or edgemed bench {c.artifacts_dir / n} --out DIR"
            for n in made if get_format(n).cpu_fallback}
    return [n for n in made if n not in left], left


def tune_step(c: PipelineConfig, tune_config) -> dict[str, Any]:
    from edgemed.bench.tune.run import run_tune

    doc = run_tune(c.merged_dir, tune_config)
    return {"exit_code": doc["exit_code"], "choice": doc.get("choice"), "answer": doc["answer"]["text"]}


def pipeline_steps(c: PipelineConfig, bench_config, tune_config=None) -> list[Step]:
    """train, merge, then export and bench (or, with a tune config, tune in their place: its own export and
    bench). Each step is keyed by the settings that change its output."""
    common = {"model": c.model, "data": c.data, "seed": c.seed, "lineage": 1}  # runs before lineage.json: redone
    steps = [
        Step("train", c.run_dir / "metrics.json",
             {**common, "max_steps": c.max_steps, "eval_data": c.eval_data, **asdict(c.training)},
             lambda: train_step(c), preload=torch_stack()),
        Step("merge", c.merged_dir / "edgemed-merge.json", common, lambda: merge_step(c), preload=torch_stack()),
    ]
    if tune_config is not None:
        return [*steps, Step("tune", c.out / "tune" / "tune.json", {**common, **tune_config.to_dict()},
                             lambda: tune_step(c, tune_config))]
    bench_settings = {**common, "eval_data": c.eval_data, "limit": c.limit, "threads": c.threads,
                      "bench_formats": c.bench_formats,
                      "repetitions": c.repetitions, "n_gen": c.n_gen, "budget": file_fingerprint(c.budget)}
    return [*steps,
            Step("export", c.artifacts_dir / "export.json", {**common, "formats": c.formats}, lambda: export_step(c)),
            Step("bench", c.bench_dir / "bench.json", bench_settings, lambda: bench_step(c, bench_config))]


def run_pipeline(c: PipelineConfig) -> dict[str, Any]:
    """Check every setting, run the steps (skipping those done earlier with the same settings), then answer: the
    state it wrote (pipeline.json; :func:`exit_code` reads the bench step's code from it), or exit 1 (BudgetBroken /
    CheckFailed) for a broken budget, a tune without a fitting candidate or a failed export."""
    bench_config, tune_config = c.validate()
    state = run_steps(c.out, pipeline_steps(c, bench_config, tune_config), force=c.force)
    if tune_config is not None:
        result = state["steps"]["tune"]["result"]
        if result.get("exit_code", 0) == 1:
            said = "no candidate meets the tune's budgets" if not result.get("choice") else \
                "the tune's answer is not established (a contender failed)"
            raise BudgetBroken(f"{said}; see {c.out / 'tune' / 'tune.md'}")
        return state
    if exit_code(c, state) == 1:
        raise BudgetBroken(f"a budget was broken; see {c.bench_dir / 'bench.md'}")
    failed = [f for f, s in state["steps"]["export"]["result"]["formats"].items() if s == "failed"]
    if failed:
        where = c.artifacts_dir / "export.json"
        raise CheckFailed(f"export failed for {', '.join(failed)} (see {where}); re-run to retry them")
    return state


def exit_code(c: PipelineConfig, state: dict[str, Any]) -> int:
    """The pipeline's exit code from its state: the bench step's (0 with --tune: a tune that found nothing raises)."""
    return 0 if c.tune else int(state["steps"]["bench"]["result"].get("exit_code", 0))


def file_fingerprint(path: Path | None) -> str | None:
    """A settings value for a file: its path and sha256 (a changed budget file re-runs the bench)."""
    if path is None:
        return None
    return f"{path}:{sha256_file(path)}" if Path(path).is_file() else str(path)
