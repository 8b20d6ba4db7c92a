"""The importance matrix of a calibrated GGUF (``gguf-<type>-imatrix``): its text, llama-imatrix, its provenance.

The text is the lineage's training side, never an evaluation question: the recorded training source reloaded with
the recorded settings, narrowed to the recorded training ids (checked against the recorded hash), each question
with its answer in the recorded prompt style, exactly as training saw it. llama.cpp's own ``llama-imatrix`` (built
by :mod:`edgemed.export.gguf.tools`) computes the matrix on the f16 GGUF, special tokens parsed as the tokenizer does.
A matrix computed once is reused by the other calibrated formats of the same source, text and settings (found in
their verified artifacts, sha256 checked). ``--imatrix FILE`` gives one instead; it is checked before any work.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from edgemed.errors import EdgemedError
from edgemed.fsutil import require_regular_file, sha256_file, try_json

DEFAULT_CTX = 512  # llama-imatrix's default chunk size
TEXT_NAME = "imatrix-train-text.txt"  # what llama-imatrix records as its dataset (run in the temp folder)
_COMPUTED: dict[str, tuple[bytes, dict[str, Any]]] = {}  # key -> (matrix, record) computed in this process


# --- the text -------------------------------------------------------------------------------------------------
def training_text(source: Path) -> tuple[str, dict[str, Any]]:
    """(text, provenance) of the model's training questions with their answers in its recorded prompt style."""
    from edgemed.data import load_questions
    from edgemed.export.base import source_lineage
    from edgemed.lineage import questions_sha256
    from edgemed.prompts import get_style

    lineage = source_lineage(source)
    data = lineage.data or {}
    if not lineage.trained or not data.get("source"):
        raise EdgemedError(f"{source} has no training lineage (edgemed did not train it), so there is no training "
                           "text to compute an importance matrix from; pass --imatrix FILE (a llama-imatrix output), "
                           "or export the model merged by 'edgemed merge' from an 'edgemed train' run")
    questions, _ = load_questions(data["source"], data.get("split") or "train", cop_base=data.get("cop_base", "auto"),
                                  skip_bad=bool(data.get("skip_bad_rows")), limit=data.get("limit"))
    if data.get("sha256") and questions_sha256(questions) != data["sha256"]:
        raise EdgemedError(f"the training source {data['source']} changed since the model was trained (its questions "
                           "hash differs from the lineage's); restore it, or pass --imatrix FILE")
    by_id = {q.id: q for q in questions}
    ids = list(lineage.train_ids or [])
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise EdgemedError(f"{len(missing)} training ids of the lineage (first: {missing[0]}) are not in "
                           f"{data['source']}; restore the training source, or pass --imatrix FILE")
    held_out = set(lineage.eval_ids or [])
    chosen = [by_id[i] for i in ids if i not in held_out]
    style = get_style(lineage.prompt_style)
    text = "\n".join(style.prompt(q) + style.target(q) for q in chosen) + "\n"
    return text, {
        "source": data["source"], "split": data.get("split") or "train", "questions": len(chosen),
        "ids_sha256": hashlib.sha256("\n".join(q.id for q in chosen).encode()).hexdigest(),
        "questions_sha256": questions_sha256(chosen), "evaluation_questions": 0,
        "dropped_as_evaluation": len(ids) - len(chosen), "prompt_style": lineage.prompt_style, "with_answers": True,
        "sha256": hashlib.sha256(text.encode()).hexdigest(), "chars": len(text),
    }


def count_tokens(gguf: Path, text: str) -> int:
    """Tokens of `text` as llama-imatrix tokenizes it (the GGUF's vocabulary, BOS as its metadata says, specials
    parsed), from the vocabulary alone; llama.cpp's load log is kept quiet (llama-cpp-python's logger)."""
    import logging

    import llama_cpp

    log = logging.getLogger("llama-cpp-python")
    level = log.level
    log.setLevel(logging.ERROR)
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    try:
        model = llama_cpp.llama_model_load_from_file(str(gguf).encode(), params)
        if not model:
            raise EdgemedError(f"llama.cpp could not read the vocabulary of {gguf}; re-export gguf-f16")
        try:
            data = text.encode("utf-8")
            vocab = llama_cpp.llama_model_get_vocab(model)
            return -llama_cpp.llama_tokenize(vocab, data, len(data), None, 0, True, True)  # -needed when 0 fit
        finally:
            llama_cpp.llama_model_free(model)
    finally:
        log.setLevel(level)


# --- a matrix file ----------------------------------------------------------------------------------------------
def read_imatrix(path: Path) -> dict[str, Any]:
    """Check a llama-imatrix output (a complete GGUF with ``general.type = imatrix`` and its in_sum2/counts
    tensors) and return its metadata and per-tensor widths; a truncated or foreign file raises EdgemedError naming
    it."""
    from edgemed.gguf_header import MAGIC, read_header

    path = Path(path)
    require_regular_file(path, "--imatrix")
    if path.is_dir():
        raise EdgemedError(f"--imatrix {path} is a directory; give the file written by llama-imatrix (imatrix.gguf)")
    if not path.is_file():
        raise EdgemedError(f"--imatrix {path} does not exist; give a file written by llama-imatrix")
    bad = f"{path} is not a llama.cpp importance matrix"
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise EdgemedError(f"{path} cannot be read ({exc.strerror}); check the path") from None
    if not magic:
        raise EdgemedError(f"--imatrix {path} is empty (0 bytes); give a file written by llama-imatrix")
    if magic != MAGIC:
        raise EdgemedError(f"{bad} (it has no GGUF header; if it is llama-imatrix's legacy .dat format, convert it "
                           f"with llama-imatrix --in-file {path.name} -o imatrix.gguf)")
    header = read_header(path, keep_arrays=("imatrix.datasets",))  # truncated: refused naming the file
    kv = header["kv"]
    if kv.get("general.type") != "imatrix":
        raise EdgemedError(f"{bad} (general.type is {kv.get('general.type')!r}, not 'imatrix': a model file?); "
                           "give a file written by llama-imatrix")
    widths = {t["name"].removesuffix(".in_sum2"): t["shape"][0] for t in header["tensors"]
              if t["name"].endswith(".in_sum2")}
    if not widths:
        raise EdgemedError(f"{bad}: it holds no importance data (no .in_sum2 tensors); give a file written by "
                           "llama-imatrix")
    return {"entries": len(widths), "chunk_count": kv.get("imatrix.chunk_count"),
            "chunk_size": kv.get("imatrix.chunk_size"), "datasets": kv.get("imatrix.datasets"), "widths": widths}


def check_fits(path: Path, meta: dict[str, Any], source: Path) -> None:
    """Refuse a matrix made for another model: layers beyond the model's or row widths it does not have."""

    config = try_json(Path(source) / "config.json")
    if not isinstance(config, dict):
        return  # check_source has vetted config.json; nothing to compare against otherwise
    hidden, inter, layers = config.get("hidden_size"), config.get("intermediate_size"), config.get("num_hidden_layers")
    heads = config.get("num_attention_heads") or 1
    head_dim = config.get("head_dim") or (hidden // heads if hidden else None)
    widths = {w for w in (hidden, inter, heads * head_dim if head_dim else None) if w}
    for name, width in meta["widths"].items():
        parts = name.split(".")
        layer = int(parts[1]) if len(parts) > 2 and parts[0] == "blk" and parts[1].isdigit() else None
        if (layers and layer is not None and layer >= layers) or (widths and width not in widths):
            raise EdgemedError(f"--imatrix {path} was computed for another model ({name} has {width} columns; this "
                               f"model has {layers} layers of widths {sorted(widths)}); compute it on this model")


def file_sha256(path: Path) -> str:
    return sha256_file(path)


# --- computing it -----------------------------------------------------------------------------------------------
def compute(f16: Path, dest: Path, out_name: str, text: str, ctx: int, chunks: int | None,
            threads: int | None) -> dict[str, Any]:
    """Run llama-imatrix on `text` over the f16 GGUF into dest/out_name; the settings and the command it ran."""
    from edgemed.export.gguf.run import run_logged
    from edgemed.export.gguf.tools import ensure_tools

    tokens = count_tokens(f16, text)
    if tokens < 2 * ctx:
        raise EdgemedError(f"the training text has {tokens} tokens, fewer than the {2 * ctx} llama-imatrix needs at "
                           f"--imatrix-ctx {ctx}; give a smaller --imatrix-ctx (or train on more questions)")
    tool = ensure_tools(("llama-imatrix",))["llama-imatrix"]
    (dest / TEXT_NAME).write_text(text, encoding="utf-8")
    args = ["-m", str(f16.resolve()), "-f", TEXT_NAME, "-o", out_name, "--output-format", "gguf", "-c", str(ctx),
            "-b", str(ctx), "--chunks", str(chunks if chunks else -1), "--parse-special", "--no-ppl", "-ngl", "0"]
    if threads:
        args += ["-t", str(threads)]
    try:
        run_logged([str(tool), *args], dest / ".imatrix.log", f"llama-imatrix failed on {f16.name}", cwd=dest)
    finally:
        (dest / TEXT_NAME).unlink(missing_ok=True)
    used = min(chunks or tokens // ctx, tokens // ctx)
    shown = ["model-f16.gguf" if a == str(f16.resolve()) else a for a in args]  # no temp paths in the record
    return {"made_by": "llama-imatrix", "tool": str(tool), "command": ["llama-imatrix", *shown],
            "settings": {"ctx": ctx, "chunks": chunks, "batch": ctx, "parse_special": True, "process_output": False,
                         "threads": threads},
            "text_tokens": tokens, "tokens_used": used * ctx}


def reuse_key(text_sha: str, source_sha: str | None, ctx: int, chunks: int | None) -> str:
    """What makes two matrices the same: the model, the text and llama-imatrix's settings (and its version)."""
    from edgemed.export.gguf.tools import llama_cpp_version

    blob = json.dumps([source_sha, text_sha, ctx, chunks, llama_cpp_version()])
    return hashlib.sha256(blob.encode()).hexdigest()


def find_reusable(siblings: Path | None, source_sha: str | None, key: str) -> tuple[Path, dict[str, Any]] | None:
    """A matrix with `key` in a verified calibrated artifact of the same source (file sha256 as recorded)."""
    from edgemed.manifest import try_manifest

    if siblings is None or not siblings.is_dir():
        return None
    for folder in sorted(siblings.glob("gguf-*-imatrix")):
        manifest = try_manifest(folder)
        if manifest is None:
            continue
        try:
            rec = manifest["export"]["imatrix"]
            ok = (manifest.get("status") == "verified" and manifest["source"]["sha256"] == source_sha
                  and rec.get("key") == key)
            path = folder / rec["file"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if ok and path.is_file() and file_sha256(path) == rec.get("sha256"):
            return path, {**rec, "reused_from": folder.name}
    return None


def provide(exporter, source: Path, f16: Path, dest: Path, out_name: str,
            text: tuple[str, dict[str, Any]] | None) -> dict[str, Any]:
    """Place the matrix at dest/out_name (given, reused or computed) and return its manifest record."""
    settings = exporter.settings
    if settings.get("imatrix"):
        given = Path(settings["imatrix"])
        meta = read_imatrix(given)
        shutil.copy2(given, dest / out_name)
        rec: dict[str, Any] = {"made_by": "given (--imatrix)", "given": str(given.resolve()),
                               "text": "unknown: given with --imatrix, not computed from this model's lineage"}
    else:
        assert text is not None
        ctx, chunks = int(settings.get("imatrix_ctx") or DEFAULT_CTX), settings.get("imatrix_chunks")
        key = reuse_key(text[1]["sha256"], exporter.source_sha256, ctx, chunks)
        found = find_reusable(exporter.siblings, exporter.source_sha256, key)
        if found is not None:
            shutil.copy2(found[0], dest / out_name)
            rec = {k: v for k, v in found[1].items() if k not in ("file", "sha256", "bytes", "entries")}
        elif key in _COMPUTED:  # computed by this process for a format that then failed: not computed again
            (dest / out_name).write_bytes(_COMPUTED[key][0])
            rec = dict(_COMPUTED[key][1])
        else:
            rec = {**compute(f16, dest, out_name, text[0], ctx, chunks, exporter.threads), "text": text[1],
                   "key": key}
            _COMPUTED[key] = ((dest / out_name).read_bytes(), dict(rec))
        meta = read_imatrix(dest / out_name)
    rec.update(file=out_name, sha256=file_sha256(dest / out_name), bytes=(dest / out_name).stat().st_size,
               entries=meta["entries"], chunk_size=meta["chunk_size"], chunks=meta["chunk_count"],
               datasets=meta["datasets"])
    return rec


def reach(model: Path, imatrix: Path) -> dict[str, Any]:
    """Which tensors of the quantized file the matrix reached: stored in a type whose quantizer weighs by it and
    named in the matrix; the rest (norms, q8_0/f16 tensors, token embeddings: no matmul input) kept plain."""
    from gguf import GGUFReader

    names = set(read_imatrix(imatrix)["widths"])
    total = weighted = 0
    without: list[str] = []
    for t in GGUFReader(str(model)).tensors:
        n = int(t.n_elements)
        total += n
        if t.tensor_type.name in _weighted_types():
            if t.name in names:
                weighted += n
            else:
                without.append(f"{t.name} ({t.tensor_type.name})")
    return {"param_share": round(weighted / (total or 1), 4), "weighted_types_without_matrix": without}


def _weighted_types() -> frozenset[str]:
    from edgemed.export.gguf.types import WEIGHTED_TENSOR_TYPES

    return WEIGHTED_TENSOR_TYPES
