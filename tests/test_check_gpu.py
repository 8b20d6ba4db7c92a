"""scripts/check_gpu.sh: the CPU rehearsal (--dry-run) runs every step and writes the report a GPU run writes;
without CUDA the real check refuses in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO

SCRIPT = REPO / "scripts" / "check_gpu.sh"
STEPS = ["train-lora", "train-qlora", "merge", "export", "bench", "gpu-tests"]


def run(*args, timeout=900):
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(["bash", str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=REPO)


@pytest.mark.slow  # a training run, a merge, an export and a bench: over ~20 s on 2 cores
def test_dry_run_runs_every_step_and_writes_the_report(tmp_path):
    out = tmp_path / "check"
    r = run("--dry-run", "--out", out)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((out / "gpu-check.json").read_text())
    assert report["kind"] == "edgemed-gpu-check" and report["dry_run"] and report["device"] == "cpu"
    assert [s["name"] for s in report["steps"]] == STEPS
    for step in report["steps"]:
        assert step["status"] == "ok", step
        assert step["seconds"] > 0 and "torch_max_allocated_bytes" in step and "nvml_peak_used_bytes" in step
    qlora = report["steps"][1]
    assert qlora["exit_code"] == 2 and "QLoRA needs CUDA" in qlora["note"]
    assert "--qlora needs a CUDA GPU" in (out / "logs" / "train-qlora.log").read_text()
    assert set(report["left_out"]) == {"onnx", "gguf", "openvino"}
    assert report["formats"] == ["hf", "bnb-int8", "bnb-nf4"]
    bench = json.loads((out / "bench" / "bench.json").read_text())
    assert sorted(a["format"] for a in bench["artifacts"]) == ["bnb-int8", "bnb-nf4", "hf"]
    run_record = json.loads((out / "train-lora" / "edgemed-run.json").read_text())
    assert run_record["device"]["device"] == "cpu"
    assert report["environment"]["found"]["transformers"].startswith("4.57")
    assert report["total_s"] >= sum(s["seconds"] for s in report["steps"])


def test_without_cuda_the_check_refuses_in_one_line(tmp_path):
    import torch

    if torch.cuda.is_available():
        import pytest

        pytest.skip("this machine has a CUDA GPU: the refusal is for machines without one")
    r = run("--out", tmp_path / "real", timeout=300)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "no CUDA GPU visible" in lines[0] and "--dry-run" in lines[0], r.stderr
    assert not (tmp_path / "real").exists()
