"""One resolution of CPU threads and device for eval, bench and pipeline (recorded in results.json and bench.json).

Resolved once, in the parent, then handed to every runtime: llama.cpp, onnxruntime and torch all get the same
thread count and device instead of each engine's own default (llama-cpp-python's is half the cores).
Importing this module is cheap; torch, onnxruntime and llama_cpp are only looked at when ``device`` is auto or
a GPU is asked for, and only if installed.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from edgemed.errors import EdgemedError
from edgemed.registry import RUNTIMES, importable, load_object, missing_modules


def physical_cores() -> int:
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


def resolve_threads(threads: int | None) -> int:
    """The user's count, else the physical cores (llama-bench's default)."""
    if threads is None:
        return physical_cores()
    if threads < 1:
        raise EdgemedError(f"--threads must be at least 1, got {threads}")
    if threads > max_threads():
        raise EdgemedError(f"--threads {threads} is far beyond this machine's {os.cpu_count()} logical CPUs; give at "
                           f"most {max_threads()} (or leave it out for the physical cores)")
    return int(threads)


def max_threads() -> int:
    """The most threads any engine is given: 4x oversubscription at most (a runaway value makes engines abort)."""
    return max(64, 4 * (os.cpu_count() or 1))


def gpus() -> dict[str, Any]:
    """What each installed engine can use here: {'cuda': bool, 'mps': bool, 'seen_by': [...]}: every registered
    runtime's GPU probe (the registry's RuntimeSpec.gpu_probe) where its modules import, each engine named once."""
    seen: list[str] = []
    for spec in RUNTIMES.values():
        if spec.gpu_probe and spec.engine not in seen and not missing_modules(spec.needs[:1]) \
                and load_object(spec.gpu_probe)():
            seen.append(spec.engine)
    return {"cuda": bool(seen), "mps": torch_sees_mps(), "seen_by": seen}


def torch_sees_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def torch_sees_mps() -> bool:
    """An Apple GPU torch can use (only torch's probe: llama.cpp's Metal offload is not asked for here)."""
    if not importable("torch"):
        return False
    import torch

    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def onnxruntime_sees_cuda() -> bool:
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def llamacpp_offloads() -> bool:
    """Whether llama.cpp offloads to a CUDA GPU (on macOS its offload is Metal, counted as mps, not here)."""
    if sys.platform == "darwin":
        return False
    try:
        import llama_cpp

        return bool(llama_cpp.llama_supports_gpu_offload())
    except (ImportError, OSError, AttributeError):  # a broken native library: no GPU from it
        return False


def device_for_runtime(runtime: str, device: str, requested: str | None = None) -> str:
    """The device `runtime` runs on: a CUDA device its own engine cannot use is bad input when it was asked for
    (exit 2 naming what is available), and the CPU when it came from --device auto (another engine saw the GPU).
    Which engine a runtime drives, and how to get a CUDA build of it, are the registry's (RuntimeSpec)."""
    spec = RUNTIMES.get(runtime)
    if not device.startswith("cuda") or spec is None:
        return device
    engine = spec.engine
    seen = gpus()["seen_by"]
    if engine in seen:
        return device
    if requested == "auto":
        return "cpu"
    others = f"engines that can: {', '.join(seen)}" if seen else "no engine here sees a CUDA GPU"
    fix = f", or {spec.cuda_fix}" if spec.cuda_fix else f" ({runtime} runs on the CPU only here)"
    raise EdgemedError(f"--device {device}: {runtime} ({engine}) cannot use a CUDA GPU here ({others}); "
                       f"use --device cpu{fix}")


def resolve_device(device: str = "auto") -> str:
    """auto -> cuda where an installed engine sees a CUDA GPU, mps on Apple silicon, else cpu.
    An explicit GPU that is not there is bad input (exit 2), never a silent fallback."""
    if device == "cpu":
        return "cpu"
    if device not in ("auto", "mps") and not device.startswith("cuda"):
        raise EdgemedError(f"unknown device '{device}'; use auto, cpu, cuda, cuda:N or mps")
    found = gpus()
    if device == "auto":
        return "cuda" if found["cuda"] else "mps" if found["mps"] else "cpu"
    if device.startswith("cuda") and not found["cuda"]:
        raise EdgemedError(f"--device {device}: no CUDA GPU is visible to torch, onnxruntime or llama.cpp on this "
                           "machine; use --device cpu (or auto)")
    if device == "mps" and not found["mps"]:
        raise EdgemedError("--device mps: no Apple GPU (MPS) here; use --device cpu (or auto)")
    return device


def resolved(threads: int | None, device: str) -> dict[str, Any]:
    """The record written to results.json / bench.json."""
    return {"threads": resolve_threads(threads), "threads_requested": threads,
            "device": resolve_device(device), "device_requested": device}
