"""What llama.cpp's quantizer does with an importance matrix, per file type, and the GGUF format names.

Read from the llama.cpp vendored in llama-cpp-python 0.3.36 (src/llama-quant.cpp, ggml/src/ggml-quants.c):

- ``tensor_requires_imatrix`` makes ``llama_model_quantize`` refuse, without a matrix, every tensor it would store
  as IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S or IQ3_XXS, and Q2_K inside a Q2_K_S file. The file types that store
  such tensors are NEEDS_IMATRIX (IQ2_M stores IQ2_S, IQ3_XS stores IQ3_XXS in its middle layers).
- ``quantize_q8_0``, ``quantize_tq1_0``, ``quantize_tq2_0`` and the fp4 types ignore the matrix (``(void)
  quant_weights``); f32/f16/bf16 are not quantized. Every other type weighs its rounding error by it:
  TAKES_IMATRIX.

Only pure data here (no engine import): the registry, ``edgemed info`` and the exporter read it.
"""

from __future__ import annotations

from typing import NamedTuple

PREFIX = "gguf-"
IMATRIX_SUFFIX = "-imatrix"
NEEDS_IMATRIX = frozenset({"iq1_s", "iq1_m", "iq2_xxs", "iq2_xs", "iq2_s", "iq2_m", "iq3_xxs", "iq3_xs", "q2_k_s"})
TAKES_IMATRIX = NEEDS_IMATRIX | {
    "q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "q4_k_s", "q4_k_m", "q5_k_s", "q5_k_m", "q6_k",
    "q4_0", "q4_1", "q5_0", "q5_1", "iq3_s", "iq3_m", "iq4_nl", "iq4_xs", "q1_0", "q2_0",
}
# ggml tensor types whose quantize function uses the matrix (the effective mix decides what an imatrix reaches).
WEIGHTED_TENSOR_TYPES = frozenset({
    "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ2_XXS", "IQ2_XS", "IQ2_S",
    "IQ3_XXS", "IQ3_S", "IQ1_S", "IQ1_M", "IQ4_NL", "IQ4_XS", "Q1_0", "Q2_0",
})
# The ladder edge engineers weigh: every rung plain, and calibrated where the type takes a matrix.
LADDER_TYPES = ("q2_k", "q3_k_m", "q4_0", "q4_k_s", "q4_k_m", "q5_k_m", "q6_k", "iq4_xs", "q8_0")


# llama.cpp's llama_ftype (llama.h), the number a GGUF header records as general.file_type: what the manifest check
# compares a gguf-<type> artifact's file with, without loading llama.cpp (a test holds it to the installed one's).
FILE_TYPES = {
    "f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q8_0": 7, "q5_0": 8, "q5_1": 9, "q2_k": 10, "q3_k_s": 11,
    "q3_k_m": 12, "q3_k_l": 13, "q4_k_s": 14, "q4_k_m": 15, "q5_k_s": 16, "q5_k_m": 17, "q6_k": 18, "iq2_xxs": 19,
    "iq2_xs": 20, "q2_k_s": 21, "iq3_xs": 22, "iq3_xxs": 23, "iq1_s": 24, "iq4_nl": 25, "iq3_s": 26, "iq3_m": 27,
    "iq2_s": 28, "iq2_m": 29, "iq4_xs": 30, "iq1_m": 31, "bf16": 32, "tq1_0": 36, "tq2_0": 37, "mxfp4_moe": 38,
    "nvfp4": 39, "q1_0": 40, "q2_0": 41,
}
# transformers model_type -> the general.architecture llama.cpp's converter writes, where the two names differ (a
# model_type not listed here and not equal to an architecture is not compared: the manifest's own record decides).
GGUF_ARCH_OF = {"mistral": "llama", "gemma3_text": "gemma3", "phi": "phi2", "qwen2_moe": "qwen2moe",
                "qwen3_moe": "qwen3moe"}
GGUF_ARCHS = frozenset({"llama", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "phi2", "phi3", "smollm3",
                        "granite", "olmo", "olmo2", "stablelm", "starcoder2", "falcon", "gpt2", "bloom"})


def expected_arch(model_type: str | None) -> str | None:
    """The general.architecture a GGUF converted from a transformers `model_type` carries (None: not known here)."""
    if not isinstance(model_type, str):
        return None
    arch = GGUF_ARCH_OF.get(model_type, model_type)
    return arch if arch in GGUF_ARCHS else None


class GgufName(NamedTuple):
    """A ``gguf-<type>[-imatrix]`` format name taken apart."""

    ftype: str  # the llama.cpp file type, e.g. q4_k_m
    calibrated: bool  # -imatrix: quantized with an importance matrix


def parse_format(name: str) -> GgufName | None:
    """(llama.cpp type, calibrated?) of ``gguf-<type>`` or ``gguf-<type>-imatrix``; None for any other name (the
    generic ``gguf`` included). The one place a GGUF format name is taken apart: registry, exporter, tune."""
    if not name.startswith(PREFIX):
        return None
    ftype = name[len(PREFIX):]
    calibrated = ftype.endswith(IMATRIX_SUFFIX)
    ftype = ftype[: -len(IMATRIX_SUFFIX)] if calibrated else ftype
    if not ftype or not ftype.replace("_", "").isalnum():
        return None
    return GgufName(ftype, calibrated)


def format_name(ftype: str, calibrated: bool = False) -> str:
    """The format name of a llama.cpp type: ``gguf-<type>``, or ``gguf-<type>-imatrix`` when calibrated."""
    return f"{PREFIX}{ftype}{IMATRIX_SUFFIX if calibrated else ''}"


def ladder_formats() -> list[str]:
    """``--formats ladder``: gguf-f16 (the base every rung is quantized from), each rung, each calibrated rung."""
    plain = [format_name(t) for t in LADDER_TYPES]
    calibrated = [format_name(t, True) for t in LADDER_TYPES if t in TAKES_IMATRIX]
    return [format_name("f16"), *plain, *calibrated]


FORMAT_SETS = {"ladder": ladder_formats}


def matrix_use(ftype: str) -> str:
    """'needs', 'benefits' or 'ignores': what llama.cpp's quantizer does with an importance matrix for `ftype`."""
    if ftype in NEEDS_IMATRIX:
        return "needs"
    return "benefits" if ftype in TAKES_IMATRIX else "ignores"


def refusal(ftype: str, calibrated: bool) -> str | None:
    """Why ``gguf-<ftype>[-imatrix]`` cannot be made (None: it can)."""
    use = matrix_use(ftype)
    if use == "needs" and not calibrated:
        return (f"llama.cpp's quantizer refuses {ftype} without an importance matrix (it stores tensors in types "
                f"that need one); ask for gguf-{ftype}{IMATRIX_SUFFIX}, computed from the training text")
    if use == "ignores" and calibrated:
        return (f"llama.cpp's {ftype} does not use an importance matrix (its quantizer ignores one or does not "
                f"quantize): ask for gguf-{ftype}")
    return None


def type_rows(known: list[str] | None = None) -> list[dict[str, object]]:
    """One row per llama.cpp file type (those the installed llama.cpp knows, else these tables' own): its matrix
    use, the format names it gives and whether it is on the ladder; ladder rungs first."""
    names = sorted(known if known is not None else TAKES_IMATRIX | set(LADDER_TYPES) | {"f16", "bf16", "f32"})
    names.sort(key=lambda t: (t not in LADDER_TYPES, LADDER_TYPES.index(t) if t in LADDER_TYPES else 0))
    rows = []
    for t in names:
        use = matrix_use(t)
        formats = [format_name(t, use == "needs")]
        if use == "benefits":
            formats.append(format_name(t, True))
        rows.append({"type": t, "imatrix": use, "formats": formats, "ladder": t in LADDER_TYPES})
    return rows
