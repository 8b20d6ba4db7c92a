"""Where torch runs and in which dtype: the one resolution of ``--device`` and ``--dtype`` for training and for
inference (merge, eval, bench and export of transformers and bitsandbytes models).

``auto`` never leaves this module: :class:`DeviceChoice` refuses it, so a model is always loaded in a real dtype.

=========  ==================================================  ==========================================
device     training (``auto``)                                 inference (``auto``)
=========  ==================================================  ==========================================
CUDA       bfloat16 where the GPU computes it natively           as training
           (compute capability 8.0+), else float16 with the
           Trainer's grad scaler
MPS        float32 (float16 training diverges there)            float32
CPU        bfloat16 with AVX512-BF16 or AMX, else float32       float32
=========  ==================================================  ==========================================

An explicit ``--dtype`` wins where it can work and is refused (exit 2, naming the fix) where it cannot:
float16 training off CUDA (no grad scaler), bfloat16 on a GPU without native bfloat16, bfloat16 on MPS before
macOS 14, ``--qlora`` off CUDA. Every hardware fact is read through torch's device queries
(``torch.cuda.is_available``, ``is_bf16_supported``, ``get_device_name``/``get_device_capability``,
``torch.backends.mps.is_available``), the only thing tests stand in for.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Literal

from edgemed.errors import EdgemedError

DTYPES = ("float32", "bfloat16", "float16")
Purpose = Literal["train", "infer"]


@dataclass(frozen=True)
class DeviceChoice:
    """A resolved device ("cpu", "cuda", "cuda:N", "mps") and dtype (never "auto")."""

    device: str
    dtype: str  # "float32" | "bfloat16" | "float16"

    def __post_init__(self):
        if self.dtype not in DTYPES:  # a bug, not bad input: callers resolve "auto" through pick_device first
            raise ValueError(f"DeviceChoice needs a resolved dtype ({', '.join(DTYPES)}), not {self.dtype!r}")

    def __str__(self) -> str:
        return f"{self.device} ({self.dtype})"

    @property
    def is_cuda(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def grad_scaler(self) -> bool:
        """float16 training needs the loss scaled (the Trainer's ``fp16=True`` does it)."""
        return self.dtype == "float16"


def cpu_has_bf16() -> bool:
    """True where the CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX)."""
    from edgemed.sysinfo import cpu_flags

    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def mps_available() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(mps and mps.is_available())


def _cuda_index(device: str) -> int:
    import torch

    index = device.partition(":")[2]
    return int(index) if index else torch.cuda.current_device()


def cuda_native_bf16(device: str = "cuda") -> bool:
    """True where the GPU `device` computes bfloat16 natively (Ampere, compute capability 8.0, and later).

    ``torch.cuda.is_bf16_supported()`` answers True on older GPUs too (emulated bf16, many times slower), unless
    asked without emulation (torch versions without that argument only answer for native support), and answers for
    the current GPU only: the capability of `device` decides too. ROCm builds answer for themselves."""
    import torch

    try:
        native = bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:
        native = bool(torch.cuda.is_bf16_supported())
    if getattr(torch.version, "hip", None):
        return native
    return native and tuple(torch.cuda.get_device_capability(_cuda_index(device))) >= (8, 0)


def gpu_facts(device: str) -> dict[str, Any] | None:
    """Name, compute capability and memory of the CUDA GPU `device` (None off CUDA): for records and messages."""
    if not device.startswith("cuda"):
        return None
    import torch

    index = _cuda_index(device)
    facts: dict[str, Any] = {"name": torch.cuda.get_device_name(index)}
    major, minor = torch.cuda.get_device_capability(index)
    facts["capability"] = f"{major}.{minor}"
    with contextlib.suppress(RuntimeError, AssertionError):
        facts["memory_total_bytes"] = int(torch.cuda.mem_get_info(index)[1])
    return facts


def _gpu_name(device: str) -> str:
    try:
        facts = gpu_facts(device) or {}
    except (RuntimeError, AssertionError):
        return device
    return f"{facts.get('name', device)}, compute capability {facts.get('capability', '?')}"


def resolve_device(device: str = "auto") -> str:
    """--device as torch will use it: auto is cuda > mps > cpu; an explicit GPU that is not there is bad input."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if mps_available() else "cpu"
    if device not in ("cpu", "cuda", "mps") and not device.startswith("cuda:"):
        raise EdgemedError(f"unknown device '{device}'; use auto, cpu, cuda, cuda:N or mps")
    if device.startswith("cuda"):  # asked for explicitly: never a silent fallback, never a crash deep in torch
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = device.partition(":")[2]
        if count == 0:
            raise EdgemedError(f"--device {device}: torch {torch.__version__} sees no CUDA GPU on this machine "
                               f"(available: cpu{', mps' if mps_available() else ''}); use --device cpu or auto "
                               "(a CPU-only torch build sees none: see docs/gpu.md)")
        if index and (not index.isdigit() or int(index) >= count):
            raise EdgemedError(f"--device {device}: there is no such GPU (torch sees {count}: "
                               f"cuda:0..cuda:{count - 1})")
    if device == "mps" and not mps_available():
        raise EdgemedError("--device mps: no Apple GPU (MPS) here (available: cpu); use --device cpu or auto")
    return device


def auto_dtype(device: str, purpose: Purpose = "infer") -> str:
    """The dtype ``--dtype auto`` means on the resolved `device` (see the module's table)."""
    if device.startswith("cuda"):
        return "bfloat16" if cuda_native_bf16(device) else "float16"
    if device == "mps":
        return "float32"
    if purpose == "train":  # measured by scripts/dev/bench_train_speed.py (edgemed.train.cpu)
        return "bfloat16" if cpu_has_bf16() else "float32"
    return "float32"


def check_dtype(device: str, dtype: str, purpose: Purpose = "infer", qlora: bool = False) -> None:
    """Refuse (exit 2, naming the fix) an explicit dtype, or --qlora, that cannot work on the resolved `device`."""
    if dtype not in DTYPES:
        raise EdgemedError(f"unknown dtype '{dtype}'; use auto, {', '.join(DTYPES)}")
    if qlora and not device.startswith("cuda"):
        raise EdgemedError(f"--qlora needs a CUDA GPU (4-bit bitsandbytes base); this run is on {device}: "
                           "drop --qlora to train a plain LoRA")
    if dtype == "bfloat16" and device.startswith("cuda") and not cuda_native_bf16(device):
        raise EdgemedError(f"--dtype bfloat16: this GPU ({_gpu_name(device)}) has no native bfloat16 (it needs "
                           "compute capability 8.0+); use --dtype float16 (what auto picks here) or float32")
    if dtype == "bfloat16" and device == "mps":
        import torch

        newer = getattr(torch.backends.mps, "is_macos_or_newer", None)
        if newer is not None and not newer(14, 0):
            raise EdgemedError("--dtype bfloat16 on MPS needs macOS 14 or later; use --dtype float32 (what auto "
                               "picks on MPS)")
    if purpose == "train" and dtype == "float16" and not device.startswith("cuda"):
        raise EdgemedError(f"float16 training needs CUDA (its grad scaler); on {device} use --dtype float32 "
                           f"{'(what auto picks on MPS)' if device == 'mps' else 'or bfloat16'}")


def pick_device(device: str = "auto", dtype: str = "auto", purpose: Purpose = "infer",
                qlora: bool = False) -> DeviceChoice:
    """The device and dtype of a run: `device` resolved (cuda > mps > cpu), `dtype` resolved for `purpose`
    ("train" or "infer") where it is auto, and checked where it was given (exit 2 where it cannot work)."""
    if dtype != "auto" and dtype not in DTYPES:
        raise EdgemedError(f"unknown dtype '{dtype}'; use auto, {', '.join(DTYPES)}")
    resolved = resolve_device(device)
    effective = auto_dtype(resolved, purpose) if dtype == "auto" else dtype
    check_dtype(resolved, effective, purpose, qlora)
    return DeviceChoice(resolved, effective)


def pick_device_unforked(device: str = "auto", dtype: str = "auto", purpose: Purpose = "infer",
                         qlora: bool = False) -> DeviceChoice:
    """:func:`pick_device` for a process that forks its work later (the pipeline): with a CUDA build of torch the
    question is answered in a forked child, because a process that has initialised CUDA cannot use it in a child it
    forks afterwards; a CPU or Apple build of torch answers here (no driver is touched)."""
    import torch

    if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
        return pick_device(device, dtype, purpose, qlora)
    from edgemed.process.call import call_in_child

    return call_in_child(lambda: pick_device(device, dtype, purpose, qlora), "device check")


def describe(choice: DeviceChoice, device: str, dtype: str) -> dict[str, Any]:
    """The record of a choice: effective device and dtype, what was asked for, the GPU, the grad scaler."""
    return {"device": choice.device, "dtype": choice.dtype, "device_requested": device, "dtype_requested": dtype,
            "gpu": gpu_facts(choice.device), "grad_scaler": choice.grad_scaler}
