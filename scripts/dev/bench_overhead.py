#!/usr/bin/env python
"""Does the bench report a process's peak memory as the OS sees it? Prints the ratio (target: within 5%).

Peak resident memory of one artifact's worker as `edgemed bench` reports it (sampled every 20 ms + the kernel's
wait4 accounting through the launcher) against GNU `/usr/bin/time -v` around the very same worker job
(`apt-get install -y time`). Throughput parity with the engines' own tools is scripts/dev/crosscheck_engines.py.

Usage:
    python scripts/dev/bench_overhead.py runs/pipeline/artifacts/gguf-q8_0 --threads 2 --out /tmp/overhead
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

GNU_TIME = "/usr/bin/time"


def max_rss_bytes(time_output: str) -> int:
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", time_output)
    if not m:
        raise SystemExit(f"could not read GNU time's output:\n{time_output[-2000:]}")
    return int(m.group(1)) * 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("artifact", help="an artifact folder (or .gguf file)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=8, help="accuracy questions in the bench run")
    ap.add_argument("--out", type=Path, default=Path("/tmp/edgemed-overhead"))
    args = ap.parse_args()
    if not Path(GNU_TIME).exists():
        raise SystemExit(f"{GNU_TIME} not found: install GNU time (apt-get install -y time)")

    from edgemed.bench.config import BenchConfig
    from edgemed.bench.run import run_bench

    config = BenchConfig(limit=args.limit, threads=args.threads, n_prompt=128, n_gen=32, repetitions=2,
                         fidelity=False, out=args.out / "bench")
    doc = run_bench([Path(args.artifact)], config, show=False)
    art = doc["artifacts"][0]
    if art["status"] != "ok":
        raise SystemExit(f"bench failed: {art['failure']}")
    job = args.out / "bench" / "work" / f"{art['name']}.job.json"
    timed = subprocess.run([GNU_TIME, "-v", sys.executable, "-m", "edgemed.bench.worker", str(job),
                            str(args.out / "timed-result.json")], capture_output=True, text=True)
    if timed.returncode != 0:
        raise SystemExit(timed.stderr[-3000:])
    mem, gnu = art["memory"], max_rss_bytes(timed.stderr)
    report = {"artifact": art["path"], "threads": args.threads, "harness": mem["peak_rss_bytes"],
              "harness_sampled": mem["peak_rss_sampled_bytes"], "harness_wait4": mem["peak_rss_os_bytes"],
              "gnu_time_same_job": gnu, "ratio": mem["peak_rss_bytes"] / gnu}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "overhead.json").write_text(json.dumps(report, indent=2))
    print(f"peak RSS: harness {report['harness'] / 1e6:.1f} MB (sampled {report['harness_sampled'] / 1e6:.1f}, "
          f"wait4 {report['harness_wait4'] / 1e6:.1f})  /usr/bin/time -v {gnu / 1e6:.1f} MB  "
          f"ratio {report['ratio']:.3f}  ({'within' if abs(report['ratio'] - 1) <= 0.05 else 'OUTSIDE'} 5%)")
    (args.out / "timed-result.json").unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
