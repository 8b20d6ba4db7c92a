"""The AVX2 int8 path for real, on any x86-64 machine: qemu-user emulating an AVX2-only CPU (Haswell: no AVX-512,
no VNNI) makes onnxruntime's MLAS pick its VPMADDUBSW u8s8 kernel, the one that saturates full-range int8 weights.

The emulated interpreter is a venv whose ``bin/python`` starts this venv's Python under ``qemu-x86_64 -cpu
Haswell`` with argv[0] set to itself, so ``sys.executable`` (and every child edgemed starts: export verification,
eval workers) runs emulated too. /proc/cpuinfo under qemu-user is still the host's: what the test shows is that
edgemed asks the kernel (``int8_kernels.probe_u8s8``), not the flags.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

QEMU = shutil.which("qemu-x86_64-static") or shutil.which("qemu-x86_64")
pytestmark = [
    pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="emulates an x86-64 CPU"),
    pytest.mark.skipif(QEMU is None, reason="qemu-user for x86-64 is not installed (apt-get install "
                                            "qemu-user-static; .ci/run installs it)"),
    pytest.mark.skipif(sys.prefix == sys.base_prefix, reason="the emulated interpreter is built from a venv"),
]
# The two end-to-end tests run onnxruntime's kernels instruction by instruction under qemu's TCG: about 4 and 7
# minutes on 2 cores (measured: 252 s and 430 s). The suite runs the probe test; these two on request.
END_TO_END = pytest.mark.skipif(os.environ.get("EDGEMED_EMULATED_TESTS") != "1",
                                reason="end to end under qemu takes 4-7 min: set EDGEMED_EMULATED_TESTS=1 "
                                       "(docs/testing.md)")
CPU = "Haswell"  # AVX2 + FMA, no AVX-512, no VNNI: the int8 kernel of most laptops
TIMEOUT_S = 900


@pytest.fixture(scope="module")
def avx2_python(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("avx2-venv")
    (root / "bin").mkdir()
    shutil.copy(Path(sys.prefix) / "pyvenv.cfg", root / "pyvenv.cfg")
    # this venv's packages, but llama_cpp: its ggml was compiled for this machine (-march=native) and would trap
    # on the emulated CPU's missing AVX-512 when eval asks every engine for a GPU
    real_site = Path(sysconfig.get_paths()["purelib"])
    site = root / real_site.relative_to(sys.prefix)
    site.mkdir(parents=True)
    for entry in real_site.iterdir():
        if not entry.name.startswith(("llama_cpp", "llama-cpp")):
            (site / entry.name).symlink_to(entry)
    python = root / "bin" / "python"
    real = os.path.realpath(sys.executable)
    python.write_text(f'#!/bin/sh\nexec "{QEMU}" -cpu {CPU} -0 "{python}" "{real}" "$@"\n')
    python.chmod(0o755)
    return python


def emulated(python: Path, *args, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run([str(python), "-P", *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env,
                            timeout=TIMEOUT_S)
    # qemu warns once per CPUID feature its TCG lacks (invpcid, rtm, ...): not the command's output
    result.stderr = "\n".join(line for line in result.stderr.splitlines() if not line.startswith("qemu-x86_64"))
    return result


def test_the_probe_reads_the_kernel_not_the_flags(avx2_python):
    code = ("import json; from edgemed.int8_kernels import kernel_of, probe_u8s8; from edgemed.sysinfo import "
            "cpu_flags; print(json.dumps([kernel_of(), probe_u8s8(), sorted(cpu_flags())]))")
    result = emulated(avx2_python, "-c", code)
    assert result.returncode == 0, result.stderr
    kernel, probe, flags = json.loads(result.stdout.splitlines()[-1])
    assert kernel == "x86-pmaddubsw", (probe, flags)
    assert not probe["exact"] and probe["got"] < probe["want"]  # VPMADDUBSW's int16 pairs saturated
    assert probe["got"] == 32 * 32767  # 64 products -> 32 pairs, each saturated at 32767


@pytest.fixture(scope="module")
def fp32_onnx(tiny_model, tmp_path_factory) -> Path:
    from edgemed.export.run import run_export

    out = tmp_path_factory.mktemp("fp32")
    (r,) = run_export(tiny_model, ["onnx"], out, threads=2, show_progress=False)
    assert r["status"] == "exported", r["reason"]
    return out / "onnx"


@END_TO_END
def test_export_on_the_avx2_path_picks_u8u8_and_verifies(avx2_python, tiny_model, fp32_onnx, tmp_path):
    """`edgemed export --formats onnx-int8` started on the emulated AVX2 CPU: `auto` resolves to the VPMADDUBSW
    kernel by probing it, writes uint8 weights, and export verification (its own worker, emulated too) passes."""
    out = tmp_path / "arts"
    shutil.copytree(fp32_onnx, out / "onnx")  # the fp32 graph it quantizes (no torch export under emulation)
    result = emulated(avx2_python, "-m", "edgemed.cli.main", "export", tiny_model, "--formats", "onnx-int8",
                      "--threads", "2", "--out", out, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    manifest = json.loads((out / "onnx-int8" / "edgemed.json").read_text())
    int8 = manifest["export"]["int8"]
    assert int8["for_kernel"] == "x86-pmaddubsw" and int8["name"] == "u8u8" and int8["weight_type"] == "quint8"
    assert int8["chosen_by"] == "auto: the exporting CPU runs x86-pmaddubsw"
    assert int8["exporting_cpu_probe"]["exact"] is False
    assert manifest["status"] == "verified" and manifest["verification"]["passed"]


@END_TO_END
def test_a_vnni_artifact_run_on_avx2_is_warned_and_measured(avx2_python, tiny_model, fp32_onnx, tmp_path):
    """An artifact with full-range int8 weights (made for VNNI, on this machine) evaluated on the AVX2 CPU: eval
    names the saturation risk and measures the delta to its fp32 sibling with the emulated kernels."""
    from edgemed.export.run import run_export

    out = tmp_path / "arts"
    shutil.copytree(fp32_onnx, out / "onnx")
    (r,) = run_export(tiny_model, ["onnx-int8"], out, threads=2, show_progress=False, verify=False,
                      settings={"onnx-int8": {"kernel": "vnni"}})
    assert r["status"] == "exported", r["reason"]
    result = emulated(avx2_python, "-m", "edgemed.cli.main", "eval", out / "onnx-int8", "--limit", "3", "--out",
                      tmp_path / "ev", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "VPMADDUBSW" in result.stderr and "--int8-isa avx2" in result.stderr
    doc = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert doc["runtime"]["int8_kernel"] == "x86-pmaddubsw" and doc["runtime"]["int8_weights_for"] == "x86-vnni"
    check = doc["int8_kernel_check"]
    assert check["measured"] and check["kernel"] == "x86-pmaddubsw" and check["prompts"] == 6
    assert check["max_abs_delta"] >= 0 and Path(check["against"]).name == "onnx"
