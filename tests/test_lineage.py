"""Lineage: train records the split and prompt style once; merge/export carry it; eval and bench read it.

A run with a non-default seed and fraction, end to end: every later stage scores exactly the recorded
evaluation side, and a question the model trained on is refused unless asked for on purpose.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgemed.errors import EdgemedError
from edgemed.lineage import Lineage, prompt_style_for, read_lineage, scoring_questions

SEED, FRACTION = 7, 0.35


@pytest.fixture(scope="module")
def chain(tiny_model, tmp_path_factory) -> dict[str, Path]:
    from edgemed.export.run import run_export
    from edgemed.merging import merge_adapter
    from edgemed.train.recipe import train_lora

    root = tmp_path_factory.mktemp("lineage")
    run = root / "run"
    train_lora("tiny-random", "sample", run, max_steps=1, batch_size=4, eval_limit=4, threads=1, seed=SEED,
               eval_fraction=FRACTION, prompt_style="plain")  # tiny-random's template implies chatml
    merge_adapter(adapter=run, out=root / "merged", force=True)
    run_export(root / "merged", ["hf", "gguf-f16"], root / "artifacts", force=False, verify=False, threads=1)
    return {"root": root, "run": run, "merged": root / "merged", "hf": root / "artifacts" / "hf",
            "gguf": root / "artifacts" / "gguf-f16"}


def _recorded(chain) -> dict:
    return json.loads((chain["run"] / "lineage.json").read_text())


def test_train_records_the_split_it_used(chain):
    from edgemed.data import load_questions, split_questions

    rec = _recorded(chain)
    train, held = split_questions(load_questions("sample")[0], FRACTION, SEED)
    assert rec["eval_ids"] == [q.id for q in held] and rec["train_ids"] == [q.id for q in train]
    assert rec["evaluation"]["seed"] == SEED and rec["evaluation"]["fraction"] == FRACTION
    assert rec["prompt_style"] == "plain" and rec["base_model"]["given"] == "tiny-random"
    assert len(rec["data"]["sha256"]) == 64


def test_merge_and_export_carry_the_record_unchanged(chain):
    rec = _recorded(chain)
    for where in ("merged", "hf", "gguf"):
        lineage = read_lineage(chain[where])
        assert lineage is not None and lineage.to_dict() == rec, where
    gguf_file = next(chain["gguf"].glob("*.gguf"))
    assert read_lineage(gguf_file).eval_ids == rec["eval_ids"]  # a .gguf file reads its folder's manifest
    assert prompt_style_for(chain["gguf"], lambda: None) == ("plain", "train --prompt-style")


def test_eval_defaults_to_the_recorded_side_and_refuses_trained_questions(chain, cli, tmp_path):
    rec = _recorded(chain)
    out = tmp_path / "eval"
    proc = cli("eval", chain["gguf"], "--out", out, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    scored = [json.loads(line)["id"] for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert scored == rec["eval_ids"]
    results = json.loads((out / "results.json").read_text())
    assert results["prompt_style"] == "plain"
    assert f"seed {SEED}" in results["data"]["selection"]

    # the same source named explicitly: still the recorded side, not a seed-0 re-split
    proc = cli("eval", chain["hf"], "--data", "sample", "--limit", "5", "--out", tmp_path / "e2", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    scored = [json.loads(line)["id"] for line in (tmp_path / "e2" / "predictions.jsonl").read_text().splitlines()]
    assert scored == rec["eval_ids"][:5]

    # a copy of the training data under another name is recognised by its content hash: the recorded side
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(Path(_sample_file()).read_bytes())
    proc = cli("eval", chain["gguf"], "--data", copy, "--limit", "3", "--out", tmp_path / "e3", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    scored = [json.loads(line)["id"] for line in (tmp_path / "e3" / "predictions.jsonl").read_text().splitlines()]
    assert scored == rec["eval_ids"][:3]
    # asking for the whole source on purpose: trained questions included and counted
    proc = cli("eval", chain["gguf"], "--data", "sample", "--include-trained", "--out", tmp_path / "e4",
               "--no-progress")
    assert proc.returncode == 0, proc.stderr
    data = json.loads((tmp_path / "e4" / "results.json").read_text())["data"]
    assert data["questions"] == 240
    assert data["trained_questions_included"] == {str(chain["gguf"]): len(rec["train_ids"])}


def _sample_file() -> str:
    from edgemed.data.sources import sample_path

    return str(sample_path())


def test_a_file_holding_trained_questions_is_refused(chain, tmp_path, cli):
    from edgemed.data import read_rows

    rows = read_rows("sample")
    trained = set(_recorded(chain)["train_ids"])
    mixed = [r for r in rows if r["id"] in trained][:3] + [r for r in rows if r["id"] not in trained][:5]
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in mixed))
    lineages = {"gguf-f16": read_lineage(chain["gguf"])}
    with pytest.raises(EdgemedError, match="3 of the 8 questions .* gguf-f16"):
        scoring_questions(str(path), None, lineages)
    questions, info = scoring_questions(str(path), None, lineages, include_trained=True)
    assert len(questions) == 8 and info["trained_questions_included"] == {"gguf-f16": 3}
    proc = cli("eval", chain["gguf"], "--data", path, "--no-progress")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "3 of the 8 questions" in proc.stderr and "--include-trained" in proc.stderr


def test_several_trained_models_score_only_what_none_trained_on():
    a = Lineage("plain", "test", evaluation={"mode": "split", "source": "sample", "split": "train"},
                train_ids=[], eval_ids=[])
    from edgemed.data import load_questions, split_questions

    qs = load_questions("sample")[0]
    for lin, seed in ((a, 1),):
        tr, ev = split_questions(qs, 0.5, seed)
        lin.train_ids, lin.eval_ids = [q.id for q in tr], [q.id for q in ev]
    b = Lineage("plain", "test", evaluation={"mode": "split", "source": "sample", "split": "train"},
                train_ids=[q.id for q in split_questions(qs, 0.5, 2)[0]],
                eval_ids=[q.id for q in split_questions(qs, 0.5, 2)[1]])
    questions, _ = scoring_questions(None, None, {"a": a, "b": b})
    assert {q.id for q in questions} == set(a.eval_ids) & set(b.eval_ids)
    untrained_only, info = scoring_questions(None, None, {"base": None})
    assert len(untrained_only) == 240 and "whole bundled sample" in info["selection"]


def test_bench_scores_the_recorded_side(chain, cli, tmp_path):
    rec = _recorded(chain)
    out = tmp_path / "bench"
    proc = cli("bench", chain["gguf"], "--out", out, "-r", "1", "-p", "16", "-n", "4", "--latency-prompts", "1",
               "--no-fidelity")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((out / "bench.json").read_text())
    assert doc["settings"]["questions"] == len(rec["eval_ids"])
    assert f"seed {SEED}" in doc["settings"]["question_selection"]["selection"]
    art = doc["artifacts"][0]
    assert art["runtime_info"]["prompt_style"] == "plain"
    mixed = tmp_path / "train-side.jsonl"
    from edgemed.data import read_rows

    trained = set(rec["train_ids"])
    mixed.write_text("".join(json.dumps(r) + "\n" for r in read_rows("sample") if r["id"] in trained))
    proc = cli("bench", chain["gguf"], "--data", mixed, "--out", tmp_path / "b2")
    assert proc.returncode == 2 and "--include-trained" in proc.stderr
    assert not (tmp_path / "b2" / "bench.json").exists()


def test_unknown_recorded_style_is_refused(tmp_path):
    folder = tmp_path / "art"
    folder.mkdir()
    (folder / "edgemed.json").write_text(json.dumps({"format": "hf", "runtime": "transformers",
                                                     "lineage": {"prompt_style": "alpaca", "style_source": "x"}}))
    with pytest.raises(EdgemedError, match="alpaca"):
        read_lineage(folder)
    (folder / "edgemed.json").write_text("{not json")
    with pytest.raises(EdgemedError, match="corrupt"):
        read_lineage(folder)
