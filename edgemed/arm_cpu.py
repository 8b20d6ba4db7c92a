"""aarch64 CPUs by their ids: the (implementer, part) pairs of /proc/cpuinfo decoded to core names, and the
AT_HWCAP/AT_HWCAP2 bits of a process decoded to cpuinfo's feature names (edgemed.sysinfo reads the files)."""

from __future__ import annotations

import ctypes

# (implementer, part) -> name, as in the Linux kernel's arch/arm64/include/asm/cputype.h and util-linux lscpu.
ARM_IMPLEMENTERS = {
    0x41: "Arm", 0x42: "Broadcom", 0x43: "Cavium", 0x46: "Fujitsu", 0x48: "HiSilicon", 0x4E: "NVIDIA",
    0x50: "APM", 0x51: "Qualcomm", 0x53: "Samsung", 0x61: "Apple", 0x6D: "Microsoft", 0xC0: "Ampere",
}
ARM_PARTS = {
    (0x41, 0xD01): "Cortex-A32", (0x41, 0xD02): "Cortex-A34", (0x41, 0xD03): "Cortex-A53",
    (0x41, 0xD04): "Cortex-A35", (0x41, 0xD05): "Cortex-A55", (0x41, 0xD06): "Cortex-A65",
    (0x41, 0xD07): "Cortex-A57", (0x41, 0xD08): "Cortex-A72", (0x41, 0xD09): "Cortex-A73",
    (0x41, 0xD0A): "Cortex-A75", (0x41, 0xD0B): "Cortex-A76", (0x41, 0xD0C): "Neoverse-N1",
    (0x41, 0xD0D): "Cortex-A77", (0x41, 0xD0E): "Cortex-A76AE", (0x41, 0xD40): "Neoverse-V1",
    (0x41, 0xD41): "Cortex-A78", (0x41, 0xD42): "Cortex-A78AE", (0x41, 0xD43): "Cortex-A65AE",
    (0x41, 0xD44): "Cortex-X1", (0x41, 0xD46): "Cortex-A510", (0x41, 0xD47): "Cortex-A710",
    (0x41, 0xD48): "Cortex-X2", (0x41, 0xD49): "Neoverse-N2", (0x41, 0xD4A): "Neoverse-E1",
    (0x41, 0xD4B): "Cortex-A78C", (0x41, 0xD4D): "Cortex-A715", (0x41, 0xD4E): "Cortex-X3",
    (0x41, 0xD4F): "Neoverse-V2", (0x41, 0xD80): "Cortex-A520", (0x41, 0xD81): "Cortex-A720",
    (0x41, 0xD82): "Cortex-X4", (0x4E, 0x003): "Denver 2", (0x4E, 0x004): "Carmel",
    (0xC0, 0xAC3): "Ampere-1",
}

# Bits of AT_HWCAP and AT_HWCAP2 on arm64 (Linux uapi asm/hwcap.h), named as /proc/cpuinfo's Features line.
HWCAP_NAMES = (
    "fp", "asimd", "evtstrm", "aes", "pmull", "sha1", "sha2", "crc32", "atomics", "fphp", "asimdhp", "cpuid",
    "asimdrdm", "jscvt", "fcma", "lrcpc", "dcpop", "sha3", "sm3", "sm4", "asimddp", "sha512", "sve", "asimdfhm",
    "dit", "uscat", "ilrcpc", "flagm", "ssbs", "sb", "paca", "pacg",
)
HWCAP2_NAMES = (
    "dcpodp", "sve2", "sveaes", "svepmull", "svebitperm", "svesha3", "svesm4", "flagm2", "frint", "svei8mm",
    "svef32mm", "svef64mm", "svebf16", "i8mm", "bf16", "dgh", "rng", "bti", "mte", "ecv", "afp", "rpres", "mte3",
    "sme",
)
AT_HWCAP, AT_HWCAP2 = 16, 26


def arm_core_name(implementer: str | int, part: str | int) -> str:
    """'Cortex-A76' for (0x41, 0xd0b); an unknown pair is named by its vendor and hex ids."""
    try:
        imp = implementer if isinstance(implementer, int) else int(str(implementer), 0)
        prt = part if isinstance(part, int) else int(str(part), 0)
    except ValueError:
        return f"implementer {implementer} part {part}"
    name = ARM_PARTS.get((imp, prt))
    if name:
        return name
    return f"{ARM_IMPLEMENTERS.get(imp, f'implementer {imp:#x}')} part {prt:#x}"


def hwcap_features(hwcap: int, hwcap2: int = 0) -> set[str]:
    """Feature names of arm64 AT_HWCAP/AT_HWCAP2 bits (the names of cpuinfo's Features line)."""
    feats = {name for bit, name in enumerate(HWCAP_NAMES) if hwcap >> bit & 1}
    return feats | {name for bit, name in enumerate(HWCAP2_NAMES) if hwcap2 >> bit & 1}


def auxv_hwcaps() -> tuple[int, int] | None:
    """This process's AT_HWCAP/AT_HWCAP2 (under qemu-user: the emulated CPU's), or None where unreadable."""
    try:
        libc = ctypes.CDLL(None)
        getauxval = libc.getauxval
    except (OSError, AttributeError):
        return None
    getauxval.restype = ctypes.c_ulong
    getauxval.argtypes = [ctypes.c_ulong]
    return int(getauxval(AT_HWCAP)), int(getauxval(AT_HWCAP2))
