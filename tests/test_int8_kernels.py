"""onnx-int8's weight scheme follows the int8 kernel of the CPU it is made for, and the risk is named elsewhere."""

from __future__ import annotations

import json
import shutil

import pytest

from edgemed.int8_kernels import exact_on, kernel_of, resolve_target, saturation_risk, scheme_for

AVX2_ONLY = {"avx", "avx2", "fma", "f16c"}
SKYLAKE_X = AVX2_ONLY | {"avx512f", "avx512bw", "avx512vl"}  # AVX-512 without VNNI: still VPMADDUBSW


def test_kernel_families_by_instruction_set():
    assert kernel_of(AVX2_ONLY, "x86_64") == "x86-pmaddubsw"
    assert kernel_of(SKYLAKE_X, "x86_64") == "x86-pmaddubsw"
    assert kernel_of(SKYLAKE_X | {"avx512_vnni"}, "x86_64") == "x86-vnni"
    assert kernel_of(AVX2_ONLY | {"avx_vnni"}, "x86_64") == "x86-vnni"  # Alder Lake's VEX VNNI
    assert kernel_of(SKYLAKE_X | {"amx_int8"}, "x86_64") == "x86-vnni"
    assert kernel_of(set(), "aarch64") == "arm"


def test_scheme_keeps_weights_to_7_bits_only_where_the_kernel_saturates():
    assert scheme_for("x86-pmaddubsw")["weight_type"] == "quint8"  # U8U8: exact on every kernel
    assert scheme_for("x86-vnni")["weight_type"] == "qint8" and scheme_for("arm")["weight_type"] == "qint8"
    assert not any(scheme_for(k)["reduce_range"] for k in ("x86-pmaddubsw", "x86-vnni", "arm"))
    assert exact_on("x86-pmaddubsw", "qint8", True) and not exact_on("x86-pmaddubsw", "qint8", False)
    assert exact_on("x86-pmaddubsw", "quint8", False)  # U8U8 widens to 16 bits first: no saturation
    assert all(exact_on(k, "qint8", False) for k in ("x86-vnni", "arm"))
    assert resolve_target("avx2") == ("x86-pmaddubsw", "--int8-isa avx2")
    assert resolve_target("auto")[0] == kernel_of()
    from edgemed.errors import EdgemedError

    with pytest.raises(EdgemedError, match="--int8-isa"):
        resolve_target("sse2")


def test_risk_is_named_for_full_range_weights_on_a_cpu_without_vnni():
    full = {"format": "onnx-int8", "settings": {"weight_type": "qint8", "reduce_range": False},
            "export": {"int8": {"for_kernel": "x86-vnni", "weight_type": "qint8", "reduce_range": False}}}
    assert "VPMADDUBSW" in saturation_risk(full, "x86-pmaddubsw") and "--int8-isa avx2" in saturation_risk(
        full, "x86-pmaddubsw")
    assert saturation_risk(full, "x86-vnni") is None and saturation_risk(full, "arm") is None
    legacy = {"format": "onnx-int8", "settings": {"weight_type": "qint8", "reduce_range": False}}  # before the record
    assert "exported before" in saturation_risk(legacy, "x86-pmaddubsw")
    seven = json.loads(json.dumps(full).replace('"reduce_range": false', '"reduce_range": true'))
    assert saturation_risk(seven, "x86-pmaddubsw") is None
    assert saturation_risk({"format": "onnx"}, "x86-pmaddubsw") is None


@pytest.fixture(scope="module")
def onnx_sibling(tiny_exports, tmp_path_factory):
    """An export folder holding the tiny model's onnx artifact (copied from the session's shared export)."""
    from conftest import copy_artifacts

    out, results = tiny_exports
    (r,) = [r for r in results if r["format"] == "onnx"]
    assert r["status"] == "exported", r["reason"]
    return copy_artifacts(out, tmp_path_factory.mktemp("int8") / "out", ["onnx"])


def test_the_avx2_scheme_verifies_with_this_machines_kernels(tiny_model, onnx_sibling):
    """What `--int8-isa avx2` writes (uint8 weights, exact on every CPU) passes verification here, whatever this
    CPU's kernel; the manifest records the scheme, the kernel it was made for and how it was chosen."""
    from edgemed.export.run import run_export
    from edgemed.manifest import read_manifest

    (r,) = run_export(tiny_model, ["onnx-int8"], onnx_sibling, threads=2, show_progress=False,
                      settings={"onnx-int8": {"kernel": "avx2"}})
    assert r["status"] == "exported" and r["verification"]["passed"], r["reason"]
    m = read_manifest(onnx_sibling / "onnx-int8")
    assert m["settings"]["kernel"] == "x86-pmaddubsw" and m["settings"]["weight_type"] == "quint8"
    int8 = m["export"]["int8"]
    assert int8["name"] == "u8u8" and int8["for_kernel"] == "x86-pmaddubsw" and not int8["reduce_range"]
    assert int8["chosen_by"] == "--int8-isa avx2" and int8["exporting_cpu_kernel"] == kernel_of()
    assert set(int8["exact_on"]) == {"x86-vnni", "x86-pmaddubsw", "arm"}


def test_auto_scheme_is_this_cpus_and_eval_names_the_risk_only_where_it_applies(tiny_model, onnx_sibling, tmp_path,
                                                                                 cli):
    from edgemed.export.run import run_export
    from edgemed.manifest import read_manifest

    out = tmp_path / "auto"
    shutil.copytree(onnx_sibling / "onnx", out / "onnx")
    (r,) = run_export(tiny_model, ["onnx-int8"], out, threads=2, show_progress=False)
    assert r["status"] == "exported", r["reason"]
    m = read_manifest(out / "onnx-int8")
    assert m["export"]["int8"]["for_kernel"] == kernel_of() and m["export"]["int8"]["chosen_by"].startswith("auto")
    # a full-range artifact (made for VNNI) evaluated here: warned and measured on a CPU without VNNI only
    vnni = tmp_path / "vnni"
    shutil.copytree(onnx_sibling / "onnx", vnni / "onnx")
    (r,) = run_export(tiny_model, ["onnx-int8"], vnni, threads=2, show_progress=False, verify=False,
                      settings={"onnx-int8": {"kernel": "vnni"}})
    result = cli("eval", vnni / "onnx-int8", "--limit", "3", "--out", tmp_path / "ev")
    assert result.returncode == 0, result.stderr
    doc = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert doc["runtime"]["int8_kernel"] == kernel_of() and doc["runtime"]["int8_weights_for"] == "x86-vnni"
    if kernel_of() == "x86-pmaddubsw":
        check = doc["int8_kernel_check"]
        assert "VPMADDUBSW" in result.stderr and check["measured"] and check["against"].endswith("onnx")
        assert check["max_abs_delta"] >= 0
    else:
        assert "int8_kernel_check" not in doc and "VPMADDUBSW" not in result.stderr


def test_check_here_measures_against_the_fp32_sibling(tiny_model, onnx_sibling, tmp_path):
    """What eval shows on a CPU without VNNI, measured on any CPU: the delta to the graph it was quantized from."""
    from edgemed.export.run import run_export
    from edgemed.int8_kernels import check_here
    from edgemed.runtimes.base import open_runtime

    out = tmp_path / "x"
    shutil.copytree(onnx_sibling / "onnx", out / "onnx")
    run_export(tiny_model, ["onnx-int8"], out, threads=2, show_progress=False)
    with open_runtime(out / "onnx-int8", threads=1, device="cpu") as rt:
        check = check_here(out / "onnx-int8", rt, rt.prompt_style, threads=1)
        shutil.rmtree(out / "onnx")
        alone = check_here(out / "onnx-int8", rt, rt.prompt_style, threads=1)
    assert check["measured"] and check["prompts"] == 6 and check["within_tolerance"]
    assert check["max_abs_delta_at_export"] is not None
    assert not alone["measured"] and "edgemed bench" in alone["why"]
