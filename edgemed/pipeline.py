"""The main job: train -> merge -> export every format -> bench, resumable step by step.

Each finished step is recorded in ``pipeline.json`` with a hash of the settings it ran with; a re-run
skips a step whose record, settings and output are unchanged, and redoes it (and what follows) otherwise.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgemed.console import err_console
from edgemed.fsutil import atomic_write_json, try_json

STATE = "pipeline.json"


@dataclass
class Step:
    name: str
    output: Path
    settings: dict[str, Any]
    run: Callable[[], dict[str, Any]]

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
        start = time.perf_counter()
        result = step.run()
        state["steps"][step.name] = {
            "status": "done" if result.get("complete", True) else "partial",
            "key": step.key,
            "settings": step.settings,
            "output": str(step.output),
            "seconds": round(time.perf_counter() - start, 2),
            "result": result,
        }
        this_run[step.name] = state["steps"][step.name]["seconds"]
        state["last_run"] = _timing(state, this_run)
        atomic_write_json(out / STATE, state)
    state["last_run"] = _timing(state, this_run)
    atomic_write_json(out / STATE, state)
    print_timing(state)
    return state


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
