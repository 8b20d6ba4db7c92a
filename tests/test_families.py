"""Every model family's tiny random alias: its prompts are its own chat template's, token for token, in training
and in every runtime's prompt path (transformers, the tokenizer.json path of ONNX and OpenVINO, llama.cpp), and it
goes through one fast path (hf and a GGUF type, exported and verified against transformers). The same model given
as a plain local folder (a ``save_pretrained`` copy in a folder named ``model``, as a hub snapshot is named for its
hash, not its family) is scored on its own template and exports and verifies alike; one family goes through the
whole ``edgemed pipeline`` as such a folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgemed.data import load_questions
from edgemed.data.medmcqa import LETTERS
from edgemed.tiny_families import FAMILIES

ALL = ["llama", *FAMILIES]  # llama: the plain tiny-random alias (SmolLM2's template)


def alias(family: str) -> str:
    return "tiny-random" if family == "llama" else f"tiny-random-{family}"


@pytest.fixture(scope="module")
def questions():
    return load_questions("sample", limit=3)[0]


@pytest.fixture(scope="module", params=ALL)
def family(request, edgemed_cache):
    from edgemed.models import resolve_model

    return request.param, resolve_model(alias(request.param))


@pytest.fixture(scope="module")
def plain_folder(family, tmp_path_factory) -> Path:
    """The family's tiny model as a user's own folder: loaded and saved with save_pretrained (model and tokenizer)
    into a folder named ``model``, with nothing of edgemed's (no origin record, no lineage)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name, path = family
    folder = tmp_path_factory.mktemp(f"plain-{name}") / "model"
    AutoModelForCausalLM.from_pretrained(path).save_pretrained(folder)
    AutoTokenizer.from_pretrained(path).save_pretrained(folder)
    assert not (folder / "edgemed-origin.json").exists() and not (folder / "lineage.json").exists()
    return folder


def conversation(style, q) -> list[dict]:
    """The chat the style renders: the system message in its own turn, or folded into the user's as recorded."""
    from edgemed.prompts import SYSTEM, question_block

    if style.facts.get("system", "system role").startswith("system role"):
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question_block(q)}]
    return [{"role": "user", "content": f"{SYSTEM}\n\n{question_block(q)}"}]


def reference(tok, style, q) -> tuple[list[int], str]:
    """(ids of the whole conversation with the answer, text of the generation prompt) by apply_chat_template."""
    messages = conversation(style, q)
    answer = {"role": "assistant", "content": f"Answer: {LETTERS[q.answer]}. {q.options[q.answer]}"}
    full = tok.apply_chat_template([*messages, answer], tokenize=True, enable_thinking=False)
    generation = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, enable_thinking=False)
    return list(full), generation


def test_config_keeps_the_family_quirks(family):
    from transformers import AutoConfig

    name, path = family
    if name == "llama":
        return
    config = AutoConfig.from_pretrained(path)
    assert type(config).__name__ == FAMILIES[name].config_class and config.architectures == [FAMILIES[name].model_class]
    assert config.hidden_size <= 128 and config.num_attention_heads % config.num_key_value_heads == 0
    assert config.num_key_value_heads * getattr(config, "head_dim", 0) % 32 == 0  # bitsandbytes CPU kernels
    assert config.tie_word_embeddings is (name not in ("phi3", "mistral"))
    if name in ("gemma2", "gemma3"):
        kinds = config.layer_types
        assert "sliding_attention" in kinds and "full_attention" in kinds and config.sliding_window == 16
    if name == "gemma2":
        assert config.final_logit_softcapping == 30.0 and config.attn_logit_softcapping == 50.0
    if name in ("qwen3", "gemma3", "gemma2"):
        from safetensors import safe_open

        with safe_open(str(Path(path) / "model.safetensors"), "np") as weights:
            names = weights.keys()  # a safetensors handle, not a dict
        assert any("q_norm" in k for k in names) is (name != "gemma2")  # QK norm: Qwen3, Gemma 3


def test_lora_targets_are_read_from_the_model(family):
    from edgemed.train.targets import lora_targets

    name, path = family
    targets, source = lora_targets(path, None)
    fused = {"qkv_proj", "o_proj", "gate_up_proj", "down_proj"}  # Phi-3's fused projections
    split = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert len(targets) == len(set(targets)) and set(targets) == (fused if name == "phi3" else split), targets
    assert "decoder blocks" in source
    assert lora_targets(path, ("q_proj",)) == (("q_proj",), "--target-modules")


def test_training_and_scoring_prompts_are_the_templates_own(family, questions):
    """encode_question (training), the transformers runtime and the tokenizer.json runtimes (ONNX, OpenVINO)
    tokenize edgemed's prompt and target to exactly apply_chat_template's ids, up to the answer and through it."""
    from edgemed.batching import IGNORE, encode_question
    from edgemed.models import load_tokenizer
    from edgemed.prompts import detect_style_for_tokenizer, get_style
    from edgemed.runtimes.folder_tokenizer import FolderTokenizer, read_json

    name, path = family
    tok = load_tokenizer(path)
    style = get_style(detect_style_for_tokenizer(tok, name))
    assert style.name != "plain" and style.turn_end
    folder = FolderTokenizer(Path(path), read_json(Path(path) / "config.json"),
                             read_json(Path(path) / "generation_config.json"))
    for q in questions:
        full, generation = reference(tok, style, q)
        example = encode_question(tok, style, q)
        ids, n_prompt = example["input_ids"], example["labels"].count(IGNORE)
        assert full[:len(ids)] == ids, (name, tok.decode(full), tok.decode(ids))  # training: the template's own
        prompt = style.prompt(q)
        if "once, by the tokenizer" in style.facts.get("bos", ""):
            generation = generation.removeprefix(tok.bos_token)  # the tokenizer adds it to the prompt's ids
        assert prompt.startswith(generation) and prompt[len(generation):].strip() == "Answer:"  # scoring
        assert folder.encode(prompt) == ids[:n_prompt]  # ONNX and OpenVINO runtimes' tokenizer
        assert ids[:2] != [tok.bos_token_id] * 2  # never a doubled BOS
    if name in ("qwen3", "smollm3"):
        assert "<think>\n\n</think>" in style.user_end  # thinking off, as the template renders it
    if name in ("gemma2", "mistral"):
        assert style.facts["system"].startswith("folded into the first user turn")


def test_no_family_is_scored_on_plain(family, plain_folder):
    """A model with a chat template is never scored on the hand-written plain prompt: not the alias, not the same
    model as a plain folder with no lineage (the transformers runtime reads the style from its template), and both
    get the same style."""
    from edgemed.models import load_tokenizer
    from edgemed.prompts import detect_style_for_tokenizer
    from edgemed.runtimes.hf import TransformersRuntime

    name, path = family
    alias_style = detect_style_for_tokenizer(load_tokenizer(path), name)
    runtime = TransformersRuntime(plain_folder, threads=1)
    try:
        assert runtime.chat_template(), name
        assert runtime.prompt_style == alias_style != "plain", (name, runtime.prompt_style)
    finally:
        runtime.close()


@pytest.mark.slow
def test_hf_and_gguf_export_and_verify(family, plain_folder, questions, tmp_path):
    """The suite's one path per family, on the family's model as a plain folder named ``model``: hf and gguf-q8_0
    exported and verified against transformers (delta log p), or refused before any work with the engine's limit
    named (the registry's ArchitectureLimit); llama.cpp tokenizes the recorded prompt to the training ids, and the
    GGUF's own chat template gives the recorded style. (Phi-3's chat markers strip the whitespace after them only
    where the GGUF's name says phi3: the folder's name does not.)"""
    from edgemed.batching import IGNORE, encode_question
    from edgemed.export.run import run_export
    from edgemed.lineage import read_lineage
    from edgemed.models import load_tokenizer
    from edgemed.prompts import detect_style, get_style
    from edgemed.registry import architecture_limit
    from edgemed.runtimes.llamacpp import LlamaCppRuntime

    name, _ = family
    if name == "llama":
        pytest.skip("tiny-random's exports are the session's tiny_exports fixture, tested in test_export.py")
    path = str(plain_folder)
    out = tmp_path / "exports"
    results = run_export(Path(path), ["hf", "gguf-q8_0"], out, threads=2, show_progress=False)
    for r in results:
        limit = architecture_limit(r["format"], Path(path))
        if limit:
            assert r["status"] == "unavailable" and r["reason"] == limit and not Path(r["path"]).exists(), r
        else:
            assert r["status"] == "exported" and r["verification"]["passed"], (name, r["format"], r["reason"])
    if architecture_limit("gguf-q8_0", Path(path)):
        return
    lineage = read_lineage(out / "gguf-q8_0")
    style = get_style(lineage.prompt_style)
    tok = load_tokenizer(path)
    with LlamaCppRuntime(out / "gguf-q8_0", threads=2) as rt:
        assert detect_style(rt.chat_template(), **rt.template_tokens(), model=name) == style.name
        for q in questions:
            example = encode_question(tok, style, q)
            n_prompt = example["labels"].count(IGNORE)
            assert rt.tokenize(style.prompt(q)) == example["input_ids"][:n_prompt], name


@pytest.mark.slow
def test_pipeline_on_a_plain_phi3_folder(tmp_path_factory, cli):
    """`edgemed pipeline --model <folder> --max-steps 2` on a family model given as a plain local folder (Phi-3:
    fused projections, untied head, whitespace-stripping chat markers, in a folder that does not name it): exit 0,
    trained on its own template, hf and gguf-q8_0 exported and verified, benched on that template."""
    from edgemed.builtin_models import build_tiny_family

    folder = tmp_path_factory.mktemp("user-phi3") / "model"
    build_tiny_family(folder, "phi3")
    (folder / "edgemed-origin.json").unlink()
    out = folder.parent / "run"
    proc = cli("pipeline", "--model", folder, "--max-steps", "2", "--batch-size", "2", "--eval-limit", "4",
               "--formats", "hf,gguf-q8_0", "--limit", "4", "--repetitions", "1", "--n-gen", "4", "--threads", "2",
               "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lineage = json.loads((out / "train" / "lineage.json").read_text())
    style = lineage["prompt_style"]
    assert style.startswith("template-"), style  # the folder's own Phi-3 template, never plain
    assert lineage["prompt_template"]["system"].startswith("system role")  # Phi-3's <|system|> turn, as rendered
    exported = {r["format"]: r for r in json.loads((out / "artifacts" / "export.json").read_text())["results"]}
    for fmt in ("hf", "gguf-q8_0"):
        assert exported[fmt]["status"] == "exported" and exported[fmt]["verification"]["passed"], exported[fmt]
    bench = json.loads((out / "bench" / "bench.json").read_text())
    assert {a["format"] for a in bench["artifacts"]} == {"hf", "gguf-q8_0"}
    assert {a["runtime_info"]["prompt_style"] for a in bench["artifacts"]} == {style}


def test_shipped_matrix_covers_every_family_and_info_shows_installed_columns():
    """edgemed info's family rows come from the matrix scripts/dev/family_matrix.py measured: every family, every
    cell exported+verified or refused with the engine named (never a failure), limited to installed formats."""
    from edgemed.families import installed_rows, load_matrix

    matrix = load_matrix()
    assert matrix is not None, "edgemed/data/family_matrix.json is missing: run scripts/dev/family_matrix.py"
    assert {r["family"] for r in matrix["rows"]} == set(ALL)
    for row in matrix["rows"]:
        for fmt, cell in row["cells"].items():
            assert cell["kind"] in ("ok", "verified", "refused"), (row["family"], fmt, cell["text"])
            if cell["kind"] == "refused":
                assert " (" in cell["text"] and "): " in cell["text"]  # "<engine> (<package> <version>): ..."
    formats, rows = installed_rows({"hf", "gguf-q8_0"})
    assert formats == ["hf", "gguf-q8_0"] and len(rows) == len(ALL)
    assert all(set(r["cells"]) == {"hf", "gguf-q8_0"} for r in rows)
