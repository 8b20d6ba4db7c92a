#!/usr/bin/env python3
"""Cross-check edgemed's fidelity numbers (KLD, top-1 agreement, PPL vs gguf-f16) against llama-perplexity.

llama.cpp side: ``llama-perplexity -m F16 -f TEXT -c CTX --chunks K --kl-divergence-base BASE.kld`` once, then
``llama-perplexity -m Q --kl-divergence-base BASE.kld --kl-divergence -c CTX`` for each quantized GGUF; its
printed statistics are parsed. edgemed side: ``edgemed bench F16 Q... --reference gguf-f16 --fidelity-text TEXT
--fidelity-ctx CTX``, whose bench.json holds a ``fidelity`` record per artifact. Both are printed side by side
with the relative difference of mean KLD per pair.

What llama-perplexity scores (tools/perplexity/perplexity.cpp of the vendored llama.cpp): the text is tokenized
once (BOS prepended when the GGUF asks for it; special tokens not parsed), cut into consecutive chunks of CTX
tokens (at most K; the rest is dropped); the first token of every chunk is replaced by BOS when the GGUF's
add_bos_token is true; in each chunk only the second half is scored: the logits at positions CTX/2 .. CTX-2 against
the tokens at CTX/2+1 .. CTX-1, i.e. CTX-1-CTX/2 tokens per chunk.

The TEXT default is built at run time from MedMCQA validation questions (read by path, never copied into the
repo) until it holds enough tokens for K chunks of CTX tokens.

Exit codes: 0 every run worked, 1 some run failed, 2 bad input.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from crosscheck_engines import BadInput, artifacts_by_format, gguf_file  # this folder

from edgemed.fsutil import atomic_write_text
from edgemed.runtimes.llamacpp import cpu_has_amx

REPO = Path(__file__).resolve().parents[2]  # scripts/dev/ -> the repo
BUILD_SCRIPT = REPO / "scripts" / "build_llama_tools.sh"
MEDMCQA = REPO.parent / "shared" / "data" / "medmcqa" / "validation.jsonl"
BASE_FORMAT = "gguf-f16"
DEFAULT_TARGETS = ("gguf-q8_0", "gguf-q4_k_m")


# --------------------------------------------------------------------------------------------------------------
# text
# --------------------------------------------------------------------------------------------------------------
def medmcqa_records(path: Path) -> list[str]:
    """One plain-text block per MedMCQA row: question, options, answer, explanation (when the row has one)."""
    blocks = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise BadInput(f"{path}:{n} is not JSON") from None
        if not isinstance(row, dict) or not row.get("question"):
            continue
        opts = [str(row.get(k) or "").strip() for k in ("opa", "opb", "opc", "opd")]
        text = [f"Question: {str(row['question']).strip()}"]
        text += [f"{letter}. {o}" for letter, o in zip("ABCD", opts, strict=True) if o]
        cop = row.get("cop")
        if isinstance(cop, int) and 0 <= cop < 4 and opts[cop]:
            text.append(f"Answer: {'ABCD'[cop]}. {opts[cop]}")
        if row.get("exp"):
            text.append(f"Explanation: {str(row['exp']).strip()}")
        blocks.append("\n".join(text))
    return blocks


class GgufVocab:
    """The GGUF's tokenizer through llama.cpp (vocab only): token counts as llama-perplexity tokenizes, add_bos."""

    def __init__(self, gguf: Path):
        import llama_cpp.llama_cpp as lib
        from llama_cpp._utils import suppress_stdout_stderr

        self.lib = lib
        params = lib.llama_model_default_params()
        params.vocab_only = True
        with suppress_stdout_stderr(disable=False):
            self.model = lib.llama_model_load_from_file(str(gguf).encode(), params)
        if not self.model:
            raise BadInput(f"llama.cpp could not load the vocabulary of {gguf}")
        self.vocab = lib.llama_model_get_vocab(self.model)
        self.add_bos = bool(lib.llama_vocab_get_add_bos(self.vocab))

    def count(self, text: str) -> int:
        """Tokens of `text` with add_special=True, parse_special=False (common_tokenize(ctx, text, true))."""
        data = text.encode("utf-8")
        n = self.lib.llama_tokenize(self.vocab, data, len(data), None, 0, True, False)
        return -n if n < 0 else n

    def close(self) -> None:
        if self.model:
            self.lib.llama_model_free(self.model)
            self.model = None


def open_vocab(gguf: Path) -> GgufVocab | None:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return None
    return GgufVocab(gguf)


def build_text(source: Path, dest: Path, need_tokens: int, count: Any) -> dict[str, Any]:
    """Write MedMCQA blocks to `dest` until they tokenize to `need_tokens` (or all rows are used)."""
    if not source.is_file():
        raise BadInput(f"MedMCQA file {source} not found (pass --medmcqa or --text)")
    blocks = medmcqa_records(source)
    if not blocks:
        raise BadInput(f"{source} has no rows with a question")
    chars_per_token = 3.0  # first guess, refined by counting
    used = 0
    text = ""
    while True:
        target_chars = int(need_tokens * chars_per_token * 1.1)
        while used < len(blocks) and len(text) < target_chars:
            text += blocks[used] + "\n\n"
            used += 1
        tokens = count(text) if count else int(len(text) / 4.0)
        if tokens >= need_tokens or used >= len(blocks):
            break
        chars_per_token = len(text) / max(tokens, 1)
    text = text.rstrip("\n")  # llama-perplexity's -f drops one trailing newline; with none, both read the same text
    tokens = count(text) if count else tokens
    dest.write_text(text, encoding="utf-8")
    return {"path": str(dest), "source": str(source), "rows": used, "chars": len(text),
            "tokens": tokens, "tokens_counted_with": "llama.cpp vocab" if count else "estimate (4 chars/token)"}


# --------------------------------------------------------------------------------------------------------------
# llama-perplexity
# --------------------------------------------------------------------------------------------------------------
NUM = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|inf)"
PM = rf"{NUM}\s*(?:±|\+/-)\s*{NUM}"
PATTERNS: dict[str, str] = {
    "ppl_q": rf"Mean PPL\(Q\)\s*:\s*{PM}",
    "ppl_base": rf"Mean PPL\(base\)\s*:\s*{PM}",
    "ln_ppl_ratio": rf"Mean ln\(PPL\(Q\)/PPL\(base\)\)\s*:\s*{PM}",
    "kld_mean": rf"Mean\s+KLD:\s*{PM}",
    "kld_max": rf"Maximum KLD:\s*{NUM}",
    "kld_p99": rf"99\.0%\s+KLD:\s*{NUM}",
    "kld_median": rf"Median\s+KLD:\s*{NUM}",
    "rms_dp_pct": rf"RMS Δp\s*:\s*{PM}\s*%",
    "same_top_pct": rf"Same top p:\s*{PM}\s*%",
    "final_ppl": rf"Final estimate: PPL = {PM}",
}
RUN_LINE = re.compile(r"(?:calculating perplexity|computing) over (\d+) chunks, n_ctx=(\d+), batch_size=(\d+), "
                      r"n_seq=(\d+)")


def parse_perplexity(text: str) -> dict[str, Any]:
    """The statistics llama-perplexity printed ({name: value} or {name: [value, uncertainty]})."""
    out: dict[str, Any] = {}
    for name, pat in PATTERNS.items():
        m = re.search(pat, text)
        if m:
            vals = [float(g) for g in m.groups()]
            out[name] = vals[0] if len(vals) == 1 else vals
    m = RUN_LINE.search(text)
    if m:
        out.update(zip(("chunks", "n_ctx", "n_batch", "n_seq"), map(int, m.groups()), strict=True))
    m = re.search(r"Flash Attention (enabled|not supported)", text) or re.search(r"flash_attn\s*=\s*(\w+)", text)
    if m:
        out["flash_attn"] = {"not supported": "disabled"}.get(m.group(1), m.group(1))
    for key in ("n_seq_max", "n_ubatch", "kv_unified"):
        m = re.search(rf"llama_context:\s+{key}\s*=\s*(\S+)", text)
        if m:
            out[key] = m.group(1)
    m = re.search(r"system_info: (.*)", text)
    if m:
        out["system_info"] = m.group(1).strip()
    return out


def run_perplexity(cmd: list[str], timeout: float) -> dict[str, Any]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout,
                          errors="replace")
    res: dict[str, Any] = {"cmd": cmd, "rc": proc.returncode, "wall_s": round(time.perf_counter() - start, 1),
                           **parse_perplexity(proc.stdout)}
    if proc.returncode != 0:
        res["error"] = f"llama-perplexity exit {proc.returncode}: {proc.stdout.strip()[-400:]}"
    res["log_tail"] = proc.stdout.strip()[-3000:]
    return res


def resolve_perplexity(given: Path | None) -> Path:
    if given is not None:
        if not (given.is_file() and os.access(given, os.X_OK)):
            raise BadInput(f"--llama-perplexity {given} is not an executable file")
        return given
    print(f"crosscheck_kld: building llama-perplexity with {BUILD_SCRIPT.relative_to(REPO)} (cached after the "
          "first run)", file=sys.stderr)
    proc = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or len(lines) < 2:
        raise BadInput(f"{BUILD_SCRIPT.name} failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}")
    return Path(lines[-1])


# --------------------------------------------------------------------------------------------------------------
# artifacts and edgemed
# --------------------------------------------------------------------------------------------------------------
def run_edgemed(exe: str, folders: list[Path], text: Path, a: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    cmd = [exe, "bench", *map(str, folders), "--reference", BASE_FORMAT, "--fidelity-text", str(text),
           "--fidelity-ctx", str(a.ctx), "--fidelity-chunks", str(a.chunks), "--threads", str(a.threads),
           "--limit", "8", "--out", str(out_dir), *shlex.split(a.edgemed_args)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=a.timeout)
    res: dict[str, Any] = {"cmd": cmd, "rc": proc.returncode, "wall_s": round(time.perf_counter() - start, 1),
                           "bench_json": str(out_dir / "bench.json"), "fidelity": {}}
    path = out_dir / "bench.json"
    if not path.is_file():
        res["error"] = f"edgemed bench exit {proc.returncode}, no bench.json: {proc.stderr.strip()[-400:]}"
        return res
    try:
        arts = json.loads(path.read_text())["artifacts"]
    except (ValueError, KeyError, TypeError) as exc:
        res["error"] = f"{path}: no artifacts list ({exc})"
        return res
    for art in arts:
        fid = art.get("fidelity")
        if isinstance(fid, dict):
            res["fidelity"][str(art.get("format") or art.get("name"))] = fid
    if not res["fidelity"]:
        res["error"] = f"{path}: no artifact has a fidelity record (exit {proc.returncode})"
    return res


# --------------------------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------------------------
def _v(x: Any) -> float | None:
    if isinstance(x, list | tuple):
        x = x[0] if x else None
    return float(x) if isinstance(x, int | float) else None


def _pm(x: Any, scale: float = 1.0, spec: str = ".6f") -> str:
    if isinstance(x, list | tuple) and len(x) == 2:
        return f"{x[0] * scale:{spec}} ± {x[1] * scale:{spec}}"
    v = _v(x)
    return "—" if v is None else f"{v * scale:{spec}}"


def pair_rows(target: str, llama: dict[str, Any], fid: dict[str, Any] | None) -> list[tuple[str, str, str]]:
    """(metric, llama.cpp, edgemed) rows of one pair."""
    fid = fid or {}
    ci = fid.get("kld_ci")
    top1 = _v(fid.get("top1_agreement"))
    if top1 is not None and top1 <= 1.0:
        top1 *= 100.0
    return [
        ("tokens scored", str(llama.get("tokens_scored", "—")), str(fid.get("tokens", "—"))),
        ("mean KLD (± s.e. / CI)", _pm(llama.get("kld_mean")),
         f"{_pm(fid.get('kld_mean'))}" + (f" [{ci[0]:.6f}, {ci[1]:.6f}]" if isinstance(ci, list | tuple)
                                          and len(ci) == 2 else "")),
        ("median KLD", _pm(llama.get("kld_median")), _pm(fid.get("kld_median"))),
        ("p99 KLD", _pm(llama.get("kld_p99")), _pm(fid.get("kld_p99"))),
        ("max KLD", _pm(llama.get("kld_max")), _pm(fid.get("kld_max"))),
        ("same top-1 (%)", _pm(llama.get("same_top_pct"), spec=".3f"), "—" if top1 is None else f"{top1:.3f}"),
        (f"PPL({target})", _pm(llama.get("ppl_q"), spec=".4f"), _pm(fid.get("ppl"), spec=".4f")),
        (f"PPL({BASE_FORMAT})", _pm(llama.get("ppl_base"), spec=".4f"), _pm(fid.get("ppl_reference"), spec=".4f")),
    ]


def render(doc: dict[str, Any]) -> str:
    s = doc["settings"]
    base = doc["base_run"]
    lines = [
        "# edgemed fidelity vs llama-perplexity (KL divergence against gguf-f16)", "",
        f"text: {doc['text'].get('path')} ({doc['text'].get('tokens', '?')} tokens); ctx {s['ctx']}, chunks "
        f"{s['chunks']} requested / {base.get('chunks', '?')} run (n_batch {base.get('n_batch', '?')}, n_seq "
        f"{base.get('n_seq', '?')}); threads {s['threads']}; repack {s['repack']}; flash_attn {s['flash_attn']} -> "
        f"{base.get('flash_attn', '?')}; add_bos {doc.get('add_bos')}; "
        "scored per chunk: "
        f"positions {s['ctx'] // 2 + 1}..{s['ctx'] - 1} ({s['ctx'] - 1 - s['ctx'] // 2} tokens)",
        f"llama-perplexity PPL({BASE_FORMAT}) from float logits: {_pm(base.get('final_ppl'), spec='.4f')}", "",
    ]
    for p in doc["pairs"]:
        rel = p.get("kld_rel_diff")
        lines += [f"## {p['target']} vs {BASE_FORMAT}: mean KLD edgemed/llama.cpp - 1 = "
                  + ("—" if rel is None else f"{rel * 100:+.2f}%"), "",
                  "| metric | llama.cpp | edgemed |", "| --- | ---: | ---: |"]
        lines += [f"| {m} | {x} | {y} |" for m, x, y in pair_rows(p["target"], p["llama"], p.get("edgemed"))]
        if p["llama"].get("error"):
            lines.append(f"\nllama.cpp error: {p['llama']['error'][:300]}")
        lines.append("")
    if doc.get("edgemed", {}).get("error"):
        lines.append(f"edgemed: {doc['edgemed']['error'][:300]}")
    return "\n".join(lines) + "\n"


def main_kld(a: argparse.Namespace) -> int:
    if a.ctx < 16 or a.ctx % 2:
        raise BadInput(f"--ctx must be an even number >= 16, got {a.ctx}")
    if a.chunks < 1 or a.threads < 1:
        raise BadInput("--chunks and --threads must be positive")
    present = artifacts_by_format(Path(a.path))
    if BASE_FORMAT not in present:
        raise BadInput(f"{a.path} has no {BASE_FORMAT} artifact (found: {', '.join(present) or 'none'})")
    targets = [t for t in (a.targets.split(",") if a.targets else DEFAULT_TARGETS) if t]
    for t in targets:
        if not t.startswith("gguf-") or t == BASE_FORMAT:
            raise BadInput(f"--targets: {t} is not a quantized GGUF format")
    missing = [t for t in targets if t not in present]
    if a.targets and missing:
        raise BadInput(f"--targets: no {', '.join(missing)} artifact in {a.path}")
    targets = [t for t in targets if t in present]
    if not targets:
        raise BadInput(f"{a.path} has none of {', '.join(DEFAULT_TARGETS)}")
    base_gguf = gguf_file(present[BASE_FORMAT])
    target_gguf = {t: gguf_file(present[t]) for t in targets}
    if a.text and not Path(a.text).is_file():
        raise BadInput(f"--text {a.text} is not a file")
    if not a.text and not Path(a.medmcqa).is_file():
        raise BadInput(f"MedMCQA file {a.medmcqa} not found (pass --medmcqa or --text)")
    exe = resolve_perplexity(a.llama_perplexity)
    edgemed = a.edgemed or str(REPO / ".venv" / "bin" / "edgemed")
    if not a.engine_only and not os.access(edgemed, os.X_OK):
        raise BadInput(f"edgemed CLI {edgemed} not found; run scripts/setup.sh or pass --edgemed")

    out_dir = Path(a.out) if a.out else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="crosscheck_kld.")))
        keep = out_dir if out_dir else tmp
        vocab = open_vocab(base_gguf)
        if vocab:
            stack.callback(vocab.close)
        if a.text:
            text_info: dict[str, Any] = {"path": str(Path(a.text).resolve()), "source": "given"}
            if vocab:
                text_info["tokens"] = vocab.count(Path(a.text).read_text(encoding="utf-8", errors="replace"))
        else:
            text_info = build_text(Path(a.medmcqa), keep / "medmcqa-validation.txt", a.chunks * a.ctx + 1,
                                   vocab.count if vocab else None)
            if text_info["tokens"] < 2 * a.ctx:
                raise BadInput(f"{a.medmcqa} gives only {text_info['tokens']} tokens; llama-perplexity needs "
                               f"{2 * a.ctx} for --ctx {a.ctx}")
        text = Path(text_info["path"])
        base_kld = (out_dir if (out_dir and a.keep_base) else tmp) / "base.kld"
        repack = a.repack == "on" or (a.repack == "auto" and not cpu_has_amx())
        common = ["-c", str(a.ctx), "-t", str(a.threads), "-tb", str(a.threads), *([] if repack else ["--no-repack"]),
                  "-fa", a.flash_attn, "-lv", "4"]  # -lv 4: the context settings and how -fa auto resolved
        print(f"crosscheck_kld: base logits of {base_gguf.name} -> {base_kld}", file=sys.stderr, flush=True)
        base_run = run_perplexity([str(exe), "-m", str(base_gguf), "-f", str(text), *common, "--chunks",
                                   str(a.chunks), "--kl-divergence-base", str(base_kld)], a.timeout)
        pairs: list[dict[str, Any]] = []
        for t in targets:
            print(f"crosscheck_kld: KLD of {t} vs {BASE_FORMAT}", file=sys.stderr, flush=True)
            if base_run.get("error"):
                llama = {"error": "base run failed"}
            else:
                llama = run_perplexity([str(exe), "-m", str(target_gguf[t]), *common, "--chunks", str(a.chunks),
                                        "--kl-divergence-base", str(base_kld), "--kl-divergence"], a.timeout)
                if llama.get("chunks"):
                    llama["tokens_scored"] = llama["chunks"] * (a.ctx - 1 - a.ctx // 2)
                if not llama.get("error") and "kld_mean" not in llama:
                    llama["error"] = "no 'Mean KLD' line in llama-perplexity's output"
            pairs.append({"target": t, "llama": llama})
        edg: dict[str, Any] = {}
        if not a.engine_only:
            print("crosscheck_kld: edgemed bench --fidelity-text", file=sys.stderr, flush=True)
            work = (out_dir / "edgemed-run") if out_dir else tmp / "edgemed-run"
            try:
                edg = run_edgemed(edgemed, [present[BASE_FORMAT], *(present[t] for t in targets)], text, a, work)
            except subprocess.TimeoutExpired:
                edg = {"error": f"edgemed bench timed out after {a.timeout:.0f}s", "fidelity": {}}
            for p in pairs:
                fid = edg.get("fidelity", {}).get(p["target"])
                p["edgemed"] = fid
                mine, theirs = _v((fid or {}).get("kld_mean")), _v(p["llama"].get("kld_mean"))
                p["kld_rel_diff"] = (mine / theirs - 1.0) if mine is not None and theirs else None
                if fid and p["llama"].get("tokens_scored") and fid.get("tokens") != p["llama"]["tokens_scored"]:
                    p["warning"] = (f"edgemed scored {fid.get('tokens')} tokens, llama.cpp "
                                    f"{p['llama']['tokens_scored']}: not the same positions")

    doc = {
        "settings": {"ctx": a.ctx, "chunks": a.chunks, "threads": a.threads, "llama_perplexity": str(exe),
                     "artifacts_dir": str(Path(a.path).resolve()), "targets": targets,
                     "engine_only": a.engine_only, "repack": repack, "repack_rule": a.repack,
                     "flash_attn": a.flash_attn, "edgemed_args": a.edgemed_args},
        "text": text_info, "add_bos": vocab.add_bos if vocab else None,
        "base_run": {k: v for k, v in base_run.items() if k != "log_tail" or base_run.get("error")},
        "pairs": pairs, "edgemed": {k: v for k, v in edg.items() if k != "fidelity"},
    }
    report = render(doc)
    print(report)
    for p in pairs:
        if p.get("warning"):
            print(f"crosscheck_kld: warning: {p['target']}: {p['warning']}", file=sys.stderr)
    if out_dir:
        atomic_write_text(out_dir / "crosscheck_kld.json", json.dumps(doc, indent=2) + "\n")
        atomic_write_text(out_dir / "crosscheck_kld.md", report)
        print(f"crosscheck_kld: wrote {out_dir / 'crosscheck_kld.json'} and .md", file=sys.stderr)
    failed = base_run.get("error") or any(p["llama"].get("error") for p in pairs) or (
        not a.engine_only and edg.get("error"))
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("path", help="ARTIFACTS_DIR holding gguf-f16 and gguf-q8_0 / gguf-q4_k_m artifact folders")
    p.add_argument("--text", help="plain-text file to score (default: built from MedMCQA validation questions)")
    p.add_argument("--medmcqa", default=str(MEDMCQA), help=f"MedMCQA jsonl for the default text (default {MEDMCQA})")
    p.add_argument("--ctx", type=int, default=512, help="context (chunk) length in tokens (default 512)")
    p.add_argument("--chunks", type=int, default=16, help="chunks of --ctx tokens to score (default 16)")
    p.add_argument("--threads", type=int, default=2, help="threads (default 2)")
    p.add_argument("--targets", help=f"comma list of quantized GGUF formats (default {','.join(DEFAULT_TARGETS)})")
    p.add_argument("--repack", choices=("auto", "on", "off"), default="auto",
                   help="llama.cpp weight repacking; auto = edgemed's rule: off on CPUs reporting AMX, where the "
                        "repacked kernels crash (default auto)")
    p.add_argument("--flash-attn", choices=("auto", "on", "off"), default="auto",
                   help="llama-perplexity's -fa (default auto, llama.cpp's default: enabled on CPU; edgemed's "
                        "llama-cpp-python context runs with it off)")
    p.add_argument("--llama-perplexity", type=Path, help="binary (default: from scripts/build_llama_tools.sh)")
    p.add_argument("--edgemed", help="edgemed executable (default: .venv/bin/edgemed)")
    p.add_argument("--edgemed-args", default="", help="extra 'edgemed bench' arguments, e.g. '--fidelity-top-k 4096'")
    p.add_argument("--engine-only", action="store_true", help="run the llama.cpp side only")
    p.add_argument("--keep-base", action="store_true", help="keep base.kld (large: chunks x ctx/2 x vocab x 2 B) "
                                                            "in --out")
    p.add_argument("--out", help="write crosscheck_kld.json and .md (and the text, edgemed's run) here")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds one run may take (default 3600)")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    try:
        return main_kld(a)
    except BadInput as exc:
        print(f"crosscheck_kld: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
