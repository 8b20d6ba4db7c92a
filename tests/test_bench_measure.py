"""How the bench measures: busy-machine detection with real processes, the fidelity (KL) arithmetic against an
exact computation, llama-perplexity's chunking, pp/tg on a real runtime, and the config-driven CLI."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from edgemed.bench.config import BenchConfig
from edgemed.bench.measure.fidelity import (
    Sequence,
    _tail_draws,
    _top_k,
    fidelity_summary,
    text_sequences,
    token_divergence,
)
from edgemed.process.isolate import measure_child

BURN = "import time\nend = time.time() + {s}\nwhile time.time() < end:\n    pass\n"


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def test_a_run_beside_processes_that_burn_the_cpu_is_flagged_busy(tmp_path):
    burners = [subprocess.Popen([sys.executable, "-c", BURN.format(s=12)]) for _ in range(2)]
    try:
        time.sleep(0.5)
        out = measure_child([sys.executable, "-c", "import time; time.sleep(4)"], tmp_path / "quiet-child.log",
                            threads=2)
    finally:
        for b in burners:
            b.kill()
            b.wait()
    load = out.load
    assert out.ok and load.busy, load
    assert load.other_cores_mean > 1.0 and "other processes used" in load.reason
    assert load.artifact_cores_mean < 0.2  # the sleeping child itself is not counted as load


def test_the_measured_process_own_cpu_is_not_counted_as_other_load(tmp_path):
    out = measure_child([sys.executable, "-c", BURN.format(s=3)], tmp_path / "burn.log", threads=1)
    load = out.load
    assert out.ok and out.cpu_s is not None and out.cpu_s > 0.5
    assert load.artifact_cores_mean == pytest.approx(out.cpu_s / load.wall_s, rel=0.05)
    # the child's own CPU is subtracted, never counted twice: the parts add up to at most the whole machine
    assert load.other_cores_mean + load.artifact_cores_mean + load.harness_cores_mean <= load.logical_cpus + 0.2


def test_kl_exact_with_the_whole_vocabulary_and_unbiased_from_top_k_plus_tail_draws():
    rng = np.random.default_rng(0)
    lp = _log_softmax(rng.normal(0, 2, size=(400, 500)))  # flat enough that the top-16 leave much mass out
    lq = _log_softmax(lp + rng.normal(0, 0.3, size=lp.shape))
    exact = (np.exp(lp) * (lp - lq)).sum(axis=1)
    idx, vals = _top_k(lp, 500)
    est, bound, outside = token_divergence(lq, idx, vals)
    assert np.allclose(est, exact, atol=1e-9) and np.allclose(bound, exact, atol=1e-9)
    assert np.allclose(outside, 0, atol=1e-9)  # the whole vocabulary stored: nothing outside
    idx, vals = _top_k(lp, 16)
    assert np.all(idx[:, 0] == lp.argmax(axis=1)) and np.all(np.diff(vals, axis=1) <= 0)
    draws = _tail_draws(lp, idx, np.random.default_rng(1))
    assert not any(np.isin(d, i).any() for d, i in zip(draws, idx, strict=True))  # only from outside the top-k
    est, bound, outside = token_divergence(lq, idx, vals, draws, np.take_along_axis(lp, draws.astype(np.int64), axis=1))
    assert np.all(bound <= exact + 1e-12) and np.allclose(outside, 1 - np.exp(vals).sum(axis=1))
    assert bound.mean() < 0.9 * exact.mean()  # the bound alone is clearly low here...
    assert est.mean() == pytest.approx(exact.mean(), rel=0.03)  # ...the tail draws remove that bias


def test_fidelity_summary_numbers():
    kld = np.array([0.0, 0.1, 0.2, 0.3])
    same = np.array([True, True, False, True])
    lq, lp = np.log([0.5, 0.25, 0.5, 0.25]), np.log([0.5, 0.5, 0.5, 0.5])
    s = fidelity_summary(kld, same, lq, lp, np.array([0, 0, 1, 1]), top_k=8, tail_mass=0.01)
    assert s["tokens"] == 4 and s["sequences"] == 2 and s["kld_mean"] == pytest.approx(0.15)
    assert s["top1_agreement"] == 0.75 and s["ppl_reference"] == pytest.approx(2.0)
    assert s["ppl"] == pytest.approx(np.exp(-np.mean(lq))) and s["kld_ci"][0] < 0.15 < s["kld_ci"][1]


class _Tokens:
    def tokenize(self, text: str) -> list[int]:
        return [ord(c) for c in text]


def test_fidelity_text_is_chunked_like_llama_perplexity():
    seqs = text_sequences(_Tokens(), "x" * 1000, ctx=256, chunks=None)
    assert [(len(s.ids), s.first, s.last) for s in seqs] == [(256, 128, 255)] * 3  # second half of each chunk
    assert len(text_sequences(_Tokens(), "x" * 1000, ctx=256, chunks=2)) == 2
    from edgemed.errors import EdgemedError

    with pytest.raises(EdgemedError, match="fewer than one chunk"):
        text_sequences(_Tokens(), "short", ctx=256, chunks=None)
    assert Sequence([1, 2], 0, 1).last == 1


def test_pp_and_tg_on_a_real_runtime(tiny_model):
    from edgemed.bench.measure.throughput import prompt_processing, text_generation
    from edgemed.runtimes.hf import TransformersRuntime

    with TransformersRuntime(tiny_model, threads=1, device="cpu", dtype="float32") as rt:
        pp = prompt_processing(rt, 32, repetitions=3, warmup=1)
        tg = text_generation(rt, 16, repetitions=3, warmup=1)
        lp = rt.sequence_logprobs([1, 2, 3, 4])
    assert (pp["n_prompt"], pp["n_gen"], tg["n_prompt"], tg["n_gen"]) == (32, 0, 0, 16)
    assert len(pp["samples_ts"]) == 3 and pp["avg_ts"] == pytest.approx(np.mean(pp["samples_ts"]))
    assert tg["samples_ts"] == pytest.approx([16e9 / ns for ns in tg["samples_ns"]], rel=1e-6)
    assert lp.shape[0] == 4 and np.allclose(np.exp(lp).sum(axis=1), 1, atol=1e-4)


def _capture(artifacts: list[str], config: BenchConfig) -> tuple[list[str], BenchConfig]:
    """Stands in for the bench command: same typed signature."""
    return artifacts, config


def test_bench_options_come_from_one_config_and_lists_never_swallow_the_artifacts():
    from edgemed.cli.main import build_parser
    from edgemed.cli.signature import call

    ns = build_parser().parse_args(["bench", "--profile", "rpi5,rpi4", "ARTS", "-t", "2", "-p", "64", "-n", "16",
                                    "-r", "3", "--no-fidelity", "--prefer", "latency", "--profile", "jetson"])
    artifacts, config = call(_capture, ns)
    assert [str(a) for a in artifacts] == ["ARTS"] and isinstance(config, BenchConfig)
    assert config.profile == ["rpi5", "rpi4", "jetson"] and config.threads == 2
    assert (config.n_prompt, config.n_gen, config.repetitions, config.fidelity, config.prefer) == (64, 16, 3, False,
                                                                                                   "latency")
    assert BenchConfig.from_dict(config.to_dict()) == config  # what the worker receives is the same config
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "ARTS", "--profile", "rpi5,"])  # an empty item is a usage error


def test_help_texts_print_percent_signs_once(capsys):
    from edgemed.cli.main import build_parser

    seen = ""
    for argv in (["--help"], ["eval", "--help"], ["bench", "--help"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(argv)
        seen += capsys.readouterr().out
    assert "%%" not in seen and "95% Wilson" in seen


def test_one_pass_scores_letters_and_fidelity_as_the_two_passes_did(tiny_model, tmp_path):
    """The bench reads each question's letter log-probs from its fidelity sequence (prompt + answer) instead of a
    second forward pass: the predictions are those of eval's own pass, and every fidelity figure is the one the
    separate passes gave (the reference's own summary included, now read from its storing pass)."""
    from edgemed.bench.measure.fidelity import compare_with_reference, question_sequences, save_reference
    from edgemed.bench.worker import letter_tap
    from edgemed.data import load_questions
    from edgemed.evaluator.run import evaluate
    from edgemed.runtimes.hf import TransformersRuntime

    questions = load_questions("sample", limit=12)[0]
    with TransformersRuntime(tiny_model, threads=1, device="cpu", dtype="float32") as rt:
        style = rt.prompt_style
        before = evaluate(rt, questions, style=style, show_progress=False)
        seqs = question_sequences(rt, questions, style)
        assert all(s.answer_row is not None for s in seqs)
        two = save_reference(rt, seqs, tmp_path / "a", 64)
        two_self = compare_with_reference(rt, tmp_path / "a")
        letters: dict = {}
        one = save_reference(rt, seqs, tmp_path / "b", 64, on_rows=letter_tap(rt, questions, style, seqs, letters))
        after = evaluate(rt, questions, style=style, show_progress=False, letter_rows=letters)
        assert after.timing["letter_rows_shared"] == len(questions)
        # an artifact compared with the stored reference: the same figures with or without the tap
        tapped: dict = {}
        cmp_tap = compare_with_reference(rt, tmp_path / "b", on_rows=letter_tap(rt, questions, style, seqs, tapped))
        cmp_plain = compare_with_reference(rt, tmp_path / "b")
    assert [p["predicted"] for p in after.predictions] == [p["predicted"] for p in before.predictions]
    assert after.accuracy == before.accuracy
    for a, b in zip(after.predictions, before.predictions, strict=True):
        assert max(abs(a["probs"][k] - b["probs"][k]) for k in "ABCD") < 1e-4
    assert set(tapped) == set(letters)
    assert cmp_tap == cmp_plain
    assert {k: v for k, v in one["self"].items()} == {k: v for k, v in two_self.items()}
    assert {k: two[k] for k in ("rows", "top_k", "sequences")} == {k: one[k] for k in ("rows", "top_k", "sequences")}


def test_renamed_flags_keep_working_for_a_release_with_one_warning(capsys):
    from edgemed.cli.main import build_parser

    parser = build_parser()
    ns = parser.parse_args(["bench", "arts", "--repeats", "2", "--omp-wait-policy", "passive"])
    assert (ns.repetitions, ns.wait_policy) == (2, "passive")
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["warning: --repeats is deprecated and will be removed in the next release; use --repetitions",
                   "warning: --omp-wait-policy is deprecated and will be removed in the next release; use "
                   "--wait-policy"]
    assert parser.parse_args(["pipeline", "--repeats", "4"]).repetitions == 4
    assert capsys.readouterr().err.count("deprecated") == 1
    ns = parser.parse_args(["bench", "arts", "-r", "3"])
    assert ns.repetitions == 3 and capsys.readouterr().err == ""
    with pytest.raises(SystemExit):
        parser.parse_args(["bench", "arts", "--omp-wait-policy", "sometimes"])  # the new flag's choices hold
    sub = next(a for a in parser._actions if a.dest == "command").choices["bench"]
    assert "--repeats" not in sub.format_help()


def test_formats_that_quantize_activations_over_the_input_are_scored_one_prompt_per_pass(tiny_model, tmp_path):
    """LLM.int8 and onnxruntime's dynamic int8 pick outlier columns / a scale over the whole input: a prompt's letters
    would depend on its batch partners or on the answer after it. The registry says so and eval scores them alone."""
    from edgemed.registry import FORMATS, rows_independent

    assert not FORMATS["bnb-int8"].rows_independent and not FORMATS["onnx-int8"].rows_independent
    assert all(rows_independent(f) for f in ("hf", "bnb-nf4", "onnx", "gguf-f16", "gguf-q4_k_m"))
    assert not rows_independent("no-such-format")
    from edgemed.data import load_questions
    from edgemed.evaluator.run import evaluate
    from edgemed.runtimes.hf import TransformersRuntime

    questions = load_questions("sample", limit=4)[0]
    class LikeInt8(TransformersRuntime):
        rows_independent = False  # as a bnb-int8 artifact's runtime reports it

    with LikeInt8(tiny_model, threads=1, device="cpu", dtype="float32") as rt:
        res = evaluate(rt, questions, batch_size=8, show_progress=False, letter_rows={questions[0].id: [0, 0, 0, 0]})
    assert res.config["batch_size"] == 1 and res.config["batch_size_asked"] == 8
    assert "letter_rows_shared" not in res.timing  # nothing read from another pass


@pytest.mark.parametrize("shape", [(700, 49152), (37, 128256), (5, 3), (1, 49152), (49152,), (0, 10), (3, 4, 1000)])
def test_log_softmax_rows_is_bit_identical_to_the_whole_array_formula(shape):
    """The blocked, in-place log-softmax the fidelity pass runs on every row gives, bit for bit, what the formula
    over the whole array at once gives (the KLD and accuracy figures of earlier runs stay the same)."""
    from edgemed.runtimes.logits import log_softmax_rows

    rng = np.random.default_rng(len(shape) * 1000 + shape[0])
    x = (rng.standard_normal(shape) * 6).astype(np.float32)
    if x.size:
        x.reshape(-1)[:: 97] = -np.inf  # masked logits
        x.reshape(-1)[1:: 89] = 40.0  # peaked rows
    m = x.max(axis=-1, keepdims=True) if x.size else x
    want = ((x - m) - np.log(np.exp((x - m).astype(np.float64)).sum(axis=-1, keepdims=True))).astype(np.float32) \
        if x.size else x.copy()
    got = log_softmax_rows(x)
    assert got.dtype == np.float32 and got.shape == x.shape
    assert np.array_equal(got, want, equal_nan=True)
    inplace = x.copy()
    assert log_softmax_rows(inplace, out=inplace) is inplace and np.array_equal(inplace, want, equal_nan=True)
    view = np.concatenate([x, x], axis=-1)[..., : x.shape[-1]] if x.ndim > 1 else x  # a non-contiguous input
    assert np.array_equal(log_softmax_rows(view), want, equal_nan=True)
    half = x.astype(np.float16)  # an engine's float16 logits are widened first
    assert np.array_equal(log_softmax_rows(half), log_softmax_rows(half.astype(np.float32)), equal_nan=True)
