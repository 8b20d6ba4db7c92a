"""The bad-input corpus's fast subset (scripts/dev/bad_input_corpus.py --fast), one test per case.

Each case is a real ``edgemed`` subprocess on the tiny model, judged by the corpus itself: exit code, no traceback,
one ``error:`` line, no output left behind after a failure, and for signal cases a clean re-run. The fixtures (a
tiny train run, its merged model, the gguf-q8_0 artifact, one bench and one eval) are built once for the module.
The full corpus (about 200 cases, ``--extended`` about 445) is a command of its own: see docs/testing.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "dev" / "bad_input_corpus.py"


corpus = load_script(SCRIPT)


@pytest.fixture(scope="module")
def corpus_env(tmp_path_factory, edgemed_cache):
    env = corpus.make_env(tmp_path_factory.mktemp("corpus"))
    cases = {c.id: c for c in corpus.select_cases(env, fast=True)}
    corpus.restore_signal_defaults()
    corpus.build_fixtures(env, list(cases.values()), corpus.FAST_FORMATS)
    yield env, cases
    corpus.unmount_under(env.work)


def test_fast_subset_is_the_declared_one():
    env = corpus.Env(work=Path("/nonexistent"), fx=Path("/nonexistent/fx"), base=Path("/nonexistent/base"))
    ids = [c.id for c in corpus.select_cases(env, fast=True)]
    assert sorted(ids) == sorted(corpus.FAST)
    assert not set(ids) & corpus.EXTENDED  # the fast cases are all from the default set
    groups = {c.group for c in corpus.select_cases(env)}
    assert groups == {c.group for c in corpus.select_cases(env, fast=True)}  # every kind of fault is represented


@pytest.mark.parametrize("case_id", corpus.FAST)
def test_bad_input_case(case_id, corpus_env):
    env, cases = corpus_env
    case = cases[case_id]
    if "artifacts" in case.needs and not env.artifacts_ok:
        pytest.fail(f"the corpus's base fixtures failed: {env.artifacts_error}")
    res = corpus.run_case(case, env)
    if res["verdict"] == "skip":
        pytest.skip(res["reason"])
    assert res["verdict"] == "pass", (
        f"{res['command']}\nexpected exit {res['expected']}, got {res.get('got')}: {'; '.join(res['problems'])}\n"
        f"stderr: {res.get('stderr_tail') or res.get('stderr_line')}")
