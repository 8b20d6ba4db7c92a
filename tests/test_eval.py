"""`edgemed eval` end to end on the tiny model, the evaluator API, and exact bookkeeping on a scripted runtime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgemed.data.medmcqa import Question
from edgemed.evaluator.run import EvalResult, evaluate
from edgemed.evaluator.sweep import sweep
from edgemed.lineage import prompt_style_for
from edgemed.runtimes.base import Generation, Runtime

PRED_KEYS = {"id", "gold", "predicted", "probs", "correct"}


# --- a Runtime whose answers are set per question: checks the evaluator's arithmetic exactly ------------------
class ScriptedRuntime(Runtime):
    """Token ids 0..3 are ' A'..' D', 4 is everything else; each question's letter distribution and text are given."""

    name = "scripted"

    def __init__(self, script: dict[str, tuple[list[float], str]], template: str | None = None):
        super().__init__(Path("scripted"))
        self.script = script
        self.template = template

    def _entry(self, prompt: str) -> tuple[list[float], str]:
        hits = [v for k, v in self.script.items() if f"Question: {k}\n" in prompt]
        assert len(hits) == 1, prompt
        return hits[0]

    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        letters = [" A", " B", " C", " D"]
        return [letters.index(text)] if text in letters else [4] * len(text)

    def next_token_logprobs(self, prompts: list[str]) -> np.ndarray:
        rows = []
        for prompt in prompts:
            probs = np.array(self._entry(prompt)[0]) * 0.5  # half the mass on the letters, half elsewhere
            rows.append(np.log(np.append(probs, 0.5)))
        return np.array(rows)

    def generate(self, prompt, max_new_tokens=16, temperature=0.0, top_p=1.0, seed=0, stop=None) -> Generation:
        text = self._entry(prompt)[1]
        return Generation(text=text, prompt_tokens=len(prompt), new_tokens=3, ttft_s=0.001, total_s=0.002)

    # answers are scripted whole by generate() above, so the per-token primitives are never reached
    def prefill(self, ids):
        raise AssertionError("scripted runtime: generate() is scripted whole")

    decode = prefill
    sequence_logprobs = prefill
    vocab_size = 5  # the four letters and the rest

    def detokenize(self, ids) -> str:
        return ""

    def is_end(self, token) -> bool:
        return True

    def chat_template(self) -> str | None:
        return self.template


def _q(i: int, answer: int) -> Question:
    return Question(id=f"q{i}", question=f"question {i}?", options=("alpha", "beta", "gamma", "delta"),
                    answer=answer, subject="S1" if i % 2 else "S2")


def test_logprob_scoring_bookkeeping_is_exact():
    qs = [_q(0, 0), _q(1, 1), _q(2, 2), _q(3, 3)]
    rt = ScriptedRuntime({
        "question 0?": ([0.7, 0.1, 0.1, 0.1], ""),  # right, confident
        "question 1?": ([0.1, 0.6, 0.2, 0.1], ""),  # right
        "question 2?": ([0.1, 0.5, 0.3, 0.1], ""),  # wrong, gold runner-up: a near miss at margin 0.2 -> not near
        "question 3?": ([0.8, 0.05, 0.05, 0.1], ""),  # wrong and confident
    })
    res = evaluate(rt, qs, show_progress=False, batch_size=3)
    assert isinstance(res, EvalResult)
    assert res.accuracy == 0.5 and res.n == 4
    assert [p["predicted"] for p in res.predictions] == ["A", "B", "B", "A"]
    assert res.predictions[0]["probs"] == pytest.approx({"A": 0.7, "B": 0.1, "C": 0.1, "D": 0.1})
    assert res.predictions[0]["letter_mass"] == pytest.approx(0.5)
    assert res.config["prompt_style"] == "plain" and "chat template" in res.config["prompt_style_source"]
    assert res.metrics["failures"]["confident_wrong"]["count"] == 1
    assert res.metrics["failures"]["near_miss"]["count"] == 0
    assert res.metrics["per_subject"]["S1"]["accuracy"] == 0.5
    # confidences 0.7, 0.6, 0.5, 0.8 with right/right/wrong/wrong -> bins .5: 0 (gap .5), .6: 1 (.4), .7: 1 (.3),
    # .8: 0 (.8): ECE = (0.5 + 0.4 + 0.3 + 0.8) / 4 = 0.5
    assert res.metrics["calibration"]["ece"] == pytest.approx(0.5)
    d = res.to_dict()
    assert d["accuracy"] == 0.5 and d["correct"] == 2 and len(d["accuracy_ci"]) == 2
    json.dumps(d)  # serialisable


# A ChatML chat template as SmolLM2 ships it: the runtime's prompt style is read from a rendering of it.
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
          "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def test_generate_counts_unparseable_apart_and_never_correct():
    qs = [_q(0, 0), _q(1, 1), _q(2, 2), _q(3, 3)]
    rt = ScriptedRuntime({
        "question 0?": ([0.25] * 4, " A. alpha"),
        "question 1?": ([0.25] * 4, "beta"),  # exact option text
        "question 2?": ([0.25] * 4, "I would say gamma"),  # unparseable even though it names the gold
        "question 3?": ([0.25] * 4, " C"),
    }, template=CHATML)
    res = evaluate(rt, qs, scoring="generate", show_progress=False)
    assert [p["predicted"] for p in res.predictions] == ["A", "B", None, "C"]
    assert [p["correct"] for p in res.predictions] == [True, True, False, False]
    assert res.metrics["unparseable"] == 1
    assert res.metrics["failures"]["unparseable"]["examples"][0]["text"] == "I would say gamma"
    assert res.config["prompt_style"] == "chatml"
    assert res.config["generation"]["temperature"] == 0.0
    assert res.config["generation"]["stop"] == ["<|im_end|>"]


def test_legacy_reports_substring_rates_and_false_positives():
    qs = [_q(0, 0), _q(1, 1), _q(2, 2)]
    rt = ScriptedRuntime({
        "question 0?": ([0.25] * 4, " A. alpha"),
        "question 1?": ([0.25] * 4, " C. gamma, unlike beta"),  # wrong letter, but gold text appears
        "question 2?": ([0.25] * 4, " D. delta"),
    })
    res = evaluate(rt, qs, scoring="legacy", show_progress=False)
    lg = res.metrics["legacy"]
    assert "LEGACY" in lg["label"]
    assert lg["exact_rate"] == pytest.approx(2 / 3)
    assert lg["strict_letter_accuracy"] == pytest.approx(1 / 3)
    assert (lg["wrong_letter"], lg["wrong_letter_judged_exact"]) == (2, 1)
    assert res.accuracy == pytest.approx(1 / 3)  # the headline stays the strict letter accuracy
    assert res.config["generation"]["max_new_tokens"] == 100


def test_nan_logprobs_count_as_no_answer():
    class Broken(ScriptedRuntime):
        def next_token_logprobs(self, prompts):
            out = super().next_token_logprobs(prompts)
            out[["question 1?" in p for p in prompts]] = np.nan
            return out

    rt = Broken({"question 0?": ([0.7, 0.1, 0.1, 0.1], ""), "question 1?": ([0.7, 0.1, 0.1, 0.1], "")})
    res = evaluate(rt, [_q(0, 0), _q(1, 0)], show_progress=False)
    assert [p["predicted"] for p in res.predictions] == ["A", None]
    assert res.predictions[1]["probs"] is None and not res.predictions[1]["correct"]
    assert res.timing["invalid_logprob_rows"] == 1 and res.metrics["unparseable"] == 1
    assert res.metrics["calibration"]["n"] == 1


def test_unlabelled_questions_are_refused():
    from edgemed.errors import EdgemedError

    rt = ScriptedRuntime({"question 0?": ([0.25] * 4, "")})
    with pytest.raises(EdgemedError, match="no gold answer"):
        evaluate(rt, [_q(0, -1)], show_progress=False)
    with pytest.raises(EdgemedError, match="unknown scoring"):
        evaluate(rt, [_q(0, 0)], scoring="vibes", show_progress=False)


# --- the real tiny model ----------------------------------------------------------------------------------------
def _read_run(out: Path) -> tuple[dict, list[dict]]:
    results = json.loads((out / "results.json").read_text())
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    return results, preds


@pytest.mark.slow  # over ~20 s on 2 cores
def test_cli_eval_end_to_end_schema_and_determinism(cli, tiny_model, tmp_path):
    out1, out2 = tmp_path / "a", tmp_path / "b"
    r1 = cli("eval", "tiny-random", "--limit", "24", "--no-progress", "--out", out1)
    assert r1.returncode == 0, r1.stderr
    assert "accuracy" in r1.stdout and "Wilson" in r1.stdout and "calibration" in r1.stdout
    assert "whole bundled sample" in r1.stderr  # says what it scored: edgemed never trained tiny-random
    results, preds = _read_run(out1)
    assert results["n"] == len(preds) == 24
    assert 0.0 <= results["accuracy_ci"][0] <= results["accuracy"] <= results["accuracy_ci"][1] <= 1.0
    assert results["accuracy"] == pytest.approx(sum(p["correct"] for p in preds) / 24)
    assert results["scoring"] == "logprob" and results["prompt_style"] == "chatml"
    assert results["data"]["source"] == "sample" and "whole bundled sample" in results["data"]["selection"]
    assert {"cpu", "versions"} <= set(results["environment"])
    m = results["metrics"]
    assert 0.0 <= m["calibration"]["ece"] <= 1.0
    assert [r["coverage"] for r in m["calibration"]["accuracy_at_coverage"]] == [1.0, 0.8, 0.6, 0.4, 0.2]
    assert [r["n"] for r in m["test_size"]["interval_width"]] == [50, 100, 200, 500, 1000, 2000, 5000]
    assert m["per_subject"] and sum(s["n"] for s in m["per_subject"].values()) == 24
    assert sum(m["letters"]["predicted"].values()) == 24
    for p in preds:
        assert set(p) >= PRED_KEYS
        assert p["predicted"] in "ABCD" and p["gold"] in "ABCD"
        assert sum(p["probs"].values()) == pytest.approx(1.0)
        assert p["correct"] == (p["predicted"] == p["gold"])
    # no lineage: nothing to hold out, the sample in file order
    from edgemed.data import load_questions

    assert [p["id"] for p in preds] == [q.id for q in load_questions("sample")[0][:24]]

    # deterministic re-run, then compared against the first run
    r2 = cli("eval", "tiny-random", "--limit", "24", "--no-progress", "--reference", out1 / "results.json",
             "--out", out2)
    assert r2.returncode == 0, r2.stderr
    results2, preds2 = _read_run(out2)
    assert preds2 == preds
    cmp = results2["comparison"]
    assert cmp["n"] == 24 and cmp["agreement"] == 1.0 and cmp["mean_kl"] == 0.0 and cmp["mcnemar_p"] == 1.0
    assert "paired_n" in results2["metrics"]["test_size"]["n_to_detect"][0]


def test_generate_and_sweep_on_tiny_model(tiny_model):
    from edgemed.data import load_questions
    from edgemed.runtimes.base import open_runtime

    qs = load_questions("sample", limit=3)[0]
    with open_runtime(tiny_model, threads=1) as rt:
        res = evaluate(rt, qs, scoring="generate", show_progress=False, max_new_tokens=4)
        again = evaluate(rt, qs, scoring="generate", show_progress=False, max_new_tokens=4)
        sw = sweep(rt, qs[:2], temperatures=(0.0, 1.0), max_new_tokens=(3,), repeats=2, show_progress=False)
    assert [p["text"] for p in res.predictions] == [p["text"] for p in again.predictions]  # greedy: deterministic
    for p in res.predictions:
        assert p["new_tokens"] <= 4 and set(p["probs"]) == set("ABCD")
        assert p["correct"] == (p["predicted"] is not None and p["predicted"] == p["gold"])
    assert res.metrics["unparseable"] == sum(p["predicted"] is None for p in res.predictions)
    rows = {r["temperature"]: r for r in sw["rows"]}
    assert set(rows) == {0.0, 1.0}
    assert rows[0.0]["consistency"] == 1.0  # greedy repeats agree
    assert all(r["new_tokens_per_question"] <= 3 and r["s_per_question"] > 0 for r in sw["rows"])


def test_recorded_prompt_style_wins_over_chat_template(tiny_model, tmp_path):
    from edgemed.runtimes.base import open_runtime

    merged = tmp_path / "merged"
    merged.mkdir()
    for f in tiny_model.iterdir():
        (merged / f.name).symlink_to(f)
    with open_runtime(merged) as rt:
        assert prompt_style_for(merged, rt.chat_template) == ("chatml", "chat template (no lineage recorded)")
    lineage = {"prompt_style": "plain", "style_source": "train --prompt-style"}
    (merged / "edgemed-merge.json").write_text(json.dumps({"lineage": lineage}))
    with open_runtime(merged) as rt:
        assert rt.prompt_style == "plain"
        assert prompt_style_for(merged, rt.chat_template) == ("plain", "train --prompt-style")
        res = evaluate(rt, [_q(0, 1)], show_progress=False)
    assert res.config["prompt_style"] == "plain"


# --- label convention and bad input: exit 2, nothing written ---------------------------------------------------
def _write_rows(path: Path, base: int, n: int = 24, bad_row: bool = False) -> Path:
    rows = [
        {"id": f"r{i}", "question": f"Which option is number {i % 4}?", "opa": "first", "opb": "second",
         "opc": "third", "opd": "fourth", "cop": i % 4 + base}
        for i in range(n)
    ]
    if bad_row:
        rows.append({"id": "broken", "question": "No options here?", "cop": base})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.slow  # over ~20 s on 2 cores
def test_label_convention_mismatch_is_refused(cli, tiny_model, tmp_path):
    one_based = _write_rows(tmp_path / "one.jsonl", base=1, bad_row=True)
    zero_based = _write_rows(tmp_path / "zero.jsonl", base=0)
    for data, declared, looks in ((one_based, "0", "1-based"), (zero_based, "1", "0-based")):
        out = tmp_path / f"out-{declared}"
        r = cli("eval", tiny_model, "--data", data, "--cop-base", declared, "--out", out)
        assert r.returncode == 2, r.stderr
        assert looks in r.stderr and "Traceback" not in r.stderr
        assert not out.exists()
    # a bad row is refused unless skipped
    out = tmp_path / "auto"
    r = cli("eval", tiny_model, "--data", one_based, "--out", out)
    assert r.returncode == 2 and "--skip-bad-rows" in r.stderr and not out.exists()
    # auto-detected, the same file scores with the right gold letters; the sweep rides along
    r = cli("eval", tiny_model, "--data", one_based, "--skip-bad-rows", "--no-progress", "--sweep",
            "--sweep-temperatures", "0,0.7", "--sweep-max-new-tokens", "2", "--sweep-repeats", "2",
            "--limit", "6", "--out", out)
    assert r.returncode == 0, r.stderr
    results, preds = _read_run(out)
    assert [p["gold"] for p in preds[:4]] == ["A", "B", "C", "D"]
    assert results["data"]["rows_skipped"] == 1
    sw = json.loads((out / "sweep.json").read_text())
    assert [(row["temperature"], row["max_new_tokens"]) for row in sw["rows"]] == [(0.0, 2), (0.7, 2)]
    assert sw["rows"][0]["consistency"] == 1.0 and sw["n"] == 6
    assert "generation sweep" in r.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["tiny-randon"], "did you mean 'tiny-random'"),
        (["/nonexistent/model"], "unknown model"),
        (["tiny-random", "--data", "/nonexistent.jsonl"], "not found"),
        (["tiny-random", "--limit", "0"], "--limit"),
        (["tiny-random", "--batch-size", "0"], "--batch-size"),
        (["tiny-random", "--temperature", "0.5"], "generate and legacy"),
        (["tiny-random", "--split", "bogus"], "--split picks a split"),
        (["tiny-random", "--reference", "/nonexistent/predictions.jsonl"], "reference predictions"),
        (["tiny-random", "--scoring", "vibes"], "invalid choice"),
        (["tiny-random", "--sweep", "--sweep-repeats", "0"], "--sweep-repeats"),
        (["tiny-random", "--sweep", "--sweep-temperatures", "nan"], "--sweep-temperatures"),
        (["tiny-random", "--examples", "-1"], "--examples"),
        (["tiny-random", "--scoring", "generate", "--temperature", "nan"], "--temperature"),
        (["tiny-random", "--scoring", "generate", "--top-p", "0"], "--top-p"),
        (["tiny-random", "--scoring", "generate", "--max-new-tokens", "0"], "--max-new-tokens"),
    ],
)
def test_bad_inputs_exit_2(cli, tmp_path, args, message):
    r = cli("eval", *args, "--out", tmp_path / "out")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert message in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # over ~20 s on 2 cores
def test_reference_from_other_questions_is_refused(cli, tiny_model, tmp_path):
    ref = tmp_path / "ref.jsonl"
    ref.write_text(json.dumps({"id": "elsewhere", "gold": "A", "predicted": "A", "correct": True}) + "\n")
    r = cli("eval", tiny_model, "--limit", "4", "--no-progress", "--reference", ref, "--out", tmp_path / "out")
    assert r.returncode == 2 and "no question ids" in r.stderr
    assert not (tmp_path / "out").exists()


def _fake_artifact(folder: Path, **manifest) -> Path:
    folder.mkdir(parents=True)
    (folder / "model.gguf").write_bytes(b"GGUF")
    doc = {"schema": 1, "format": "gguf-q8_0", "runtime": "llama.cpp", **manifest}
    (folder / "edgemed.json").write_text(json.dumps(doc))
    return folder


@pytest.mark.parametrize(
    ("manifest", "needle"),
    [
        ({"format": "tflite"}, "unknown format 'tflite'"),
        ({"schema": 99}, "schema 99 is newer"),
        ({"schema": "one"}, "not a manifest schema"),
        ({"format": "hf"}, "runs on transformers"),
        ({"files": "everything"}, "'files'"),
    ],
)
def test_manifest_with_unknown_format_or_schema_exits_2(cli, tmp_path, manifest, needle):
    art = _fake_artifact(tmp_path / "art", **manifest)
    r = cli("eval", art, "--limit", "2", "--out", tmp_path / "out")
    assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert str(art / "edgemed.json") in r.stderr and not (tmp_path / "out").exists()


@pytest.mark.slow  # over ~20 s on 2 cores
def test_binary_or_nested_reference_names_the_file(cli, tiny_model, tmp_path):
    for name, content in (("ref.jsonl", bytes(range(256)) * 4), ("deep.jsonl", b"[" * 100_000 + b"]" * 100_000)):
        ref = tmp_path / name
        ref.write_bytes(content)
        r = cli("eval", tiny_model, "--limit", "2", "--reference", ref, "--out", tmp_path / "out")
        assert r.returncode == 2 and str(ref) in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()


def test_eval_device_cuda_without_cuda_exits_2(cli, tiny_model, tmp_path):
    from edgemed.resources import gpus

    if gpus()["cuda"]:
        pytest.skip("an engine here sees a CUDA GPU")
    r = cli("eval", tiny_model, "--limit", "2", "--device", "cuda")
    assert r.returncode == 2 and "--device cuda" in r.stderr and "Traceback" not in r.stderr


def test_question_longer_than_the_context_is_skipped_and_counted(tiny_model):
    """As training skips examples longer than --max-length: the others are scored, the long one counted."""
    from edgemed.data import load_questions
    from edgemed.runtimes.base import open_runtime

    qs, _ = load_questions("sample", limit=4)
    long_q = Question(id="very-long", question="Why " + "really " * 3000 + "?", options=("a", "b", "c", "d"),
                      answer=0)
    with open_runtime(tiny_model, threads=1, device="cpu") as rt:
        assert rt.context_length == 2048
        result = evaluate(rt, [*qs, long_q], show_progress=False)
        assert result.n == 4 and result.config["skipped_too_long"]["ids"] == ["very-long"]
        assert result.config["skipped_too_long"]["context"] == 2048
        assert "very-long" not in {p["id"] for p in result.predictions}
        with pytest.raises(Exception, match="every question is longer"):
            evaluate(rt, [long_q], show_progress=False)


@pytest.mark.slow  # over ~20 s on 2 cores
def test_a_model_folder_transformers_cannot_read_exits_2(cli, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")  # no model_type
    r = cli("eval", folder, "--limit", "2")
    assert r.returncode == 2 and "could not load a tokenizer" in r.stderr and "Traceback" not in r.stderr, r.stderr
