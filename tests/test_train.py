"""LoRA training: answer-only labels, dynamic padding, the run folder, --resume/--force, bad inputs."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from edgemed.batching import IGNORE, AnswerOnlyCollator, encode_question, encode_questions
from edgemed.data import Question, load_questions
from edgemed.prompts import get_style

Q = Question(
    id="t1",
    question="Which vitamin deficiency causes scurvy?",
    options=("Vitamin A", "Vitamin B12", "Vitamin C", "Vitamin D"),
    answer=2,
)


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from edgemed.models import load_tokenizer

    return load_tokenizer(str(tiny_model))


@pytest.mark.parametrize("style_name", ["chatml", "plain"])
def test_labels_mask_the_prompt_and_start_at_the_answer_letter(tokenizer, style_name):
    style = get_style(style_name)
    ex = encode_question(tokenizer, style, Q)
    prompt_ids = tokenizer(style.prompt(Q))["input_ids"]
    n = len(prompt_ids)
    assert ex["input_ids"][:n] == prompt_ids
    assert ex["labels"][:n] == [IGNORE] * n
    assert IGNORE not in ex["labels"][n:]
    (letter_id,) = tokenizer(" C", add_special_tokens=False)["input_ids"]
    assert ex["labels"][n] == letter_id
    answer = tokenizer.decode(ex["labels"][n:])
    assert answer.startswith(" C. Vitamin C")
    if style_name == "plain":  # no turn marker: the tokenizer's eos closes the answer
        assert ex["labels"][-1] == tokenizer.eos_token_id
    else:
        assert answer.endswith("<|im_end|>")


def test_too_long_examples_are_skipped_not_cut(tokenizer):
    style = get_style("chatml")
    full = len(encode_question(tokenizer, style, Q)["input_ids"])
    assert encode_question(tokenizer, style, Q, max_length=full) is not None
    assert encode_question(tokenizer, style, Q, max_length=full - 1) is None
    examples, too_long = encode_questions(tokenizer, style, [Q], full - 1)
    assert examples == [] and too_long == ["t1"]


def test_collator_pads_each_batch_to_its_longest(tokenizer):
    questions, _ = load_questions("sample", limit=6)
    examples, _ = encode_questions(tokenizer, get_style("chatml"), questions, 512)
    lengths = [len(e["input_ids"]) for e in examples]
    assert len(set(lengths)) > 1
    collate = AnswerOnlyCollator(tokenizer.pad_token_id)
    batch = collate(examples)
    assert tuple(batch["input_ids"].shape) == (6, max(lengths))
    assert max(lengths) < 256  # dynamic: not the reference notebook's fixed 256
    for row, n in enumerate(lengths):
        assert batch["attention_mask"][row].sum().item() == n
        assert (batch["labels"][row, n:] == IGNORE).all()
        assert (batch["input_ids"][row, n:] == tokenizer.pad_token_id).all()
        assert batch["labels"][row, :n].tolist() == examples[row]["labels"]
    shorter = collate(examples[:1])
    assert shorter["input_ids"].shape[1] == lengths[0]


# --- real runs on the tiny model ----------------------------------------------------------------

TINY = ["--model", "tiny-random", "--data", "sample", "--batch-size", "4", "--threads", "1"]


@pytest.fixture(scope="module")
def run(tiny_training) -> tuple[Path, dict]:
    """The session's shared run (conftest: 4 steps, batch 4, lr 5e-3, eval every 2 steps, one thread): read-only."""
    return tiny_training


def test_run_writes_adapter_config_metrics_and_ids(run):
    out, metrics = run
    assert (out / "adapter" / "adapter_model.safetensors").stat().st_size > 0
    adapter_cfg = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter_cfg["r"] == 16 and adapter_cfg["lora_alpha"] == 32
    assert set(adapter_cfg["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                  "down_proj"}
    assert (out / "adapter" / "tokenizer.json").exists()
    record = json.loads((out / "edgemed-run.json").read_text())
    assert record["status"] == "finished"
    assert record["base_model"]["given"] == "tiny-random"
    assert Path(record["base_model"]["resolved"]).is_dir()
    assert record["prompt_style"] == "chatml"
    assert record["options"]["lr"] == 5e-3 and record["options"]["max_steps"] == 4
    assert record["eval"] == {"mode": "split", "source": "sample", "split": "train", "seed": 0, "fraction": 0.2,
                              "limit": None, "questions": record["eval"]["questions"],
                              "sha256": record["data"]["sha256"]}
    assert "torch" in record["versions"] and "peft" in record["versions"]
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["steps"] == metrics["steps"] == 4
    assert [e["step"] for e in on_disk["eval_loss"]] == [0, 2, 4]
    assert on_disk["eval_loss_before"] == on_disk["eval_loss"][0]["loss"]
    assert on_disk["eval_loss_after"] == on_disk["eval_loss"][-1]["loss"]
    assert on_disk["eval_loss_after"] < on_disk["eval_loss_before"]  # lr 5e-3 moves a random model quickly
    assert [t["step"] for t in on_disk["train_loss"]] == [1, 2, 3, 4]
    assert on_disk["tokens"] > 0 and on_disk["train_seconds"] > 0
    assert (out / "checkpoints" / "checkpoint-4").is_dir()


def test_eval_questions_are_never_trained_on(run):
    out, _ = run
    lineage = json.loads((out / "lineage.json").read_text())
    train_ids = lineage["train_ids"]
    sample_ids = {q.id for q in load_questions("sample")[0]}
    assert lineage["eval_ids"] and train_ids
    assert not set(lineage["eval_ids"]) & set(train_ids)
    assert set(lineage["eval_ids"]) | set(train_ids) == sample_ids
    record = json.loads((out / "edgemed-run.json").read_text())
    assert record["examples"]["train"] == len(train_ids)


def test_rerun_into_finished_run_names_the_flags(run, cli):
    out, _ = run
    before = (out / "metrics.json").read_text()
    proc = cli("train", *TINY, "--out", out, "--max-steps", "2")
    assert proc.returncode == 2
    assert "--resume" in proc.stderr and "--force" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert (out / "metrics.json").read_text() == before


def test_resume_continues_from_the_last_checkpoint(run, cli, tmp_path):
    src, _ = run
    out = tmp_path / "resumed"
    shutil.copytree(src, out)
    proc = cli("train", *TINY, "--out", out, "--max-steps", "6", "--lr", "5e-3", "--eval-steps", "2", "--resume")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed_from"] == "checkpoint-4"
    assert metrics["steps"] == 6
    assert [t["step"] for t in metrics["train_loss"]] == [1, 2, 3, 4, 5, 6]  # history kept from the checkpoint
    assert metrics["eval_loss_before"] == json.loads((src / "metrics.json").read_text())["eval_loss_before"]
    assert (out / "checkpoints" / "checkpoint-6").is_dir()
    # a resume that changes what the model sees is refused
    proc = cli("train", *TINY, "--out", out, "--max-steps", "8", "--lr", "1e-3", "--resume")
    assert proc.returncode == 2 and "lr" in proc.stderr


def test_force_keeps_the_old_run_when_the_new_one_fails(run, cli, tmp_path):
    src, _ = run
    out = tmp_path / "forced"
    shutil.copytree(src, out)
    before = (out / "metrics.json").read_text()
    proc = cli("train", "--model", "tiny-random", "--data", tmp_path / "missing.jsonl", "--out", out, "--force")
    assert proc.returncode == 2
    assert (out / "metrics.json").read_text() == before
    assert not list(tmp_path.glob(".forced.*"))


def _bad_rows(path: Path, keep_ids: int = 30) -> Path:
    """30 sample rows, row 4 with an impossible label; ids past `keep_ids` renamed so they are new questions."""
    rows = [q.to_row() for q in load_questions("sample", limit=30)[0]]
    rows[3]["cop"] = 7
    for i, row in enumerate(rows[keep_ids:], start=keep_ids):
        row["id"] = f"own-{i}"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def test_out_that_is_a_file_is_refused_even_with_force(cli, tmp_path):
    out = tmp_path / "run"
    out.write_text("not a run")
    proc = cli("train", "--model", "tiny-random", "--out", out, "--max-steps", "1", "--force")
    assert proc.returncode == 2 and "is a file" in proc.stderr and "Traceback" not in proc.stderr
    assert out.read_text() == "not a run" and not list(tmp_path.glob(".run*"))


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--model", "tiny-randm", "--data", "sample"], "tiny-random"),
        (["--model", "tiny-random", "--data", "{tmp}/nope.jsonl"], "not found"),
        (["--model", "tiny-random", "--data", "{bad}"], "--skip-bad-rows"),
        (["--model", "tiny-random", "--data", "sample", "--qlora", "--device", "cpu"], "CUDA"),
        (["--model", "tiny-random", "--data", "sample", "--eval-fraction", "1.5"], "--eval-fraction"),
        pytest.param(["--model", "tiny-random", "--data", "sample", "--device", "cuda"], "--device cuda",
                     marks=pytest.mark.skipif(_has_cuda(), reason="this machine has CUDA")),
        (["--model", "tiny-random", "--data", "sample", "--device", "tpu"], "unknown device"),
        (["--model", "tiny-random", "--data", "{nested}"], "nested too deeply"),
        (["--model", "tiny-random", "--data", "sample", "--lr", "nan"], "--lr"),
        (["--model", "tiny-random", "--data", "sample", "--epochs", "nan"], "--epochs"),
        (["--model", "tiny-random", "--data", "sample", "--warmup-ratio", "2"], "--warmup-ratio"),
        (["--model", "tiny-random", "--data", "sample", "--weight-decay", "-1"], "--weight-decay"),
        (["--model", "tiny-random", "--data", "sample", "--lora-alpha", "0"], "--lora-alpha"),
        (["--model", "tiny-random", "--data", "sample", "--threads", "1000000"], "--threads 1000000"),
    ],
)
def test_bad_inputs_exit_2_and_write_nothing(cli, tmp_path, tiny_model, args, needle):
    bad = _bad_rows(tmp_path / "bad.jsonl")
    nested = tmp_path / "nested.jsonl"
    nested.write_text("[" * 100_000 + "]" * 100_000 + "\n")
    out = tmp_path / "out"
    args = [a.format(tmp=tmp_path, bad=bad, nested=nested) for a in args]
    proc = cli("train", *args, "--out", out, "--max-steps", "1")
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()[-1]) > 20
    assert not out.exists()


def test_skip_bad_rows_with_separate_eval_data(tmp_path, tiny_model):
    from edgemed.train.recipe import train_lora

    bad = _bad_rows(tmp_path / "bad.jsonl", keep_ids=2)  # rows 1-2 are also in the eval data
    out = tmp_path / "run"
    metrics = train_lora("tiny-random", str(bad), out, max_steps=1, batch_size=4, eval_data="sample",
                         eval_limit=8, skip_bad_rows=True, threads=1, prompt_style="plain")
    record = json.loads((out / "edgemed-run.json").read_text())
    assert record["data"]["bad_rows_skipped"] == 1 and record["data"]["questions"] == 29
    assert record["eval"]["mode"] == "separate" and record["eval"]["dropped_from_train"] == 2
    assert record["prompt_style"] == "plain"
    assert metrics["eval_examples"] == 8 and metrics["train_examples"] == 27
    lineage = json.loads((out / "lineage.json").read_text())
    assert len(lineage["eval_ids"]) == 240 and len(lineage["evaluation"]["loss_ids"]) == 8
    assert lineage["evaluation"]["mode"] == "separate" and lineage["prompt_style"] == "plain"
    assert lineage["style_source"] == "train --prompt-style"
    train_ids = lineage["train_ids"]
    assert len(train_ids) == 27 and not set(train_ids) & set(lineage["eval_ids"])


# --- throughput levers ----------------------------------------------------------------------


def test_length_grouping_is_deterministic_loses_nothing_and_cuts_padding():
    import random

    from edgemed.train.data import LengthGroupedSampler, length_grouped_order

    rng = random.Random(1)
    lengths = [rng.randint(60, 280) for _ in range(1003)]  # 1003 = 250 batches of 4 + a partial one
    order = length_grouped_order(lengths, 4, seed=7)
    assert sorted(order) == list(range(len(lengths)))  # every example exactly once
    assert order == length_grouped_order(lengths, 4, seed=7)  # same seed, same order
    assert order != length_grouped_order(lengths, 4, seed=8)
    assert order != length_grouped_order(lengths, 4, seed=7, epoch=1)
    assert order[-3:] == length_grouped_order(lengths, 4, seed=7)[-3:] and len(order) % 4 == 3  # partial batch last

    def padded(idx):
        return sum(max(lengths[i] for i in idx[j:j + 4]) * len(idx[j:j + 4]) for j in range(0, len(idx), 4))

    shuffled = list(range(len(lengths)))
    random.Random(7).shuffle(shuffled)
    assert padded(order) < 0.8 * padded(shuffled)
    sampler = LengthGroupedSampler(lengths, 4, seed=7)
    assert list(sampler) == order and len(sampler) == len(lengths)
    sampler.set_epoch(1)
    assert list(sampler) == length_grouped_order(lengths, 4, seed=7, epoch=1)


def test_answer_position_logits_give_the_models_own_loss(tiny_model, tokenizer):
    import torch

    from edgemed.models import load_model, pick_device
    from edgemed.train.loop import answer_loss

    questions, _ = load_questions("sample", limit=5)
    examples, _ = encode_questions(tokenizer, get_style("chatml"), questions, 512)
    batch = AnswerOnlyCollator(tokenizer.pad_token_id)(examples)
    model = load_model(str(tiny_model), pick_device("cpu", "float32"))
    with torch.no_grad():
        full = model(**batch).loss
        mine, out = answer_loss(model, batch)
        n = (batch["labels"] != IGNORE).sum()
        mine_n, _ = answer_loss(model, batch, num_items_in_batch=n)
    assert out.logits.shape[1] < batch["input_ids"].shape[1]  # the head ran on the answer positions only
    assert torch.allclose(mine, full, rtol=1e-5, atol=1e-6)
    assert torch.allclose(mine_n, full, rtol=1e-5, atol=1e-6)


def test_auto_dtype_is_bf16_on_cpus_with_bf16_hardware(monkeypatch):
    import edgemed.devices as devices

    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: True)
    assert devices.pick_device("cpu", "auto", "train").dtype == "bfloat16"
    assert devices.pick_device("cpu", "float32", "train").dtype == "float32"
    assert devices.pick_device("cpu", "auto", "infer").dtype == "float32"
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: False)
    assert devices.pick_device("cpu", "auto", "train").dtype == "float32"


def test_throughput_is_in_metrics_and_the_run_record(run):
    out, metrics = run
    t = json.loads((out / "metrics.json").read_text())["throughput"]
    assert t == metrics["throughput"]
    assert t["steps"] == 4 and t["step_seconds"] > 0 and t["seconds_per_step"] > 0 and t["cpu_seconds_per_step"] > 0
    assert 0 < t["trained_tokens"] < t["real_tokens"] <= t["padded_tokens"]
    for key in ("trained_tokens_per_second", "real_tokens_per_second", "padded_tokens_per_second", "peak_rss_mb"):
        assert t[key] > 0, key
    assert json.loads((out / "edgemed-run.json").read_text())["throughput"] == t


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_dtype_trains_and_is_recorded(tmp_path, tiny_model, dtype):
    from safetensors import safe_open

    from edgemed.train.recipe import train_lora

    out = tmp_path / "run"
    metrics = train_lora("tiny-random", "sample", out, max_steps=2, batch_size=4, lr=5e-3, threads=1, dtype=dtype,
                         eval_limit=8)
    record = json.loads((out / "edgemed-run.json").read_text())
    assert record["device"]["dtype"] == metrics["dtype"] == dtype
    assert record["device"]["recipe"]["frozen_weights"] == dtype and "FastDropout" in record["device"]["recipe"][
        "lora_dropout"]
    assert metrics["steps"] == 2 and metrics["eval_loss_after"] < metrics["eval_loss_before"]
    with safe_open(str(out / "adapter" / "adapter_model.safetensors"), "pt") as f:  # LoRA weights stay float32
        assert {str(f.get_tensor(k).dtype) for k in f.keys()} == {"torch.float32"}  # noqa: SIM118
    # resuming the run in another dtype on the same device is refused
    other = "float32" if dtype == "bfloat16" else "bfloat16"
    with pytest.raises(Exception, match="dtype"):
        train_lora("tiny-random", "sample", out, max_steps=3, batch_size=4, lr=5e-3, threads=1, dtype=other,
                   eval_limit=8, resume=True)


def test_fp32_attention_matches_sdpa(tiny_model, tokenizer):
    import torch

    from edgemed.models import load_model, pick_device
    from edgemed.train.cpu import register_fp32_sdpa

    questions, _ = load_questions("sample", limit=4)
    examples, _ = encode_questions(tokenizer, get_style("chatml"), questions, 512)
    batch = AnswerOnlyCollator(tokenizer.pad_token_id)(examples)  # rows of different lengths: padding masked
    assert (batch["attention_mask"] == 0).any()
    logits = {}
    for impl in ("sdpa", register_fp32_sdpa()):
        model = load_model(str(tiny_model), pick_device("cpu", "float32"), attn_implementation=impl)
        with torch.no_grad():
            logits[impl] = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    a, b = logits.values()
    real = batch["attention_mask"].bool()
    assert torch.allclose(a[real], b[real], atol=1e-5)


def test_fast_dropout_is_dropout():
    import torch

    from edgemed.train.cpu import FastDropout, keep_mask

    torch.manual_seed(0)
    n, p = 2_000_001, 0.1  # odd: the last 31-bit draw is used for half
    kept = keep_mask(torch.Size([n]), p).double()
    rate = 1 - kept.mean().item()
    assert abs(rate - p) < 5 * (p * (1 - p) / n) ** 0.5  # within 5 standard errors
    assert set(kept.unique().tolist()) <= {0.0, 1.0}
    halves = kept[: n - 1].view(-1, 2)  # both 15-bit halves of a draw drop at the same rate, independently
    assert abs((1 - halves[:, 0].mean()).item() - p) < 0.002 and abs((1 - halves[:, 1].mean()).item() - p) < 0.002
    assert abs(((1 - halves[:, 0]) * (1 - halves[:, 1])).mean().item() - p * p) < 0.001
    assert keep_mask(torch.Size([1000]), 0.0).sum() == 1000

    drop = FastDropout(p)
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.rand(64, 300, dtype=dtype).add_(1).requires_grad_(True)  # never 0: a 0 in y is a drop
        torch.manual_seed(1)
        y = drop(x)
        torch.manual_seed(1)
        assert torch.equal(drop(x), y)  # torch's seeded generator: reproducible
        dropped = y == 0
        expect = (x.float() / (1 - p)).to(dtype)
        tol = 1e-6 if dtype == torch.float32 else 1e-2
        assert torch.allclose(y[~dropped].float(), expect[~dropped].float(), rtol=tol)
        y.float().sum().backward()
        grad = x.grad.float()
        assert torch.all(grad[dropped] == 0) and torch.allclose(grad[~dropped], torch.tensor(1 / (1 - p)), rtol=1e-2)
    drop.eval()
    x = torch.randn(8, 8)
    assert drop(x) is x
    with pytest.raises(ValueError):
        FastDropout(1.0)


def test_cpu_training_uses_fast_dropout_and_a_bf16_frozen_model(tmp_path, tiny_model):
    import torch
    from peft import LoraConfig, get_peft_model

    from edgemed.models import load_model, pick_device
    from edgemed.train.cpu import FastDropout, fast_lora_dropout, lora_inputs_as_is, recipe

    model = load_model(str(tiny_model), pick_device("cpu", "bfloat16"))
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1, target_modules=["q_proj", "v_proj"]))
    layers = model.config.num_hidden_layers
    assert fast_lora_dropout(model) == 2 * layers and fast_lora_dropout(model) == 0
    assert lora_inputs_as_is(model) == 2 * layers
    assert sum(isinstance(m, FastDropout) for m in model.modules()) == 2 * layers
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=torch.tensor([[1, 2, 3, 4]]), labels=torch.tensor([[1, 2, 3, 4]])).loss
    loss.backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
    assert recipe("cpu", "bfloat16")["frozen_weights"] == "bfloat16"
    assert recipe("cpu", "float32")["autocast"] == "off"


def test_a_float32_run_after_a_bf16_run_in_one_process_is_float32(tmp_path, tiny_model):
    import os

    from edgemed.train.recipe import train_lora

    def before(name, dtype):
        return train_lora("tiny-random", "sample", tmp_path / name, max_steps=1, batch_size=4, threads=1,
                          eval_limit=8, dtype=dtype)["eval_loss_before"]

    first = before("a", "float32")
    assert before("b", "bfloat16") != first
    assert os.environ["ACCELERATE_MIXED_PRECISION"] == "bf16"  # what transformers leaves behind
    assert before("c", "float32") == first  # not silently under the previous run's bf16 autocast


@pytest.mark.slow  # over ~20 s on 2 cores
def test_bench_train_speed_script_runs_every_setup(tmp_path, tiny_model):
    """scripts/dev/bench_train_speed.py end to end on tiny-random: every lever timed, the default row named, and the
    float32/bf16/seed runs trained in processes of their own and scored."""
    import subprocess

    eval_file = tmp_path / "eval.jsonl"
    rows = (Path(__file__).parents[1] / "edgemed" / "data" / "sample.jsonl").read_text().splitlines()
    eval_file.write_text("\n".join(rows[:8]) + "\n")
    out = tmp_path / "speed.json"
    proc = subprocess.run(
        [sys.executable, "scripts/dev/bench_train_speed.py", "--model", "tiny-random", "--data", "sample",
         "--eval-data", str(eval_file), "--steps", "1", "--warmup", "1", "--quality-steps", "1", "--eval-limit", "8",
         "--threads", "1", "--out", str(out)],
        cwd=Path(__file__).parents[1], capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    setups = report["speed"]["setups"]
    assert list(setups) == ["notebook", "answer_only", "grouped", "answer_logits", "fast_dropout", "bf16_sdpa",
                            "bf16_attn", "bf16"]
    assert all(r["seconds_per_step_mean"] > 0 for r in setups.values())
    assert setups["notebook"]["seq_len_mean"] == 256 and setups["grouped"]["seq_len_mean"] < 256
    assert report["default_setup"]["setup"] in setups and "is the row" in proc.stdout
    runs = report["quality"]["runs"]
    assert {r["dtype"] for r in runs.values()} == {"float32", "bfloat16"}
    assert "bf16 - fp32" in proc.stdout and report["quality"]["eval_questions"] == 8
