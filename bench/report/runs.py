"""Many bench runs in one report (``edgemed report RUN...``): runs from several machines and commits, each
artifact recognised by its weights' sha256 whatever its path, one column group per run.

- A machine is named by its fingerprint (:func:`fingerprint`): CPU model and ISA flags, cores and threads, RAM,
  measured copy bandwidth, llama.cpp's system info, OS and the commit. Runs whose hardware part is the same
  (:data:`HARDWARE_KEYS`) are the same machine.
- Runs of one machine, in the order they were made, are compared each with the one before
  (:func:`compare_pair`) on the report's columns (the metrics' ``report_column``): a change counts only beyond its
  noise band (:func:`edgemed.bench.report.compare.noise_band`: the larger of the relative tolerance and twice the
  standard error of the difference, each run's from its summary where the metric says how (``Metric.stderr``),
  else from its 95% interval); a timing measured on a busy machine keeps its busy flag on the change (flagged, not
  hidden).
- A board profile's estimates (``--profile`` on one machine) are put beside the board's own measurement where
  that board is in the report (:mod:`edgemed.bench.report.profiles`).

Nothing here opens a path recorded in a bench.json: a run copied from a board reports anywhere.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgemed.bench.metrics import METRICS, format_value, report_columns
from edgemed.bench.report.compare import deltas, load_run, noise_band
from edgemed.bench.results import ArtifactResult
from edgemed.errors import EdgemedError

# What makes two runs the same machine (the rest of the fingerprint is shown, not matched).
HARDWARE_KEYS = ("cpu", "isa", "cores_physical", "cores_logical", "ram_gb", "arch", "board", "emulated")
DEFAULT_TOLERANCE = 0.10  # the bench's own --tolerance default


@dataclass
class Run:
    """One bench.json in the report."""

    label: str
    source: str
    doc: dict[str, Any]
    results: list[ArtifactResult]
    index: int
    fingerprint: dict[str, Any] = field(default_factory=dict)
    machine: str = ""  # machine id (hash of the hardware part of the fingerprint)

    @property
    def created(self) -> str:
        return str(self.doc.get("created") or "")

    @property
    def commit(self) -> str | None:
        return self.fingerprint.get("commit")


def run_label(i: int) -> str:
    """A, B, ... Z, then R27, R28 ..."""
    return chr(ord("A") + i) if i < 26 else f"R{i + 1}"


def fingerprint(doc: dict[str, Any]) -> dict[str, Any]:
    """What names the machine a run was made on, from its bench.json alone."""
    env = doc.get("environment") or {}
    settings = doc.get("settings") or {}
    bw = ((doc.get("machine") or {}).get("copy_bandwidth") or {}).get("gbps")
    system_info = next((a.get("runtime_info", {}).get("system_info") for a in doc.get("artifacts", [])
                        if isinstance(a, dict) and isinstance(a.get("runtime_info"), dict)
                        and a["runtime_info"].get("system_info")), None)
    versions = env.get("versions") or {}
    return {
        "cpu": env.get("cpu"), "isa": sorted(env.get("cpu_features") or []),
        "cores_physical": env.get("cores_physical"), "cores_logical": env.get("cores_logical"),
        "threads": settings.get("threads"), "ram_gb": env.get("ram_gb"),
        "copy_bandwidth_gbps": round(bw, 2) if isinstance(bw, int | float) else None,
        "llama_cpp_system_info": system_info, "os": env.get("os"), "arch": env.get("machine"),
        "board": env.get("board"), "emulated": env.get("emulated"), "accelerator": env.get("accelerator"),
        "commit": env.get("commit") or (f"edgemed {versions['edgemed']}" if versions.get("edgemed") else None),
        "commit_dirty": env.get("commit_dirty"),
    }


def machine_id(fp: dict[str, Any]) -> str:
    blob = json.dumps({k: fp.get(k) for k in HARDWARE_KEYS}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:8]


def machine_name(fp: dict[str, Any]) -> str:
    """Short and human: the board (else the CPU), cores/threads, RAM."""
    what = fp.get("board") or fp.get("cpu") or fp.get("arch") or "unknown machine"
    cores = f"{fp.get('cores_physical') or '?'}c/{fp.get('cores_logical') or '?'}t"
    extra = ", emulated" if fp.get("emulated") else ""
    return f"{what} ({cores}, {fp.get('ram_gb') or '?'} GB{extra})"


def load_runs(paths: list[Path]) -> list[Run]:
    """Every RUN (a bench.json or its folder), labelled A, B, ... in the order given."""
    if not paths:
        raise EdgemedError("no bench run given; pass bench.json files or the folders holding them")
    runs = []
    for i, path in enumerate(paths):
        doc, results = load_run(Path(path))
        fp = fingerprint(doc)
        runs.append(Run(run_label(i), str(path), doc, results, i, fp, machine_id(fp)))
    return runs


# --- artifacts across runs --------------------------------------------------------------------------------
@dataclass
class Row:
    """One artifact (one set of weights) across the runs."""

    key: str
    matched_by: str  # "sha256" or "name" (a run that recorded no sha256)
    format: str
    cells: dict[str, ArtifactResult] = field(default_factory=dict)  # run label -> its result

    @property
    def name(self) -> str:
        """Its name in the first run that has it (the names in the others are in the report's ``names``)."""
        return next(iter(self.cells.values())).name


def weights_sha(r: ArtifactResult) -> str | None:
    sha = (r.weights or {}).get("sha256") if isinstance(r.weights, dict) else None
    return sha if isinstance(sha, str) and sha else None


def merge_rows(runs: list[Run]) -> list[Row]:
    """Rows keyed by weights sha256; a result without one joins the single row of its name and format."""
    rows: dict[str, Row] = {}
    for run in runs:
        for r in run.results:
            sha = weights_sha(r)
            key = f"sha256:{sha}" if sha else None
            if key is None:
                same = [row for row in rows.values() if run.label not in row.cells
                        and any(c.name == r.name for c in row.cells.values()) and row.format == r.format]
                key = same[0].key if len(same) == 1 else f"name:{r.name}:{r.format}"
            base, n = key, 2
            while key in rows and run.label in rows[key].cells:  # the same weights twice in one run
                key, n = f"{base}#{n}", n + 1
            row = rows.setdefault(key, Row(key, "sha256" if sha else "name", r.format))
            row.cells[run.label] = r
    return list(rows.values())


# --- changes between runs of one machine ---------------------------------------------------------------------
def change(before: ArtifactResult | None, after: ArtifactResult | None, key: str, tol: float) -> dict[str, Any]:
    """before/after/change/relative, the noise band, a verdict (same, better, worse, not measured) and whether a
    busy machine measured either side (flagged, not hidden: such a timing is not comparable with a quiet run)."""
    d = deltas(before, after, (key,))[key]
    if d["change"] is None:
        return {**d, "band": None, "verdict": "not measured", "busy": False}
    band = noise_band(before, after, key, tol, summary=True)
    if abs(d["change"]) <= band or METRICS[key].better is None:
        verdict = "same"
    else:
        up_is_better = METRICS[key].better == "max"
        verdict = "better" if (d["change"] > 0) == up_is_better else "worse"
    return {**d, "band": band, "verdict": verdict, "busy": METRICS[key].timing and (before.busy or after.busy)}


def _differences(a: dict[str, Any], b: dict[str, Any], keys: list[str]) -> dict[str, list[Any]]:
    return {k: [a.get(k), b.get(k)] for k in keys if a.get(k) != b.get(k)}


SETTING_KEYS = ["threads", "device", "n_prompt", "n_gen", "repetitions", "warmup", "questions",
                "question_ids_sha256", "fidelity", "flash_attn", "wait_policy", "latency_prompts"]


def compare_pair(earlier: Run, later: Run, rows: list[Row], tol: float) -> dict[str, Any]:
    """Every artifact both runs measured, every report column: the change with its band and verdict."""
    items = []
    for row in rows:
        b, a = row.cells.get(earlier.label), row.cells.get(later.label)
        if b is None or a is None:
            continue
        items.append({"key": row.key, "name": row.name, "format": row.format,
                      "status": [b.status, a.status],
                      "metrics": {k: change(b, a, k, tol) for k in report_columns()}})
    verdicts = [m["verdict"] for it in items for m in it["metrics"].values()]
    busy = sum(m["busy"] for it in items for m in it["metrics"].values())
    fp_keys = ["cpu", "isa", "ram_gb", "os", "llama_cpp_system_info", "commit", "commit_dirty"]
    return {
        "run": later.label, "against": earlier.label, "machine": later.machine,
        "commits": [earlier.commit, later.commit], "same_commit": earlier.commit == later.commit,
        "settings_changed": _differences(earlier.doc.get("settings") or {}, later.doc.get("settings") or {},
                                         SETTING_KEYS),
        "environment_changed": _differences(earlier.fingerprint, later.fingerprint, fp_keys),
        "artifacts": items,
        "summary": {**{v: verdicts.count(v) for v in ("same", "better", "worse", "not measured")}, "busy": busy},
    }


def changes(runs: list[Run], rows: list[Row], tol: float) -> list[dict[str, Any]]:
    """Each run against the run before it on the same machine (by creation time, then the order given)."""
    out = []
    for mid in dict.fromkeys(r.machine for r in runs):
        mine = sorted((r for r in runs if r.machine == mid), key=lambda r: (r.created, r.index))
        out += [compare_pair(e, later, rows, tol) for e, later in zip(mine, mine[1:], strict=False)]
    return out


def regressions_of(compared: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The 'worse' verdicts as one line each (what --tolerance turns into exit 1)."""
    out = []
    for c in compared:
        for it in c["artifacts"]:
            if it["status"][1] != "ok" and it["status"][0] == "ok":
                out.append({"artifact": it["name"], "format": it["format"], "key": "status", "run": c["run"],
                            "against": c["against"], "message": f"failed in {c['run']}, ran in {c['against']}"})
            for key, m in it["metrics"].items():
                if m["verdict"] != "worse":
                    continue
                rel = f"{m['relative']:+.1%}, " if m["relative"] is not None else ""
                msg = (f"{METRICS[key].label} {format_value(key, m['before'])} -> {format_value(key, m['after'])} "
                       f"({rel}noise band ±{format_value(key, m['band'])}) in {c['run']} vs {c['against']}"
                       + ("; measured on a busy machine: not comparable with a quiet run" if m["busy"] else ""))
                out.append({"artifact": it["name"], "format": it["format"], "key": key, "run": c["run"],
                            "against": c["against"], "message": msg})
    return out
