"""Which kernel onnxruntime's dynamic int8 MatMul runs on a CPU, and the weight scheme that is exact on it.

Dynamic quantization (``quantize_dynamic``) feeds uint8 activations and int8 weights to MLAS's u8s8 GEMM:

- ``x86-vnni``: x86-64 with AVX512-VNNI, AVX-VNNI or AMX: VPDPBUSD / TDPBUSD accumulate u8 x s8 products
  straight into int32. Exact for any weights.
- ``x86-pmaddubsw``: any other x86-64 (AVX2, and AVX-512 without VNNI): VPMADDUBSW adds two u8 x s8 products
  into a *saturating* int16. With full-range weights (|w| up to 127) a pair reaches 2 x 255 x 127 = 64770 >
  32767 and saturates: onnxruntime's docs name reduce_range (7-bit weights) or U8U8 (uint8 weights, multiplied
  through VPMADDWD in 16-bit lanes) as the remedy. Measured on a Zen 3 EPYC with SmolLM2-135M: max |delta log p|
  22.4 with full-range s8 weights, 3.5 with reduce_range, 3.3 with U8U8 (top-100 next tokens,
  shared/notes/formats.md). On the default pipeline's merged SmolLM2 (export verification, letter log-probs):
  full-range s8 on VNNI 0.64, U8U8 0.70, 7-bit s8 0.85 (tolerance 1.0); so U8U8 is the scheme for this kernel.
- ``arm``: aarch64 (SDOT/UDOT/SMMLA with dotprod/i8mm, widening NEON multiplies without): exact.

Which family runs here is asked of onnxruntime itself (:func:`probe_u8s8`: one MatMulInteger whose products
saturate an int16 pair), not read from /proc/cpuinfo alone: under qemu-user the flags are the host's, and a
hypervisor can hide VNNI from a guest whose flags still name it. Under ``qemu-x86_64 -cpu Haswell`` the probe
sees VPMADDUBSW on a VNNI host (tests/test_int8_avx2_emulated.py runs the AVX2 path that way).

The exporter picks the scheme for the CPU the artifact is meant for (``--int8-isa``, default: this CPU) and
records it in the manifest; eval and bench warn when an artifact runs on a CPU whose kernel can saturate its
weights (:func:`saturation_risk`).
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path
from typing import Any

VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8", "avx_vnni_int8"})
KERNELS = ("x86-vnni", "x86-pmaddubsw", "arm")
# --int8-isa values: the CPU an onnx-int8 artifact is made for ("auto": the exporting CPU)
TARGETS = {"auto": None, "vnni": "x86-vnni", "avx2": "x86-pmaddubsw", "arm": "arm"}


def kernel_of(flags: set[str] | None = None, machine: str | None = None) -> str:
    """The u8s8 kernel family of a CPU: from `flags` when given; for this CPU, what onnxruntime's own kernel does
    (:func:`probe_u8s8`) where onnxruntime is installed, else its /proc/cpuinfo flags."""
    machine = (machine or platform.machine()).lower()
    if machine in ("aarch64", "arm64") or machine.startswith("arm"):
        return "arm"
    if flags is None:
        probe = probe_u8s8()
        if probe is not None:
            return "x86-vnni" if probe["exact"] else "x86-pmaddubsw"
        from edgemed.sysinfo import cpu_flags

        flags = cpu_flags()
    return "x86-vnni" if VNNI_FLAGS & set(flags) else "x86-pmaddubsw"


@functools.cache
def probe_u8s8() -> dict[str, Any] | None:
    """Ask this CPU's onnxruntime kernel directly: one u8 x s8 ``MatMulInteger`` whose products pair up past the
    int16 range (2 x 255 x 127). Exact means int32 accumulation (VNNI, AMX, ARM dot products); saturated means
    VPMADDUBSW. Flags can lie (under qemu-user /proc/cpuinfo is the host's; a hypervisor may hide VNNI); the
    kernel cannot. None where onnxruntime is not installed."""
    try:
        import numpy as np
        import onnxruntime as ort
        from onnx import TensorProto, helper
    except ImportError:
        return None
    k = 64
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "B"], ["Y"])], "u8s8_probe",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [1, k]),
         helper.make_tensor_value_info("B", TensorProto.INT8, [k, 8])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [1, 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    got = int(session.run(None, {"A": np.full((1, k), 255, np.uint8), "B": np.full((k, 8), 127, np.int8)})[0][0, 0])
    want = k * 255 * 127
    return {"exact": got == want, "got": got, "want": want, "onnxruntime": ort.__version__}


def exact_on(kernel: str, weight_type: str, reduce_range: bool) -> bool:
    """Whether int8 MatMuls with these weights compute exactly (no int16 saturation) on `kernel`."""
    return kernel != "x86-pmaddubsw" or weight_type != "qint8" or reduce_range


def scheme_for(kernel: str) -> dict[str, Any]:
    """The weight scheme quantize_dynamic should use for artifacts run on `kernel`: full-range int8 where the
    kernel accumulates u8 x s8 exactly, uint8 weights (U8U8, exact on every kernel) where it would saturate."""
    u8u8 = kernel == "x86-pmaddubsw"
    return {
        "name": "u8u8" if u8u8 else "u8s8",
        "weight_type": "quint8" if u8u8 else "qint8",
        "reduce_range": False,
        "for_kernel": kernel,
        "why": ("VPMADDUBSW (no VNNI) saturates int16 pairs of u8 x full-range s8: uint8 weights (U8U8) instead"
                if u8u8 else f"{kernel} accumulates u8 x s8 in int32: full-range weights are exact"),
    }


def resolve_target(target: str) -> tuple[str, str]:
    """(kernel, how it was chosen) for an --int8-isa value."""
    from edgemed.errors import EdgemedError

    if target not in TARGETS:
        raise EdgemedError(f"--int8-isa must be one of {', '.join(TARGETS)}, not {target!r}")
    if TARGETS[target] is not None:
        return TARGETS[target], f"--int8-isa {target}"
    kernel = kernel_of()
    return kernel, f"auto: the exporting CPU runs {kernel}"


def saturation_risk(manifest: dict[str, Any], kernel: str | None = None) -> str | None:
    """A warning when an onnx-int8 artifact's weights can saturate this CPU's int8 kernel, else None."""
    if manifest.get("format") != "onnx-int8":
        return None
    settings = manifest.get("settings") or {}
    int8 = (manifest.get("export") or {}).get("int8") or {}
    weight_type = int8.get("weight_type", settings.get("weight_type") or "qint8")
    reduce_range = bool(int8.get("reduce_range", settings.get("reduce_range", False)))
    kernel = kernel or kernel_of()
    if exact_on(kernel, weight_type, reduce_range):
        return None
    made_for = int8.get("for_kernel", "a CPU with VNNI (exported before edgemed recorded the kernel)")
    return (f"this onnx-int8 artifact has full-range int8 weights, made for {made_for}; this CPU has no VNNI, and "
            "onnxruntime's u8s8 kernel here (VPMADDUBSW) saturates int16 sums of such weights, which can move "
            "log-probs by several nats. Its fidelity on this CPU (bench KLD vs the reference) shows whether it "
            "matters; re-export with 'edgemed export --int8-isa avx2' for weights exact on every CPU")


def check_here(path: Path, runtime, style: str, threads: int | None = None) -> dict[str, Any]:
    """Measure what the risk costs on this CPU: the artifact's letter log-probs against its fp32 ``onnx`` sibling
    (the graph it was quantized from, same source) on export verification's prompts, with this CPU's kernels."""
    import numpy as np

    from edgemed.export.verify import LOGPROB_FLOOR, verification_prompts
    from edgemed.manifest import try_manifest
    from edgemed.registry import FORMATS
    from edgemed.runtimes.base import open_runtime

    manifest = runtime.manifest
    sibling = Path(path).parent / "onnx"
    fp32 = try_manifest(sibling) or {}
    same = fp32.get("format") == "onnx" and fp32.get("source", {}).get("sha256") == manifest.get("source", {}).get(
        "sha256")
    tolerance = FORMATS["onnx-int8"].tolerance
    at_export = (manifest.get("verification") or {}).get("max_abs_delta")
    if not same:
        return {"measured": False, "tolerance": tolerance, "max_abs_delta_at_export": at_export,
                "why": f"no fp32 onnx artifact of the same source at {sibling} to compare with; 'edgemed bench' "
                       "with the reference measures its KLD on this CPU"}
    prompts = verification_prompts(style)
    with open_runtime(sibling, threads=threads, device="cpu") as ref:
        want = ref.letter_logprobs(prompts)
    have = runtime.letter_logprobs(prompts)
    delta = np.abs(np.maximum(have, LOGPROB_FLOOR) - np.maximum(want, LOGPROB_FLOOR))
    worst = float(delta.max())
    return {"measured": True, "against": str(sibling), "prompts": len(prompts), "max_abs_delta": worst,
            "tolerance": tolerance, "max_abs_delta_at_export": at_export, "within_tolerance": worst <= tolerance,
            "kernel": kernel_of()}
