"""edgemed.sysinfo on recorded /proc/cpuinfo and device-tree text: x86, aarch64 boards, qemu-user."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgemed import sysinfo
from edgemed.sysinfo import arm_core_name, cpu_info, hwcap_features, parse_cpuinfo, shown_features

# A Raspberry Pi 5 (Raspberry Pi OS, 64-bit kernel): four Cortex-A76 r4p1 cores; the Features line is the one
# lscpu prints there ("Flags"); the board lines come last, after the processor blocks.
_PI5_CORE = """processor\t: {n}
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x4
CPU part\t: 0xd0b
CPU revision\t: 1
"""
PI5_CPUINFO = "\n".join(_PI5_CORE.format(n=n) for n in range(4)) + """
Revision\t: d04170
Serial\t\t: 0000000000000000
Model\t\t: Raspberry Pi 5 Model B Rev 1.0
"""
PI5_DT_MODEL = b"Raspberry Pi 5 Model B Rev 1.0\x00"

# A Raspberry Pi 4 Model B: four Cortex-A72 r0p3 (ARMv8.0: no dotprod, no fp16 arithmetic).
_PI4_CORE = """processor\t: {n}
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x0
CPU part\t: 0xd08
CPU revision\t: 3
"""
PI4_CPUINFO = "\n".join(_PI4_CORE.format(n=n) for n in range(4)) + """
Hardware\t: BCM2835
Revision\t: c03114
Serial\t\t: 0000000000000000
Model\t\t: Raspberry Pi 4 Model B Rev 1.4
"""

# An RK3588 board (big.LITTLE): four Cortex-A55 then four Cortex-A76.
RK3588_CPUINFO = "\n".join(
    f"processor\t: {n}\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm "
    f"lrcpc dcpop asimddp\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x{2 if n < 4 else 4}\n"
    f"CPU part\t: {'0xd05' if n < 4 else '0xd0b'}\nCPU revision\t: 0\n"
    for n in range(8)
)

# What an aarch64 process reads under qemu-user on this project's x86 machines: the host's cpuinfo.
X86_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sse sse2 avx avx2 avx512f avx512_vnni amx_bf16 amx_tile amx_int8

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sse sse2 avx avx2 avx512f avx512_vnni amx_bf16 amx_tile amx_int8
"""

# AT_HWCAP of a Cortex-A76 (the bits of the Pi 5's Features line) and of qemu's "max" CPU's extras.
A76_FEATURES = "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"
A76_HWCAP = sum(1 << sysinfo.HWCAP_NAMES.index(f) for f in A76_FEATURES.split())


def _root(tmp_path: Path, cpuinfo: str, dt_model: bytes | None = None) -> Path:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "cpuinfo").write_text(cpuinfo)
    if dt_model is not None:
        (tmp_path / "proc" / "device-tree").mkdir()
        (tmp_path / "proc" / "device-tree" / "model").write_bytes(dt_model)
    return tmp_path


def test_raspberry_pi_5_board_core_and_features(tmp_path):
    info = cpu_info(_root(tmp_path, PI5_CPUINFO, PI5_DT_MODEL), machine="aarch64", hwcaps=None, env={})
    assert info.board == "Raspberry Pi 5 Model B Rev 1.0"
    assert info.model == "Raspberry Pi 5 Model B Rev 1.0 (4x Cortex-A76)"
    assert info.cores == ["Cortex-A76"] * 4
    assert info.features == set(A76_FEATURES.split())
    assert info.emulated is None
    assert info.source == "/proc/cpuinfo: CPU implementer/part, Features; board: /proc/device-tree/model"
    assert shown_features(info, "aarch64") == ["asimd", "asimddp", "asimdhp", "fphp"]


def test_raspberry_pi_4_without_device_tree_uses_cpuinfo_model(tmp_path):
    info = cpu_info(_root(tmp_path, PI4_CPUINFO), machine="aarch64", hwcaps=None, env={})
    assert info.model == "Raspberry Pi 4 Model B Rev 1.4 (4x Cortex-A72)"
    assert info.features == {"fp", "asimd", "evtstrm", "crc32", "cpuid"}
    assert "asimddp" not in info.features
    assert info.source.endswith("board: /proc/cpuinfo Model")


def test_device_tree_under_sys_firmware(tmp_path):
    root = _root(tmp_path, PI4_CPUINFO)
    dt = root / "sys" / "firmware" / "devicetree" / "base"
    dt.mkdir(parents=True)
    (dt / "model").write_bytes(b"Raspberry Pi 4 Model B Rev 1.5\x00")
    info = cpu_info(root, machine="aarch64", hwcaps=None, env={})
    assert info.board == "Raspberry Pi 4 Model B Rev 1.5"
    assert info.source.endswith("board: /sys/firmware/devicetree/base/model")


def test_big_little_cores_are_grouped(tmp_path):
    info = cpu_info(_root(tmp_path, RK3588_CPUINFO), machine="aarch64", hwcaps=None, env={})
    assert info.model == "4x Cortex-A55 + 4x Cortex-A76"
    assert info.board is None


@pytest.mark.parametrize(("implementer", "part", "name"), [
    ("0x41", "0xd0b", "Cortex-A76"),
    ("0x41", "0xd08", "Cortex-A72"),
    ("0x41", "0xd03", "Cortex-A53"),
    ("0x41", "0xd05", "Cortex-A55"),
    ("0x41", "0xd07", "Cortex-A57"),
    ("0x41", "0xd42", "Cortex-A78AE"),
    ("0x41", "0xd0c", "Neoverse-N1"),
    (0x4E, 0x004, "Carmel"),
    ("0x51", "0x805", "Qualcomm part 0x805"),
    ("0x99", "0x001", "implementer 0x99 part 0x1"),
    ("junk", "0xd0b", "implementer junk part 0xd0b"),
])
def test_arm_core_names(implementer, part, name):
    assert arm_core_name(implementer, part) == name


def test_hwcap_bits_are_named_like_the_features_line():
    assert hwcap_features(A76_HWCAP) == set(A76_FEATURES.split())
    assert hwcap_features(0b11) == {"fp", "asimd"}
    assert hwcap_features(0, 1 << 13 | 1 << 14) == {"i8mm", "bf16"}
    assert hwcap_features(1 << 22, 1 << 1) == {"sve", "sve2"}


def test_qemu_user_does_not_report_the_hosts_x86_flags(tmp_path):
    info = cpu_info(_root(tmp_path, X86_CPUINFO), machine="aarch64", hwcaps=(A76_HWCAP, 0),
                    env={"QEMU_CPU": "cortex-a76"})
    assert info.emulated and "qemu-user" in info.emulated and "not a board's" in info.emulated
    assert info.model == "cortex-a76 emulated by qemu-user on Intel(R) Xeon(R) Processor"
    assert info.features == set(A76_FEATURES.split())
    assert not {f for f in info.features if f.startswith(("avx", "amx", "sse"))}
    assert "/proc/cpuinfo is the host's" in info.source and "AT_HWCAP" in info.source
    assert "QEMU_CPU=cortex-a76" in info.source


def test_qemu_user_without_hwcaps_says_features_unknown(tmp_path):
    info = cpu_info(_root(tmp_path, X86_CPUINFO), machine="aarch64", hwcaps=None, env={})
    assert info.features == set()
    assert info.model.startswith("aarch64 CPU (qemu's default model) emulated by qemu-user on Intel")
    assert "features unknown" in info.source


def test_amx_guard_is_off_under_qemu_user_on_an_amx_host(tmp_path, monkeypatch):
    from edgemed.runtimes.llamacpp import cpu_has_amx

    root = _root(tmp_path, X86_CPUINFO)
    real = sysinfo.cpu_info
    monkeypatch.setattr(sysinfo, "cpu_info", lambda: real(root, machine="x86_64"))
    assert cpu_has_amx()  # the host itself
    monkeypatch.setattr(sysinfo, "cpu_info", lambda: real(root, machine="aarch64", hwcaps=(A76_HWCAP, 0), env={}))
    assert not cpu_has_amx()
    assert sysinfo.cpu_model().startswith("aarch64 CPU (qemu's default model) emulated by qemu-user")


def _old_cpu_model(text: str) -> str:  # edgemed.sysinfo before aarch64 support, on text
    for line in text.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    raise AssertionError("no model name")


def _old_cpu_flags(text: str) -> set[str]:
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def test_x86_path_unchanged(tmp_path):
    info = cpu_info(_root(tmp_path, X86_CPUINFO), machine="x86_64")
    assert info.model == _old_cpu_model(X86_CPUINFO)
    assert info.features == _old_cpu_flags(X86_CPUINFO)
    assert info.source == "/proc/cpuinfo: model name, flags"
    assert info.board is None and info.emulated is None
    assert shown_features(info, "x86_64") == sorted(
        f for f in _old_cpu_flags(X86_CPUINFO) if f.startswith(("avx", "amx")) or f in ("neon", "asimd"))


def test_this_machine_as_before():
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    info = cpu_info()
    assert info.model and info.source
    if sysinfo.platform.machine() == "x86_64" and "model name" in text:
        assert sysinfo.cpu_model() == _old_cpu_model(text)
        assert sysinfo.cpu_flags() == _old_cpu_flags(text)


def test_parse_cpuinfo_blocks():
    blocks = parse_cpuinfo(PI5_CPUINFO)
    assert len(blocks) == 5 and blocks[0]["CPU part"] == "0xd0b" and blocks[-1]["Model"].startswith("Raspberry")


def test_environment_says_where_the_cpu_was_read():
    env = sysinfo.environment(with_accelerator=False)
    assert env["cpu_source"]
    assert {"cpu", "cpu_features", "cores_logical", "machine", "versions"} <= set(env)
