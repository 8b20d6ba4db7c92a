"""The bench's parent/worker protocol: one :class:`Job` in (JSON), one result document out (JSON).

The parent writes ``work/NAME.job.json`` and runs ``python -m edgemed.bench.worker JOB RESULT`` through
:func:`edgemed.process.isolate.run_child`; the worker writes RESULT atomically when it is done. The job carries
the :class:`~edgemed.bench.config.BenchConfig` whole, the artifact, the questions, and where the reference's
fidelity data lives (written by the reference's own job, read by every other).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgemed.bench.config import BenchConfig


@dataclass
class Target:
    """One artifact to measure."""

    name: str
    path: str
    format: str
    runtime: str
    problem: str | None = None  # why it cannot be measured (e.g. a corrupt manifest): recorded as failed, not run


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
