"""The main job: train -> merge -> export every format -> bench, resumable step by step.

Each finished step is recorded in ``pipeline.json`` with a hash of the settings it ran with; a re-run
skips a step whose record, settings and output are unchanged, and redoes it (and what follows) otherwise.

:class:`PipelineConfig` holds the job's settings; :func:`run_pipeline` checks them all before any work, builds the
steps (:func:`pipeline_steps`: train, merge, then export + bench, or tune in their place) and runs them
(:func:`run_steps`). ``edgemed pipeline`` (edgemed.cli.pipeline) only parses the flags into a config.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgemed.console import err_console
from edgemed.errors import BudgetBroken, CheckFailed, EdgemedError
from edgemed.fsutil import atomic_write_json, try_json
from edgemed.models import DEFAULT_MODEL
from edgemed.process.child import call_in_child
from edgemed.train.config import TrainingFlags

STATE = "pipeline.json"
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
    """The settings of one pipeline run (``edgemed pipeline``'s flags; see its help for each)."""

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
        from edgemed.registry import require_train

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

    def bench_config(self):
        """The bench step's config, checked (its settings and budgets are refused now, not after training)."""
        from edgemed.bench.config import BenchConfig

        return BenchConfig(limit=self.limit,  # questions: the evaluation side the train step records
                           threads=self.threads, repetitions=self.repetitions, n_gen=self.n_gen, budget=self.budget,
                           resume=True, out=self.bench_dir,
                           latency_prompts=-(-20 // max(self.repetitions, 1))).validate()  # >= 20 prompts

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
        from edgemed.fsutil import check_output_dir

        check_output_dir(self.out, "--out")
        self.check_training()
        bench = self.bench_config()
        if self.budget is not None:
            from edgemed.bench.gate.budget import load_budgets

            load_budgets(self.budget)
        from edgemed.registry import FORMATS, expand_formats, get_format

        formats = expand_formats(self.formats) if self.formats else [n for n, s in FORMATS.items() if s.default]
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
    from edgemed.registry import require_train

    require_train("the pipeline's train step")
    from edgemed.train import recipe

    metrics = recipe.train(c.model, c.data, c.run_dir, c.train_config())
    return {k: metrics.get(k) for k in ("eval_loss_before", "eval_loss_after", "train_seconds") if k in metrics}


def merge_step(c: PipelineConfig) -> dict[str, Any]:
    from edgemed.registry import require_train

    require_train("the pipeline's merge step")
    from edgemed.merging import merge_adapter

    return merge_adapter(adapter=c.run_dir, out=c.merged_dir, force=True)


def export_step(c: PipelineConfig) -> dict[str, Any]:
    from edgemed.export.run import run_export

    # artifacts of an earlier merge are replaced, unchanged ones skipped; a failed format is retried on the next run
    results = run_export(c.merged_dir, c.formats, c.artifacts_dir, force=False, verify=True, threads=c.threads,
                         replace_stale=True, overlap=True)
    statuses = {r["format"]: r["status"] for r in results}
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
    from edgemed.registry import expand_formats, get_format
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


def run_pipeline(c: PipelineConfig) -> int:
    """Check every setting, run the steps (skipping those done earlier with the same settings), then answer: exit
    1 (BudgetBroken / CheckFailed) for a broken budget, a tune without a fitting candidate or a failed export."""
    bench_config, tune_config = c.validate()
    state = run_steps(c.out, pipeline_steps(c, bench_config, tune_config), force=c.force)
    if tune_config is not None:
        result = state["steps"]["tune"]["result"]
        if result.get("exit_code", 0) == 1:
            said = "no candidate meets the tune's budgets" if not result.get("choice") else \
                "the tune's answer is not established (a contender failed)"
            raise BudgetBroken(f"{said}; see {c.out / 'tune' / 'tune.md'}")
        return 0
    code = state["steps"]["bench"]["result"].get("exit_code", 0)
    if code == 1:
        raise BudgetBroken(f"a budget was broken; see {c.bench_dir / 'bench.md'}")
    failed = [f for f, s in state["steps"]["export"]["result"]["formats"].items() if s == "failed"]
    if failed:
        where = c.artifacts_dir / "export.json"
        raise CheckFailed(f"export failed for {', '.join(failed)} (see {where}); re-run to retry them")
    return code


def file_fingerprint(path: Path | None) -> str | None:
    """A settings value for a file: its path and sha256 (a changed budget file re-runs the bench)."""
    if path is None:
        return None
    from edgemed.fsutil import sha256_file

    return f"{path}:{sha256_file(path)}" if Path(path).is_file() else str(path)


@dataclass
class Step:
    name: str
    output: Path
    settings: dict[str, Any]
    run: Callable[[], dict[str, Any]]
    # modules the step's forked child would import: imported here first (only imported: a fork after a torch op
    # hangs), so that each later step's child finds them loaded; their time counts in the first step that needs them
    preload: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _load_state(out: Path) -> dict[str, Any]:
    path = out / STATE
    if not path.exists():
        return {"steps": {}}
    state = try_json(path)
    if state is None:
        err_console.print(f"[yellow]{path} is corrupt; starting the pipeline state afresh[/yellow]")
        return {"steps": {}}
    return state


def run_steps(out: Path, steps: list[Step], force: bool = False) -> dict[str, Any]:
    """Run steps in order, skipping those already done with the same settings; state saved after each."""
    state = _load_state(out)
    redo = force
    this_run: dict[str, float | None] = {}
    for i, step in enumerate(steps, start=1):
        record = state["steps"].get(step.name)
        done = record and record.get("key") == step.key and record.get("status") == "done" and step.output.exists()
        if done and not redo:
            err_console.print(f"[dim]step {i}/{len(steps)} {step.name}: done earlier, skipped ({step.output})[/dim]")
            this_run[step.name] = None
            continue
        redo = True  # everything after a re-run step runs again
        err_console.rule(f"step {i}/{len(steps)}: {step.name}")
        start, started_at = time.perf_counter(), time.time()
        preload(step.preload)
        result = call_in_child(step.run, f"the pipeline's {step.name} step")  # its memory ends with it
        state["steps"][step.name] = {
            "status": "done" if result.get("complete", True) else "partial",
            "key": step.key,
            "settings": step.settings,
            "output": str(step.output),
            "seconds": round(time.perf_counter() - start, 2),
            "started_at": round(started_at, 3),  # epoch seconds: lets a monitor attribute samples to steps
            "ended_at": round(time.time(), 3),
            "result": result,
        }
        this_run[step.name] = state["steps"][step.name]["seconds"]
        state["last_run"] = _timing(state, this_run)
        atomic_write_json(out / STATE, state)
    state["last_run"] = _timing(state, this_run)
    atomic_write_json(out / STATE, state)
    print_timing(state)
    return state


def preload(modules: tuple[str, ...]) -> None:
    """Import `modules` in this (the parent) process, from which each step is forked
    (edgemed.process.child.call_in_child); one that is not installed is left to the step, which says what to install."""
    import importlib
    import sys

    for name in modules:
        if name not in sys.modules:
            with contextlib.suppress(ImportError):
                importlib.import_module(name)


def _timing(state: dict[str, Any], this_run: dict[str, float | None]) -> dict[str, Any]:
    """Wall seconds per step of this run (None: skipped, done earlier) and of the run that last did each step."""
    recorded = {name: rec.get("seconds") for name, rec in state["steps"].items()}
    return {"seconds": this_run, "total_s": round(sum(v for v in this_run.values() if v), 2),
            "steps_recorded_s": recorded, "recorded_total_s": round(sum(v for v in recorded.values() if v), 2)}


def print_timing(state: dict[str, Any]) -> None:
    """Each step's wall time: this run's, or the earlier run's for a step skipped now."""
    from rich.table import Table

    from edgemed.console import console

    last = state.get("last_run") or {}
    table = Table(title="pipeline: wall time per step")
    for col in ("step", "this run s", "when last done s"):
        table.add_column(col, justify="left" if col == "step" else "right")
    for name, ran in (last.get("seconds") or {}).items():
        done = (last.get("steps_recorded_s") or {}).get(name)
        table.add_row(name, "skipped" if ran is None else f"{ran:.1f}", "" if done is None else f"{done:.1f}")
    table.add_row("total", f"{last.get('total_s', 0):.1f}", f"{last.get('recorded_total_s', 0):.1f}")
    console.print(table)
