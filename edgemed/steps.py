"""Steps that resume: each finished step is recorded in ``pipeline.json`` with a hash of the settings it ran with; a
re-run skips a step whose record, settings and output are unchanged, and redoes it (and what follows) otherwise.
Each step runs in a forked child (its memory ends with it); a wall-time table closes the run."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgemed.console import console, err_console
from edgemed.fsutil import atomic_write_json, try_json
from edgemed.process.call import call_in_child

STATE = "pipeline.json"


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
    (edgemed.process.call.call_in_child); one that is not installed is left to the step, which says what to install."""
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

    last = state.get("last_run") or {}
    table = Table(title="pipeline: wall time per step")
    for col in ("step", "this run s", "when last done s"):
        table.add_column(col, justify="left" if col == "step" else "right")
    for name, ran in (last.get("seconds") or {}).items():
        done = (last.get("steps_recorded_s") or {}).get(name)
        table.add_row(name, "skipped" if ran is None else f"{ran:.1f}", "" if done is None else f"{done:.1f}")
    table.add_row("total", f"{last.get('total_s', 0):.1f}", f"{last.get('recorded_total_s', 0):.1f}")
    console.print(table)
