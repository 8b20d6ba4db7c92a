"""``edgemed tune``'s record, tune.json: every candidate with its status, stage and reason, rewritten atomically
after every candidate so an interrupted tune loses nothing finished (``--resume`` goes on from it)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from edgemed.fsutil import atomic_write_json

if TYPE_CHECKING:
    from edgemed.bench.tune.run import Plan

TUNE_JSON = "tune.json"
SCHEMA = 1


class State:
    """tune.json, rewritten atomically after every candidate."""

    def __init__(self, plan: Plan):
        import json

        prior = {}
        if plan.config.resume and (plan.out / TUNE_JSON).is_file():
            try:
                prior = json.loads((plan.out / TUNE_JSON).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                prior = {}
        self.out = plan.out
        self.doc: dict[str, Any] = {
            "schema": SCHEMA, "tool": "edgemed tune", "status": "running",
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "resumed": bool(prior),
            "merged": str(plan.merged), "cache": str(plan.cache), "config": plan.config.to_dict(),
            "budgets": plan.budgets, "threads": plan.threads, "questions": len(plan.questions),
            "question_selection": plan.selection, "space": plan.space, "candidates": [],
        }
        self.rebuilt: dict[str, str] = {}  # the stage-1 cache's damaged entries, built again (Stage1.rebuilt)
        self.records: dict[str, dict[str, Any]] = {}
        for c in plan.candidates:
            self.records[c.id] = {"id": c.id, "format": c.format, "runtime": c.runtime, "settings": c.settings,
                                  "recipe": c.recipe, "status": "pending", "stage": None, "reason": "",
                                  "stage1": [], "alive": False}
        self.doc["candidates"] = list(self.records.values())
        self.out.mkdir(parents=True, exist_ok=True)
        self.save()

    def save(self) -> None:
        atomic_write_json(self.out / TUNE_JSON, self.doc)


def drop(rec: dict[str, Any], status: str, stage: int, reason: str) -> None:
    """Mark a candidate out of the search, with the stage and the reason recorded."""
    rec.update(status=status, stage=stage, reason=reason, alive=False)
