#!/usr/bin/env python
"""The whole pipeline at 1B scale: wall time, memory, disk and result of each step, on this machine.

Runs ``edgemed pipeline`` on ``--model`` (default llama32-1b-shape: Llama 3.2 1B's exact shape, random weights) with
the default format set, samples the resident memory of its whole process tree (the pipeline process, every child
and grandchild: export checks, converters, bench workers) every ``--interval`` seconds with psutil, and attributes
each sample to the step that was running (the ``started_at``/``ended_at`` of each step in OUT/pipeline/pipeline.json).

Per step: wall seconds, peak summed tree RSS, each process's own peak RSS (named from its command line), disk used
by the step's output folder, passed or not. Also: the machine, the whole-run peak against ``--max-rss-gb``, and a
per-format table (bench.json; export seconds from export.json). Written to OUT/report.json and OUT/report.md,
rewritten whenever a step starts or ends (and every ``--report-every`` seconds), so a killed run leaves a partial
report. The pipeline skips the steps it finished earlier; ``--resume`` keeps this script's measurements of those
from the earlier report (without it they are reported as skipped, not measured).

Exit: the pipeline's own non-zero exit code; else 1 when a step failed or the whole-run peak is above the limit;
130 when interrupted; 0 otherwise. Summed RSS counts a page shared by two processes twice: an upper bound.

    scripts/check_1b_scale.sh                                  # 1B, every installed format, 2 training steps
    scripts/check_1b_scale.sh --resume -- --limit 16           # go on after a kill; extra args go to the pipeline
    scripts/check_1b_scale.sh --model qwen3-0.6b-shape --out runs/scale-qwen3   # Qwen3 0.6B's shape (docs/families.md)
    .venv/bin/python scripts/dev/scale_check.py --model tiny-random --out /tmp/s -- --formats gguf-f16 --limit 4
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import psutil

from edgemed.fsutil import atomic_write_json, atomic_write_text, try_json
from edgemed.process.probes import TreeSampler, self_peak_rss_bytes

SCHEMA = 1
STEPS = ["train", "merge", "export", "bench"]
STEP_DIRS = {"train": "train", "merge": "merged", "export": "artifacts", "bench": "bench"}
REFUSED_EXTRA = ("--out", "--model", "--tune")  # the monitor must know where the pipeline writes, and its steps
GB = 1e9
_STARTED = re.compile(r"step \d+/\d+: ([\w-]+)")
_SKIPPED = re.compile(r"step \d+/\d+ ([\w-]+): done earlier, skipped")


# --- sampling -------------------------------------------------------------------------------------------------
@dataclass
class Sample:
    """One reading of the tree: epoch seconds, summed RSS, RSS per pid."""

    t: float
    total: int
    procs: dict[int, int]


def short_name(cmdline: list[str]) -> str:
    """A short name for a process from its command line: ``edgemed pipeline``, ``bench.worker``, ``llama-quantize``."""
    if not cmdline:
        return "?"
    exe, args = Path(cmdline[0]).name, cmdline[1:]
    if not exe.startswith("python"):
        return exe[:40]
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "-m" and i + 1 < len(args):
            return _module_name(args[i + 1], args[i + 2:])
        if arg == "-c":
            code, rest = (args[i + 1] if i + 1 < len(args) else ""), args[i + 2:]
            if "runpy.run_module" in code and rest:  # child.python_module's bootstrap before Python 3.11
                return _module_name(rest[0], rest[1:])
            return "python (multiprocessing)" if "multiprocessing" in code else "python -c"
        if arg in ("-X", "-W"):
            i += 2
            continue
        if arg.startswith("-"):
            i += 1
            continue
        script = Path(arg).name
        return f"edgemed {args[i + 1]}" if script == "edgemed" and i + 1 < len(args) else script[:40]
    return exe


def _module_name(module: str, rest: list[str]) -> str:
    if module == "edgemed.cli.main" and rest:
        return f"edgemed {rest[0]}"
    return module.removeprefix("edgemed.")[:40]


class TreeMonitor:
    """RSS of a process and each of its descendants, read by edgemed.process.probes.TreeSampler (the bench's own
    sampler), kept per process with each one's name; the descendant list (and the names) are refreshed every
    `refresh_s`."""

    def __init__(self, pid: int, refresh_s: float = 0.5):
        self.names: dict[int, str] = {}
        self.samples: list[Sample] = []
        self._tree = TreeSampler(pid, refresh_s=refresh_s, on_refresh=self._name)

    def _name(self, procs: list[psutil.Process]) -> None:
        for proc in procs:  # re-read: a child sampled between fork and exec still shows its parent's cmdline
            with contextlib.suppress(psutil.Error):
                if cmd := proc.cmdline():
                    self.names[proc.pid] = short_name(cmd)

    def sample(self) -> Sample:
        procs = self._tree.rss_by_pid()
        sample = Sample(time.time(), sum(procs.values()), procs)
        self.samples.append(sample)
        return sample


# --- attribution ----------------------------------------------------------------------------------------------
@dataclass
class Window:
    """A step's time span in epoch seconds (end None: still running)."""

    name: str
    start: float
    end: float | None = None


@dataclass
class Usage:
    """What the samples of one step (or of none) show: the peak summed tree RSS and each process's peak."""

    samples: int = 0
    peak_tree_rss_bytes: int = 0
    peak_at: float | None = None
    process_peaks: dict[int, int] = field(default_factory=dict)

    def add(self, s: Sample) -> None:
        self.samples += 1
        if s.total > self.peak_tree_rss_bytes:
            self.peak_tree_rss_bytes, self.peak_at = s.total, s.t
        for pid, rss in s.procs.items():
            if rss > self.process_peaks.get(pid, -1):
                self.process_peaks[pid] = rss


def attribute(samples: list[Sample], windows: list[Window]) -> tuple[dict[str, Usage], Usage]:
    """Each sample to the step whose window holds its time ({step: usage}, usage outside every step: start-up,
    the checks before the first step, the summary after the last)."""
    usage = {w.name: Usage() for w in windows}
    outside = Usage()
    ordered = sorted(windows, key=lambda w: w.start)
    for s in samples:
        step = next((w.name for w in ordered if w.start <= s.t and (w.end is None or s.t <= w.end)), None)
        (usage[step] if step is not None else outside).add(s)
    return usage, outside


# --- the run --------------------------------------------------------------------------------------------------
@dataclass
class Run:
    """One monitored pipeline run and what is known of it so far."""

    args: argparse.Namespace
    extra: list[str]
    command: list[str]
    started_at: float
    monitor: TreeMonitor | None = None
    events: list[tuple[float, str, str]] = field(default_factory=list)  # (time, "started"|"skipped", step)
    earlier: dict[str, dict[str, Any]] = field(default_factory=dict)  # --resume: the earlier report's step records
    exit_code: int | None = None  # the pipeline's
    ended_at: float | None = None
    stderr_tail: list[str] = field(default_factory=list)
    interrupted: bool = False
    disk_cache: dict[str, int | None] = field(default_factory=dict)

    @property
    def pipeline_out(self) -> Path:
        return self.args.pipeline_out

    def state(self) -> dict[str, Any]:
        return try_json(self.pipeline_out / "pipeline.json") or {"steps": {}}


def tee_stderr(stream, log: TextIO, run: Run) -> None:
    """Copy the pipeline's stderr to ours and to the log, noting when each step starts or is skipped."""
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", "replace")
        sys.stderr.write(line)
        sys.stderr.flush()
        log.write(line)
        log.flush()
        if m := _SKIPPED.search(line):
            run.events.append((time.time(), "skipped", m.group(1)))
        elif m := _STARTED.search(line):
            run.events.append((time.time(), "started", m.group(1)))
        run.stderr_tail = [*run.stderr_tail[-39:], line.rstrip("\n")]


def _this_run(record: dict[str, Any] | None, run: Run) -> bool:
    return bool(record) and (record.get("started_at") or 0) >= run.started_at


def _identity(record: dict[str, Any]) -> dict[str, Any]:
    return {k: record.get(k) for k in ("key", "started_at", "ended_at", "seconds", "status")}


def _step_passed(name: str, record: dict[str, Any]) -> bool:
    if record.get("status") != "done":
        return False  # "partial": an export with failed formats
    return not (name == "bench" and (record.get("result") or {}).get("exit_code", 0) != 0)


def _step_dir(run: Run, name: str, record: dict[str, Any] | None) -> Path:
    if record and record.get("output"):
        return Path(record["output"]).parent
    return run.pipeline_out / STEP_DIRS.get(name, name)


def _disk(path: Path) -> int | None:
    """Bytes under `path` (files that vanish meanwhile, as temp folders are renamed, are left out)."""
    if not path.exists():
        return None
    total = 0
    for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
        with contextlib.suppress(OSError):
            if p.is_file() and not p.is_symlink():
                total += p.stat().st_size
    return total


def _windows(run: Run, steps: dict[str, dict[str, Any]], names: list[str]) -> list[Window]:
    windows = []
    started = {name: t for t, kind, name in run.events if kind == "started"}
    for name in names:
        rec = steps.get(name)
        if _this_run(rec, run):
            windows.append(Window(name, rec["started_at"], rec["ended_at"]))
        elif name in started:  # running now, or it died mid-step
            windows.append(Window(name, started[name], run.ended_at))
    return windows


def _processes(usage: Usage, names: dict[int, str]) -> list[dict[str, Any]]:
    return [{"pid": pid, "name": names.get(pid, "?"), "peak_rss_bytes": rss}
            for pid, rss in sorted(usage.process_peaks.items(), key=lambda kv: -kv[1])]


def step_record(run: Run, name: str, record: dict[str, Any] | None, usage: Usage | None, window: Window | None,
                final: bool) -> dict[str, Any]:
    """One step's row of the report: measured in this run, kept from the earlier report, skipped or not run."""
    names = run.monitor.names if run.monitor else {}
    skipped = any(kind == "skipped" and n == name for _, kind, n in run.events)
    out: dict[str, Any] = {"step": name, "output_dir": str(_step_dir(run, name, record))}
    if _this_run(record, run):
        passed = _step_passed(name, record)
        out.update(status="passed" if passed else "failed", passed=passed, measured="this run",
                   wall_s=record.get("seconds"))
    elif window is not None:
        running = run.exit_code is None
        status = "running" if running else ("interrupted" if run.interrupted else "failed")
        out.update(status=status, passed={"running": None, "interrupted": None}.get(status, False),
                   measured="this run", wall_s=round((window.end or time.time()) - window.start, 2))
    elif record and (skipped or run.exit_code == 0):  # exit 0: every step ran or was skipped
        earlier = run.earlier.get(name)
        if earlier and earlier.get("pipeline_record") == _identity(record) and earlier.get("measured"):
            kept = {**earlier, "measured": "earlier run (--resume)"}
            kept["output_dir"] = out["output_dir"]
            return kept
        passed = _step_passed(name, record)
        out.update(status="skipped (done earlier)" if passed else "failed earlier", passed=passed, measured=None,
                   wall_s=record.get("seconds"), note="done earlier: not measured in this run (--resume keeps "
                                                      "an earlier report's measurements)")
    else:
        out.update(status="pending" if run.exit_code is None else "not run", passed=None, measured=None,
                   wall_s=None)
    if window is not None and usage is not None:
        out.update(started_at=window.start, ended_at=window.end, samples=usage.samples,
                   peak_tree_rss_bytes=usage.peak_tree_rss_bytes if usage.samples else None,
                   peak_at_s=round(usage.peak_at - window.start, 1) if usage.peak_at else None,
                   processes=_processes(usage, names))
    if out["status"] not in ("running", "pending", "not run", "interrupted"):
        if final or name not in run.disk_cache:
            run.disk_cache[name] = _disk(Path(out["output_dir"]))
        out["disk_bytes"] = run.disk_cache[name]
    if record:
        out["pipeline_record"] = _identity(record)
        out["result"] = record.get("result")
    return out


def machine() -> dict[str, Any]:
    """The CPU (edgemed.sysinfo), cores, RAM, instruction-set flags, load when the run began."""
    from edgemed.manifest import versions
    from edgemed.sysinfo import ARM_MACHINES, cpu_info, git_commit, git_dirty, shown_features

    info = cpu_info()
    if platform.machine().lower() in ARM_MACHINES:
        isa = shown_features(info)
    else:
        isa = sorted(f for f in info.features
                     if f.startswith(("sse", "ssse3", "avx", "amx", "fma", "f16c", "bmi", "vnni", "popcnt")))
    mem = psutil.virtual_memory()
    return {"cpu": info.model, "cpu_source": info.source, "cores_logical": os.cpu_count(),
            "cores_physical": psutil.cpu_count(logical=False), "ram_bytes": mem.total,
            "ram_available_bytes_at_start": mem.available, "isa_flags": isa,
            "loadavg_at_start": [round(x, 2) for x in os.getloadavg()], "machine": platform.machine(),
            "os": f"{platform.system()} {platform.release()}", "commit": git_commit(), "commit_dirty": git_dirty(),
            "versions": versions()}


def formats_table(pipeline_out: Path) -> list[dict[str, Any]]:
    """One row per format: export status and seconds (export.json), size and speed and memory (bench.json)."""
    from edgemed.bench.results import ArtifactResult

    rows: dict[str, dict[str, Any]] = {}
    export = try_json(pipeline_out / "artifacts" / "export.json") or {}
    for r in export.get("results") or []:
        rows[r["format"]] = {"format": r["format"], "export_status": r.get("status"), "export_s": r.get("seconds"),
                             "export_only_s": r.get("export_seconds"),
                             "verify_s": (r.get("verification") or {}).get("seconds"),
                             "size_bytes": r.get("size_bytes")}
    bench = try_json(pipeline_out / "bench" / "bench.json") or {}
    for a in bench.get("artifacts") or []:
        try:
            res = ArtifactResult.from_dict(a)
        except (TypeError, KeyError):
            continue
        row = rows.setdefault(res.name, {"format": res.format})
        row.update(bench_status=res.status, size_bytes=res.size_bytes or row.get("size_bytes"),
                   pp_tps=res.metric("prefill_tps"), tg_tps=res.metric("decode_tps"), ttft_ms=res.metric("ttft_ms"),
                   peak_rss_serving_bytes=res.memory.peak_rss_bytes,
                   peak_rss_process_bytes=res.memory.peak_rss_process_bytes,
                   failure=res.failure.message if res.failure else None)
    return list(rows.values())


def build_report(run: Run, env: dict[str, Any], final: bool = False) -> dict[str, Any]:
    """The report as known now (every step's row, the whole-run peak against the limit, the formats)."""
    state = run.state()
    steps = state.get("steps") or {}
    names = [*STEPS, *(n for n in steps if n not in STEPS)]
    windows = _windows(run, steps, names)
    usage, outside = attribute(run.monitor.samples if run.monitor else [], windows)
    by_name = {w.name: w for w in windows}
    rows = [step_record(run, n, steps.get(n), usage.get(n), by_name.get(n), final) for n in names]
    peaks = [(r["peak_tree_rss_bytes"], r["step"]) for r in rows if r.get("peak_tree_rss_bytes")]
    if outside.samples:
        peaks.append((outside.peak_tree_rss_bytes, "outside steps"))
    peak, peak_step = max(peaks) if peaks else (None, None)
    limit = int(run.args.max_rss_gb * GB)
    rss_ok = None if peak is None else peak <= limit
    failed = [r["step"] for r in rows if r.get("passed") is False]
    if run.interrupted:
        code = 130
    elif run.exit_code is None:
        code = None
    elif run.exit_code != 0:
        code = run.exit_code if run.exit_code > 0 else 128 - run.exit_code
    else:
        code = 1 if failed or rss_ok is False else 0
    doc: dict[str, Any] = {
        "schema": SCHEMA, "tool": "scripts/dev/scale_check.py",
        "status": "interrupted" if run.interrupted else ("running" if run.exit_code is None else "complete"),
        "model": run.args.model, "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "started_at": run.started_at, "ended_at": run.ended_at,
        "wall_s": round((run.ended_at or time.time()) - run.started_at, 1),
        "pipeline_out": str(run.pipeline_out), "pipeline_command": run.command, "pipeline_exit_code": run.exit_code,
        "exit_code": code, "failed_steps": failed,
        "rss_limit_bytes": limit, "peak_tree_rss_bytes": peak, "peak_step": peak_step, "rss_within_limit": rss_ok,
        "sampling": {"interval_s": run.args.interval, "refresh_s": run.args.refresh,
                     "samples": len(run.monitor.samples) if run.monitor else 0,
                     "monitor_peak_rss_bytes": self_peak_rss_bytes(),
                     "note": "RSS summed over the pipeline process and all its descendants (pages shared between "
                             "processes count once per process: an upper bound); the monitor itself is not in it"},
        "machine": env, "steps": rows,
        "outside_steps": {"samples": outside.samples, "peak_tree_rss_bytes": outside.peak_tree_rss_bytes or None,
                          "processes": _processes(outside, run.monitor.names if run.monitor else {})},
        "disk_total_bytes": _disk(run.pipeline_out) if final else None,
        "formats": formats_table(run.pipeline_out),
    }
    if run.exit_code not in (None, 0):
        doc["pipeline_stderr_tail"] = run.stderr_tail[-20:]
    return doc


# --- the markdown ---------------------------------------------------------------------------------------------
def _gb(v: float | None) -> str:
    return "-" if v is None else f"{v / GB:.2f}"


def _mb(v: float | None) -> str:
    return "-" if v is None else f"{v / 1e6:.0f}"


def _num(v: float | None, fmt: str = ".1f") -> str:
    return "-" if v is None else format(v, fmt)


def render_md(doc: dict[str, Any]) -> str:
    """report.md: the machine, the memory verdict, the steps with their processes, the formats."""
    m = doc["machine"]
    missing = [r["step"] for r in doc["steps"] if r.get("peak_tree_rss_bytes") is None]
    unmeasured = f" Not measured: {', '.join(missing)} (the peak covers the other steps only)." if missing else ""
    verdict = {True: "within the limit", False: "**ABOVE the limit**", None: "not measured"}[doc["rss_within_limit"]]
    lines = [
        f"# Scale check: `{doc['model']}` through the whole pipeline",
        "",
        f"Status: **{doc['status']}**, exit code {doc['exit_code']} (pipeline: {doc['pipeline_exit_code']}); "
        f"updated {doc['updated']}; wall {doc['wall_s']:.0f} s. Pipeline: `{doc['pipeline_out']}`.",
        "",
        f"Command: `{' '.join(doc['pipeline_command'])}`",
        "",
        "## Machine",
        "",
        f"- CPU: {m['cpu']} ({m['cores_physical']} physical / {m['cores_logical']} logical cores), {m['machine']}, "
        f"{m['os']}",
        f"- RAM: {_gb(m['ram_bytes'])} GB ({_gb(m['ram_available_bytes_at_start'])} GB available at the start); "
        f"load average at the start {', '.join(map(str, m['loadavg_at_start']))}",
        f"- Instruction-set flags: {' '.join(m['isa_flags']) or '-'}",
        f"- Commit: {m['commit']}{' (dirty)' if m['commit_dirty'] else ''}",
        "",
        "## Memory",
        "",
        f"Whole-run peak of the summed tree RSS: **{_gb(doc['peak_tree_rss_bytes'])} GB** (in {doc['peak_step']}), "
        f"limit {_gb(doc['rss_limit_bytes'])} GB: {verdict}. {doc['sampling']['note']}; sampled every "
        f"{doc['sampling']['interval_s']} s ({doc['sampling']['samples']} samples this run).{unmeasured}",
        "",
        "## Steps",
        "",
        "| step | result | wall s | peak tree RSS GB | largest process (peak GB) | disk GB | measured |",
        "|---|---|---:|---:|---|---:|---|",
    ]
    for r in doc["steps"]:
        top = (r.get("processes") or [None])[0]
        largest = f"{top['name']} ({_gb(top['peak_rss_bytes'])})" if top else "-"
        lines.append(f"| {r['step']} | {r['status']} | {_num(r.get('wall_s'))} | {_gb(r.get('peak_tree_rss_bytes'))} "
                     f"| {largest} | {_gb(r.get('disk_bytes'))} | {r.get('measured') or '-'} |")
    out = doc["outside_steps"]
    if out["samples"]:
        lines += ["", f"Outside the steps (start-up, checks, summary): peak {_gb(out['peak_tree_rss_bytes'])} GB."]
    for r in doc["steps"]:
        if r.get("processes"):
            lines += ["", f"### {r['step']}: peak RSS of each process", "", "| process | pid | peak RSS MB |",
                      "|---|---:|---:|"]
            lines += [f"| {p['name']} | {p['pid']} | {_mb(p['peak_rss_bytes'])} |" for p in r["processes"]]
    lines += ["", "## Formats", ""]
    if doc["formats"]:
        lines += ["| format | export | export s | verify s | size MB | pp t/s | tg t/s | TTFT ms | peak RSS MB "
                  "| bench |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        for f in doc["formats"]:
            bench = f.get("bench_status") or "-"
            if f.get("failure"):
                bench += f": {f['failure'][:80]}"
            lines.append(f"| {f['format']} | {f.get('export_status') or '-'} | {_num(f.get('export_s'))} | "
                         f"{_num(f.get('verify_s'))} | {_mb(f.get('size_bytes'))} | {_num(f.get('pp_tps'), '.0f')} | "
                         f"{_num(f.get('tg_tps'))} | {_num(f.get('ttft_ms'))} | "
                         f"{_mb(f.get('peak_rss_serving_bytes'))} | {bench} |")
        lines += ["", "peak RSS = the bench's serving peak of the artifact's own process (bench.json)."]
    else:
        lines.append("No export or bench results yet.")
    if doc.get("pipeline_stderr_tail"):
        lines += ["", "## Pipeline stderr (last lines)", "", "```", *doc["pipeline_stderr_tail"], "```"]
    return "\n".join(lines) + "\n"


def write_report(run: Run, env: dict[str, Any], final: bool = False) -> dict[str, Any]:
    doc = build_report(run, env, final)
    atomic_write_json(run.args.out / "report.json", doc)
    atomic_write_text(run.args.out / "report.md", render_md(doc))
    return doc


# --- main -----------------------------------------------------------------------------------------------------
def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    own, extra = (argv[: argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="arguments after -- go to edgemed pipeline (e.g. -- --limit 16)")
    p.add_argument("--model", default="llama32-1b-shape", help="model alias or folder (default: %(default)s)")
    p.add_argument("--out", type=Path, default=Path("runs/scale-1b"), help="report folder (default: %(default)s)")
    p.add_argument("--pipeline-out", type=Path, default=None, help="the pipeline's --out (default: OUT/pipeline)")
    p.add_argument("--max-steps", type=int, default=2,
                   help="LoRA training steps (default: %(default)s; one takes about 90 s at 1B on 2 cores)")
    p.add_argument("--max-rss-gb", type=float, default=20.0,
                   help="limit on the whole-run peak of the summed tree RSS, GB (default: %(default)s)")
    p.add_argument("--resume", action="store_true",
                   help="keep the earlier report's measurements of the steps the pipeline skips now")
    p.add_argument("--interval", type=float, default=0.2, help="seconds between samples (default: %(default)s)")
    p.add_argument("--refresh", type=float, default=0.5,
                   help="seconds between rescans of the process tree (default: %(default)s)")
    p.add_argument("--report-every", type=float, default=30.0,
                   help="rewrite the report at least this often, seconds (default: %(default)s)")
    args = p.parse_args(own)
    refused = [a for a in extra if a.split("=")[0] in REFUSED_EXTRA]
    if refused:
        p.error(f"{', '.join(refused)} after -- is refused: use this script's --model/--pipeline-out "
                "(--tune replaces the export and bench steps measured here)")
    if args.interval <= 0 or args.refresh <= 0 or args.max_rss_gb <= 0:
        p.error("--interval, --refresh and --max-rss-gb must be positive")
    args.pipeline_out = args.pipeline_out or args.out / "pipeline"
    return args, extra


def main(argv: list[str] | None = None) -> int:
    args, extra = parse(sys.argv[1:] if argv is None else argv)
    from edgemed.process.child import python_module

    args.out.mkdir(parents=True, exist_ok=True)
    earlier: dict[str, dict[str, Any]] = {}
    if args.resume:
        earlier = {r["step"]: r for r in (try_json(args.out / "report.json") or {}).get("steps") or []}
    elif (args.pipeline_out / "pipeline.json").exists():
        print(f"note: {args.pipeline_out} holds an earlier run; the steps it finished are skipped and not measured "
              "(--resume keeps an earlier report's measurements)", file=sys.stderr)
    every = [] if any(a.startswith("--bench-formats") for a in extra) else ["--bench-formats", "all"]
    command = python_module("edgemed.cli.main", "pipeline", "--model", args.model, "--out", str(args.pipeline_out),
                            "--max-steps", str(args.max_steps), *every, *extra)  # bitsandbytes at 1B benched too
    env = machine()
    run = Run(args=args, extra=extra, command=command, started_at=time.time(), earlier=earlier)
    stop = threading.Event()

    def on_term(signum, frame):  # forwarded to the pipeline; the partial report is written below
        run.interrupted = True
        stop.set()

    previous = signal.signal(signal.SIGTERM, on_term)
    with open(args.out / "pipeline.log", "a", encoding="utf-8") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S%z')}: {' '.join(command)}\n")
        proc = subprocess.Popen(command, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        run.monitor = TreeMonitor(proc.pid, refresh_s=args.refresh)
        reader = threading.Thread(target=tee_stderr, args=(proc.stderr, log, run), daemon=True)
        reader.start()
        seen: tuple[Any, int] = (None, 0)
        last_write = 0.0
        try:
            while proc.poll() is None and not stop.is_set():
                run.monitor.sample()
                with contextlib.suppress(OSError):
                    mark = ((args.pipeline_out / "pipeline.json").stat().st_mtime_ns, len(run.events))
                    if mark != seen or time.monotonic() - last_write >= args.report_every:
                        seen, last_write = mark, time.monotonic()
                        write_report(run, env)
                stop.wait(args.interval)
        except KeyboardInterrupt:  # Ctrl-C reached the pipeline too (same process group)
            run.interrupted = True
        finally:
            if run.interrupted and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            run.ended_at = time.time()
            run.exit_code = proc.returncode
            reader.join(timeout=10)
            signal.signal(signal.SIGTERM, previous)
    doc = write_report(run, env, final=True)
    print(f"scale check: {doc['status']}, peak tree RSS {_gb(doc['peak_tree_rss_bytes'])} GB "
          f"(limit {_gb(doc['rss_limit_bytes'])}), failed steps: {', '.join(doc['failed_steps']) or 'none'}; "
          f"exit {doc['exit_code']}; report {args.out / 'report.md'}", file=sys.stderr)
    return doc["exit_code"]


if __name__ == "__main__":
    sys.exit(main())
