"""False alarms and misses of edgemed's CI checks, measured: ``python scripts/dev/ci_false_alarms.py``.

On one artifact (default: tiny-random exported to gguf-f16, so that it fits 2 cores), every run a whole
``edgemed bench`` command as CI runs it:

1. **baseline**: one bench run with ``--suggest-budgets`` (its default margin, ``--suggest-runs`` measurements of
   the timings); also, for comparison, the old suggestion (one run's interval + 10%) from the same first run;
2. **unchanged**: the same artifact, ``--runs`` times, against the suggested budgets (bench's defaults: timings
   decided on the mean of 3 runs, up to 2 retries of 3 more, ``--inconclusive fail``): a run that exits 1 is a
   false alarm. Beside it, on the same measurements, the old
   point-value check (value against limit, no interval, no busy flag): against the same budgets and against the
   old one-run suggestion;
3. **slow (budget)**: a real decode slowdown, ``--runs`` times, against the same budgets: a run is caught when its
   ``min_decode_tokens_per_s`` check does not pass (failed, or inconclusive and so counted failed). The slowdown is
   a slower format put in a folder named like the artifact (``--slow-format``, default gguf-bf16: tiny-random's
   bf16 decode did 0.70x the tokens/s of its f16, interleaved, on the AMX Xeon: a 30% slowdown), optionally exported
   with other settings (``--slow-export-arg``, repeated: e.g. ``--slow-format gguf-q4_k_m
   --slow-export-arg=--gguf-output-type=f32``, SmolLM2's q4_k_m with its tied output matrix in f32 instead of q8_0:
   0.74x the decode tokens/s of q4_k_m in 20 interleaved llama-bench rounds, 2 threads, on the AMX Xeon), or fewer
   threads (``--slow-threads``). Its size is measured, not assumed: each run's tg against the unchanged run beside
   it, and the A/B's interleaved ratio;
4. **slow (A/B)**: the slowdown through the A/B gate on one runner (``--ab-baseline`` the unchanged artifact,
   ``--ab-rounds``), ``--runs`` times: caught when ``ab:decode_tps`` does not pass. The part ``ab-same`` (or
   ``--ab-unchanged``) also runs the A/B of the unchanged artifact against itself: the gate's false alarms.
   ``--parts`` picks which to run (default unchanged,slow,ab).

Parts 2-4 run interleaved (unchanged, slow, A/B, unchanged, ...), so that a change of the machine's load during
the measurement reaches each part alike.

Writes OUT/summary.json and OUT/summary.md (with ``--reuse-baseline``: OUT/summary-PARTS.*): the CPU (model and
the instruction sets that matter), the load average and each run's busy flag. Exit 0 when the targets hold (at most
1 false alarm, every slowdown caught both ways), 1 when one does not, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

FAST = ["--limit", "4", "--warmup", "1", "--latency-prompts", "4", "--gen-tokens", "4", "-p", "64",
        "--no-fidelity", "--timeout", "600"]
DECODE = "min_decode_tokens_per_s"
ISA = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")


def edgemed(*args: Any, check: bool = False) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "edgemed.cli.main", *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


def doc_of(out: Path) -> dict[str, Any]:
    return json.loads((out / "bench.json").read_text())


def point_failures(doc: dict[str, Any], limits: dict[str, float] | None = None) -> int:
    """Checks the old point-value rule fails: the measured value against the limit, no interval, no busy flag.
    `limits`: other limits (key -> limit) to apply to the same measured values."""
    from edgemed.bench.gate.budget import budget_keys
    from edgemed.bench.results import ArtifactResult

    if limits is None:
        limits = {c["key"]: c["limit"] for c in doc.get("checks", [])
                  if not c["key"].startswith(("ab:", "baseline")) and c["limit"] is not None}
    bad = 0
    keys = budget_keys()
    for a in doc["artifacts"]:
        r = ArtifactResult.from_dict(a)
        for key, limit in limits.items():
            value = r.metric(keys[key].metric) if r.ok else None
            bad += value is None or (value > limit if key.startswith("max_") else value < limit)
    return bad


def tg_of(doc: dict[str, Any]) -> float | None:
    for a in doc["artifacts"]:
        if a["status"] == "ok":
            return a["throughput"]["tg"].get("avg_ts")
    return None


def run_case(out: Path, art: Path, *args: Any, old_limits: dict[str, float] | None = None) -> dict[str, Any]:
    start = time.time()
    print(f"{time.strftime('%H:%M:%S')} {out.name} ...", file=sys.stderr, flush=True)
    load = os.getloadavg()[0]
    proc = edgemed("bench", art, *FAST, *args, "--out", out)
    if proc.returncode not in (0, 1):
        sys.exit(f"bench exited {proc.returncode}: {proc.stderr[-3000:]}")
    doc = doc_of(out)
    checks = {c["key"]: c for c in doc.get("checks", [])}
    art_doc = next((a for a in doc["artifacts"] if a["status"] == "ok"), {})
    ml = art_doc.get("machine_load") or {}
    decode = checks.get(DECODE)
    return {"exit": proc.returncode, "seconds": round(time.time() - start, 1), "loadavg": round(load, 2),
            "tg": tg_of(doc), "runs": len(art_doc.get("timing_runs") or []) or 1, "busy": ml.get("busy"),
            "wait_share": ml.get("wait_share"),
            "other_cores": ml.get("other_cores_mean"), "reruns": doc["summary"].get("reruns", {}),
            "verdicts": {k: c["verdict"] for k, c in checks.items()},
            "failed_checks": [k for k, c in checks.items() if not c["passed"]],
            "point_failures": point_failures(doc),
            "old_point_failures": point_failures(doc, old_limits) if old_limits else None,
            "decode": decode and {k: decode[k] for k in ("verdict", "passed", "measured", "low", "high", "limit")},
            "ab_decode": checks.get("ab:decode_tps") and {k: checks["ab:decode_tps"][k] for k in (
                "verdict", "passed", "measured", "low", "high", "busy", "reruns")}}


def cpu_line() -> str:
    """The CPU model and the instruction sets that matter for these engines, from /proc/cpuinfo."""
    model, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model == "unknown CPU":
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical CPUs, {' '.join(f for f in ISA if f in flags) or 'no AVX2'}"


def export_once(model: str, fmt: str, folder: Path, *args: str) -> None:
    from edgemed.models import resolve_model

    if not folder.is_dir():
        edgemed("export", resolve_model(model), "--formats", fmt, *args, "--out", folder.parent / f"{fmt}-export",
                check=True)
        folder.parent.mkdir(parents=True, exist_ok=True)
        (folder.parent / f"{fmt}-export" / fmt).rename(folder)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="tiny-random", help="model alias or folder to export (default tiny-random)")
    ap.add_argument("--format", default="gguf-f16", help="the artifact's format (default gguf-f16)")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--suggest-runs", type=int, default=6, help="bench --suggest-runs of the baseline (default 6)")
    ap.add_argument("-r", "--repetitions", type=int, default=5, help="bench -r of every run (default 5)")
    ap.add_argument("-n", "--n-gen", type=int, default=128, help="bench -n of every run (default 128)")
    ap.add_argument("--threads", type=int, default=1, help="threads of the baseline and unchanged runs")
    ap.add_argument("--slow-threads", type=int, help="the slowdown: this many threads (instead of --slow-format)")
    ap.add_argument("--slow-format", default="gguf-bf16", help="the slowdown: this format under the artifact's name")
    ap.add_argument("--slow-export-arg", action="append", default=[],
                    help="an export flag for the slowed format (repeat; e.g. --slow-export-arg=--gguf-output-type=f32)")
    ap.add_argument("--parts", default="unchanged,slow,ab", help="which of unchanged, slow, ab, ab-same to run")
    ap.add_argument("--ab-rounds", type=int, default=3)
    ap.add_argument("--ab-unchanged", action="store_true", help="also the A/B of the unchanged artifact (ab-same)")
    ap.add_argument("--reuse-baseline", action="store_true",
                    help="keep OUT's baseline run and suggested budgets from an earlier call (e.g. to add ab-same)")
    ap.add_argument("--out", type=Path, default=Path("runs/ci-false-alarms"))
    a = ap.parse_args(argv)
    parts = set(a.parts.split(",")) | ({"ab-same"} if a.ab_unchanged else set())
    if a.runs < 1 or a.threads < 1 or a.suggest_runs < 1 or (a.slow_threads is not None and a.slow_threads < 1) \
            or not parts <= {"unchanged", "slow", "ab", "ab-same"}:
        ap.error("--runs, --suggest-runs and --threads >= 1, --slow-threads >= 1, --parts from "
                 "unchanged,slow,ab,ab-same")
    size = ["-r", str(a.repetitions), "-n", str(a.n_gen)]  # every bench run's, after FAST
    out = a.out
    art = out / "arts" / a.format
    export_once(a.model, a.format, art)
    slow_art, slow_threads = art, a.threads
    slowdown = f"{a.slow_threads} threads" if a.slow_threads else \
        f"{' '.join([a.slow_format, *a.slow_export_arg])} under the name {a.format}"
    if a.slow_threads is not None:
        slow_threads = a.slow_threads
    elif parts & {"slow", "ab"}:  # a slower format in a folder named like the artifact (the A/B pairs them by name)
        slow_art = out / "slow" / a.format
        if not slow_art.is_dir():
            export_once(a.model, a.slow_format, out / "slow-arts" / a.slow_format, *a.slow_export_arg)
            slow_art.parent.mkdir(parents=True, exist_ok=True)
            (out / "slow-arts" / a.slow_format).rename(slow_art)
    started = time.time()
    load_start = os.getloadavg()
    budgets = out / "budgets.toml"
    reuse = a.reuse_baseline and all(p.is_file() for p in (budgets, out / "baseline.json",
                                                           out / "baseline" / "bench.json"))
    base = json.loads((out / "baseline.json").read_text()) if reuse else \
        run_case(out / "baseline", art, *size, "--threads", a.threads, "--suggest-budgets", budgets,
                 "--suggest-runs", a.suggest_runs)
    (out / "baseline.json").write_text(json.dumps(base))
    base_doc = doc_of(out / "baseline")
    base_tgs = [tg for tg in [base["tg"], *[x.get("decode_tps") for x in
                                           (base_doc.get("suggest_repeats") or {}).get(a.format, [])]] if tg]
    base_tg = sum(base_tgs) / len(base_tgs)
    old_limits = _old_suggestion(base_doc, out / "budgets-one-run.toml")
    if a.slow_threads is None and not reuse:  # the budgets must apply to the other format too
        budgets.write_text(budgets.read_text().replace(f"[format.{a.format}]", "[default]"))

    def run(name: str, artifact: Path, *args: Any) -> dict[str, Any]:
        return run_case(out / name, artifact, *size, *args, old_limits=old_limits)

    unchanged: list[dict[str, Any]] = []
    slow: list[dict[str, Any]] = []
    ab: list[dict[str, Any]] = []
    ab_same: list[dict[str, Any]] = []
    name = "summary" if not reuse else "summary-" + "-".join(sorted(parts))  # an earlier call's summary stays

    def write_summary() -> tuple[bool, str]:
        """The summary of the runs so far (rewritten after each round: a stopped measurement keeps its figures)."""
        # each slowed run against the unchanged run beside it (interleaved), else against the baseline's mean
        ratios = [round(r["tg"] / (u["tg"] if u and u["tg"] else base_tg), 3) for r, u in
                  zip(slow, unchanged + [None] * (len(slow) - len(unchanged)), strict=True) if r["tg"]]
        ab_ratios = [r["ab_decode"] and round(r["ab_decode"]["measured"], 3) for r in ab]
        summary = {
            "cpu": cpu_line(), "model": a.model, "format": a.format, "threads": a.threads,
            "slowdown": slowdown,
            "runs": a.runs, "suggest_runs": a.suggest_runs, "bench_flags": " ".join(FAST + size),
            "loadavg_start": [round(x, 2) for x in load_start], "loadavg_end": [round(x, 2) for x in os.getloadavg()],
            "seconds": round(time.time() - started, 1), "baseline_tg": base_tgs, "budgets": budgets.read_text(),
            "unchanged_failures": sum(r["exit"] == 1 for r in unchanged),
            "unchanged_busy": sum(bool(r["busy"]) for r in unchanged),
            "unchanged_point_check_failures": sum(r["point_failures"] > 0 for r in unchanged),
            "unchanged_old_design_failures": sum((r["old_point_failures"] or 0) > 0 for r in unchanged),
            "slow_tg_ratio": ratios,
            "slow_caught_by_budget": sum(bool(r["decode"]) and not r["decode"]["passed"] for r in slow),
            "slow_failed_outright": sum(bool(r["decode"]) and r["decode"]["verdict"] == "fail" for r in slow),
            "slow_old_design_caught": sum((r["old_point_failures"] or 0) > 0 for r in slow),
            "slow_caught_by_ab": sum(bool(r["ab_decode"]) and not r["ab_decode"]["passed"] for r in ab),
            "ab_failed_outright": sum(bool(r["ab_decode"]) and r["ab_decode"]["verdict"] == "fail" for r in ab),
            "ab_ratios": ab_ratios,
            "ab_unchanged_failures": sum(r["exit"] == 1 for r in ab_same) if ab_same else None,
            "cases": {"baseline": base, "unchanged": unchanged, "slow": slow, "ab_slow": ab, "ab_unchanged": ab_same},
        }
        ok = (summary["unchanged_failures"] <= 1 and summary["slow_caught_by_budget"] == len(slow)
              and summary["slow_caught_by_ab"] == len(ab) and (summary["ab_unchanged_failures"] or 0) <= 1)
        (out / f"{name}.json").write_text(json.dumps(summary, indent=1))
        text = _summary_md(summary, a, base_tg, ratios, ab_ratios, unchanged, slow, ab, ab_same)
        (out / f"{name}.md").write_text(text)
        return ok, text

    for i in range(a.runs):  # interleaved: a change of the machine's load reaches every part alike
        if "unchanged" in parts:
            unchanged.append(run(f"unchanged-{i}", art, "--threads", a.threads, "--budget", budgets))
        if "slow" in parts:
            slow.append(run(f"slow-{i}", slow_art, "--threads", slow_threads, "--budget", budgets))
        if "ab" in parts:
            ab.append(run(f"ab-slow-{i}", slow_art, "--threads", slow_threads, "--ab-baseline", art,
                          "--ab-threads", a.threads, "--ab-rounds", a.ab_rounds))
        if "ab-same" in parts:
            ab_same.append(run(f"ab-same-{i}", art, "--threads", a.threads, "--ab-baseline", art,
                               "--ab-rounds", a.ab_rounds))
        write_summary()
    ok, text = write_summary()
    print(text, end="")
    return 0 if ok else 1


def _old_suggestion(base_doc: dict[str, Any], path: Path) -> dict[str, float]:
    """The suggestion as it was made from one run (its interval + the margin), from the baseline's first run: the
    limits the old point check is applied with."""
    from edgemed.bench.gate.budget import load_budgets
    from edgemed.bench.gate.suggest import suggest_budgets
    from edgemed.bench.results import ArtifactResult

    results = [ArtifactResult.from_dict(x) for x in base_doc["artifacts"]]
    path.write_text(suggest_budgets(results, 0.10, base_doc.get("reference"), "the baseline's first run"))
    budgets = load_budgets(path)
    return {k: v for table in budgets.formats.values() for k, v in table.items()}


def _summary_md(s: dict[str, Any], a, base_tg: float, ratios, ab_ratios, unchanged, slow, ab, ab_same) -> str:
    def span(xs):
        xs = [x for x in xs if x]
        return f"{min(xs):.2f}-{max(xs):.2f}" if xs else "-"

    lines = [f"# CI false alarms and misses ({s['cpu']})", "",
             f"{a.model} {a.format}, {a.threads} thread(s), `edgemed bench {s['bench_flags']}`; {a.runs} runs each "
             f"planned ({max(map(len, (unchanged, slow, ab, ab_same)))} done); "
             f"budgets suggested by one baseline bench with --suggest-runs {a.suggest_runs} (tg {base_tg:.0f} t/s "
             f"mean); slowdown: {s['slowdown']}. Load average {s['loadavg_start']} at the start, "
             f"{s['loadavg_end']} at the end; {s['seconds']:.0f} s in all.", ""]
    if unchanged:
        lines.append(f"- unchanged artifact: **{s['unchanged_failures']}/{len(unchanged)}** runs failed (interval "
                     f"verdicts on the runs' mean, bench's defaults --timing-runs 3, --retries 2, --inconclusive fail; "
                     f"{s['unchanged_busy']} measured busy); the old point "
                     f"check failed {s['unchanged_point_check_failures']}/{len(unchanged)} against the same budgets "
                     f"and {s['unchanged_old_design_failures']}/{len(unchanged)} against the old one-run suggestion")
    if slow:
        lines.append(f"- slowdown as a budget (tg ratio to the unchanged run beside it {span(ratios)}): caught in "
                     f"**{s['slow_caught_by_budget']}/{len(slow)}** ({s['slow_failed_outright']} failed outright, the "
                     f"rest inconclusive and counted failed)")
    if ab:
        lines.append(f"- slowdown through the A/B gate (interleaved tg ratio {span(ab_ratios)}): caught in "
                     f"**{s['slow_caught_by_ab']}/{len(ab)}** ({s['ab_failed_outright']} failed outright)")
    if ab_same:
        lines.append(f"- A/B of the unchanged artifact against itself: {s['ab_unchanged_failures']}/{len(ab_same)} "
                     "runs failed")
    lines += ["", "| case | exit | tg t/s (first run) | decode check | runs | busy | wait | load avg | s |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, cases in (("unchanged", unchanged), ("slow", slow), ("ab-slow", ab), ("ab-same", ab_same)):
        for i, r in enumerate(cases):
            check = r["ab_decode"] if name.startswith("ab") else r["decode"]
            verdict = "-" if not check else \
                f"{check['verdict']} {check['measured']:.3g} [{check['low'] or 0:.3g}, {check['high'] or 0:.3g}]"
            wait = f"{r['wait_share']:.0%}" if r["wait_share"] is not None else "-"
            lines.append(f"| {name} {i} | {r['exit']} | {r['tg'] or 0:.0f} | {verdict} | {r.get('runs', 1)} | "
                         f"{r['busy']} | {wait} | "
                         f"{r['loadavg']} | {r['seconds']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
