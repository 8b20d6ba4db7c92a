"""The wheel holds only `edgemed`; export/ and bench/ install as edgemed.export and edgemed.bench."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(REPO)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (whl,) = out.glob("edgemed-*.whl")
    return whl


def test_wheel_contains_only_edgemed(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"edgemed", "edgemed-0.1.0.dist-info"}
    assert "edgemed/export/__init__.py" in names
    assert "edgemed/bench/__init__.py" in names
    assert "edgemed/data/sample.jsonl" in names


def test_every_wheel_module_imports_outside_the_repo(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    modules = sorted(
        n[:-3].replace("/", ".").removesuffix(".__init__")
        for n in zipfile.ZipFile(wheel).namelist()
        if n.endswith(".py")
    )
    script = textwrap.dedent(
        f"""
        import importlib, sys
        for name in {modules!r}:
            mod = importlib.import_module(name)
            assert mod.__file__.startswith({str(site)!r}), (name, mod.__file__)
        for top in ("export", "bench"):
            try:
                importlib.import_module(top)
            except ModuleNotFoundError:
                pass
            else:
                raise SystemExit(f"top-level {{top}} is importable")
        print("ok", len({modules!r}))
        """
    )
    # -S: no site hooks, so the repo's editable install cannot shadow the wheel; deps come from the venv.
    env = {"PYTHONPATH": f"{site}:{sysconfig.get_paths()['purelib']}:{sysconfig.get_paths()['platlib']}"}
    result = subprocess.run(
        [sys.executable, "-S", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("ok")


def test_help_is_instant_and_imports_no_torch():
    script = (
        "import sys; from edgemed.cli.main import build_parser; build_parser(); "
        "heavy = [m for m in ('torch', 'transformers', 'onnxruntime', 'llama_cpp') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    help_ = subprocess.run([sys.executable, "-m", "edgemed.cli.main", "--help"], capture_output=True, text=True)
    assert help_.returncode == 0
    for command in ("train", "merge", "export", "eval", "bench", "report", "pipeline", "data"):
        assert command in help_.stdout


def test_bad_usage_exits_2(cli):
    result = cli("no-such-command")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_info_reports_formats_by_the_exporters_own_rule(cli, tmp_path):
    result = cli("info", "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    formats = json.loads((tmp_path / "info.json").read_text())["formats"]
    assert [f["format"] for f in formats] == ["hf", "bnb-int8", "bnb-nf4", "onnx", "onnx-int8",
                                              "gguf-f16", "gguf-q8_0", "gguf-q4_k_m", "onnx-int4",
                                              "openvino-int8", "openvino-int4", "openvino-int4-awq"]
    assert all(f["installed"] and f["missing"] is None for f in formats)  # scripts/setup.sh installs every extra


# A board install (`pip install 'edgemed[gguf]'`): torch, transformers & co. hidden from this interpreter.
_BOARD = textwrap.dedent(
    """
    import sys
    HIDDEN = {"torch", "transformers", "peft", "accelerate", "safetensors", "bitsandbytes", "optimum",
              "onnxruntime", "tokenizers", "pyarrow", "datasets", "matplotlib"}

    class Hide:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in HIDDEN:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Hide())
    from edgemed.cli.main import main
    sys.exit(main(sys.argv[1:]))
    """
)


def _board(*args, cache: Path) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, "EDGEMED_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-c", _BOARD, *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=env)


def test_board_install_every_command_works_or_names_its_extra(tmp_path):
    """Without the train extra: info works; train/merge/export/pipeline, eval of an hf folder or a model alias,
    a parquet source exit 2 with one last line naming the extra, before any work; never 3, never a traceback."""
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text('{"model_type": "llama"}')
    (tmp_path / "rows.parquet").write_bytes(b"PAR1")
    cache = tmp_path / "cache"
    info = _board("info", "--out", tmp_path / "info", cache=cache)
    assert info.returncode == 0, info.stderr
    assert "edgemed[train]" in info.stdout  # rich markup does not eat the extras' brackets
    doc = json.loads((tmp_path / "info" / "info.json").read_text())
    assert "Q4_1" in doc["embedded_model"]["note"] and "Q4_1" in info.stdout
    cases = {
        ("train", "--model", "tiny-random", "--out", tmp_path / "t"): "edgemed[train]",
        ("merge", "--adapter", tmp_path / "t", "--out", tmp_path / "m"): "edgemed[train]",
        ("export", hf, "--out", tmp_path / "x"): "edgemed[train]",
        ("pipeline", "--model", "tiny-random", "--out", tmp_path / "p"): "edgemed[train]",
        ("eval", hf, "--limit", "2"): "edgemed[train]",
        ("eval", "tiny-random", "--limit", "2"): "edgemed[train]",
        ("data", "check", tmp_path / "rows.parquet"): "edgemed[data]",
    }
    for args, extra in cases.items():
        result = _board(*args, cache=cache)
        last = result.stderr.strip().splitlines()[-1]
        assert result.returncode == 2, (args, result.stderr[-1500:])
        assert extra in last and "Traceback" not in result.stderr, (args, last)
    assert not any((tmp_path / d).exists() for d in ("t", "m", "x", "p")) and not any(cache.glob("models/*"))


def test_tomli_is_a_base_dependency_on_python_310():
    import tomllib

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.replace(" ", "").startswith("tomli") and "python_version<\"3.11\"" in d.replace(" ", "")
               for d in deps), deps


def test_wheel_install_runs_eval_and_bench_from_inside_the_clone(wheel, tmp_path, tiny_model):
    """A CI job's `pip install .` then `edgemed bench` with the clone as the current directory: the child processes
    (bench worker, export verification) must import the installed wheel, not the clone's edgemed/ (which has no
    bench/ or export/ sub-packages)."""
    fresh = tmp_path / "venv"
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(fresh)], check=True, timeout=120)
    py = fresh / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # the dependencies come from this venv as plain paths: its .pth files (the editable edgemed) are not read
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site) / "edgemed_test_deps.pth").write_text("\n".join(sorted(deps)) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--no-compile",
                    str(wheel)], check=True, capture_output=True, timeout=300)
    where = subprocess.run([str(py), "-c", "import edgemed, edgemed.bench; print(edgemed.__file__)"], cwd=tmp_path,
                           capture_output=True, text=True, check=True).stdout
    assert where.startswith(site), where
    edgemed = str(fresh / "bin" / "edgemed")
    arts = tmp_path / "artifacts"
    import os

    converter = Path(sys.prefix) / "opt" / "hf2gguf"  # the fresh venv has none of its own: the documented variable
    run = {"cwd": REPO, "capture_output": True, "text": True, "timeout": 900,
           "env": {**os.environ, "EDGEMED_HF2GGUF": str(converter)}}
    export = subprocess.run([edgemed, "export", str(tiny_model), "--formats", "gguf-q8_0", "--out", str(arts)], **run)
    assert export.returncode == 0, export.stdout[-2000:] + export.stderr[-2000:]  # verification ran in a child
    ev = subprocess.run([edgemed, "eval", str(arts / "gguf-q8_0"), "--limit", "3", "--out", str(tmp_path / "ev")],
                        **run)
    assert ev.returncode == 0, ev.stderr[-2000:]
    bench = subprocess.run([edgemed, "bench", str(arts), "--limit", "3", "-r", "1", "-p", "16", "-n", "4",
                            "--latency-prompts", "1", "--warmup", "0", "--out", str(tmp_path / "bench")], **run)
    assert bench.returncode == 0, bench.stdout[-2000:] + bench.stderr[-2000:]
    doc = json.loads((tmp_path / "bench" / "bench.json").read_text())
    assert [a["status"] for a in doc["artifacts"]] == ["ok"]
