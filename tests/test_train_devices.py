"""The device and dtype of training and inference on every device: CUDA with native bfloat16, a float16-only CUDA
GPU, Apple silicon (MPS) and the CPU, for each requested dtype, with and without --qlora.

CI has no GPU: torch's device queries (torch.cuda.is_available, is_bf16_supported, get_device_name/capability,
mem_get_info, torch.backends.mps.is_available) are the one thing these tests stand in for. The training recipe's
plan then runs for real (the tokenizer, the questions, the memory check, the run record), up to the boundary where
it hands its arguments to edgemed.models.load_model and to the Trainer's TrainingArguments: what crosses it is
what these tests check. No CUDA kernel runs.
"""

from __future__ import annotations

import contextlib
import json

import pytest
import torch

from edgemed import devices
from edgemed.devices import DTYPES, DeviceChoice, pick_device
from edgemed.errors import EdgemedError

GPUS = {  # kind -> (name, compute capability): an Ampere GPU (native bf16) and a Turing one (fp16 only)
    "cuda-bf16": ("NVIDIA A100-SXM4-40GB", (8, 0)),
    "cuda-fp16": ("Tesla T4", (7, 5)),
}
KINDS = ("cuda-bf16", "cuda-fp16", "mps", "cpu")
REQUESTED = ("auto", "float32", "bfloat16", "float16")


def fake_device(monkeypatch, kind: str) -> None:
    """Have torch's device queries describe `kind` (one of KINDS). The libraries that read them at import time
    (bitsandbytes binds its CUDA kernels) are imported first, as the machine is."""
    import importlib

    for module in ("bitsandbytes", "peft", "transformers.trainer", "edgemed.train.loop"):
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    cuda = kind in GPUS
    name, capability = GPUS.get(kind, ("", (0, 0)))

    def is_bf16_supported(including_emulation: bool = True) -> bool:  # torch's own answer: emulated bf16 counts
        return cuda and (capability >= (8, 0) or including_emulation)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1 if cuda else 0)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: name)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: capability)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index=None: (15 << 30, 16 << 30))
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: kind == "mps")
    monkeypatch.setattr(torch.backends.mps, "is_macos_or_newer", lambda major, minor: True, raising=False)


def expected(kind: str, dtype: str, purpose: str, qlora: bool) -> str | None:
    """The dtype a run gets (None: refused), stated independently of edgemed.devices."""
    cuda = kind in GPUS
    if qlora and (purpose != "train" or not cuda):
        return None
    if dtype == "auto":
        if kind == "cuda-bf16":
            return "bfloat16"
        if kind == "cuda-fp16":
            return "float16"
        if kind == "cpu" and purpose == "train":
            return "bfloat16" if {"avx512_bf16", "amx_bf16"} & _cpu_flags() else "float32"
        return "float32"
    if dtype == "bfloat16" and kind == "cuda-fp16":
        return None
    if dtype == "float16" and purpose == "train" and not cuda:
        return None
    return dtype


def _cpu_flags() -> set[str]:
    from edgemed.sysinfo import cpu_flags

    return cpu_flags()


def device_of(kind: str) -> str:
    return "cuda" if kind in GPUS else kind


@pytest.fixture
def fresh_accelerate():
    """accelerate keeps its process state in singletons: one made under a stand-in GPU must not outlive the test."""
    from accelerate.state import AcceleratorState, PartialState

    AcceleratorState._reset_state(reset_partial_state=True)
    PartialState._reset_state()
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    PartialState._reset_state()


def test_a_device_choice_never_holds_auto():
    for dtype in ("auto", "fp16", "", None):
        with pytest.raises(ValueError, match="resolved dtype"):
            DeviceChoice("cuda", dtype)
    assert str(DeviceChoice("cuda", "bfloat16")) == "cuda (bfloat16)"


@pytest.mark.parametrize("purpose", ["train", "infer"])
@pytest.mark.parametrize("kind", KINDS)
def test_the_choice_table(monkeypatch, kind, purpose):
    fake_device(monkeypatch, kind)
    for device in ("auto", device_of(kind)):
        for dtype in REQUESTED:
            for qlora in (False, True) if purpose == "train" else (False,):
                want = expected(kind, dtype, purpose, qlora)
                where = f"{kind} --device {device} --dtype {dtype} qlora={qlora} ({purpose})"
                if want is None:
                    with pytest.raises(EdgemedError) as err:
                        pick_device(device, dtype, purpose, qlora=qlora)
                    assert "use --dtype" in str(err.value) or "drop --qlora" in str(err.value), where
                    continue
                choice = pick_device(device, dtype, purpose, qlora=qlora)
                assert (choice.device, choice.dtype) == (device_of(kind), want), where


def test_refusals_name_the_fix(monkeypatch):
    fake_device(monkeypatch, "cuda-fp16")
    with pytest.raises(EdgemedError, match=r"Tesla T4, compute capability 7\.5.*use --dtype float16"):
        pick_device("auto", "bfloat16", "train")
    fake_device(monkeypatch, "mps")
    with pytest.raises(EdgemedError, match="float16 training needs CUDA.*--dtype float32"):
        pick_device("mps", "float16", "train")
    with pytest.raises(EdgemedError, match="--qlora needs a CUDA GPU"):
        pick_device("auto", "auto", "train", qlora=True)
    monkeypatch.setattr(torch.backends.mps, "is_macos_or_newer", lambda major, minor: False, raising=False)
    with pytest.raises(EdgemedError, match="macOS 14"):
        pick_device("mps", "bfloat16", "infer")
    fake_device(monkeypatch, "cpu")
    with pytest.raises(EdgemedError, match="sees no CUDA GPU"):
        pick_device("cuda", "auto", "train")
    with pytest.raises(EdgemedError, match="no Apple GPU"):
        pick_device("mps", "auto")
    with pytest.raises(EdgemedError, match="unknown dtype 'fp8'"):
        pick_device("cpu", "fp8")


@pytest.fixture(scope="module")
def inputs():
    from edgemed.train import recipe
    from edgemed.train.config import TrainConfig

    return recipe.validate("tiny-random", "sample", TrainConfig(limit=12))


@pytest.mark.parametrize("kind", KINDS)
def test_training_plan_hands_the_resolved_dtype_to_the_model_and_the_trainer(monkeypatch, tmp_path, inputs, kind,
                                                                              fresh_accelerate):
    """The real recipe up to the model load: load_model's arguments, the TrainingArguments and the run record."""
    from edgemed.train import recipe
    from edgemed.train.config import TrainConfig

    fake_device(monkeypatch, kind)
    planned = 0
    for dtype in REQUESTED:
        for qlora in (False, True):
            config = TrainConfig(limit=12, max_steps=1, dtype=dtype, qlora=qlora, batch_size=2, lora_r=4)
            want = expected(kind, dtype, "train", qlora)
            work = tmp_path / f"{dtype}-{qlora}"
            if want is None:
                with pytest.raises(EdgemedError):
                    recipe.plan(inputs, work, config, resume=False, started=0.0)
                assert not work.exists()  # refused before anything is written
                continue
            setup = recipe.plan(inputs, work, config, resume=False, started=0.0)
            planned += 1
            load, args = setup.load, setup.args
            assert load["choice"] == DeviceChoice(device_of(kind), want)
            assert load["choice"].dtype in DTYPES  # never 'auto': load_model would ask torch for torch.auto
            assert not any(v == "auto" for v in load.values())
            assert ("device_map" in load) == (kind in GPUS)
            quant = load.get("quantization_config")
            assert (quant is not None) == qlora
            if qlora:
                assert quant.load_in_4bit and quant.bnb_4bit_compute_dtype == getattr(torch, want)
            assert args["bf16"] == (want == "bfloat16")
            assert args["fp16"] == (want == "float16")  # the Trainer's grad scaler
            assert args["use_cpu"] == (kind == "cpu")
            assert args["per_device_train_batch_size"] == 2 and args["max_steps"] == 1
            record = json.loads((work / "edgemed-run.json").read_text())["device"]
            assert (record["device"], record["dtype"]) == (device_of(kind), want)
            assert (record["device_requested"], record["dtype_requested"]) == ("auto", dtype)
            assert record["grad_scaler"] == (want == "float16")
            assert (record["gpu"] or {}).get("name") == GPUS.get(kind, (None,))[0]
    assert planned


def test_the_default_cpu_run_loads_the_model_in_its_recorded_dtype(tmp_path, inputs, fresh_accelerate):
    """On the real CPU: the plan's arguments build the model and the Trainer, in the dtype the record says."""
    from edgemed.train import recipe
    from edgemed.train.config import TrainConfig

    setup = recipe.set_up(inputs, tmp_path / "run", TrainConfig(limit=12, max_steps=1, lora_r=4), resume=False,
                          started=0.0)
    want = setup.record["device"]["dtype"]
    assert want == expected("cpu", "auto", "train", False)
    base = setup.trainer.model.get_base_model()
    assert base.get_input_embeddings().weight.dtype == getattr(torch, want)
    assert setup.trainer.args.bf16 == (want == "bfloat16") and not setup.trainer.args.fp16


def test_pipeline_takes_trains_flags_with_the_same_names_defaults_and_help():
    from edgemed.cli.main import build_parser
    from edgemed.train.config import PIPELINE_TRAIN_FLAGS

    parser = build_parser()
    subs = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices

    def options(command):
        return {a.dest: a for a in subs[command]._actions}

    train, pipe = options("train"), options("pipeline")
    for name in PIPELINE_TRAIN_FLAGS:
        a, b = train[name], pipe[name]
        assert (a.option_strings, a.default, a.choices, a.help, a.type) == (
            b.option_strings, b.default, b.choices, b.help, b.type), name
    ns = parser.parse_args(["pipeline", "--device", "cpu", "--dtype", "float32", "--qlora", "--batch-size", "3",
                            "--grad-accum", "2", "--lora-r", "4", "--eval-limit", "5"])
    assert [getattr(ns, n) for n in PIPELINE_TRAIN_FLAGS] == ["cpu", "float32", True, 3, 2, 4, 5]


def test_the_pipelines_train_step_trains_with_its_flags(tmp_path, fresh_accelerate):
    from edgemed.pipeline import PipelineConfig, train_step
    from edgemed.train.config import TrainingFlags

    flags = TrainingFlags(device="cpu", dtype="float32", batch_size=2, grad_accum=2, lora_r=4, eval_limit=3)
    c = PipelineConfig(out=tmp_path, model="tiny-random", max_steps=1, training=flags)
    train_step(c)
    record = json.loads((c.run_dir / "edgemed-run.json").read_text())
    assert record["lora"]["r"] == 4
    assert (record["device"]["device"], record["device"]["dtype"]) == ("cpu", "float32")
    assert {k: record["options"][k] for k in ("batch_size", "grad_accum", "eval_limit", "qlora")} == {
        "batch_size": 2, "grad_accum": 2, "eval_limit": 3, "qlora": False}
    assert record["examples"]["eval"] == 3


@pytest.mark.parametrize("change", [{"device": "cpu"}, {"dtype": "float32"}, {"qlora": True}, {"batch_size": 4},
                                    {"grad_accum": 2}, {"lora_r": 8}, {"eval_limit": 10}])
def test_each_training_flag_is_in_the_train_steps_key(tmp_path, change):
    from dataclasses import replace

    from edgemed.pipeline import PipelineConfig, pipeline_steps
    from edgemed.train.config import TrainingFlags

    base = PipelineConfig(out=tmp_path, model="tiny-random")
    changed = PipelineConfig(out=tmp_path, model="tiny-random", training=replace(TrainingFlags(), **change))
    key = {s.name: s.key for s in pipeline_steps(base, None)}
    new = {s.name: s.key for s in pipeline_steps(changed, None)}
    assert key["train"] != new["train"]
    assert changed.train_config().__getattribute__(next(iter(change))) == next(iter(change.values()))
    assert key["export"] == new["export"]  # later steps rerun because train did, not through their own keys


def test_pipeline_refuses_a_training_device_before_any_work(cli, tmp_path):
    out = tmp_path / "p"
    r = cli("pipeline", "--model", "tiny-random", "--out", out, "--qlora", timeout=120)
    assert r.returncode == 2, r.stderr
    assert "--qlora needs a CUDA GPU" in r.stderr and "Traceback" not in r.stderr
    assert not (out / "pipeline.json").exists()


@pytest.mark.parametrize("flags, message", [
    ({"device": "mps"}, "no Apple GPU"),
    ({"dtype": "float16", "device": "cpu"}, "float16 training needs CUDA"),
    ({"batch_size": 0}, "--batch-size must be at least 1"),
])
def test_pipeline_checks_its_training_flags_first(tmp_path, flags, message):
    from edgemed.pipeline import PipelineConfig
    from edgemed.train.config import TrainingFlags

    with pytest.raises(EdgemedError, match=message):
        PipelineConfig(out=tmp_path / "p", model="tiny-random", training=TrainingFlags(**flags)).validate()
    assert not (tmp_path / "p").exists()


def test_inference_load_of_every_runtime_resolves_auto(monkeypatch):
    """The transformers runtime (hf and bitsandbytes artifacts) asks pick_device with the artifact's dtype option:
    on a stand-in GPU auto is bfloat16/float16, on MPS float32; the bitsandbytes export loads in float32."""
    for kind, want in (("cuda-bf16", "bfloat16"), ("cuda-fp16", "float16"), ("mps", "float32"), ("cpu", "float32")):
        fake_device(monkeypatch, kind)
        assert pick_device("auto", "auto").dtype == want
        assert devices.pick_device("auto", "float32").dtype == "float32"


def test_native_bf16_is_asked_of_the_gpu_the_run_uses(monkeypatch):
    fake_device(monkeypatch, "cuda-bf16")  # cuda:0 an A100, cuda:1 a T4
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: (7, 5) if index == 1 else (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: "Tesla T4" if index == 1 else "A100")
    assert pick_device("cuda:0", "auto", "train").dtype == "bfloat16"
    assert pick_device("cuda:1", "auto", "train").dtype == "float16"
    with pytest.raises(EdgemedError, match="Tesla T4"):
        pick_device("cuda:1", "bfloat16", "infer")


def test_a_cuda_builds_pipeline_parent_never_imports_bitsandbytes(monkeypatch):
    """bitsandbytes' import reads every GPU's capability (CUDA initialised): the pipeline's parent, which forks its
    steps, must not import it where torch is a CUDA build."""
    import subprocess
    import sys

    from edgemed.pipeline import TORCH_STACK, torch_stack

    monkeypatch.setattr(torch.version, "cuda", None)
    assert torch_stack() == TORCH_STACK
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    stack = torch_stack()
    code = (f"import importlib, sys\nfor m in {stack!r}: importlib.import_module(m)\n"
            "print('bitsandbytes' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.stdout.strip() == "False", r.stderr
