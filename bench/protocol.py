"""The bench's parent/worker protocol: one :class:`Job` in (JSON), one result document out (JSON).

The parent writes ``work/NAME.job.json`` and runs ``python -m edgemed.bench.worker JOB RESULT`` through
:func:`edgemed.process.isolate.measure_child` (:func:`run_worker`); the worker writes RESULT atomically when it is
done, and the parent adds what only it measures from outside (:func:`add_outside`). The job carries
the :class:`~edgemed.bench.config.BenchConfig` whole, the artifact, the questions, and where the reference's
fidelity data lives (written by the reference's own job, read by every other).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgemed.bench.artifacts import Target, path_from_run, weights_record
from edgemed.bench.config import BenchConfig
from edgemed.bench.results import ArtifactResult, Failure
from edgemed.fsutil import dir_size
from edgemed.process.child import python_module
from edgemed.process.isolate import MeasuredOutcome, measure_child, tail

__all__ = ["Job", "Target", "add_outside", "run_worker", "runtime_options", "worker_env"]


@dataclass
class Job:
    config: BenchConfig
    target: Target
    questions: list[dict[str, Any]]
    threads: int  # resolved once by the parent
    device: str  # resolved once by the parent
    fidelity_dir: str | None = None  # the reference's stored log-probs
    is_reference: bool = False  # this job writes fidelity_dir
    env: dict[str, str] = field(default_factory=dict)  # what the parent set in the worker's environment
    timing_only: bool = False  # serve only (latency, pp, tg, memory): no fidelity or accuracy pass (A/B rounds)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["config"] = self.config.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        """The inverse of :meth:`to_dict`; keys this version does not know are left out (a job written by another
        edgemed install, as in an A/B run with ``--ab-python``)."""
        from dataclasses import fields

        known = {f.name for f in fields(cls)}
        target_keys = {f.name for f in fields(Target)}
        return cls(**{**{k: v for k, v in data.items() if k in known}, "config": BenchConfig.from_dict(data["config"]),
                      "target": Target(**{k: v for k, v in data["target"].items() if k in target_keys})})

    def write(self, path: Path) -> Path:
        from edgemed.fsutil import atomic_write_json

        return atomic_write_json(path, self.to_dict())

    @classmethod
    def read(cls, path: Path) -> Job:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def runtime_options(config: BenchConfig) -> dict[str, Any]:
    """Options every runtime gets (each reads the ones it knows): dtype, llama.cpp's flash attention, onnxruntime's
    spinning."""
    options: dict[str, Any] = {"flash_attn": config.flash_attn}
    if config.dtype != "auto":
        options["dtype"] = config.dtype
    if config.wait_policy != "default":
        options["allow_spinning"] = config.wait_policy == "active"
    return options


def worker_env(config: BenchConfig, base: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(the worker's environment, what bench itself set in it): the engines' own defaults unless the user chose."""
    env = {**base, "PYTHONUNBUFFERED": "1"}
    chosen: dict[str, str] = {}
    if config.wait_policy != "default":
        chosen["OMP_WAIT_POLICY"] = config.wait_policy.upper()
    env.update(chosen)
    return env, chosen


# --- the parent's side -------------------------------------------------------------------------------------
def run_worker(job: Job, key: str, work: Path, bar, task, python: Path | None = None) -> ArtifactResult:
    """Run the worker on one artifact: its result as it wrote it (ArtifactResult.to_dict), or a failure, plus what
    this process measured from outside (:func:`add_outside`). `python`: the interpreter of another edgemed install
    to run the worker with (``--ab-python``), else this one."""
    target = job.target
    name = target.name
    env, job.env = worker_env(job.config, dict(os.environ))
    job_path = job.write(work / f"{name}.job.json")
    res_path = work / f"{name}.result.json"
    log_path = work / f"{name}.log"
    res_path.unlink(missing_ok=True)
    cmd = python_module("edgemed.bench.worker", str(job_path), str(res_path))
    if python is not None:  # any Python version: the bootstrap instead of -P (3.11+)
        from edgemed.process.child import _NO_CWD_BOOTSTRAP

        cmd = [str(python), "-c", _NO_CWD_BOOTSTRAP, "edgemed.bench.worker", str(job_path), str(res_path)]

    def tick() -> None:
        lines = [ln for ln in tail(log_path, 5, 2048).splitlines() if ln.startswith("[bench]")]
        if lines:
            bar.update(task, description=f"{name}: {lines[-1][8:][:60]}")

    outcome = measure_child(cmd, log_path, timeout_s=job.config.timeout, env=env, on_tick=tick, threads=job.threads)
    if outcome.ok and res_path.is_file():
        result = ArtifactResult.from_dict(json.loads(res_path.read_text(encoding="utf-8")))
    else:
        result = ArtifactResult(name=name, path=path_from_run(target.path, work.parent), format=target.format,
                                runtime=target.runtime, status="failed", failure=_failure(outcome, log_path))
    return add_outside(result, target, key, outcome)


def add_outside(result: ArtifactResult, target: Target, key: str, outcome: MeasuredOutcome) -> ArtifactResult:
    """Add to a worker's result what only the parent measures: wall time, the process's memory sampled from outside
    and the kernel's peak, other processes' load, the artifact's size, weight bytes and hashes on disk, and the
    settings key. Each of these is left at its default by the worker; nothing the worker reported is changed."""
    from edgemed.registry import weight_bytes

    path = Path(target.path)
    result.settings_key = key
    result.wall_s = outcome.wall_s
    result.weights = weights_record(path, target.format)
    result.size_bytes = dir_size(path)
    result.bandwidth.weight_bytes = weight_bytes(path, target.format)
    memory = result.memory
    memory.peak_rss_sampled_bytes = outcome.peak_rss_sampled or None
    memory.peak_rss_os_bytes = outcome.ru_maxrss or None
    memory.sample_interval_ms = outcome.interval_s * 1e3
    memory.samples = outcome.samples
    result.machine_load = outcome.load.to_dict() if outcome.load else {}
    return result


def _failure(outcome: MeasuredOutcome, log_path: Path) -> Failure:
    text = tail(log_path, 25)
    errors = [ln for ln in text.splitlines() if ln.startswith("error: ")]
    if outcome.timed_out:
        kind = "timeout"
    elif outcome.oom_killed:
        kind = "oom"
    elif outcome.signal is not None:
        kind = "crash"
    elif outcome.exit_code != 0:
        kind = "error"
    else:
        kind = "no-result"
    message = outcome.describe() if kind != "no-result" else "exited 0 without writing a result"
    if errors:
        message += f": {errors[-1][len('error: '):]}"
    return Failure(kind=kind, message=message, exit_code=outcome.exit_code, signal=outcome.signal_name,
                   stderr_tail=text)
