"""Measure the family x format support matrix and write docs/families.md (rerun it to refresh the page).

For each family's tiny random alias (``tiny-random`` for Llama, ``tiny-random-<family>`` for the others) it runs
the real ``edgemed pipeline --max-steps 2`` (train, merge, export of every format asked for, verification against
the merged model by delta log p, bench) in a subprocess, then reads the pipeline's own records: export.json
(status, reason, max |delta log p|) and bench.json (which artifacts were measured). A cell is:

- ``ok 0.0012``: exported, verified (max |delta log p| at export), evaluated and benched;
- ``verified 0.0012``: exported and verified, left out of the bench (the reason is listed below the table);
- ``refused: <engine> <version>: ...``: refused before any work with the engine's limit named;
- ``FAILED: ...``: anything else (a failed export or verification, a crash): a bug to fix.

    .venv/bin/python scripts/dev/family_matrix.py                      # every family, every column (an hour)
    .venv/bin/python scripts/dev/family_matrix.py --families qwen3,gemma3 --formats hf,gguf-q8_0 --no-docs

The random tiny models score at chance: the delta log p of the export check decides whether an artifact is right.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HAND_WRITTEN = "<!-- written by hand below: kept when the script rewrites the page -->"
DEFAULT_COLUMNS = ["hf", "bnb-int8", "bnb-nf4", "onnx", "onnx-int8", "onnx-int4", "openvino-int8", "openvino-int4",
                   "openvino-int4-awq", "gguf-f16", "gguf-q8_0", "gguf-q4_k_m", "gguf-q4_k_m-imatrix"]


def families() -> list[str]:
    sys.path.insert(0, str(REPO))
    from edgemed.tiny_families import FAMILIES

    return ["llama", *FAMILIES]


def alias(family: str) -> str:
    return "tiny-random" if family == "llama" else f"tiny-random-{family}"


def plain_folder(family: str, out: Path) -> Path:
    """The family's tiny model as a user's own folder: loaded and saved with save_pretrained (model, tokenizer) into
    OUT/folders/<family>/model, a name that does not say the family (as a hub snapshot's hash does not)."""
    dest = out / "folders" / family / "model"
    if not (dest / "config.json").is_file():
        code = ("import sys; from transformers import AutoModelForCausalLM as M, AutoTokenizer as T; "
                "from edgemed.models import resolve_model; src = resolve_model(sys.argv[1]); "
                "M.from_pretrained(src).save_pretrained(sys.argv[2]); "
                "T.from_pretrained(src).save_pretrained(sys.argv[2])")
        subprocess.run([sys.executable, "-c", code, alias(family), str(dest)], check=True, cwd=REPO)
    return dest


def run_family(family: str, formats: list[str], out: Path, limit: int, threads: int, bench: str,
               rerun: bool = True, previous: dict | None = None, as_folder: bool = False) -> dict:
    """One pipeline run (on the alias, or on the same model saved as a plain folder); its exit code, time, the tail
    of its stderr and the per-format cells."""
    folder = out / family
    model = str(plain_folder(family, out)) if as_folder and rerun else alias(family)
    cmd = [sys.executable, "-m", "edgemed.cli.main", "pipeline", "--model", model, "--max-steps", "2",
           "--out", str(folder), "--formats", ",".join(formats), "--bench-formats", bench, "--limit", str(limit),
           "--repetitions", "1", "--n-gen", "8", "--threads", str(threads)]
    start = time.perf_counter()
    if rerun:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        (out / f"{family}.log").write_text(f"{proc.stdout}\n--- stderr ---\n{proc.stderr}")
    else:  # the earlier run's records, log and exit code (matrix.json)
        log = (out / f"{family}.log").read_text() if (out / f"{family}.log").is_file() else ""
        proc = subprocess.CompletedProcess(cmd, (previous or {}).get("exit_code", 1), "",
                                           log.split("--- stderr ---")[-1])
    seconds = (previous or {}).get("seconds", 0.0) if not rerun else time.perf_counter() - start
    exports = _read(folder / "artifacts" / "export.json")
    bench = _read(folder / "bench" / "bench.json")
    artifacts = [a for a in (bench or {}).get("artifacts", []) if isinstance(a, dict)]
    benched = {a.get("format") for a in artifacts if a.get("status") == "ok"}
    left_out = dict((bench or {}).get("left_out") or {})
    for a in artifacts:
        if a.get("status") != "ok":
            left_out[a.get("format")] = f"bench failed: {str((a.get('failure') or {}).get('message', ''))[:200]}"
    cells = {}
    results = (exports or {}).get("results", []) if isinstance(exports, dict) else []
    for r in results:
        cells[r["format"]] = cell(r, benched, left_out)
    crash = "Traceback" in proc.stderr or proc.returncode == 3
    for fmt in formats:
        if fmt not in cells:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]
            cells[fmt] = {"kind": "failed", "text": f"FAILED: not exported (pipeline exit {proc.returncode}: {tail})"}
    return {"family": family, "alias": alias(family), "model": model, "exit_code": proc.returncode,
            "seconds": round(seconds, 1),
            "traceback": crash, "cells": cells, "stderr_tail": proc.stderr.strip().splitlines()[-5:]}


def cell(r: dict, benched: set, left_out: dict) -> dict:
    v = r.get("verification") or {}
    if r.get("status") == "skipped":  # up to date from an earlier run of the same source: its manifest's check
        manifest = _read(Path(r["path"]) / "edgemed.json") or {}
        v = manifest.get("verification") or {}
        r = {**r, "status": "exported" if manifest.get("status") == "verified" else r["status"]}
    delta = v.get("max_abs_delta")
    if r.get("status") == "exported" and v.get("passed"):
        if r["format"] in benched:
            return {"kind": "ok", "delta": delta, "text": f"ok {delta:.2g}"}
        if str(left_out.get(r["format"], "")).startswith("bench failed"):
            return {"kind": "failed", "text": f"FAILED: {left_out[r['format']]}"}
        return {"kind": "verified", "delta": delta, "text": f"verified {delta:.2g}",
                "note": left_out.get(r["format"])}
    if r.get("status") == "unavailable":
        return {"kind": "refused", "text": f"refused: {r.get('reason')}"}
    return {"kind": "failed", "text": f"FAILED: {r.get('status')}: {str(r.get('reason'))[:300]}"}


def _read(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def versions() -> dict:
    import importlib.metadata as md

    out = {}
    for pkg in ("transformers", "torch", "optimum-onnx", "onnxruntime", "openvino", "nncf", "llama-cpp-python"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def cpu_name() -> str:
    """The CPU's model name and the instruction sets the engines' kernels pick by (AVX2, AVX-512, VNNI, AMX)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    name = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), "")
    flags = set(next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), []))
    known = [("avx2", "AVX2"), ("avx512f", "AVX-512"), ("avx512_vnni", "VNNI"), ("avx512_bf16", "AVX512-BF16"),
             ("amx_tile", "AMX")]
    return f"{name} ({', '.join(label for flag, label in known if flag in flags)})"


def write_docs(rows: list[dict], columns: list[str], path: Path, argv: list[str]) -> None:
    sys.path.insert(0, str(REPO))
    from edgemed.tiny_families import FAMILIES

    lines = ["# Model families", "",
             "Which model families go through which format, measured by `scripts/dev/family_matrix.py` (rerun it to",
             "refresh this page). Each row is the family's tiny random alias (`tiny-random-<family>`: the family's",
             "real transformers config class, shrunk to hidden size 64 (SmolLM3: 128) with its quirks kept, random",
             "weights, seed 0,",
             "SmolLM2's tokenizer with the family's special tokens and chat template) through the real",
             "`edgemed pipeline --max-steps 2`: LoRA training, merge, export, verification against the merged model",
             "(max |delta log p| of the answer letters), evaluation and bench. Random models score at chance, so the",
             "verification's delta log p decides whether an artifact is right.", "",
             "Cells: `ok <delta>` exported, verified, evaluated and benched; `verified <delta>` exported and verified,",
             "not benched (the script benches every artifact of the families in `--bench-all`, Qwen3 and Gemma 3 by",
             "default, and `--bench-formats` of the others, to keep a run near an hour on 2 cores); `refused (n)`",
             "refused before any work with the engine's limit named (listed below); `FAILED` a bug (none should",
             "remain). The pipeline column is its exit code and wall time on a shared, busy CPU.", "",
             f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit {_commit()}, CPU: {cpu_name()} "
             f"({os.cpu_count()} cores, shared with other jobs: times are noisy).",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()) + ".",
             f"Command: `{' '.join(['.venv/bin/python', 'scripts/dev/family_matrix.py', *argv])}`", "",
             "| family | " + " | ".join(columns) + " | pipeline |",
             "|---" * (len(columns) + 2) + "|"]
    notes: list[str] = []
    for row in rows:
        cells = []
        for c in columns:
            got = row["cells"].get(c)
            text = got["text"] if got else "not run"
            if got and got["kind"] == "refused":
                notes.append(f"- {row['family']}, {c}: {text}")
                text = "refused (1)".replace("1", str(len(notes)))
            if got and got.get("note"):
                notes.append(f"- {row['family']}, {c}: not benched: {got['note']}")
            cells.append(text.replace("|", "\\|"))
        exit_text = f"exit {row['exit_code']}, {row['seconds']:.0f} s"
        if row.get("note"):
            notes.append(f"- {row['family']}: {row['note']}")
        lines.append(f"| {row['family']} | " + " | ".join(cells) + f" | {exit_text} |")
    if notes:
        lines += ["", "Refusals and notes (numbered as in the table):", "", *notes]
    lines += ["", "## The families", "", "| family | alias | classes | quirks kept in the tiny model |",
              "|---|---|---|---|",
              "| llama | `tiny-random` | LlamaConfig / LlamaForCausalLM | GQA 2:1, tied head, SmolLM2's chatml "
              "template |"]
    for name, fam in FAMILIES.items():
        lines.append(f"| {name} | `tiny-random-{name}` | {fam.config_class} / {fam.model_class} | {fam.quirks} |")
    lines += ["", "## Prompts", "",
              "Every family is trained and scored on its own chat template, rendered as transformers renders it",
              "(`edgemed/chat_template.py`, Jinja2, thinking off: `enable_thinking=False`) and recorded in the lineage",
              "(`prompt_template`: the strings around the question and the answer, how the system text was passed,",
              "the BOS rule). Templates without a system role (Gemma 2; Mistral's, which drops the system text once",
              "the answer follows) get it folded into the first user turn. A template that emits `bos_token` while the",
              "tokenizer adds BOS itself keeps one BOS. `tests/test_families.py` checks, per family, that the training",
              "ids and the scoring prompt in every runtime's tokenizer equal `apply_chat_template`'s ids.",
              "SmolLM3's template writes today's date into its system block: the date of training is recorded with",
              "the prompt and scoring uses it, as trained.", "",
              "## What edgemed does for the engines", "",
              "- Refusals come from the registry (`edgemed.registry.ARCHITECTURE_LIMITS`), checked before any work:",
              "  llama.cpp's converter reads Gemma 2's vocabulary only from a SentencePiece `tokenizer.model`. Real",
              "  Gemma 2 checkpoints ship one, so they convert; the tiny model (a BPE tokenizer.json) is refused.",
              "- GGUF `general.name` is the base model's name (from the lineage, else the folder's), never the merged",
              "  folder's, made to agree with the tokenizer: llama.cpp applies Phi-3's vocabulary rule (its markers",
              "  strip the whitespace after them, as transformers' tokenizer does) only to a name with `phi3` or",
              "  `phi-3` in it. A merged Phi-3 named `merged`, or a user's Phi-3 folder named `model`, tokenized",
              "  differently and failed the check; such a name now gets ` (phi3 tokenizer)` added.",
              "- llama.cpp has Gemma 3's layer pattern built in (5 sliding-window layers, then 1 global; the converter",
              "  writes none): the tiny Gemma 3 keeps the real pattern (6 layers, window 16, crossed by every prompt).",
              "- bitsandbytes' CPU 4-bit kernel needs output features in multiples of 32, as every real model of these",
              "  families has: the tiny models with one KV head keep 32 KV-projection outputs (head_dim 32).",
              "- LoRA targets are the linear layers of the decoder blocks (`edgemed/train/targets.py`), Phi-3's fused",
              "  `qkv_proj` and `gate_up_proj` included; `--target-modules` overrides.", ""]
    kept = path.read_text().partition(HAND_WRITTEN)[2] if path.is_file() else ""
    path.write_text("\n".join(lines) + "\n" + HAND_WRITTEN + (kept or "\n"))


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=REPO).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", default="all", help="comma-separated families (default: all)")
    ap.add_argument("--formats", default=",".join(DEFAULT_COLUMNS), help="comma-separated formats (columns)")
    ap.add_argument("--out", type=Path, default=Path("runs/family-matrix"))
    ap.add_argument("--limit", type=int, default=8, help="questions scored per artifact in the bench")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bench-formats", default="hf,gguf-q8_0",
                    help="formats the pipeline benches for most families (the others: exported and verified)")
    ap.add_argument("--bench-all", default="qwen3,gemma3", help="families whose every artifact is benched")
    ap.add_argument("--docs", type=Path, default=REPO / "docs" / "families.md")
    ap.add_argument("--no-docs", action="store_true", help="print the results only")
    ap.add_argument("--no-run", action="store_true",
                    help="rebuild the rows from the runs already in --out (their records, logs and times)")
    ap.add_argument("--as-folder", action="store_true",
                    help="run each family's model as a plain local folder (save_pretrained of the alias, in a folder "
                         "named 'model') instead of its alias")
    args = ap.parse_args(argv)
    names = families() if args.families == "all" else args.families.split(",")
    formats = args.formats.split(",")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    earlier = {r["family"]: r for r in (_read(args.out / "matrix.json") or [])}
    for name in names:
        bench = "all" if name in args.bench_all.split(",") else args.bench_formats
        row = run_family(name, formats, args.out, args.limit, args.threads, bench, rerun=not args.no_run,
                         previous=earlier.get(name), as_folder=args.as_folder)
        if not args.no_run or not earlier.get(name, {}).get("note"):
            row.pop("note", None)
        else:
            row["note"] = earlier[name]["note"]
        rows.append(row)
        print(json.dumps({k: row[k] for k in ("family", "exit_code", "seconds", "traceback")}),
              {f: c["text"][:60] for f, c in row["cells"].items()}, flush=True)
        (args.out / "matrix.json").write_text(json.dumps(rows, indent=2))
    if not args.no_docs:
        write_docs(rows, formats, args.docs, argv)
        matrix = {"measured": time.strftime("%Y-%m-%d", time.gmtime()), "commit": _commit(), "cpu": cpu_name(),
                  "versions": versions(), "formats": formats,
                  "rows": [{k: r[k] for k in ("family", "alias", "exit_code", "cells") if k in r} for r in rows]}
        (REPO / "edgemed" / "data" / "family_matrix.json").write_text(json.dumps(matrix, indent=1) + "\n")
    return 1 if any(r["traceback"] or any(c["kind"] == "failed" for c in r["cells"].values()) for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
