"""The environment a result was measured in: CPU, cores, RAM, OS, accelerator, versions, commit.

The CPU is read from ``/proc/cpuinfo``. On x86 that is the ``model name`` and ``flags`` lines. On aarch64
(Raspberry Pi, Jetson, Graviton ...) cpuinfo has no model name: the CPU is its ``CPU implementer``/``CPU part``
ids (decoded to a name such as Cortex-A76), the features are the ``Features`` line, and the board is the
device-tree ``model`` (e.g. "Raspberry Pi 5 Model B Rev 1.0"). Under qemu-user (an aarch64 Python on an x86
host) ``/proc/cpuinfo`` is the host's: that is detected and said, and the features are then the ones the
emulated CPU advertises to this process (AT_HWCAP/AT_HWCAP2), never the host's x86 flags. ``CpuInfo.source``
says what was read and from where.
"""

from __future__ import annotations

import os
import platform
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgemed.arm_cpu import (  # noqa: F401 (HWCAP_NAMES re-exported: recorded files are decoded with it)
    HWCAP_NAMES,
    arm_core_name,
    auxv_hwcaps,
    hwcap_features,
)

ARM_MACHINES = ("aarch64", "arm64", "armv8l", "armv8b")

# Features worth showing in `environment()['cpu_features']`: on x86 the vector/matrix extensions;
# on aarch64 the ones llama.cpp and onnxruntime kernels select on.
ARM_SHOWN_FEATURES = ("asimd", "fphp", "asimdhp", "asimddp", "asimdfhm", "i8mm", "bf16", "sve", "sve2", "sme")


@dataclass
class CpuInfo:
    """What this machine's CPU is, as far as the files read say, and where that came from."""

    model: str
    features: set[str] = field(default_factory=set)
    source: str = ""
    board: str | None = None  # device-tree model, e.g. "Raspberry Pi 5 Model B Rev 1.0"
    cores: list[str] = field(default_factory=list)  # aarch64: the decoded name of each core
    emulated: str | None = None  # set when the CPU files describe another machine than the one executing


def parse_cpuinfo(text: str) -> list[dict[str, str]]:
    """``/proc/cpuinfo`` as blocks of ``key: value`` (one per processor; trailing board lines form their own)."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
                current = {}
            continue
        if ":" in line:
            key, value = line.split(":", 1)
            current[key.strip()] = value.strip()
    if current:
        blocks.append(current)
    return blocks


def _read_text(path: Path) -> str | None:
    try:
        return path.read_bytes().decode("utf-8", errors="replace")
    except OSError:
        return None


def device_tree_model(root: Path = Path("/")) -> tuple[str, str] | None:
    """(model, path read) from the device tree, e.g. ('Raspberry Pi 5 Model B Rev 1.0', '/proc/device-tree/model')."""
    for rel in ("proc/device-tree/model", "sys/firmware/devicetree/base/model"):
        text = _read_text(Path(root) / rel)
        if text and text.strip("\0 \n"):
            return text.strip("\0 \n").split("\0")[0], "/" + rel
    return None


def _is_x86_cpuinfo(blocks: list[dict[str, str]]) -> bool:
    return any("flags" in b or "vendor_id" in b for b in blocks) and not any("CPU implementer" in b for b in blocks)


def _group(names: list[str]) -> str:
    counts = Counter(names)
    return " + ".join(f"{n}x {name}" if n > 1 else name for name, n in counts.items())


def cpu_info(
    root: Path = Path("/"),
    machine: str | None = None,
    hwcaps: tuple[int, int] | None | bool = True,
    env: dict[str, str] | None = None,
) -> CpuInfo:
    """Read the CPU from ``root``'s /proc/cpuinfo (and device tree on aarch64).

    machine: ``platform.machine()`` unless given; hwcaps: this process's (AT_HWCAP, AT_HWCAP2) when True,
    given values, or None for none; env: where QEMU_CPU is looked up (default os.environ). The arguments exist
    so recorded files can be read in tests.
    """
    root = Path(root)
    machine = platform.machine() if machine is None else machine
    env = os.environ if env is None else env
    text = _read_text(root / "proc/cpuinfo")
    blocks = parse_cpuinfo(text) if text else []

    if machine.lower() not in ARM_MACHINES:  # x86 and everything else: model name and flags lines
        model = next((b["model name"] for b in blocks if "model name" in b), None)
        flags = next((b["flags"] for b in blocks if "flags" in b), None)
        if text is None:
            source = "/proc/cpuinfo unreadable; model from platform"
        else:
            read = ", ".join(k for k, v in (("model name", model), ("flags", flags)) if v is not None)
            source = f"/proc/cpuinfo: {read}" if read else "/proc/cpuinfo: no model name or flags"
        return CpuInfo(model=model or platform.processor() or machine,
                       features=set(flags.split()) if flags else set(), source=source)

    dt = device_tree_model(root)
    board = dt[0] if dt else next((b["Model"] for b in blocks if "Model" in b), None)
    board_src = dt[1] if dt else ("/proc/cpuinfo Model" if board else None)
    if hwcaps is True:
        hwcaps = auxv_hwcaps()

    if blocks and _is_x86_cpuinfo(blocks):
        # qemu-user: the kernel (the host's) answers /proc/cpuinfo; this process runs on an emulated CPU.
        host = next((b["model name"] for b in blocks if "model name" in b), "an x86 host")
        qemu_cpu = env.get("QEMU_CPU")
        core = qemu_cpu or "aarch64 CPU (qemu's default model)"
        feats = hwcap_features(*hwcaps) if hwcaps else set()
        return CpuInfo(
            model=f"{core} emulated by qemu-user on {host}",
            features=feats,
            source=("qemu-user: /proc/cpuinfo is the host's (x86), not used for features; "
                    + ("features from AT_HWCAP/AT_HWCAP2 of this process (the emulated CPU)" if hwcaps
                       else "features unknown")
                    + (f"; QEMU_CPU={qemu_cpu} from the environment" if qemu_cpu else "")),
            board=board,
            emulated=f"qemu-user ({core}) on {host}: timings are not a board's",
        )

    cores = [arm_core_name(b["CPU implementer"], b.get("CPU part", "?")) for b in blocks if "CPU implementer" in b]
    feature_line = next((b["Features"] for b in blocks if "Features" in b), None)
    read = []
    if cores:
        read.append("CPU implementer/part")
    if feature_line is not None:
        read.append("Features")
    if feature_line is not None:
        feats = set(feature_line.split())
        feat_src = ""
    elif hwcaps:
        feats = hwcap_features(*hwcaps)
        feat_src = "; features from AT_HWCAP/AT_HWCAP2"
    else:
        feats, feat_src = set(), ""
    cpu = _group(cores) if cores else next(
        (b[k] for b in blocks for k in ("model name", "Processor", "Hardware") if k in b), machine)
    source = (f"/proc/cpuinfo: {', '.join(read)}" if read else
              ("/proc/cpuinfo: no CPU ids" if text is not None else "/proc/cpuinfo unreadable")) + feat_src
    if board_src:
        source += f"; board: {board_src}"
    return CpuInfo(model=f"{board} ({cpu})" if board else cpu, features=feats, source=source, board=board,
                   cores=cores)


def cpu_model() -> str:
    return cpu_info().model


def cpu_flags() -> set[str]:
    """The CPU's feature flags (x86 ``flags``, aarch64 ``Features``); never the host's under qemu-user."""
    return cpu_info().features


def shown_features(info: CpuInfo, machine: str | None = None) -> list[str]:
    machine = platform.machine() if machine is None else machine
    if machine.lower() in ARM_MACHINES:
        return sorted(f for f in info.features if f in ARM_SHOWN_FEATURES)
    return sorted(f for f in info.features if f.startswith(("avx", "amx")) or f in ("neon", "asimd"))


def git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def git_dirty() -> bool | None:
    """Whether tracked files differ from the commit (then the commit alone does not name the code measured)."""
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(out.stdout.strip()) if out.returncode == 0 else None


def accelerator() -> str:
    try:
        import torch
    except ImportError:
        return "none (torch not installed)"
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "none"


def environment(with_accelerator: bool = True) -> dict[str, Any]:
    import psutil

    from edgemed.manifest import versions

    info = cpu_info()
    env: dict[str, Any] = {
        "cpu": info.model,
        "cores_logical": os.cpu_count(),
        "cores_physical": psutil.cpu_count(logical=False),
        "cpu_features": shown_features(info),
        "cpu_source": info.source,
    }
    if info.board:
        env["board"] = info.board
    if info.emulated:
        env["emulated"] = info.emulated
    env.update({
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "accelerator": accelerator() if with_accelerator else "not checked",
        "commit": git_commit(),
        "commit_dirty": git_dirty(),
        "versions": versions(),
    })
    return env
