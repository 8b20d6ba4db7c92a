#!/usr/bin/env python3
"""A corpus of bad inputs and faults, run against the real ``edgemed`` CLI.

Every case is one real subprocess (``python -m edgemed.cli.main ...``) on the tiny model (``tiny-random``) and
the bundled ``sample`` data, with fixtures built in a temp folder: bad data files, bad artifacts, bad budget
files, bad usage, output-path faults (existing files, read-only and full file systems, folders without write
permission) and signals during the work. Each case is judged on:

* the exit code (usually 2: bad input; 1 only for a broken budget; 0 where the input is in fact fine),
* no Python traceback and no "internal error" in stdout or stderr,
* for a failure, one ``error:`` line in stderr that says something,
* its output: an ``--out`` that did not exist before a failed run must not exist after it (and one that did must
  be unchanged), and nothing ``*.partial`` / ``*.tmp`` / ``.edgemed-write-check*`` is left in the case folder,
* signal cases: no process of the command left running, no leftovers, and the same command re-run exits 0.

Usage::

    .venv/bin/python scripts/dev/bad_input_corpus.py --fast          # 37 cases, one or two per loader and command
    .venv/bin/python scripts/dev/bad_input_corpus.py                 # the ~200 default cases (~15 min on 2 cores)
    .venv/bin/python scripts/dev/bad_input_corpus.py --extended      # and ~245 more variants (~20 min in all)
    .venv/bin/python scripts/dev/bad_input_corpus.py -k budget       # cases whose id contains 'budget'
    .venv/bin/python scripts/dev/bad_input_corpus.py --list          # ids and what a user did, nothing run
    .venv/bin/python scripts/dev/bad_input_corpus.py --out corpus.json --work /tmp/corpus   # keep fixtures, JSON

Exit 0 when every case passed (or was skipped), 1 when any failed, 2 on bad usage of this script.
Cases that need root powers (tmpfs and read-only bind mounts, a private /dev/full node made with mknod) are
skipped with the reason when they are not available; cases that need a user without write permission run as
root with CAP_DAC_OVERRIDE dropped (``setpriv``), else are skipped as "skipped: root". Fixtures (a tiny train
run, its merged model, hf/gguf-q8_0/onnx artifacts, one bench and one eval) take about 90 s; ``--work DIR``
keeps and reuses them. Device outputs (/dev/full, /dev/null) are always private nodes in the case folder, never
the machine's: an atomic rename over them replaces the node with a regular file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]  # the repo: this file is scripts/dev/bad_input_corpus.py
VENV_PY = ROOT / ".venv" / "bin" / "python"
PY = str(VENV_PY) if VENV_PY.exists() else sys.executable
CLI = [PY, "-m", "edgemed.cli.main"]
DROP_CAPS = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"]
LEFTOVER = re.compile(r"(\.partial|\.tmp$|^\.edgemed-write-check|^\.[^/]*\.old$)")

# Fast settings so each case that gets past validation finishes in seconds on the tiny model.
TRAIN_FAST = ["--model", "tiny-random", "--data", "sample", "--max-steps", "1", "--limit", "16", "--eval-limit", "2",
              "--batch-size", "4"]
EVAL_FAST = ["--limit", "2", "--no-progress"]
BENCH_FAST = ["--limit", "2", "-p", "16", "-n", "4", "-r", "1", "--warmup", "0", "--latency-prompts", "1",
              "--gen-tokens", "2", "--no-fidelity", "--timeout", "120"]
TRAIN_SIG = ["--model", "tiny-random", "--data", "sample", "--max-steps", "4", "--limit", "32", "--eval-limit", "2",
             "--batch-size", "4", "--save-steps", "1"]
PIPE_FAST = ["--model", "tiny-random", "--data", "sample", "--max-steps", "1", "--formats", "gguf-q8_0",
             "--limit", "2", "--repetitions", "1", "--n-gen", "4"]


# Cases run only with --extended (the default set is about 200; these add variants of the same faults).
_EXTENDED_IDS = """
data-empty-json data-ws-json data-bom-json data-binary-json data-nul-csv data-csv-wrong-header data-csv-ragged
data-json-null data-json-data-not-list data-jsonl-nested-obj data-jsonl-line-str data-jsonl-line-num
data-jsonl-line-null data-jsonl-trailing data-cop-neg data-cop-float data-cop-bool data-cop-missing
data-option-blank data-option-dict data-question-list data-question-missing data-subject-int data-id-missing
data-unlabelled data-emoji data-crlf data-blank-lines data-good-json data-good-json-data data-xlsx
data-folder-no-split data-dangling-link data-hub-missing data-cop-base-bad data-parquet-is-jsonl data-parquet-zeroed
data-parquet-no-rows data-space-path data-latin1-csv data-header-only-csv data-json-list-of-str data-opd-missing
data-good-csv eval-data-dup-ids eval-data-dir eval-data-ws train-data-binary train-data-json-str
train-data-missing-cols eval-art-txt-file eval-art-manifest-binary eval-art-manifest-str eval-art-manifest-is-dir
eval-art-manifest-format-int eval-art-manifest-schema-str eval-art-manifest-files-str
eval-art-manifest-files-bad-entry eval-art-manifest-lineage-str eval-art-gguf-header-zeroed eval-art-gguf-file-text
eval-art-gguf-file-fifo eval-art-onnx-truncated eval-art-onnx-missing eval-art-onnx-no-tokenizer
eval-art-hf-config-not-json eval-art-onnx-no-manifest eval-art-manifest-empty eval-art-alias-typo
eval-art-manifest-list merge-adapter-file merge-adapter-config-missing merge-adapter-weights-truncated
merge-adapter-lineage-list merge-adapter-runjson-corrupt merge-base-missing export-merged-file
export-merged-weights-truncated export-merged-config-not-json export-merged-no-tokenizer
export-merged-artifacts-folder bench-budget-bool-value bench-budget-array-value bench-budget-neg-inf
bench-budget-format-scalar bench-budget-default-scalar bench-budget-top-level-key bench-budget-duplicate-key
bench-budget-utf16 bench-budget-symlink-loop bench-budget-empty pipeline-budget-nan bench-budget-missing
bench-budget-dir train-usage-max-steps-neg1 train-usage-epochs-0 train-usage-epochs-neg1 train-usage-limit-neg1
train-usage-lr-neg1 train-usage-batch-size-neg1 train-usage-warmup-ratio-neg0-5 train-usage-weight-decay-nan
train-usage-weight-decay-neg1 train-usage-eval-fraction-neg0-1 train-usage-eval-fraction-nan
train-usage-eval-limit-0 train-usage-max-length-neg1 train-usage-lora-alpha-nan train-usage-lora-dropout-neg0-1
train-usage-eval-steps-0 train-usage-save-steps-0 train-usage-logging-steps-0 train-usage-threads-neg1
train-usage-target-modules-no-such-proj train-usage-device-banana train-usage-seed-abc train-usage-grad-accum-0
train-usage-warmup-ratio-2 train-usage-max-length-0 merge-usage-tolerance-neg1 merge-usage-prompts-neg1
merge-usage-device-banana export-usage-threads-neg1 export-usage-formats-space export-usage-formats-onnx-int3
eval-usage-limit-neg1 eval-usage-batch-size-neg1 eval-usage-threads-neg1 eval-usage-max-new-tokens-neg1
eval-usage-temperature-neg1 eval-usage-top-p-0 eval-usage-top-p-nan eval-usage-sweep-repeats-neg1
eval-usage-sweep-temperatures-neg1 eval-usage-sweep-max-new-tokens-0 eval-usage-device-banana
eval-usage-scoring-bogus eval-usage-limit-1-5 eval-usage-reference-ref-empty eval-usage-reference-ref-not-json
eval-usage-reference-folder-no-split eval-usage-batch-size-0 bench-usage-t-neg1 bench-usage-p-neg1
bench-usage-n-neg1 bench-usage-warmup-neg1 bench-usage-gen-tokens-0 bench-usage-batch-size-0
bench-usage-fidelity-ctx-0 bench-usage-fidelity-chunks-0 bench-usage-fidelity-top-k-0 bench-usage-tolerance-neg10
bench-usage-max-memory-neg1gb bench-usage-max-p95-ms-neg1 bench-usage-max-p95-ms-nan bench-usage-max-kld-neg1
bench-usage-profile-comma bench-usage-timeout-nan bench-usage-timeout-neg1 bench-usage-limit-neg1
bench-usage-baseline-nope bench-usage-baseline-bench-list bench-usage-fidelity-text-nope
bench-usage-fidelity-text-fidelity-empty bench-usage-latency-prompts-0 pipeline-usage-max-steps-neg1
pipeline-usage-limit-0 pipeline-usage-repetitions-0 pipeline-usage-n-gen-neg1 pipeline-usage-formats-gguf-q9
pipeline-usage-seed-abc report-usage-tolerance-neg5 cli-data-no-sub cli-export-no-merged cli-bench-no-artifacts
cli-report-one-arg cli-help cli-info-bogus cli-data-bogus cli-merge-bogus cli-export-bogus cli-report-bogus
cli-pipeline-bogus report-in-empty-obj report-in-wrong-shape report-in-empty report-in-list out-under-file-info
out-under-file-report out-under-file-merge out-under-file-pipeline out-under-file-bench out-readonly-fs-report
out-readonly-fs-pipeline out-readonly-fs-info out-tmpfs-full-info out-tmpfs-full-report out-tmpfs-full-pipeline
out-tmpfs-full-data out-no-write-perm-info out-no-write-perm-report out-no-write-perm-merge out-proc-data
out-proc-info bench-junit-proc bench-junit-missing-parent data-json-object data-cop-nan data-txt-ext
data-split-missing data-parquet-empty eval-data-binary eval-data-unicode-path train-data-empty
eval-art-manifest-unknown-runtime eval-art-gguf-file-empty eval-art-empty-folder bench-junk-folder bench-nonexistent
merge-adapter-nonexistent merge-adapter-weights-missing export-merged-nonexistent bench-budget-str-value
bench-budget-inf bench-budget-binary eval-usage-threads-0 eval-usage-reference-nope bench-usage-p-0 bench-usage-r-0
bench-usage-max-memory-abc bench-usage-tolerance-abc bench-usage-reference-no-such-artifact train-usage-lr-nan
train-usage-lora-r-0 train-usage-batch-size-0 out-is-file-report out-is-file-info out-readonly-fs-data
out-tmpfs-full-bench out-no-write-perm-bench bench-junit-under-file cli-eval-bogus report-in-binary
export-usage-formats-hf-nonsense merge-usage-tolerance-nan
"""
EXTENDED = frozenset(_EXTENDED_IDS.split())

# --fast: one or two cases per loader and per command (all from the default set), the subset the test suite runs
# (tests/test_bad_input_corpus.py, one test per case). The base fixtures then hold the gguf-q8_0 artifact only,
# so no case here may use the hf or onnx artifacts.
FAST = (
    # data check: each loader (jsonl, json, csv, parquet), a bad row, a missing file, a good file at a unicode path
    "data-empty", "data-json-truncated", "data-binary-csv", "data-parquet-truncated", "data-cop-7", "data-missing",
    "data-unicode-path",
    # bad data through the other commands
    "eval-data-nested", "train-data-nested", "bench-data-empty", "pipeline-data-empty",
    # bad artifacts: eval, bench, merge, export
    "eval-art-manifest-not-json", "eval-art-gguf-truncated-in-folder",
    "bench-empty-folder", "bench-single-corrupt-manifest",
    "merge-adapter-config-corrupt", "merge-into-itself",
    "export-merged-weights-random", "export-into-input",
    # budgets
    "bench-budget-not-toml", "bench-budget-broken",
    # bad usage, one per command
    "train-usage-max-steps-0", "merge-usage-prompts-0", "export-usage-formats-gguf-q9", "eval-usage-limit-0",
    "bench-usage-t-0", "pipeline-usage-max-steps-0", "report-usage-tolerance-abc", "cli-unknown-command",
    # report inputs
    "report-in-not-json", "report-ok", "report-in-nan-metrics", "report-in-newer-reshaped",
    # tune and pipeline --tune: the grid checked before any work
    "tune-space-onnx-block-33", "pipeline-tune-space-bad",
    # a manifest that names another format than its file
    "eval-art-gguf-type-mislabelled",
    # output paths: an existing file, a read-only and a full file system, no write permission, a device
    "out-is-file-bench", "out-readonly-fs-eval", "out-tmpfs-full-eval", "out-no-write-perm-data",
    "out-dev-full-eval",
    # a signal during the work, then the same command re-run (merge: long enough to be caught on a fast machine;
    # the tiny eval may finish before its signal and is then skipped)
    "signal-merge-term",
)
FAST_FORMATS = "gguf-q8_0"  # the base artifacts the fast cases use
FULL_FORMATS = "hf,gguf-q8_0,onnx"


# ----------------------------------------------------------------------------------------------------------------
# cases


@dataclass
class Ctx:
    """What a case's prepare step gets: its folder, and a way to register cleanups (unmounts)."""

    case_dir: Path
    cleanups: list[Callable[[], None]] = field(default_factory=list)


@dataclass
class Case:
    id: str
    group: str
    argv: list[str]  # edgemed arguments; "{C}" is replaced by the case folder
    expect: tuple[int, ...]
    why: str  # what a user did
    out: str | None = None  # the output path the command was given ("{C}/..."), checked after a failure
    allow_out: bool = False  # a failed run may leave its report there (data check's check.json, bench.json)
    prepare: Callable[[Ctx], None] | None = None
    check: Callable[[Path, str, str], list[str]] | None = None  # (case dir, stdout, stderr) -> problems
    needs: tuple[str, ...] = ()  # "artifacts", "mount", "dropcaps", "nogpu", "parquet", "fifo"
    drop_caps: bool = False
    timeout: float = 120.0
    signal: tuple[int, str, float, float] | None = None  # (signal, "pid"|"group", wait at most s, then extra s)
    signal_when: str | None = None  # signal once this glob (under the case folder) matches; default: anything written
    rerun: bool = False  # signal cases: the same command must then exit 0
    need_error_line: bool = True

    def fmt(self, text: str, cdir: Path) -> str:
        return text.replace("{C}", str(cdir))


@dataclass
class Env:
    work: Path
    fx: Path  # data, budget and other small fixtures
    base: Path  # run, merged, arts, bench1, eval1 (built once)
    can_mount: bool = False
    can_drop_caps: bool = False
    can_mknod: bool = False
    has_gpu: bool = False
    has_parquet: bool = False
    artifacts_ok: bool = False
    artifacts_error: str = ""


def good_rows(n: int = 24) -> list[dict[str, Any]]:
    """The first n sample questions under fresh ids (so no lineage says they were trained on)."""
    path = ROOT / "edgemed" / "data" / "sample.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()][:n]
    for i, row in enumerate(rows, start=1):
        row["id"] = f"fx-{i:04d}"
    return rows


def jsonl(rows: list[Any]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def csv_text(rows: list[dict[str, Any]], columns: list[str]) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return buf.getvalue()


def slug(value: str) -> str:
    """A short id part for a flag value: '' -> empty, ',' -> comma, '-1' -> neg1, a path -> its name."""
    if value == "":
        return "empty"
    if not value.strip():
        return "space"
    if value.strip(",") == "":
        return "comma"
    if "/" in value:
        value = Path(value).stem
    value = re.sub(r"^-(?=\d)", "neg", value.lstrip("-") if value.startswith("--") else value)
    return re.sub(r"[^a-z0-9]+", "-", value.lower()).strip("-") or "x"


def mounts_under(folder: Path) -> list[str]:
    """Mount points at or below `folder`, deepest first (read from /proc/self/mounts)."""
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return []
    prefix = str(folder)
    points = [ln.split()[1].replace("\\040", " ") for ln in lines if len(ln.split()) > 1]
    return sorted({p for p in points if p == prefix or p.startswith(prefix + "/")}, key=len, reverse=True)


def unmount_under(folder: Path) -> None:
    for point in mounts_under(folder):
        subprocess.run(["umount", "-l", point], capture_output=True)


def deep(n: int = 100_000) -> str:
    return "[" * n + "]" * n


def with_row(change: dict[str, Any] | None = None, drop: tuple[str, ...] = (), row: int = 5) -> str:
    rows = good_rows()
    rows[row].update(change or {})
    for key in drop:
        rows[row].pop(key, None)
    return jsonl(rows)


def build_data_fixtures(env: Env) -> None:
    fx = env.fx
    fx.mkdir(parents=True, exist_ok=True)
    rows = good_rows()
    cols = ["id", "question", "opa", "opb", "opc", "opd", "cop", "subject_name", "exp"]
    rnd = random.Random(10)
    binary = bytes(rnd.randrange(256) for _ in range(4096))
    files: dict[str, str | bytes] = {
        "good.jsonl": jsonl(rows),
        "good.json": json.dumps(rows),
        "good_data_key.json": json.dumps({"data": rows}),
        "good.csv": csv_text(rows, cols),
        "crlf.jsonl": jsonl(rows).replace("\n", "\r\n"),
        "blank_lines.jsonl": "\n\n" + jsonl(rows).replace("\n", "\n\n"),
        "empty.jsonl": "",
        "empty.json": "",
        "empty.csv": "",
        "ws.jsonl": "   \n\n\t \n  \n",
        "ws.json": "  \n\t\n",
        "header_only.csv": ",".join(cols) + "\n",
        "bom.jsonl": "\ufeff" + jsonl(rows),
        "bom.csv": "\ufeff" + csv_text(rows, cols),
        "bom.json": "\ufeff" + json.dumps(rows),
        "binary.jsonl": binary,
        "binary.json": binary,
        "binary.csv": binary,
        "latin1.csv": csv_text(rows, cols).replace("nerve", "n\u00e9rve").encode("latin-1", "replace"),
        "utf16.jsonl": jsonl(rows).encode("utf-16"),
        "nul_bytes.csv": csv_text(rows, cols).replace("nerve", "ne\x00rve"),
        "missing_cols.csv": csv_text(rows, ["id", "question", "opa", "cop"]),
        "wrong_header.csv": csv_text([{"a": 1, "b": 2}], ["a", "b"]),
        "ragged.csv": csv_text(rows, cols) + "x,y\n1,2,3,4,5,6,7,8,9,10,11,12\n",
        "huge_field.csv": csv_text(rows[:23] + [dict(rows[23], question="why? " * 60_000)], cols),
        "list_of_str.json": json.dumps(["a", "b", "c"]),
        "str.json": json.dumps("hello"),
        "number.json": "42",
        "null.json": "null",
        "object.json": json.dumps({"question": "no list here"}),
        "data_not_list.json": json.dumps({"data": 5}),
        "truncated.json": json.dumps(rows)[:500],
        "nested.json": deep(),
        "nested.jsonl": jsonl(rows[:3]) + deep() + "\n",
        "nested_obj.jsonl": '{"a":' * 100_000 + "1" + "}" * 100_000 + "\n",
        "line_list.jsonl": jsonl(rows[:3]) + "[1, 2, 3]\n",
        "line_str.jsonl": jsonl(rows[:3]) + '"just a string"\n',
        "line_num.jsonl": jsonl(rows[:3]) + "3.14\n",
        "line_null.jsonl": jsonl(rows[:3]) + "null\n",
        "bad_line.jsonl": jsonl(rows[:3]) + "{this is not json\n" + jsonl(rows[3:]),
        "trailing_garbage.jsonl": jsonl(rows) + "}{",
        "cop_out_of_range.jsonl": with_row({"cop": 7}),
        "cop_negative.jsonl": with_row({"cop": -5}),
        "cop_text.jsonl": with_row({"cop": "B"}),
        "cop_float.jsonl": with_row({"cop": 1.5}),
        "cop_bool.jsonl": with_row({"cop": True}),
        "cop_missing.jsonl": with_row(drop=("cop",)),
        "cop_nan.jsonl": with_row().replace('"cop": 0', '"cop": NaN', 1),
        "opd_missing.jsonl": with_row(drop=("opd",)),
        "option_null.jsonl": with_row({"opb": None}),
        "option_empty.jsonl": with_row({"opc": "   "}),
        "option_dict.jsonl": with_row({"opa": {"text": "x"}}),
        "question_int.jsonl": with_row({"question": 12345}),
        "question_list.jsonl": with_row({"question": ["a", "b"]}),
        "question_missing.jsonl": with_row(drop=("question",)),
        "subject_int.jsonl": with_row({"subject_name": 7}),
        "duplicate_ids.jsonl": jsonl(rows + [dict(rows[2])]),
        "id_missing.jsonl": jsonl([{k: v for k, v in r.items() if k != "id"} for r in rows]),
        "huge_text.jsonl": with_row({"question": "Which nerve? " * 400_000}),
        "long_question.jsonl": with_row({"question": "Which of the following nerves is it? " * 1500}),
        "cop_all_1based.jsonl": jsonl([dict(r, cop=r["cop"] + 1) for r in rows]),
        "unlabelled.jsonl": jsonl([dict(r, cop=-1) for r in rows]),
        "emoji_text.jsonl": with_row({"question": "Which nerve \U0001f9e0\u200d\u202e? \u00e9\u4e2d\u6587"}),
        "notes.txt": jsonl(rows),
        "data.xlsx": binary,
        "budget_ok.toml": "[default]\nmax_peak_rss_mb = 100000\n",
        "budget_broken.toml": "[default]\nmax_peak_rss_mb = 1\n",
        "budget_empty.toml": "",
        "budget_not_toml.toml": "this is [not toml\n = = \n",
        "budget_unknown_key.toml": "[default]\nmax_latncy_ms = 800\n",
        "budget_str.toml": '[default]\nmax_peak_rss_mb = "lots"\n',
        "budget_bool.toml": "[default]\nmin_accuracy = true\n",
        "budget_array.toml": "[default]\nmax_kld = [0.1, 0.2]\n",
        "budget_nan.toml": "[default]\nmax_kld = nan\n",
        "budget_inf.toml": "[default]\nmax_peak_rss_mb = inf\n",
        "budget_neg_inf.toml": "[default]\nmin_decode_tokens_per_s = -inf\n",
        "budget_negative.toml": "[default]\nmax_p95_latency_ms = -5\n",
        "budget_acc_over1.toml": "[default]\nmin_accuracy = 1.5\n",
        "budget_unknown_format.toml": "[default]\nmax_kld = 0.5\n[format.gguf-q9_9]\nmax_kld = 0.1\n",
        "budget_format_scalar.toml": "format = 5\n",
        "budget_unknown_table.toml": "[defaults]\nmax_peak_rss_mb = 1000\n",
        "budget_top_level_key.toml": "max_peak_rss_mb = 1000\n",
        "budget_duplicate_key.toml": "[default]\nmax_kld = 0.1\nmax_kld = 0.2\n",
        "budget_deep.toml": "a = " + deep(50_000) + "\n",
        "budget_binary.toml": binary,
        "budget_utf16.toml": "[default]\nmax_peak_rss_mb = 1000\n".encode("utf-16"),
        "budget_default_scalar.toml": "default = 3\n",
        "ref_binary.jsonl": binary,
        "ref_empty.jsonl": "",
        "ref_nested.jsonl": deep() + "\n",
        "ref_not_json.json": "{not json",
        "fidelity_empty.txt": "",
        "fidelity_binary.txt": binary,
        "not_a_gguf.gguf": "this is text, not a GGUF model\n",
        "random.gguf": binary * 64,
        "empty.gguf": "",
        "bench_not_json.json": "{not json",
        "bench_list.json": "[1, 2, 3]",
        "bench_empty_obj.json": "{}",
        "bench_wrong_shape.json": json.dumps({"artifacts": 5, "config": "x"}),
        "bench_nested.json": deep(),
        "bench_binary.json": binary,
        "bench_empty.json": "",
    }
    for name, content in files.items():
        path = fx / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    (fx / "dir.jsonl").mkdir(exist_ok=True)
    (fx / "folder_no_split").mkdir(exist_ok=True)
    (fx / "folder_no_split" / "readme.md").write_text("no data here\n")
    (fx / "folder_ok").mkdir(exist_ok=True)
    (fx / "folder_ok" / "validation.jsonl").write_text(jsonl(rows))
    (fx / "a file").mkdir(exist_ok=True)
    (fx / "d\u00f6nn\u00e9es m\u00e9dicales \u7a7a\u767d").mkdir(exist_ok=True)
    (fx / "d\u00f6nn\u00e9es m\u00e9dicales \u7a7a\u767d" / "q\u00fcestions \u00e9 1.jsonl").write_text(jsonl(rows))
    (fx / "with space.jsonl").write_text(jsonl(rows))
    (fx / "budget_dir.toml").mkdir(exist_ok=True)
    for name, target in (("loop.jsonl", "loop.jsonl"), ("loop.toml", "loop.toml"), ("dangling.jsonl", "nowhere/x")):
        with contextlib.suppress(FileExistsError):
            os.symlink(target, fx / name)
    if hasattr(os, "mkfifo"):
        for name in ("fifo.jsonl", "fifo.toml", "fifo.gguf", "fifo_ref.jsonl"):
            with contextlib.suppress(FileExistsError):
                os.mkfifo(fx / name)
    if env.has_parquet:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist(rows)
        pq.write_table(table, fx / "good.parquet")
        data = (fx / "good.parquet").read_bytes()
        (fx / "truncated.parquet").write_bytes(data[: len(data) // 2])
        (fx / "random.parquet").write_bytes(binary)
        (fx / "empty.parquet").write_bytes(b"")
        (fx / "jsonl_named.parquet").write_text(jsonl(rows))
        bad = bytearray(data)
        mid = len(bad) // 3
        bad[mid:mid + 200] = bytes(200)
        (fx / "zeroed.parquet").write_bytes(bytes(bad))
        pq.write_table(pa.Table.from_pylist([{"id": "x", "question": "q"}]), fx / "missing_cols.parquet")
        pq.write_table(pa.Table.from_pylist([], schema=table.schema), fx / "no_rows.parquet")
    for p in fx.rglob("*"):
        if p.is_symlink():
            continue
        with contextlib.suppress(OSError):
            p.chmod(0o755 if p.is_dir() else 0o644)


def edgemed(args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + args, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=child_env(None))


def build_base_artifacts(env: Env, formats: str = FULL_FORMATS) -> None:
    """A tiny train run, its merged model, the artifacts of `formats`, one bench run and one eval (once per --work:
    kept fixtures are reused when they hold every format asked for)."""
    b = env.base
    done = b / ".done"
    want = set(formats.split(","))
    if done.exists() and want <= set(done.read_text().split()[-1].split(",")):
        env.artifacts_ok = True
        return
    shutil.rmtree(b, ignore_errors=True)
    b.mkdir(parents=True)
    steps = [
        ["train", *TRAIN_FAST, "--out", str(b / "run")],
        ["merge", "--adapter", str(b / "run"), "--out", str(b / "merged"), "--prompts", "1"],
        ["export", str(b / "merged"), "--formats", formats, "--out", str(b / "arts")],
        ["bench", str(b / "arts" / "gguf-q8_0"), *BENCH_FAST, "--out", str(b / "bench1")],
        ["eval", str(b / "arts" / "gguf-q8_0"), "--data", str(env.fx / "good.jsonl"), *EVAL_FAST,
         "--out", str(b / "eval1")],
    ]
    for args in steps:
        t0 = time.time()
        print(f"[fixtures] edgemed {' '.join(args[:2])} ...", flush=True)
        p = edgemed(args, cwd=b)
        if p.returncode not in (0, 1):  # bench may exit 1 on a busy machine's checks; its bench.json is there
            env.artifacts_error = f"'edgemed {' '.join(args)}' exited {p.returncode}: {last_line(p.stderr)}"
            print(f"[fixtures] FAILED: {env.artifacts_error}", flush=True)
            return
        print(f"[fixtures]   ok in {time.time() - t0:.0f} s", flush=True)
    done.write_text(f"ok {formats}\n")
    env.artifacts_ok = True


def probe_env(env: Env) -> None:
    env.has_gpu = Path("/dev/nvidia0").exists() or Path("/dev/nvidiactl").exists()
    probe = env.work / "probe"
    probe.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0 and shutil.which("mount"):
        m = probe / "m"
        m.mkdir(exist_ok=True)
        ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(m)], capture_output=True)
        if ok.returncode == 0:
            env.can_mount = True
            subprocess.run(["umount", "-l", str(m)], capture_output=True)
    try:
        with contextlib.suppress(FileNotFoundError):
            (probe / "full").unlink()
        os.mknod(probe / "full", 0o666 | stat.S_IFCHR, os.makedev(1, 7))
        env.can_mknod = True
    except (OSError, AttributeError):
        env.can_mknod = False
    if os.geteuid() == 0 and shutil.which("setpriv"):
        d = probe / "ro555"
        d.mkdir(exist_ok=True)
        d.chmod(0o555)
        p = subprocess.run([*DROP_CAPS, PY, "-c", f"open({str(d / 'x')!r}, 'w')"], capture_output=True)
        env.can_drop_caps = p.returncode != 0 and b"PermissionError" in p.stderr
        d.chmod(0o755)


# ---- prepare helpers --------------------------------------------------------------------------------------------

BASE: Path = Path()  # set in main(): env.base
FX: Path = Path()


def copy_art(ctx: Ctx, fmt: str, name: str | None = None) -> Path:
    dst = ctx.case_dir / (name or fmt)
    shutil.copytree(BASE / "arts" / fmt, dst, symlinks=True)
    return dst


def patch_manifest(folder: Path, **changes: Any) -> None:
    path = folder / "edgemed.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data, indent=2))


def resync_file(folder: Path, rel: str) -> None:
    """Make the manifest's size and hash of `rel` match the (corrupted) file, so only loading can tell."""
    import hashlib

    path = folder / "edgemed.json"
    data = json.loads(path.read_text())
    f = folder / rel
    for entry in data.get("files", []):
        if entry["path"] == rel:
            entry["size"] = f.stat().st_size
            entry["sha256"] = hashlib.sha256(f.read_bytes()).hexdigest()
    data["size_bytes"] = sum(e["size"] for e in data.get("files", []))
    path.write_text(json.dumps(data, indent=2))


def gguf_name(folder: Path) -> str:
    return next(p.name for p in folder.glob("*.gguf"))


def corrupt(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: len(data) // 3])
    elif how == "random":
        rnd = random.Random(3)
        path.write_bytes(bytes(rnd.randrange(256) for _ in range(min(len(data), 1 << 16))) * 4)
    elif how == "append":
        path.write_bytes(data + b"\0" * 1000)
    elif how == "header":  # keep the size, break the first KiB
        path.write_bytes(bytes(1024) + data[1024:])
    else:
        raise ValueError(how)


def mount_tmpfs(ctx: Ctx, rel: str, size: str) -> Path:
    mnt = ctx.case_dir / rel
    mnt.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], check=True,
                   capture_output=True)
    ctx.cleanups.append(lambda: subprocess.run(["umount", "-l", str(mnt)], capture_output=True))
    return mnt


def mount_ro(ctx: Ctx, rel: str, fill: Callable[[Path], None] | None = None) -> Path:
    mnt = ctx.case_dir / rel
    mnt.mkdir(parents=True, exist_ok=True)
    if fill:
        fill(mnt)
    subprocess.run(["mount", "--bind", str(mnt), str(mnt)], check=True, capture_output=True)
    subprocess.run(["mount", "-o", "remount,bind,ro", str(mnt)], check=True, capture_output=True)
    ctx.cleanups.append(lambda: subprocess.run(["umount", "-l", str(mnt)], capture_output=True))
    return mnt


def mode555(ctx: Ctx, rel: str = "ro555") -> Path:
    d = ctx.case_dir / rel
    d.mkdir(parents=True, exist_ok=True)
    d.chmod(0o555)
    ctx.cleanups.append(lambda: d.chmod(0o755))
    return d


def make_file(ctx: Ctx, rel: str = "afile", text: str = "I am a file, not a folder\n") -> Path:
    f = ctx.case_dir / rel
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(text)
    return f


def dev_full(ctx: Ctx) -> Path:
    """A character device like /dev/full (1, 7) at CASE/full: every write to it fails with ENOSPC."""
    node = ctx.case_dir / "full"
    os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 7))
    return node


def dev_null(ctx: Ctx) -> Path:
    """A character device like /dev/null (1, 3) at CASE/null."""
    node = ctx.case_dir / "null"
    os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    return node


def still_device(cdir: Path, stdout: str, stderr: str) -> list[str]:
    for name in ("full", "null"):
        node = cdir / name
        if os.path.lexists(node) and not stat.S_ISCHR(node.lstat().st_mode):
            return [f"replaced the /dev/{name} device node with a regular file (an atomic rename over a device)"]
    return []


def seq(*steps: Callable[[Ctx], Any]) -> Callable[[Ctx], None]:
    def run(ctx: Ctx) -> None:
        for s in steps:
            s(ctx)
    return run


# ---- checks -----------------------------------------------------------------------------------------------------


def bench_partial_check(good: str, bad: str) -> Callable[[Path, str, str], list[str]]:
    """A bench over two artifacts where one is broken: bench.json must record `bad` failed and measure `good`."""
    def check(cdir: Path, stdout: str, stderr: str) -> list[str]:
        doc_path = cdir / "bout" / "bench.json"
        if not doc_path.exists():
            return ["no bench.json: the whole run was refused instead of recording the broken artifact as failed"]
        doc = json.loads(doc_path.read_text())
        text = json.dumps(doc)
        problems = []
        failed = doc.get("summary", {}).get("failed_artifacts", [])
        if not any(bad in str(f) for f in failed):
            problems.append(f"bench.json does not list '{bad}' among failed artifacts ({failed})")
        if good not in text:
            problems.append(f"bench.json has no result for '{good}'")
        return problems
    return check


def file_exists_check(rel: str) -> Callable[[Path, str, str], list[str]]:
    def check(cdir: Path, stdout: str, stderr: str) -> list[str]:
        return [] if (cdir / rel).exists() else [f"{rel} was not written"]
    return check


def absent_check(rel: str) -> Callable[[Path, str, str], list[str]]:
    """Nothing was written at `rel` (a cache a refused command must not have started)."""
    def check(cdir: Path, stdout: str, stderr: str) -> list[str]:
        return [f"{rel} was written by a refused command"] if (cdir / rel).exists() else []
    return check


def mentions_check(*words: str) -> Callable[[Path, str, str], list[str]]:
    """The error line (else stderr) must mention one of `words` (e.g. the flag or the file it is about)."""
    def check(cdir: Path, stdout: str, stderr: str) -> list[str]:
        line = error_line(stderr)
        if not line:  # a success, or a failure without an error line (judged on its own)
            return []
        text = line.lower()
        if any(w.lower() in text for w in words):
            return []
        return [f"the message names none of {words}"]
    return check


# ---- the corpus ---------------------------------------------------------------------------------------------------


def build_cases(env: Env) -> list[Case]:  # noqa: C901 - a flat list of cases reads best as one function
    fx = env.fx
    b = env.base
    arts = b / "arts"
    gguf = str(arts / "gguf-q8_0")
    cases: list[Case] = []

    def add(id: str, group: str, argv: list[str], expect: int | tuple[int, ...], why: str, **kw: Any) -> None:
        exp = (expect,) if isinstance(expect, int) else tuple(expect)
        if "dev-full" in id or "dev-null" in id:  # also check the device node survived
            first = kw.get("check")
            kw["check"] = lambda c, o, e, first=first: still_device(c, o, e) + (first(c, o, e) if first else [])
        needs = tuple(kw.pop("needs", ()))
        if any(str(b) in a for a in argv) and "artifacts" not in needs:
            needs = (*needs, "artifacts")
        cases.append(Case(id=id, group=group, argv=argv, expect=exp, why=why, needs=needs, **kw))

    F = lambda name: str(fx / name)  # noqa: E731

    # ---------------- data files: data check ----------------
    data_cases = [
        ("empty", "empty.jsonl", 2, "checked a 0-byte .jsonl"),
        ("ws", "ws.jsonl", 2, "checked a .jsonl holding only spaces and blank lines"),
        ("empty-json", "empty.json", 2, "checked a 0-byte .json"),
        ("ws-json", "ws.json", 2, "checked a .json holding only whitespace"),
        ("empty-csv", "empty.csv", 2, "checked a 0-byte .csv"),
        ("header-only-csv", "header_only.csv", 2, "checked a CSV with the header and no rows"),
        ("bom-jsonl", "bom.jsonl", (0, 2), "saved the JSONL with a UTF-8 BOM (Notepad)"),
        ("bom-csv", "bom.csv", (0, 2), "exported the CSV from Excel with a BOM"),
        ("bom-json", "bom.json", (0, 2), "saved the JSON with a UTF-8 BOM"),
        ("binary-jsonl", "binary.jsonl", 2, "gave random bytes named .jsonl"),
        ("binary-json", "binary.json", 2, "gave random bytes named .json"),
        ("binary-csv", "binary.csv", 2, "gave random bytes named .csv"),
        ("latin1-csv", "latin1.csv", 2, "gave a Latin-1 encoded CSV"),
        ("utf16-jsonl", "utf16.jsonl", 2, "gave a UTF-16 JSONL (Windows PowerShell redirect)"),
        ("nul-csv", "nul_bytes.csv", (0, 2), "gave a CSV with NUL bytes inside a field"),
        ("csv-missing-cols", "missing_cols.csv", 2, "gave a CSV without the opb/opc/opd columns"),
        ("csv-wrong-header", "wrong_header.csv", 2, "gave a CSV of something else entirely"),
        ("csv-ragged", "ragged.csv", 2, "gave a CSV whose last rows have the wrong number of fields"),
        ("csv-huge-field", "huge_field.csv", (0, 2), "gave a CSV with a 300 kB question (over csv's field limit)"),
        ("json-list-of-str", "list_of_str.json", 2, "gave a JSON list of strings"),
        ("json-str", "str.json", 2, "gave a JSON file holding one string"),
        ("json-number", "number.json", 2, "gave a JSON file holding a number"),
        ("json-null", "null.json", 2, "gave a JSON file holding null"),
        ("json-object", "object.json", 2, "gave a JSON object that is not a list of rows"),
        ("json-data-not-list", "data_not_list.json", 2, "gave {'data': 5}"),
        ("json-truncated", "truncated.json", 2, "gave a JSON file cut off mid-way (interrupted download)"),
        ("json-nested", "nested.json", 2, "gave a .json that is [[[[...]]]] 100k deep"),
        ("jsonl-nested", "nested.jsonl", 2, "gave a .jsonl with one line [[[[...]]]] 100k deep"),
        ("jsonl-nested-obj", "nested_obj.jsonl", 2, "gave a .jsonl with one line {\"a\":{\"a\":...}} 100k deep"),
        ("jsonl-line-list", "line_list.jsonl", 2, "a JSONL line is a list, not an object"),
        ("jsonl-line-str", "line_str.jsonl", 2, "a JSONL line is a string"),
        ("jsonl-line-num", "line_num.jsonl", 2, "a JSONL line is a number"),
        ("jsonl-line-null", "line_null.jsonl", 2, "a JSONL line is null"),
        ("jsonl-bad-line", "bad_line.jsonl", 2, "a JSONL line is not JSON"),
        ("jsonl-trailing", "trailing_garbage.jsonl", 2, "the file ends with '}{' (bad concatenation)"),
        ("cop-7", "cop_out_of_range.jsonl", 2, "a row with cop 7"),
        ("cop-neg", "cop_negative.jsonl", 2, "a row with cop -5"),
        ("cop-text", "cop_text.jsonl", 2, "a row with cop 'B' (a letter instead of an index)"),
        ("cop-float", "cop_float.jsonl", 2, "a row with cop 1.5"),
        ("cop-bool", "cop_bool.jsonl", 2, "a row with cop true"),
        ("cop-missing", "cop_missing.jsonl", 2, "a row without cop"),
        ("cop-nan", "cop_nan.jsonl", 2, "a row with cop NaN (pandas export)"),
        ("opd-missing", "opd_missing.jsonl", 2, "a row without opd"),
        ("option-null", "option_null.jsonl", 2, "a row with opb null"),
        ("option-blank", "option_empty.jsonl", 2, "a row with opc all spaces"),
        ("option-dict", "option_dict.jsonl", 2, "a row whose opa is an object"),
        ("question-int", "question_int.jsonl", 2, "a row whose question is a number"),
        ("question-list", "question_list.jsonl", 2, "a row whose question is a list"),
        ("question-missing", "question_missing.jsonl", 2, "a row without question"),
        ("subject-int", "subject_int.jsonl", 2, "a row whose subject_name is a number"),
        ("dup-ids", "duplicate_ids.jsonl", 2, "the same id twice"),
        ("id-missing", "id_missing.jsonl", (0, 2), "rows without ids"),
        ("huge-text", "huge_text.jsonl", 0, "a valid row with a 5 MB question"),
        ("one-based", "cop_all_1based.jsonl", (0, 2), "the original release's 1-based labels, without 4s"),
        ("unlabelled", "unlabelled.jsonl", (0, 2), "the test split (cop -1 everywhere)"),
        ("emoji", "emoji_text.jsonl", 0, "a question with emoji, ZWJ and RTL override characters"),
        ("crlf", "crlf.jsonl", 0, "a JSONL with CRLF line ends"),
        ("blank-lines", "blank_lines.jsonl", 0, "a JSONL with blank lines between rows"),
        ("good-json", "good.json", 0, "a JSON list of rows"),
        ("good-json-data", "good_data_key.json", 0, "a JSON {'data': [...]}"),
        ("good-csv", "good.csv", 0, "a good CSV"),
        ("txt-ext", "notes.txt", 2, "a JSONL file named .txt"),
        ("xlsx", "data.xlsx", 2, "an Excel file"),
        ("dir-as-file", "dir.jsonl", 2, "a folder named like a .jsonl file"),
        ("folder-no-split", "folder_no_split", 2, "a folder without train.jsonl"),
        ("symlink-loop", "loop.jsonl", 2, "a symlink that points to itself"),
        ("dangling-link", "dangling.jsonl", 2, "a symlink to a file that is gone"),
        ("unicode-path", "d\u00f6nn\u00e9es m\u00e9dicales \u7a7a\u767d/q\u00fcestions \u00e9 1.jsonl", 0,
         "a valid file under a path with accents, CJK and spaces"),
        ("space-path", "with space.jsonl", 0, "a valid file with a space in its name"),
        ("missing", "no_such_file.jsonl", 2, "a file name with a typo"),
    ]
    for cid, name, expect, why in data_cases:
        add(f"data-{cid}", "data", ["data", "check", F(name)], expect, why, timeout=60)
    add("data-fifo", "data", ["data", "check", F("fifo.jsonl")], 2, "gave a named pipe (mkfifo) nobody writes to",
        needs=("fifo",), timeout=30)
    add("data-hub-missing", "data", ["data", "check", "no-such-org/no-such-dataset"], 2,
        "a hub id that does not exist (or no network)", timeout=90)
    add("data-split-missing", "data", ["data", "check", F("folder_ok"), "--split", "nosuch"], 2,
        "a data folder and a split it does not have")
    add("data-cop-base-conflict", "data", ["data", "check", F("cop_all_1based.jsonl"), "--cop-base", "0"], 2,
        "declared 0-based labels on 1-based data")
    add("data-cop-base-bad", "data", ["data", "check", "sample", "--cop-base", "2"], 2, "--cop-base 2")
    add("data-bad-rows-out", "data", ["data", "check", F("cop_out_of_range.jsonl"), "--out", "{C}/chk"], 2,
        "checked a file with a bad row and asked for check.json", out="{C}/chk", allow_out=True)
    # without pyarrow every parquet case is skipped with the reason (needs 'parquet')
    for cid, name, expect, why in [
        ("parquet-good", "good.parquet", 0, "a good parquet file"),
        ("parquet-truncated", "truncated.parquet", 2, "a parquet file cut in half (interrupted copy)"),
        ("parquet-random", "random.parquet", 2, "random bytes named .parquet"),
        ("parquet-empty", "empty.parquet", 2, "a 0-byte .parquet"),
        ("parquet-is-jsonl", "jsonl_named.parquet", 2, "a JSONL file renamed .parquet"),
        ("parquet-zeroed", "zeroed.parquet", 2, "a parquet file with 200 zeroed bytes in the middle"),
        ("parquet-missing-cols", "missing_cols.parquet", 2, "a parquet file without option columns"),
        ("parquet-no-rows", "no_rows.parquet", 2, "a parquet file with the schema and no rows"),
    ]:
        add(f"data-{cid}", "data", ["data", "check", F(name)], expect, why, needs=("parquet",))

    # ---------------- data files through eval / train / bench / pipeline ----------------
    for cid, name, expect, why in [
        ("empty", "empty.jsonl", 2, "evaluated on a 0-byte file"),
        ("ws", "ws.jsonl", 2, "evaluated on a whitespace-only file"),
        ("binary", "binary.jsonl", 2, "evaluated on random bytes"),
        ("nested", "nested.jsonl", 2, "evaluated on a file with a 100k-deep JSON line"),
        ("cop-7", "cop_out_of_range.jsonl", 2, "evaluated on a file with cop 7"),
        ("dup-ids", "duplicate_ids.jsonl", 2, "evaluated on a file with a duplicate id"),
        ("truncated-parquet", "truncated.parquet", 2, "evaluated on a truncated parquet"),
        ("dir", "dir.jsonl", 2, "evaluated on a folder named .jsonl"),
        ("long-question", "long_question.jsonl", 0,
         "evaluated on a file where one question is longer than the model's context (skip and count it)"),
        ("unicode-path", "d\u00f6nn\u00e9es m\u00e9dicales \u7a7a\u767d/q\u00fcestions \u00e9 1.jsonl", 0,
         "evaluated on a valid file under a unicode path"),
    ]:
        add(f"eval-data-{cid}", "data-eval", ["eval", gguf, "--data", F(name), *EVAL_FAST], expect, why,
            needs=("parquet",) if "parquet" in name else ())
    add("eval-data-skip-bad", "data-eval", ["eval", gguf, "--data", F("cop_out_of_range.jsonl"), "--skip-bad-rows",
                                            *EVAL_FAST], 0, "evaluated with --skip-bad-rows on a file with one bad row")
    add("eval-data-fifo", "data-eval", ["eval", gguf, "--data", F("fifo.jsonl"), *EVAL_FAST], 2,
        "evaluated on a named pipe", needs=("fifo",), timeout=40)
    for cid, name, why in [
        ("empty", "empty.jsonl", "trained on a 0-byte file"),
        ("binary", "binary.csv", "trained on random bytes named .csv"),
        ("nested", "nested.jsonl", "trained on a file with a 100k-deep JSON line"),
        ("json-str", "str.json", "trained on a JSON string"),
        ("missing-cols", "missing_cols.csv", "trained on a CSV missing option columns"),
        ("random-parquet", "random.parquet", "trained on random bytes named .parquet"),
    ]:
        add(f"train-data-{cid}", "data-train", ["train", *TRAIN_FAST[:2], "--data", F(name), *TRAIN_FAST[4:],
                                                "--out", "{C}/run"], 2, why, out="{C}/run",
            needs=("parquet",) if "parquet" in name else ())
    add("train-eval-data-bad", "data-train", ["train", *TRAIN_FAST, "--eval-data", F("cop_text.jsonl"),
                                              "--out", "{C}/run"], 2, "gave a separate eval file with a bad row",
        out="{C}/run")
    add("bench-data-empty", "data-bench", ["bench", gguf, *BENCH_FAST, "--data", F("ws.jsonl"), "--out", "{C}/bout"],
        2, "benchmarked on a whitespace-only data file", out="{C}/bout")
    add("bench-data-nested", "data-bench", ["bench", gguf, *BENCH_FAST, "--data", F("nested.jsonl"),
                                            "--out", "{C}/bout"], 2, "benchmarked on a 100k-deep JSON line",
        out="{C}/bout")
    add("pipeline-data-empty", "data-pipeline", ["pipeline", *PIPE_FAST[:2], "--data", F("empty.jsonl"),
                                                 *PIPE_FAST[4:], "--out", "{C}/pipe"], 2,
        "ran the pipeline on an empty file", out="{C}/pipe", timeout=300)

    # ---------------- artifacts: eval ----------------
    def junk_folder(ctx: Ctx) -> None:
        d = ctx.case_dir / "a"
        d.mkdir()
        (d / "notes.txt").write_text("hello\n")
        (d / "weights.bin").write_bytes(os.urandom(2048))

    def manifest_text(text: str | bytes, fmt: str = "gguf-q8_0") -> Callable[[Ctx], None]:
        def prep(ctx: Ctx) -> None:
            d = copy_art(ctx, fmt, "a")
            if isinstance(text, bytes):
                (d / "edgemed.json").write_bytes(text)
            else:
                (d / "edgemed.json").write_text(text)
        return prep

    def manifest_change(fmt: str = "gguf-q8_0", **changes: Any) -> Callable[[Ctx], None]:
        def prep(ctx: Ctx) -> None:
            patch_manifest(copy_art(ctx, fmt, "a"), **changes)
        return prep

    def source_change(**changes: Any) -> Callable[[Ctx], None]:
        def prep(ctx: Ctx) -> None:
            d = copy_art(ctx, "gguf-q8_0", "a")
            data = json.loads((d / "edgemed.json").read_text())
            patch_manifest(d, source={**data["source"], **changes})
        return prep

    def flip_byte(fmt: str) -> Callable[[Ctx], None]:
        def prep(ctx: Ctx) -> None:
            d = copy_art(ctx, fmt, "a")
            f = d / gguf_name(d)
            data = bytearray(f.read_bytes())
            data[-64] ^= 0xFF
            f.write_bytes(bytes(data))
        return prep

    def model_file(fmt: str, how: str, resync: bool, rel: str | None = None) -> Callable[[Ctx], None]:
        def prep(ctx: Ctx) -> None:
            d = copy_art(ctx, fmt, "a")
            name = rel or (gguf_name(d) if fmt.startswith("gguf") else
                           "model.onnx" if fmt.startswith("onnx") else "model.safetensors")
            if how == "delete":
                (d / name).unlink()
            else:
                corrupt(d / name, how)
            if resync:
                resync_file(d, name)
        return prep

    def manifest_dir(ctx: Ctx) -> None:
        d = copy_art(ctx, "gguf-q8_0", "a")
        (d / "edgemed.json").unlink()
        (d / "edgemed.json").mkdir()

    def traversal(ctx: Ctx) -> None:
        d = copy_art(ctx, "gguf-q8_0", "a")
        data = json.loads((d / "edgemed.json").read_text())
        data["files"].append({"path": "../../../../../../etc/hostname", "size": 123456, "sha256": "0" * 64})
        (d / "edgemed.json").write_text(json.dumps(data))

    def no_manifest(fmt: str) -> Callable[[Ctx], None]:
        def prep(ctx: Ctx) -> None:
            (copy_art(ctx, fmt, "a") / "edgemed.json").unlink()
        return prep

    def gguf_file(how: str) -> Callable[[Ctx], None]:
        def prep(ctx: Ctx) -> None:
            src = BASE / "arts" / "gguf-q8_0"
            dst = ctx.case_dir / "model.gguf"
            shutil.copy(src / gguf_name(src), dst)
            if how != "keep":
                corrupt(dst, how)
        return prep

    def unicode_art(ctx: Ctx) -> None:
        copy_art(ctx, "gguf-q8_0", "m\u00f6dels \u7a7a \u00e9/gguf q8")

    def loop(ctx: Ctx) -> None:
        os.symlink("a", ctx.case_dir / "a")

    def unreadable(ctx: Ctx) -> None:
        d = copy_art(ctx, "gguf-q8_0", "a")
        (d / gguf_name(d)).chmod(0o000)

    C = "{C}"
    art_cases: list[tuple[str, str, Callable[[Ctx], None] | None, int | tuple[int, ...], str]] = [
        ("junk-folder", f"{C}/a", junk_folder, 2, "evaluated a folder of random files (no manifest)"),
        ("empty-folder", f"{C}/a", lambda ctx: (ctx.case_dir / "a").mkdir(), 2, "evaluated an empty folder"),
        ("nonexistent", f"{C}/nope", None, 2, "evaluated a path with a typo"),
        ("txt-file", F("notes.txt"), None, 2, "evaluated a text file"),
        ("alias-typo", "tiny-randm", None, 2, "evaluated a mistyped model alias"),
        ("symlink-loop", f"{C}/a", loop, 2, "evaluated a symlink pointing to itself"),
        ("manifest-not-json", f"{C}/a", manifest_text("{ this is not json"), 2, "edgemed.json is not JSON"),
        ("manifest-empty", f"{C}/a", manifest_text(""), 2, "edgemed.json is 0 bytes (disk filled while saving)"),
        ("manifest-binary", f"{C}/a", manifest_text(os.urandom(512)), 2, "edgemed.json is random bytes"),
        ("manifest-list", f"{C}/a", manifest_text("[1, 2]"), 2, "edgemed.json is a JSON list"),
        ("manifest-str", f"{C}/a", manifest_text('"gguf-q8_0"'), 2, "edgemed.json is a JSON string"),
        ("manifest-empty-obj", f"{C}/a", manifest_text("{}"), 2, "edgemed.json is {}"),
        ("manifest-nested", f"{C}/a", manifest_text(deep()), 2, "edgemed.json is [[[...]]] 100k deep"),
        ("manifest-is-dir", f"{C}/a", manifest_dir, 2, "edgemed.json is a folder"),
        ("manifest-unknown-format", f"{C}/a", manifest_change(format="gguf-q9_9"), 2,
         "edgemed.json names a format edgemed does not know"),
        ("manifest-format-int", f"{C}/a", manifest_change(format=7), 2, "edgemed.json's format is a number"),
        ("manifest-unknown-runtime", f"{C}/a", manifest_change(runtime="tensorrt"), 2,
         "edgemed.json names an unknown runtime"),
        ("manifest-schema-99", f"{C}/a", manifest_change(schema=99), 2,
         "edgemed.json from a future edgemed (schema 99)"),
        ("manifest-schema-str", f"{C}/a", manifest_change(schema="one"), 2, "edgemed.json's schema is a string"),
        ("manifest-files-str", f"{C}/a", manifest_change(files="model.gguf"), 2, "edgemed.json's files is a string"),
        ("manifest-files-bad-entry", f"{C}/a", manifest_change(files=[{"path": 5}]), 2,
         "edgemed.json's files entry has no size and a numeric path"),
        ("manifest-traversal", f"{C}/a", traversal, 2,
         "edgemed.json lists ../../etc/hostname (wrong size) as one of its files"),
        ("manifest-lineage-str", f"{C}/a", manifest_change(lineage="chatml"), 2, "edgemed.json's lineage is a string"),
        ("missing-model-file", f"{C}/a", model_file("gguf-q8_0", "delete", False), 2,
         "the .gguf of an artifact folder was deleted"),
        ("wrong-size", f"{C}/a", model_file("gguf-q8_0", "append", False), 2,
         "the .gguf grew (edited/appended) after export"),
        ("gguf-truncated-in-folder", f"{C}/a", model_file("gguf-q8_0", "truncate", True), 2,
         "the .gguf was truncated and the manifest rewritten to match"),
        ("gguf-random-in-folder", f"{C}/a", model_file("gguf-q8_0", "random", True), 2,
         "the .gguf is random bytes, manifest rewritten to match"),
        ("gguf-header-zeroed", f"{C}/a", model_file("gguf-q8_0", "header", True), 2,
         "the .gguf's first KiB is zeroed (same size)"),
        ("gguf-file-truncated", f"{C}/model.gguf", gguf_file("truncate"), 2, "evaluated a truncated .gguf file"),
        ("gguf-file-random", F("random.gguf"), None, 2, "evaluated random bytes named .gguf"),
        ("gguf-file-empty", F("empty.gguf"), None, 2, "evaluated a 0-byte .gguf"),
        ("gguf-file-text", F("not_a_gguf.gguf"), None, 2, "evaluated a text file named .gguf"),
        ("gguf-file-fifo", F("fifo.gguf"), None, 2, "evaluated a named pipe named .gguf"),
        ("onnx-corrupt", f"{C}/a", model_file("onnx", "random", True), 2, "model.onnx is random bytes"),
        ("onnx-truncated", f"{C}/a", model_file("onnx", "truncate", True), 2, "model.onnx was truncated"),
        ("onnx-missing", f"{C}/a", model_file("onnx", "delete", False), 2, "model.onnx was deleted"),
        ("onnx-no-tokenizer", f"{C}/a", model_file("onnx", "delete", False, "tokenizer.json"), 2,
         "tokenizer.json of an onnx artifact was deleted"),
        ("hf-corrupt-weights", f"{C}/a", model_file("hf", "random", True), 2, "model.safetensors is random bytes"),
        ("hf-config-not-json", f"{C}/a", seq(model_file("hf", "random", False, "config.json"),
                                             lambda ctx: resync_file(ctx.case_dir / "a", "config.json")), 2,
         "config.json is random bytes"),
        ("hf-no-manifest", f"{C}/a", no_manifest("hf"), 0, "evaluated a plain model folder (no edgemed.json)"),
        ("onnx-no-manifest", f"{C}/a", no_manifest("onnx"), (0, 2), "evaluated an onnx folder without edgemed.json"),
        ("gguf-file-ok", f"{C}/model.gguf", gguf_file("keep"), 0, "evaluated a bare good .gguf file"),
        ("gguf-type-mislabelled", f"{C}/a", manifest_change(format="gguf-q4_k_m"), 2,
         "edgemed.json of a q8_0 file says gguf-q4_k_m (its numbers would be another format's)"),
        ("gguf-other-arch", f"{C}/a", source_change(model_type="qwen2"), 2,
         "edgemed.json's source model is a qwen2, the .gguf's header says llama"),
        ("gguf-byte-flipped", f"{C}/a", flip_byte("gguf-q8_0"), 2,
         "one weight byte of the .gguf changed after export (same size, other sha256)"),
        ("unicode-path", f"{C}/m\u00f6dels \u7a7a \u00e9/gguf q8", unicode_art, 0,
         "evaluated a good artifact under a path with accents, CJK and spaces"),
    ]
    for cid, target, prep, expect, why in art_cases:
        needs = ["artifacts"]
        if "fifo" in target:
            needs.append("fifo")
        add(f"eval-art-{cid}", "artifact", ["eval", target, "--data", F("good.jsonl"), *EVAL_FAST], expect, why,
            prepare=prep, needs=tuple(needs), timeout=60)
    add("eval-art-unreadable", "artifact", ["eval", "{C}/a", "--data", F("good.jsonl"), *EVAL_FAST], 2,
        "the .gguf of the artifact is not readable by the user (chmod 000)", prepare=unreadable,
        needs=("artifacts", "dropcaps"), drop_caps=True)

    # ---------------- artifacts: bench ----------------
    def two_one_bad(bad_prep: Callable[[Path], None]) -> Callable[[Ctx], None]:
        def prep(ctx: Ctx) -> None:
            root = ctx.case_dir / "arts"
            root.mkdir()
            shutil.copytree(BASE / "arts" / "gguf-q8_0", root / "gguf-q8_0")
            shutil.copytree(BASE / "arts" / "onnx", root / "onnx")
            bad_prep(root / "onnx")
        return prep

    add("bench-one-corrupt-manifest", "artifact-bench", ["bench", "{C}/arts", *BENCH_FAST, "--out", "{C}/bout"], 1,
        "benchmarked a folder of two artifacts, one with a corrupt edgemed.json: the other is still measured",
        prepare=two_one_bad(lambda d: (d / "edgemed.json").write_text("{ corrupt")), out="{C}/bout",
        allow_out=True, check=bench_partial_check("gguf-q8_0", "onnx"), timeout=240)
    add("bench-one-unknown-format", "artifact-bench", ["bench", "{C}/arts", *BENCH_FAST, "--out", "{C}/bout"],
        1, "benchmarked two artifacts, one whose edgemed.json names an unknown format",
        prepare=two_one_bad(lambda d: patch_manifest(d, format="onnx-int2")), out="{C}/bout", allow_out=True,
        check=bench_partial_check("gguf-q8_0", "onnx"), timeout=240)
    add("bench-one-corrupt-model", "artifact-bench", ["bench", "{C}/arts", *BENCH_FAST, "--out", "{C}/bout"], 1,
        "benchmarked two artifacts, one whose model.onnx is random bytes (manifest matches)",
        prepare=two_one_bad(lambda d: (corrupt(d / "model.onnx", "random"), resync_file(d, "model.onnx"))),
        out="{C}/bout", allow_out=True, check=bench_partial_check("gguf-q8_0", "onnx"), timeout=240)
    add("bench-empty-folder", "artifact-bench", ["bench", "{C}/a", *BENCH_FAST, "--out", "{C}/bout"], 2,
        "benchmarked an empty folder", prepare=lambda ctx: (ctx.case_dir / "a").mkdir(), out="{C}/bout")
    add("bench-junk-folder", "artifact-bench", ["bench", "{C}/a", *BENCH_FAST, "--out", "{C}/bout"], 2,
        "benchmarked a folder of random files", prepare=junk_folder, out="{C}/bout")
    add("bench-nonexistent", "artifact-bench", ["bench", "{C}/nope", *BENCH_FAST, "--out", "{C}/bout"], 2,
        "benchmarked a path with a typo", out="{C}/bout")
    add("bench-single-corrupt-manifest", "artifact-bench", ["bench", "{C}/a", *BENCH_FAST, "--out", "{C}/bout"],
        (1, 2), "benchmarked one artifact whose edgemed.json is not JSON", prepare=manifest_text("{ nope"),
        out="{C}/bout", allow_out=True)
    add("bench-gguf-random-file", "artifact-bench", ["bench", F("random.gguf"), *BENCH_FAST, "--out", "{C}/bout"],
        (1, 2), "benchmarked random bytes named .gguf", out="{C}/bout", allow_out=True)

    # ---------------- artifacts: merge (adapter) and export (merged) ----------------
    def copy_run(ctx: Ctx) -> Path:
        dst = ctx.case_dir / "run"
        shutil.copytree(BASE / "run", dst)
        return dst

    def run_change(fn: Callable[[Path], Any]) -> Callable[[Ctx], None]:
        return lambda ctx: fn(copy_run(ctx)) and None

    MERGE_TAIL = ["--out", "{C}/merged", "--prompts", "1"]
    for cid, adapter, prep, why in [
        ("empty-folder", "{C}/a", lambda ctx: (ctx.case_dir / "a").mkdir(), "merged an empty folder"),
        ("nonexistent", "{C}/nope", None, "merged a path with a typo"),
        ("file", F("notes.txt"), None, "gave a file as --adapter"),
        ("config-corrupt", "{C}/run", run_change(lambda r: (r / "adapter" / "adapter_config.json").write_text("{x")),
         "adapter_config.json is not JSON"),
        ("config-missing", "{C}/run", run_change(lambda r: (r / "adapter" / "adapter_config.json").unlink()),
         "adapter_config.json was deleted"),
        ("weights-random", "{C}/run", run_change(lambda r: corrupt(r / "adapter" / "adapter_model.safetensors",
                                                                  "random")), "adapter weights are random bytes"),
        ("weights-truncated", "{C}/run",
         run_change(lambda r: corrupt(r / "adapter" / "adapter_model.safetensors", "truncate")),
         "adapter weights were truncated"),
        ("weights-missing", "{C}/run", run_change(lambda r: (r / "adapter" / "adapter_model.safetensors").unlink()),
         "adapter weights were deleted"),
        ("lineage-corrupt", "{C}/run", run_change(lambda r: (r / "lineage.json").write_text(deep())),
         "the run's lineage.json is [[[...]]] 100k deep"),
        ("lineage-list", "{C}/run", run_change(lambda r: (r / "lineage.json").write_text("[]")),
         "the run's lineage.json is a list"),
        ("runjson-corrupt", "{C}/run", run_change(lambda r: (r / "edgemed-run.json").write_bytes(os.urandom(300))),
         "the run's edgemed-run.json is random bytes"),
    ]:
        # the message must name the broken file (not, say, blame the base model)
        named = {"config-corrupt": "adapter_config", "config-missing": "adapter_config",
                 "weights-random": "adapter_model", "weights-truncated": "adapter_model",
                 "weights-missing": "adapter_model", "lineage-corrupt": "lineage", "lineage-list": "lineage",
                 "runjson-corrupt": "edgemed-run"}.get(cid)
        add(f"merge-adapter-{cid}", "artifact-merge", ["merge", "--adapter", adapter, *MERGE_TAIL], 2, why,
            prepare=prep, out="{C}/merged", needs=("artifacts",), check=mentions_check(named) if named else None)
    add("merge-base-missing", "artifact-merge", ["merge", "--adapter", str(b / "run"), "--base", "{C}/nobase",
                                                 *MERGE_TAIL], 2, "gave a --base folder that does not exist",
        out="{C}/merged")
    add("merge-base-mismatch", "artifact-merge", ["merge", "--adapter", str(b / "run"), "--base", "smollm2-135m",
                                                  *MERGE_TAIL], 2,
        "merged a tiny-random adapter into a different base model", out="{C}/merged", timeout=240)
    add("merge-into-itself", "artifact-merge", ["merge", "--adapter", "{C}/run", "--out", "{C}/run", "--prompts", "1"],
        2, "gave the run folder as --out too", prepare=lambda ctx: copy_run(ctx) and None, out="{C}/run")

    def copy_merged(fn: Callable[[Path], Any] | None = None) -> Callable[[Ctx], None]:
        def prep(ctx: Ctx) -> None:
            dst = ctx.case_dir / "merged"
            shutil.copytree(BASE / "merged", dst)
            if fn:
                fn(dst)
        return prep

    EXPORT_TAIL = ["--formats", "gguf-q8_0", "--out", "{C}/x"]
    for cid, merged, prep, why in [
        ("nonexistent", "{C}/nope", None, "exported a path with a typo"),
        ("empty-folder", "{C}/merged", lambda ctx: (ctx.case_dir / "merged").mkdir(), "exported an empty folder"),
        ("file", F("notes.txt"), None, "gave a text file as the merged model"),
        ("gguf-file", F("random.gguf"), None, "gave a .gguf file as the merged model"),
        ("weights-random", "{C}/merged", copy_merged(lambda m: corrupt(m / "model.safetensors", "random")),
         "the merged model.safetensors is random bytes"),
        ("weights-truncated", "{C}/merged", copy_merged(lambda m: corrupt(m / "model.safetensors", "truncate")),
         "the merged model.safetensors was truncated"),
        ("no-config", "{C}/merged", copy_merged(lambda m: (m / "config.json").unlink()),
         "config.json of the merged model was deleted"),
        ("config-not-json", "{C}/merged", copy_merged(lambda m: (m / "config.json").write_text("{oops")),
         "config.json of the merged model is not JSON"),
        ("no-tokenizer", "{C}/merged", copy_merged(lambda m: [(m / n).unlink() for n in
                                                             ("tokenizer.json", "tokenizer_config.json", "vocab.json",
                                                              "merges.txt")]),
         "the merged model folder has no tokenizer files"),
        ("artifacts-folder", str(arts), None, "gave the exports folder instead of the merged model"),
    ]:
        add(f"export-merged-{cid}", "artifact-export", ["export", merged, *EXPORT_TAIL], 2, why, prepare=prep,
            out="{C}/x", needs=("artifacts",) if prep or "arts" in merged else ())
    add("export-into-input", "artifact-export", ["export", "{C}/merged", "--formats", "gguf-q8_0", "--out",
                                                 "{C}/merged"], 2, "gave the merged folder itself as --out",
        prepare=copy_merged(), out="{C}/merged", needs=("artifacts",))

    # ---------------- budgets ----------------
    for cid, name, expect, why in [
        ("not-toml", "budget_not_toml.toml", 2, "a budgets file that is not TOML"),
        ("unknown-key", "budget_unknown_key.toml", 2, "a misspelled budget key (max_latncy_ms)"),
        ("str-value", "budget_str.toml", 2, 'max_peak_rss_mb = "lots"'),
        ("bool-value", "budget_bool.toml", 2, "min_accuracy = true"),
        ("array-value", "budget_array.toml", 2, "max_kld = [0.1, 0.2]"),
        ("nan", "budget_nan.toml", 2, "max_kld = nan"),
        ("inf", "budget_inf.toml", 2, "max_peak_rss_mb = inf"),
        ("neg-inf", "budget_neg_inf.toml", 2, "min_decode_tokens_per_s = -inf"),
        ("negative", "budget_negative.toml", 2, "max_p95_latency_ms = -5"),
        ("accuracy-over-1", "budget_acc_over1.toml", 2, "min_accuracy = 1.5"),
        ("unknown-format", "budget_unknown_format.toml", 2, "a [format.gguf-q9_9] table"),
        ("format-scalar", "budget_format_scalar.toml", 2, "format = 5 instead of tables"),
        ("default-scalar", "budget_default_scalar.toml", 2, "default = 3 instead of a table"),
        ("unknown-table", "budget_unknown_table.toml", 2, "a [defaults] table (typo)"),
        ("top-level-key", "budget_top_level_key.toml", 2, "a budget key outside any table"),
        ("duplicate-key", "budget_duplicate_key.toml", 2, "the same key twice"),
        ("deep", "budget_deep.toml", 2, "an array nested 50k deep"),
        ("binary", "budget_binary.toml", 2, "random bytes as budgets"),
        ("utf16", "budget_utf16.toml", 2, "a UTF-16 budgets file"),
        ("missing", "budget_missing.toml", 2, "a budgets path with a typo"),
        ("dir", "budget_dir.toml", 2, "a folder as budgets file"),
        ("symlink-loop", "loop.toml", 2, "a symlink loop as budgets file"),
        ("fifo", "fifo.toml", 2, "a named pipe as budgets file"),
        ("empty", "budget_empty.toml", (0, 1, 2), "an empty budgets file (no budgets: run, or refuse naming it)"),
        ("ok", "budget_ok.toml", (0, 1), "a loose valid budget"),
        ("broken", "budget_broken.toml", 1, "a valid budget the artifact breaks (max_peak_rss_mb = 1)"),
    ]:
        ok_run = expect != 2
        add(f"bench-budget-{cid}", "budget", ["bench", gguf, *BENCH_FAST, "--budget", F(name), "--out", "{C}/bout"],
            expect, why, out="{C}/bout", allow_out=ok_run, timeout=120 if ok_run else 60,
            needs=("fifo",) if "fifo" in name else (),
            check=(None if cid == "empty" else file_exists_check("bout/bench.json")) if ok_run
            else mentions_check(name, "budget"))
    add("pipeline-budget-not-toml", "budget", ["pipeline", *PIPE_FAST, "--budget", F("budget_not_toml.toml"),
                                               "--out", "{C}/pipe"], 2,
        "ran the pipeline with a broken budgets file (must stop before training)", out="{C}/pipe", timeout=300)
    add("pipeline-budget-nan", "budget", ["pipeline", *PIPE_FAST, "--budget", F("budget_nan.toml"),
                                          "--out", "{C}/pipe"], 2, "ran the pipeline with max_kld = nan",
        out="{C}/pipe", timeout=300)

    # ---------------- usage ----------------
    def usage(cmd: str, base: list[str], flag: str, value: str | None, why: str, expect: int | tuple[int, ...] = 2,
              out: str | None = None, strip: tuple[str, ...] = (), **kw: Any) -> None:
        args = list(base)
        for s in (flag, *strip):  # drop the fast setting this case replaces
            if s in args:
                i = args.index(s)
                del args[i:i + 2]
        bad = [flag] if value is None else [flag, value]
        if kw.get("check", "auto") == "auto":  # the message names the flag or the value given
            words = [flag] + ([value, Path(value).name, *value.split(",")] if value and value.strip(", ") else [])
            words = [w for w in words if w.strip()]
            kw["check"] = mentions_check(*[w.replace("{C}/", "") for w in words])
        add(f"{cmd}-usage-{slug(flag)}{'-' + slug(value) if value is not None else ''}", "usage",
            [cmd, *args, *bad], expect, why, out=out, **kw)

    tr = ["train", *TRAIN_FAST, "--out", "{C}/run"][1:]
    for flag, value, why in [
        ("--max-steps", "0", "0 optimizer steps"), ("--max-steps", "-1", "negative steps"),
        ("--epochs", "0", "0 epochs"), ("--epochs", "nan", "NaN epochs"), ("--epochs", "-1", "negative epochs"),
        ("--limit", "0", "--limit 0"), ("--limit", "-1", "--limit -1"),
        ("--lr", "-1", "a negative learning rate"), ("--lr", "nan", "a NaN learning rate"),
        ("--batch-size", "0", "batch size 0"), ("--batch-size", "-1", "negative batch size"),
        ("--grad-accum", "0", "gradient accumulation 0"),
        ("--warmup-ratio", "-0.5", "negative warm-up"), ("--warmup-ratio", "2", "warm-up ratio 2"),
        ("--weight-decay", "nan", "NaN weight decay"), ("--weight-decay", "-1", "negative weight decay"),
        ("--eval-fraction", "1", "hold out everything"), ("--eval-fraction", "-0.1", "negative eval fraction"),
        ("--eval-fraction", "nan", "NaN eval fraction"),
        ("--eval-limit", "0", "--eval-limit 0"),
        ("--max-length", "0", "--max-length 0"), ("--max-length", "-1", "negative max length"),
        ("--lora-r", "0", "LoRA rank 0"), ("--lora-alpha", "nan", "NaN LoRA alpha"),
        ("--lora-dropout", "1", "dropout 1 (drops everything)"), ("--lora-dropout", "-0.1", "negative dropout"),
        ("--eval-steps", "0", "--eval-steps 0"), ("--save-steps", "0", "--save-steps 0"),
        ("--logging-steps", "0", "--logging-steps 0"),
        ("--threads", "0", "--threads 0"), ("--threads", "-1", "--threads -1"),
        ("--target-modules", "", "an empty --target-modules"),
        ("--target-modules", "no_such_proj", "a module name the model does not have"),
        ("--device", "cuda", "--device cuda on a machine without a GPU"),
        ("--device", "banana", "a device name that does not exist"),
        ("--model", "tiny-randm", "a mistyped model alias"),
        ("--seed", "abc", "a non-numeric seed"),
        ("--bogus-flag", None, "an unknown flag"),
    ]:
        strip = ("--max-steps",) if flag == "--epochs" else ()
        needs = ("nogpu",) if value == "cuda" else ()
        usage("train", tr, flag, value, why, out="{C}/run", strip=strip, needs=needs, timeout=180)
    usage("train", tr, "--qlora", None, "--qlora (CUDA only) on a CPU machine", out="{C}/run", needs=("nogpu",))
    usage("train", tr, "--resume", None, "--resume with no earlier run in --out (start fresh or refuse)",
          expect=(0, 2), out="{C}/run")

    mg = ["--adapter", str(b / "run"), "--out", "{C}/merged", "--prompts", "1"]
    for flag, value, why in [
        ("--tolerance", "-1", "a negative tolerance"), ("--tolerance", "nan", "a NaN tolerance"),
        ("--prompts", "0", "--prompts 0"), ("--prompts", "-1", "--prompts -1"),
        ("--device", "cuda", "--device cuda without a GPU"), ("--device", "banana", "an unknown device"),
    ]:
        usage("merge", mg, flag, value, why, out="{C}/merged", needs=("artifacts", "nogpu") if value == "cuda"
              else ("artifacts",))

    ex = [str(b / "merged"), "--formats", "gguf-q8_0", "--out", "{C}/x"]
    for flag, value, why in [
        ("--threads", "0", "--threads 0"), ("--threads", "-1", "--threads -1"),
        ("--formats", ",", "--formats , (a stray comma)"), ("--formats", "", "--formats ''"),
        ("--formats", " ", "--formats ' '"),
        ("--formats", "gguf-q9", "an unknown GGUF type"), ("--formats", "hf,nonsense", "one unknown format"),
        ("--formats", "onnx-int3", "a format edgemed does not have (did you mean onnx-int4?)"),
    ]:
        usage("export", ex, flag, value, why, out="{C}/x", needs=("artifacts",), timeout=180)

    ev = [gguf, "--data", F("good.jsonl"), *EVAL_FAST]
    for flag, value, why, extra in [
        ("--limit", "0", "--limit 0", []), ("--limit", "-1", "--limit -1", []),
        ("--batch-size", "0", "--batch-size 0", []), ("--batch-size", "-1", "--batch-size -1", []),
        ("--threads", "0", "--threads 0", []), ("--threads", "-1", "--threads -1", []),
        ("--max-new-tokens", "0", "--max-new-tokens 0", ["--scoring", "generate"]),
        ("--max-new-tokens", "-1", "--max-new-tokens -1", ["--scoring", "generate"]),
        ("--temperature", "-1", "a negative temperature", ["--scoring", "generate"]),
        ("--temperature", "nan", "a NaN temperature", ["--scoring", "generate"]),
        ("--top-p", "0", "--top-p 0", ["--scoring", "generate"]),
        ("--top-p", "1.5", "--top-p 1.5", ["--scoring", "generate"]),
        ("--top-p", "nan", "--top-p nan", ["--scoring", "generate"]),
        ("--sweep-repeats", "0", "--sweep --sweep-repeats 0", ["--sweep"]),
        ("--sweep-repeats", "-1", "--sweep --sweep-repeats -1", ["--sweep"]),
        ("--sweep-temperatures", "abc", "a non-numeric sweep temperature", ["--sweep"]),
        ("--sweep-temperatures", "-1", "a negative sweep temperature", ["--sweep"]),
        ("--sweep-max-new-tokens", "0", "a zero sweep max-new-tokens", ["--sweep"]),
        ("--examples", "-1", "--examples -1", []),
        ("--device", "cuda", "--device cuda without a GPU", []),
        ("--device", "banana", "an unknown device", []),
        ("--scoring", "bogus", "an unknown scoring mode", []),
        ("--limit", "1.5", "a fractional --limit", []),
        ("--split", "nosuch", "a split the data folder does not have", []),
        ("--reference", "{C}/nope.jsonl", "a --reference that does not exist", []),
        ("--reference", F("ref_binary.jsonl"), "a binary --reference file", []),
        ("--reference", F("ref_empty.jsonl"), "an empty --reference file", []),
        ("--reference", F("ref_nested.jsonl"), "a --reference line 100k deep", []),
        ("--reference", F("ref_not_json.json"), "a --reference .json that is not JSON", []),
        ("--reference", F("folder_no_split"), "a --reference folder without results", []),
        ("--reference", F("fifo_ref.jsonl"), "a named pipe as --reference", []),
    ]:
        base_ev = ev if flag != "--split" else [gguf, "--data", F("folder_ok"), *EVAL_FAST]
        needs: tuple[str, ...] = ("artifacts",)
        if value == "cuda":
            needs += ("nogpu",)
        if "fifo" in (value or ""):
            needs += ("fifo",)
        usage("eval", base_ev + extra, flag, value, why, needs=needs, timeout=60)
    add("eval-usage-reference-ok", "usage", ["eval", gguf, "--data", F("good.jsonl"), *EVAL_FAST, "--reference",
                                             str(b / "eval1")], 0, "compared with an earlier eval's --out folder")

    bn = [gguf, *BENCH_FAST, "--out", "{C}/bout"]
    for flag, value, why in [
        ("-t", "0", "-t 0"), ("-t", "-1", "-t -1"), ("-p", "0", "-p 0"), ("-p", "-1", "-p -1"),
        ("-n", "-1", "-n -1"), ("-r", "0", "-r 0"), ("--warmup", "-1", "--warmup -1"),
        ("--latency-prompts", "0", "--latency-prompts 0"), ("--gen-tokens", "0", "--gen-tokens 0"),
        ("--batch-size", "0", "--batch-size 0"), ("--fidelity-ctx", "0", "--fidelity-ctx 0"),
        ("--fidelity-chunks", "0", "--fidelity-chunks 0"), ("--fidelity-top-k", "0", "--fidelity-top-k 0"),
        ("--tolerance", "abc", "--tolerance abc"), ("--tolerance", "-10%", "a negative tolerance"),
        ("--tolerance", "nan", "--tolerance nan"),
        ("--max-memory", "abc", "--max-memory abc"), ("--max-memory", "-1GB", "a negative memory cap"),
        ("--max-p95-ms", "-1", "a negative latency cap"), ("--max-p95-ms", "nan", "--max-p95-ms nan"),
        ("--max-kld", "-1", "a negative KLD cap"), ("--max-kld", "nan", "--max-kld nan"),
        ("--profile", "rpi9", "an unknown board profile"), ("--profile", ",", "--profile ,"),
        ("--timeout", "0", "--timeout 0"), ("--timeout", "nan", "--timeout nan"), ("--timeout", "-1", "--timeout -1"),
        ("--limit", "0", "--limit 0"), ("--limit", "-1", "--limit -1"),
        ("--device", "cuda", "--device cuda without a GPU"),
        ("--reference", "no-such-artifact", "a --reference that names no artifact"),
        ("--baseline", "{C}/nope.json", "a --baseline that does not exist"),
        ("--baseline", F("bench_not_json.json"), "a --baseline that is not JSON"),
        ("--baseline", F("bench_list.json"), "a --baseline that is a JSON list"),
        ("--baseline", F("bench_nested.json"), "a --baseline 100k deep"),
        ("--fidelity-text", "{C}/nope.txt", "a --fidelity-text that does not exist"),
        ("--fidelity-text", F("fidelity_binary.txt"), "a binary --fidelity-text"),
        ("--fidelity-text", F("fidelity_empty.txt"), "an empty --fidelity-text"),
        ("--fidelity-text", F("dir.jsonl"), "a folder as --fidelity-text"),
    ]:
        strip = ("--no-fidelity",) if flag.startswith("--fidelity") else ()
        base_bn = [a for a in bn if not (strip and a == "--no-fidelity")]
        needs = ("artifacts", "nogpu") if value == "cuda" else ("artifacts",)
        usage("bench", base_bn, flag, value, why, out="{C}/bout", needs=needs, timeout=90)
    add("bench-usage-baseline-ok", "usage", ["bench", gguf, *BENCH_FAST, "--baseline", str(b / "bench1"),
                                             "--tolerance", "500%", "--out", "{C}/bout"], (0, 1),
        "compared with an earlier bench folder as --baseline", out="{C}/bout", allow_out=True)

    pp = [*PIPE_FAST, "--out", "{C}/pipe"]
    for flag, value, why in [
        ("--max-steps", "0", "--max-steps 0"), ("--max-steps", "-1", "--max-steps -1"),
        ("--limit", "0", "--limit 0"), ("--threads", "0", "--threads 0"),
        ("--repetitions", "0", "--repetitions 0"), ("--n-gen", "-1", "--n-gen -1"),
        ("--formats", ",", "--formats ,"), ("--formats", "gguf-q9", "an unknown format"),
        ("--model", "tiny-randm", "a mistyped model alias"), ("--seed", "abc", "a non-numeric seed"),
    ]:
        usage("pipeline", pp, flag, value, why, out="{C}/pipe", timeout=300)

    for flag, value, why in [
        ("--tolerance", "abc", "--tolerance abc"), ("--tolerance", "-5%", "a negative tolerance"),
        ("--tolerance", "nan", "--tolerance nan"),
    ]:
        usage("report", [str(b / "bench1"), str(b / "bench1")], flag, value, why, needs=("artifacts",))

    for cid, argv, expect, why, kw in [
        ("no-command", [], 2, "typed edgemed alone", {"need_error_line": False}),
        ("unknown-command", ["frobnicate"], 2, "a command that does not exist", {}),
        ("data-no-sub", ["data"], 2, "'edgemed data' without 'check'", {}),
        ("data-check-no-source", ["data", "check"], 2, "forgot the source", {}),
        ("export-no-merged", ["export"], 2, "forgot the merged folder", {}),
        ("eval-no-artifact", ["eval"], 2, "forgot the artifact", {}),
        ("bench-no-artifacts", ["bench"], 2, "forgot the artifacts", {}),
        ("report-one-arg", ["report", str(b / "bench1")], 2, "gave report only one run", {}),
        ("version", ["--version"], 0, "asked for the version", {}),
        ("help", ["train", "--help"], 0, "asked for help", {}),
        ("info", ["info"], 0, "ran info", {}),
        ("info-bogus", ["info", "--bogus"], 2, "an unknown flag on info", {}),
        ("data-bogus", ["data", "check", "sample", "--bogus"], 2, "an unknown flag on data check", {}),
        ("merge-bogus", ["merge", "--bogus"], 2, "an unknown flag on merge", {}),
        ("export-bogus", ["export", "x", "--bogus"], 2, "an unknown flag on export", {}),
        ("eval-bogus", ["eval", "x", "--bogus"], 2, "an unknown flag on eval", {}),
        ("bench-bogus", ["bench", "x", "--bogus"], 2, "an unknown flag on bench", {}),
        ("report-bogus", ["report", "a", "b", "--bogus"], 2, "an unknown flag on report", {}),
        ("pipeline-bogus", ["pipeline", "--bogus"], 2, "an unknown flag on pipeline", {}),
    ]:
        add(f"cli-{cid}", "usage", argv, expect, why, **kw)

    # ---------------- report inputs ----------------
    for cid, name, why in [
        ("not-json", "bench_not_json.json", "a bench.json that is not JSON"),
        ("list", "bench_list.json", "a bench.json that is a list"),
        ("empty-obj", "bench_empty_obj.json", "a bench.json that is {}"),
        ("wrong-shape", "bench_wrong_shape.json", "a bench.json of the wrong shape"),
        ("nested", "bench_nested.json", "a bench.json 100k deep"),
        ("binary", "bench_binary.json", "random bytes as bench.json"),
        ("empty", "bench_empty.json", "a 0-byte bench.json"),
        ("folder-without", "folder_no_split", "a folder without bench.json"),
        ("missing", "no_such_bench.json", "a path with a typo"),
    ]:
        add(f"report-in-{cid}", "report", ["report", str(b / "bench1"), F(name), "--out", "{C}/rep"], 2, why,
            out="{C}/rep")
    add("report-ok", "report", ["report", str(b / "bench1"), str(b / "bench1" / "bench.json"), "--out", "{C}/rep"],
        0, "compared a run with itself", out="{C}/rep", check=file_exists_check("rep/report.json"))

    def bench_json(change: Callable[[dict[str, Any]], Any]) -> Callable[[Ctx], None]:
        def prep(ctx: Ctx) -> None:
            doc = json.loads((BASE / "bench1" / "bench.json").read_text())
            doc = change(doc) or doc
            (ctx.case_dir / "bench.json").write_text(json.dumps(doc))
        return prep

    def every_metric(value: Any) -> Callable[[dict[str, Any]], None]:
        def change(doc: dict[str, Any]) -> None:
            for a in doc["artifacts"]:
                a["accuracy"]["accuracy"] = value
                a["fidelity"] = {"kld_mean": value, "kld_ci": [value, value]}
                for t in ("pp", "tg"):
                    a["throughput"][t]["avg_ts"] = value
                a["latency"]["answer_ms"]["p95"] = value
                a["memory"]["peak_rss_serving_bytes"] = value
        return change

    for cid, change, expect, why in [
        ("nan-metrics", every_metric(float("nan")), 0, "a bench.json whose metrics are NaN (a failed measurement)"),
        ("inf-metrics", every_metric(float("inf")), 0, "a bench.json whose metrics are Infinity"),
        ("str-metrics", every_metric("fast"), 0, "a bench.json edited by hand: text where the numbers go"),
        ("newer-schema", lambda d: d.update(schema=99), 2, "a bench.json from a newer edgemed (schema 99)"),
        ("newer-reshaped", lambda d: {"schema": 99, "runs": [d]}, 2,
         "a bench.json from a newer edgemed whose shape changed"),
        ("name-int", lambda d: d["artifacts"][0].update(name=7), 2, "a bench.json whose artifact name is a number"),
    ]:
        add(f"report-in-{cid}", "report", ["report", str(b / "bench1"), "{C}/bench.json", "--out", "{C}/rep"], expect,
            why, prepare=bench_json(change), out="{C}/rep", needs=("artifacts",),
            check=file_exists_check("rep/report.json") if expect == 0 else None)

    # ---------------- tune and pipeline --tune: the grid and the budgets, before any work ----------------
    def space_file(text: str) -> Callable[[Ctx], None]:
        return lambda ctx: (ctx.case_dir / "space.toml").write_text(text) and None

    for cid, text, why in [
        ("ov-group-size-0", "[[openvino]]\nformat = 'openvino-int4'\ngroup_size = 0\n", "an OpenVINO group_size of 0"),
        ("ov-group-size-str", "[[openvino]]\nformat = 'openvino-int4'\ngroup_size = '64'\n",
         "an OpenVINO group_size written as text"),
        ("ov-ratio-1-5", "[[openvino]]\nformat = 'openvino-int4'\nratio = 1.5\n", "an OpenVINO ratio of 1.5"),
        ("ov-ratio-neg", "[[openvino]]\nformat = 'openvino-int4'\nratio = -0.5\n", "an OpenVINO ratio below 0"),
        ("onnx-block-33", "[[onnx]]\nformat = 'onnx-int4'\nblock_size = 33\n", "an ONNX block_size of 33"),
        ("onnx-int3", "[[onnx]]\nformat = 'onnx-int3'\n", "a format that does not exist in the grid"),
        ("gguf-typo", "[[gguf]]\ntypes = ['q4_k_mm']\n", "a llama.cpp type with a typo in the grid"),
    ]:
        add(f"tune-space-{cid}", "tune", ["tune", str(b / "merged"), "--space", "{C}/space.toml", "--cache",
                                          "{C}/cache", "--out", "{C}/t"], 2, f"gave tune {why}",
            prepare=space_file(text), out="{C}/t", needs=("artifacts",), check=absent_check("cache"))
    for flag, value in [("--max-size", "0"), ("--max-memory", "0"), ("--max-p95-ms", "0")]:
        add(f"tune-usage-{slug(flag)}-{slug(value)}", "tune", ["tune", str(b / "merged"), flag, value, "--cache",
                                                             "{C}/cache", "--out", "{C}/t"], 2,
            f"gave tune {flag} {value}", out="{C}/t", needs=("artifacts",), check=absent_check("cache"))
    add("pipeline-tune-space-bad", "tune", ["pipeline", "--model", "tiny-random", "--data", "sample", "--max-steps",
                                            "1", "--out", "{C}/p", "--tune", "space={C}/space.toml"], 2,
        "gave pipeline --tune a grid with an ONNX block_size of 33: refused before training",
        prepare=space_file("[[onnx]]\nformat = 'onnx-int4'\nblock_size = 33\n"), out="{C}/p")
    add("pipeline-tune-space-missing", "tune", ["pipeline", "--model", "tiny-random", "--data", "sample",
                                                "--max-steps", "1", "--out", "{C}/p", "--tune", "space={C}/no.toml"],
        2, "gave pipeline --tune a grid file with a typo in its name", out="{C}/p")

    # ---------------- export --imatrix: files that are not an importance matrix for this model ----------------
    def foreign_matrix(ctx: Ctx) -> None:
        import numpy as np
        from gguf import GGUFWriter

        w = GGUFWriter(str(ctx.case_dir / "other.gguf"), arch="llama")
        w.add_type("imatrix")
        w.add_tensor("blk.39.attn_q.weight.in_sum2", np.ones(4096, dtype=np.float32))
        w.add_tensor("blk.39.attn_q.weight.counts", np.ones(1, dtype=np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()

    for cid, matrix, prep, said, why in [
        ("empty", "{C}/m.gguf", lambda ctx: (ctx.case_dir / "m.gguf").write_bytes(b""), "is empty",
         "gave an empty --imatrix file"),
        ("dir", "{C}/m", lambda ctx: (ctx.case_dir / "m").mkdir(), "is a directory", "gave a folder as --imatrix"),
        ("foreign", "{C}/other.gguf", foreign_matrix, "another model", "gave an importance matrix of another model"),
    ]:
        add(f"export-imatrix-{cid}", "artifact-export", ["export", str(b / "merged"), "--formats",
                                                        "gguf-q4_k_m-imatrix", "--imatrix", matrix, "--out", "{C}/x"],
            2, why, prepare=prep, out="{C}/x", needs=("artifacts",), check=mentions_check(said))

    # ---------------- output paths ----------------
    out_cmds: dict[str, tuple[list[str], str, float]] = {
        # name: (argv before --out, flag, timeout)
        "data": (["data", "check", "sample"], "--out", 60),
        "info": (["info"], "--out", 60),
        "eval": (["eval", gguf, "--data", F("good.jsonl"), *EVAL_FAST], "--out", 60),
        "bench": (["bench", gguf, *BENCH_FAST], "--out", 90),
        "report": (["report", str(b / "bench1"), str(b / "bench1")], "--out", 60),
        "export": (["export", str(b / "merged"), "--formats", "gguf-q8_0"], "--out", 180),
        "merge": (["merge", "--adapter", str(b / "run"), "--prompts", "1"], "--out", 180),
        "train": (["train", *TRAIN_FAST], "--out", 180),
        "pipeline": (["pipeline", *PIPE_FAST], "--out", 300),
    }

    def out_case(kind: str, cmd: str, target: str, why: str, prepare: Callable[[Ctx], Any] | None = None,
                 needs: tuple[str, ...] = (), expect: int | tuple[int, ...] = 2, drop_caps: bool = False,
                 out: str | None = None) -> None:
        argv, flag, tmo = out_cmds[cmd]
        add(f"out-{kind}-{cmd}", "output", [*argv, flag, target], expect, why, out=out or target,
            prepare=(lambda ctx: prepare(ctx) and None) if prepare else None, needs=needs, timeout=tmo,
            drop_caps=drop_caps, check=mentions_check(*[p for p in target.replace("{C}/", "").split("/") if p],
                                                      "space", "read-only", "writable"))

    for cmd in out_cmds:
        out_case("is-file", cmd, "{C}/afile", f"{cmd} --out an existing file", prepare=make_file)
        out_case("under-file", cmd, "{C}/afile/sub", f"{cmd} --out a path below a file", prepare=make_file,
                 out="{C}/afile")
        out_case("readonly-fs", cmd, "{C}/ro/out", f"{cmd} --out on a read-only file system",
                 prepare=lambda ctx: mount_ro(ctx, "ro"), needs=("mount",))
        out_case("tmpfs-full", cmd, "{C}/full/out", f"{cmd} --out on a disk with 64 kB free",
                 prepare=lambda ctx: mount_tmpfs(ctx, "full", "64k"), needs=("mount",))
    for cmd in ("data", "info", "eval", "bench", "report", "export", "merge", "train"):
        out_case("no-write-perm", cmd, "{C}/ro555/out", f"{cmd} --out in a folder without write permission (555)",
                 prepare=lambda ctx: mode555(ctx), needs=("dropcaps",), drop_caps=True)
    for cmd in ("data", "eval", "info", "export"):
        out_case("proc", cmd, "/proc/edgemed-out", f"{cmd} --out under /proc (a read-only kernel fs)")
    # a private copy of /dev/full (same device numbers) in the case folder: a product that renames a temp file over
    # it would otherwise replace the machine's /dev/full with a regular file (it happened once)
    out_case("dev-full", "eval", "{C}/full", "eval --out /dev/full (a device, not a folder)", prepare=dev_full,
             needs=("mknod",))
    # disk full during the work: enough free space for the up-front check, not for the result. Finished outputs may
    # be kept (the issue asks to name the path and what was kept), but nothing half-written, and the message must
    # say the disk is full.
    add("out-disk-full-mid-export", "output", ["export", str(b / "merged"), "--formats", "gguf-q8_0", "--out",
                                               "{C}/small/x"], 2,
        "exported a 5 MB GGUF onto a disk with 2 MB free", out="{C}/small/x", allow_out=True,
        prepare=lambda ctx: mount_tmpfs(ctx, "small", "2m") and None, needs=("mount", "artifacts"), timeout=180,
        check=mentions_check("space", "full"))
    add("out-disk-full-mid-merge", "output", ["merge", "--adapter", str(b / "run"), "--prompts", "1", "--out",
                                              "{C}/small/m"], 2,
        "merged a 13 MB model onto a disk with 4 MB free", out="{C}/small/m", allow_out=True,
        prepare=lambda ctx: mount_tmpfs(ctx, "small", "4m") and None, needs=("mount", "artifacts"), timeout=180,
        check=mentions_check("space", "full"))
    add("out-disk-full-mid-train", "output", ["train", *TRAIN_FAST, "--out", "{C}/small/run"], 2,
        "trained into a disk with 1.2 MB free (checkpoints do not fit)", out="{C}/small/run", allow_out=True,
        prepare=lambda ctx: mount_tmpfs(ctx, "small", "1200k") and None, needs=("mount",), timeout=180,
        check=mentions_check("space", "full"))
    def existing_merged(ctx: Ctx) -> None:
        copy_merged()(ctx)
        shutil.move(ctx.case_dir / "merged", ctx.case_dir / "m")

    add("out-merge-existing-no-force", "output", ["merge", "--adapter", str(b / "run"), "--prompts", "1", "--out",
                                                  "{C}/m"], 2, "merged into an existing folder without --force",
        out="{C}/m", prepare=existing_merged, needs=("artifacts",))
    add("out-train-existing-no-force", "output", ["train", *TRAIN_FAST, "--out", "{C}/run"], 2,
        "trained into a finished run folder without --force or --resume", out="{C}/run",
        prepare=lambda ctx: copy_run(ctx) and None, needs=("artifacts",), timeout=180)
    # --junit
    for cid, target, prep, needs, why in [
        ("dir", "{C}/jdir", lambda ctx: (ctx.case_dir / "jdir").mkdir(), (), "--junit pointing at a folder"),
        ("under-file", "{C}/afile/j.xml", make_file, (), "--junit below a file"),
        ("readonly-fs", "{C}/ro/j.xml", lambda ctx: mount_ro(ctx, "ro"), ("mount",), "--junit on a read-only fs"),
        ("proc", "/proc/edgemed-junit.xml", None, (), "--junit under /proc"),
        ("dev-full", "{C}/full", dev_full, ("mknod",), "--junit /dev/full (every write fails: disk full)"),
        ("dev-null", "{C}/null", dev_null, ("mknod",), "--junit /dev/null to throw the report away (as root in CI)"),
        ("missing-parent", "{C}/no/such/dir/j.xml", None, (), "--junit in a folder that does not exist yet"),
    ]:
        add(f"bench-junit-{cid}", "output", ["bench", gguf, *BENCH_FAST, "--junit", target, "--out", "{C}/bout"],
            (0, 1) if cid == "missing-parent" else (0, 1, 2) if cid == "dev-null" else 2, why, out="{C}/bout",
            prepare=(lambda ctx, p=prep: p(ctx) and None) if prep else None, needs=("artifacts", *needs),
            allow_out=cid in ("missing-parent", "dev-null", "dev-full"), timeout=90)  # dev-full: the results are kept

    # ---------------- signals ----------------
    sig_cases = [
        ("export-term", ["export", str(b / "merged"), "--formats", "hf,gguf-q8_0,onnx", "--out", "{C}/x"],
         signal.SIGTERM, "pid", "kill <pid> during export", 300),
        ("export-int", ["export", str(b / "merged"), "--formats", "hf,gguf-q8_0,onnx", "--out", "{C}/x"],
         signal.SIGINT, "group", "Ctrl-C during export", 300),
        ("merge-term", ["merge", "--adapter", str(b / "run"), "--prompts", "1", "--out", "{C}/m"],
         signal.SIGTERM, "pid", "kill <pid> during merge", 200),
        ("merge-int", ["merge", "--adapter", str(b / "run"), "--prompts", "1", "--out", "{C}/m"],
         signal.SIGINT, "group", "Ctrl-C during merge", 200),
        ("merge-kill", ["merge", "--adapter", str(b / "run"), "--prompts", "1", "--out", "{C}/m"],
         signal.SIGKILL, "group", "kill -9 during merge (OOM killer): the re-run must clean up", 200),
        ("train-term", ["train", *TRAIN_SIG, "--out", "{C}/run"], signal.SIGTERM, "pid", "kill <pid> during train",
         300),
        ("train-int", ["train", *TRAIN_SIG, "--out", "{C}/run"], signal.SIGINT, "group", "Ctrl-C during train", 300),
        ("bench-term", ["bench", str(arts), *BENCH_FAST, "--out", "{C}/bout"], signal.SIGTERM, "pid",
         "kill <pid> during a bench of three artifacts", 300),
        ("bench-int", ["bench", str(arts), *BENCH_FAST, "--out", "{C}/bout"], signal.SIGINT, "group",
         "Ctrl-C during a bench of three artifacts", 300),
        ("eval-int", ["eval", gguf, "--data", F("good.jsonl"), "--no-progress", "--out", "{C}/ev"], signal.SIGINT,
         "group", "Ctrl-C during an eval with --out", 120),
        ("pipeline-term", ["pipeline", *PIPE_FAST, "--out", "{C}/pipe"], signal.SIGTERM, "pid",
         "kill <pid> during the pipeline", 400),
    ]
    for cid, argv, sig, target, why, tmo in sig_cases:
        wait = 4.0 if "pipeline" in cid else 2.5
        when = None
        if "train" in cid:  # after the first checkpoint: the re-run then has an unfinished run to deal with
            wait, when = 0.3, "run/checkpoints/checkpoint-*"
        add(f"signal-{cid}", "signal", argv, (1, 2, 130, 143, -2, -9, -15), why,
            signal=(sig, target, 60.0, wait), signal_when=when, rerun=True, timeout=tmo, needs=("artifacts",),
            need_error_line=False)
    return cases


# ----------------------------------------------------------------------------------------------------------------
# running and judging


def child_env(tmpdir: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "EDGEMED_DEBUG"}
    env["PYTHONUNBUFFERED"] = "1"
    env["COLUMNS"] = "200"
    if tmpdir is not None:
        env["TMPDIR"] = str(tmpdir)
    return env


def last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def error_line(stderr: str) -> str:
    """The line that says what went wrong: 'edgemed X: error: ...', else a per-item 'NAME: failed: ...' line."""
    lines = [ln.strip() for ln in stderr.splitlines()]
    for ln in lines:
        if "error:" in ln:
            return ln
    for ln in lines:
        if re.search(r"\bfailed: ", ln):
            return ln
    return ""


def snapshot(path: Path) -> Any:
    if not os.path.lexists(path):
        return None
    if path.is_file() or not path.is_dir():
        st = path.lstat()
        return ("file", st.st_size, st.st_mtime_ns)
    items = []
    for p in sorted(path.rglob("*")):
        with contextlib.suppress(OSError):
            st = p.lstat()
            items.append((str(p.relative_to(path)), st.st_size, st.st_mtime_ns))
    return ("dir", tuple(items))


def leftovers(*roots: Path) -> list[str]:
    found = []
    for root in roots:
        if not root.exists():
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                if LEFTOVER.search(name):
                    found.append(str(Path(dirpath) / name))
    return found


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def run_proc(case: Case, argv: list[str], cdir: Path, tmpdir: Path, with_signal: bool) -> dict[str, Any]:
    cmd = (DROP_CAPS if case.drop_caps else []) + CLI + argv
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=cdir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=child_env(tmpdir), start_new_session=True)
    sent = None
    if with_signal and case.signal:
        sig, target, wait_partial, extra = case.signal
        deadline = time.time() + wait_partial
        while time.time() < deadline and proc.poll() is None:
            if case.signal_when:
                if any(cdir.glob(case.signal_when)):
                    break
            elif any(cdir.iterdir()) or any(tmpdir.iterdir()):  # it started writing
                break
            time.sleep(0.2)
        time.sleep(extra)
        if proc.poll() is None:
            sent = signal.Signals(sig).name
            if target == "group":
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)
    timed_out = False
    try:
        stdout, stderr = proc.communicate(timeout=max(1.0, case.timeout - (time.time() - t0)))
    except subprocess.TimeoutExpired:
        timed_out = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
    rc = proc.returncode
    orphans = False
    deadline = time.time() + 10
    while group_alive(proc.pid) and time.time() < deadline:
        time.sleep(0.3)
    if group_alive(proc.pid):
        orphans = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    return {"rc": rc, "stdout": stdout.decode("utf-8", "replace"), "stderr": stderr.decode("utf-8", "replace"),
            "secs": round(time.time() - t0, 1), "timed_out": timed_out, "signal_sent": sent, "orphans": orphans}


def skip_reason(case: Case, env: Env) -> str | None:
    for need in case.needs:
        if need == "artifacts" and not env.artifacts_ok:
            return f"skipped: no tiny artifacts ({env.artifacts_error or 'not built'})"
        if need == "mount" and not env.can_mount:
            return "skipped: root" if os.geteuid() != 0 else "skipped: mount -t tmpfs / bind mounts not permitted"
        if need == "dropcaps" and not env.can_drop_caps:
            return "skipped: root (cannot drop CAP_DAC_OVERRIDE with setpriv; permissions do not apply to root)"
        if need == "nogpu" and env.has_gpu:
            return "skipped: a GPU is present"
        if need == "mknod" and not env.can_mknod:
            return "skipped: root (mknod of a /dev/full copy not permitted)"
        if need == "parquet" and not env.has_parquet:
            return "skipped: pyarrow not installed"
        if need == "fifo" and not hasattr(os, "mkfifo"):
            return "skipped: no mkfifo"
    return None


def judge_run(case: Case, r: dict[str, Any], cdir: Path, out_path: Path | None, before: Any,
              scan: list[Path]) -> list[str]:
    problems = []
    both = r["stdout"] + r["stderr"]
    if r["timed_out"]:
        problems.append(f"timed out after {case.timeout:.0f} s (hung?)")
    if "Traceback (most recent call last)" in both:
        problems.append("a Python traceback was printed")
    if "internal error" in r["stderr"]:
        problems.append("'internal error' (exit 3 path)")
    if r["orphans"]:
        problems.append("processes of the command were still running 10 s after it exited")
    rc = r["rc"]
    if r["signal_sent"] is None and rc not in case.expect:
        problems.append(f"exit {rc}, expected {'/'.join(map(str, case.expect))}")
    if case.signal and r["signal_sent"] is not None and rc == 3:
        problems.append(f"exit 3 after {r['signal_sent']}")
    if rc != 0 and case.need_error_line and r["signal_sent"] is None and 1 not in case.expect:
        line = error_line(r["stderr"])
        if not line:
            problems.append("no 'error:' line on stderr")
        elif len(re.split(r"error:|failed:", line, maxsplit=1)[-1].strip()) < 15:
            problems.append("the error line says almost nothing")
    if out_path is not None and rc != 0 and not case.allow_out:
        after = snapshot(out_path)
        if before is None and after is not None:
            problems.append(f"left output behind at {out_path}")
        elif before is not None and after != before:
            problems.append(f"changed the existing {out_path}")
    left = leftovers(*scan)
    if left:
        problems.append("leftovers: " + ", ".join(str(p) for p in left[:3]) + (" ..." if len(left) > 3 else ""))
    return problems


def run_case(case: Case, env: Env) -> dict[str, Any]:
    res: dict[str, Any] = {"id": case.id, "group": case.group, "why": case.why, "extended": case.id in EXTENDED,
                           "expected": "/".join(map(str, case.expect)) if not case.signal else "≠0,≠3 + rerun 0"}
    cdir = env.work / "cases" / case.id
    tmpdir = env.work / "tmp" / case.id
    argv = [case.fmt(a, cdir) for a in case.argv]
    res["command"] = "edgemed " + " ".join(a if a and " " not in a else repr(a) for a in argv)
    reason = skip_reason(case, env)
    if reason:
        res.update(verdict="skip", reason=reason, got="-", stderr_line="", problems=[])
        return res
    for d in (cdir, tmpdir):
        if d.exists():
            unmount_under(d)
            shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    ctx = Ctx(cdir)
    out_path = Path(case.fmt(case.out, cdir)) if case.out else None
    try:
        if case.prepare:
            case.prepare(ctx)
        before = snapshot(out_path) if out_path else None
        scan = [cdir, env.base]
        r = run_proc(case, argv, cdir, tmpdir, with_signal=True)
        problems = judge_run(case, r, cdir, out_path, before, scan if not (case.signal and
                                                                           case.signal[0] == signal.SIGKILL) else [])
        extra = case.check(cdir, r["stdout"], r["stderr"]) if case.check and r["rc"] not in (3,) else []
        if case.check and r["rc"] == 0 and 0 not in case.expect:  # the exit code already says what is wrong
            extra = [p for p in extra if p.startswith("replaced")]
        problems += extra
        res["signal_sent"] = r["signal_sent"]
        if case.signal and r["signal_sent"] is None:
            res.update(verdict="skip", reason="skipped: the command finished before the signal", got=r["rc"],
                       secs=r["secs"], stderr_line=first_line(r["stderr"]), problems=[])
            return res
        if case.signal and r["signal_sent"] is not None and r["rc"] == 0:
            problems.append(f"{r['signal_sent']} was ignored: the command went on and exited 0")
        elif case.rerun and r["signal_sent"] is not None and not r["timed_out"]:
            # the re-run the product asks for: the same command, with --resume where its message says so
            again = [*argv, "--resume"] if "--resume" in r["stderr"] and "--resume" not in argv else argv
            rr = run_proc(case, again, cdir, tmpdir, with_signal=False)
            res["rerun_rc"] = rr["rc"]
            res["rerun_secs"] = rr["secs"]
            res["rerun_argv"] = again[len(argv):]
            line = error_line(rr["stderr"]) or last_line(rr["stderr"])
            finished = rr["rc"] == 2 and not problems and any(
                s in line for s in ("already exists", "already holds a finished run"))
            if finished:  # the signal landed after the work was done: the kept output is refused, not replaced
                res["rerun_note"] = "the stopped command had finished its output; the re-run keeps it: " + line
            elif rr["rc"] != 0:
                problems.append(f"re-run exited {rr['rc']}: {line}")
            if "Traceback (most recent call last)" in rr["stdout"] + rr["stderr"]:
                problems.append("the re-run printed a traceback")
            left = leftovers(cdir, env.base)
            if left:
                problems.append("leftovers after the re-run: " + ", ".join(left[:3]))
        tmp_left = [str(p) for p in tmpdir.rglob("*")] if tmpdir.exists() else []
        res.update(got=r["rc"], secs=r["secs"], stderr_line=error_line(r["stderr"]) or first_line(r["stderr"]),
                   problems=problems, verdict="FAIL" if problems else "pass",
                   tmp_left=tmp_left[:5], stderr_lines=len([ln for ln in r["stderr"].splitlines() if ln.strip()]),
                   stderr_tail=r["stderr"][-1500:] if problems or r["rc"] != 0 else "")
    except Exception as exc:  # a bug in this runner or a fixture: say so, do not stop the corpus
        res.update(verdict="FAIL", got="runner", problems=[f"runner error: {type(exc).__name__}: {exc}"],
                   stderr_line="")
    finally:
        for fn in reversed(ctx.cleanups):
            with contextlib.suppress(Exception):
                fn()
        unmount_under(cdir)
        if not env_keep_cases:
            shutil.rmtree(cdir, ignore_errors=True)
    return res


def first_line(text: str) -> str:
    for ln in text.splitlines():
        if ln.strip():
            return ln.strip()
    return ""


env_keep_cases = False


def short(text: str, n: int) -> str:
    text = str(text).replace("\n", " ")
    return text if len(text) <= n else text[: n - 1] + "…"


def print_row(res: dict[str, Any], work: Path) -> None:
    cmd = res["command"].replace(str(work), "$W")
    got = str(res.get("got", "-")) + (f"→{res['rerun_rc']}" if "rerun_rc" in res else "")
    print(f"{short(res['id'], 44):44} {res['expected'][:9]:>9} {got:>6} "
          f"{res['verdict']:>4} {res.get('secs', 0):6.1f}s  {short(cmd, 70):70}  "
          f"{short(res.get('stderr_line') or res.get('reason', ''), 110)}", flush=True)
    if res["verdict"] == "FAIL":
        for p in res["problems"]:
            print(f"{'':46}-> {p}", flush=True)


def make_env(work: Path) -> Env:
    """The corpus's environment in `work` (fixtures not built yet: see build_fixtures)."""
    global BASE, FX
    work = work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o755)
    env = Env(work=work, fx=work / "fx", base=work / "base")
    try:
        import pyarrow.parquet  # noqa: F401

        env.has_parquet = True
    except ImportError:
        env.has_parquet = False
    BASE, FX = env.base, env.fx
    return env


def select_cases(env: Env, fast: bool = False, extended: bool = False, select: list[str] | None = None) -> list[Case]:
    """The cases to run: the default set, --extended adds its variants, --fast is FAST alone; -k narrows any of
    them. Raises ValueError when the case table itself is inconsistent."""
    cases = build_cases(env)
    ids = [c.id for c in cases]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise ValueError(f"duplicate case ids: {sorted(dup)}")
    for name, table in (("EXTENDED", EXTENDED), ("FAST", set(FAST))):
        unknown = table - set(ids)
        if unknown:
            raise ValueError(f"{name} names unknown case ids: {sorted(unknown)}")
    if fast:
        cases = [c for c in cases if c.id in FAST]
    elif not extended:
        cases = [c for c in cases if c.id not in EXTENDED]
    if select:
        cases = [c for c in cases if any(s in c.id for s in select)]
    return cases


def restore_signal_defaults() -> None:
    """A runner started in the background by a non-interactive shell inherits SIGINT ignored, and so would every
    command it starts (Python keeps an ignored SIGINT): restore the defaults so the signal cases mean something."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) == signal.SIG_IGN:
            signal.signal(sig, signal.SIG_DFL)


def build_fixtures(env: Env, cases: list[Case], formats: str = FULL_FORMATS) -> None:
    """Probe what this machine allows, write the data fixtures, and build the base artifacts when a case needs
    them (env.artifacts_ok / artifacts_error say how that went)."""
    probe_env(env)
    build_data_fixtures(env)
    if any("artifacts" in c.needs for c in cases):
        build_base_artifacts(env, formats)


def main(argv: list[str] | None = None) -> int:
    global env_keep_cases
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-k", dest="select", action="append", default=[],
                    help="run only cases whose id contains this substring (repeatable: any of them)")
    ap.add_argument("--jobs", type=int, default=1, help="cases run at once (default 1: the machine is shared)")
    ap.add_argument("--out", type=Path, help="write the results as JSON to this file")
    ap.add_argument("--work", type=Path, help="fixture folder to keep and reuse (default: a temp folder, removed)")
    ap.add_argument("--keep-cases", action="store_true", help="keep each case's folder under WORK/cases")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    which = ap.add_mutually_exclusive_group()
    which.add_argument("--extended", action="store_true",
                       help=f"also run the {len(EXTENDED)} extended cases (more variants of the same faults)")
    which.add_argument("--fast", action="store_true",
                       help=f"only the {len(FAST)} fast cases, one or two per loader and command (what the tests run)")
    args = ap.parse_args(argv)
    if args.jobs < 1:
        ap.error("--jobs must be at least 1")
    env_keep_cases = args.keep_cases
    work = args.work or Path(tempfile.mkdtemp(prefix="edgemed-corpus-"))
    env = make_env(work)
    work = env.work
    try:
        cases = select_cases(env, fast=args.fast, extended=args.extended, select=args.select)
    except ValueError as exc:
        cases, problem = [], str(exc)
    else:
        problem = "" if cases else "no case matches -k"
    if problem or args.list:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
        if problem:
            print(problem, file=sys.stderr)
            return 2
        for c in cases:
            print(f"{c.id:48} {'/'.join(map(str, c.expect)):>10}  {c.why}")
        print(f"{len(cases)} cases")
        return 0
    restore_signal_defaults()
    t0 = time.time()
    try:
        build_fixtures(env, cases, FAST_FORMATS if args.fast else FULL_FORMATS)
        print(f"work folder {work}; mount: {env.can_mount}, drop caps: {env.can_drop_caps}, gpu: {env.has_gpu}, "
              f"parquet: {env.has_parquet}, artifacts: {env.artifacts_ok}; {len(cases)} cases", flush=True)
        print(f"{'case':44} {'expected':>9} {'got':>6} {'verd':>4} {'time':>7}  {'command':70}  stderr", flush=True)
        results: list[dict[str, Any]] = []
        if args.jobs == 1:
            for c in cases:
                res = run_case(c, env)
                print_row(res, work)
                results.append(res)
        else:
            with ThreadPoolExecutor(args.jobs) as pool:
                for res in pool.map(lambda c: run_case(c, env), cases):
                    print_row(res, work)
                    results.append(res)
    finally:
        unmount_under(work)
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    passed = sum(r["verdict"] == "pass" for r in results)
    failed = [r for r in results if r["verdict"] == "FAIL"]
    skipped = [r for r in results if r["verdict"] == "skip"]
    ran = passed + len(failed)
    pct = 100.0 * passed / ran if ran else 0.0
    print()
    if failed:
        print("FAILED:")
        for r in failed:
            print(f"  {r['id']}: got {r.get('got')} (expected {r['expected']}): {'; '.join(r['problems'])}")
            if r.get("stderr_line"):
                print(f"      stderr: {short(r['stderr_line'], 300)}")
    if skipped:
        print("SKIPPED:")
        for r in skipped:
            print(f"  {r['id']}: {r['reason']}")
    summary = {"cases": len(results), "passed": passed, "failed": len(failed), "skipped": len(skipped),
               "pass_percent": round(pct, 1), "seconds": round(time.time() - t0)}
    if args.extended:  # also the default set's own rate
        core = [r for r in results if not r["extended"]]
        core_pass = sum(r["verdict"] == "pass" for r in core)
        core_ran = sum(r["verdict"] != "skip" for r in core)
        summary["default_set"] = {"cases": len(core), "passed": core_pass, "failed": core_ran - core_pass,
                                  "pass_percent": round(100.0 * core_pass / core_ran, 1) if core_ran else 0.0}
    print(f"\n{passed} passed, {len(failed)} failed, {len(skipped)} skipped of {len(results)} cases: "
          f"{pct:.1f}% of the cases run passed ({summary['seconds']} s)")
    if "default_set" in summary:
        d = summary["default_set"]
        print(f"default set (without --extended): {d['passed']} passed, {d['failed']} failed of {d['cases']}: "
              f"{d['pass_percent']:.1f}%")
    if args.out:
        from edgemed.fsutil import atomic_write_json  # the product's own atomic write

        atomic_write_json(args.out, {"summary": summary, "results": results})
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
