"""Stage 1 of ``edgemed tune``: candidates exported into a cache keyed by their inputs, and their KL divergence from
the reference measured on a growing subset of the fidelity sequences.

Cache layout (CACHE is shared by every tune of the same merged model, whatever its budgets or --out):

- ``base-<sha>/`` the merged model's ``hf`` (the reference), ``gguf-f16`` and ``onnx`` artifacts, exported once
  through ``run_export``; candidates are built on them (each candidate folder links the one it needs, so the
  exporter finds its sibling as in a normal export run);
- ``reference-<key>/`` the reference's top-k log-probs over the fidelity sequences (``save_reference``), keyed by
  the model, the questions, the prompt style and k;
- ``<key>/<format>/`` one candidate, a normal verified artifact with its manifest (key: the merged model's sha256,
  the format and the settings), and ``<key>/kld-<reference key>.npz``: the per-token measurements of the
  sequences measured so far, so a later pass (or another tune) measures only the sequences it lacks.

Nothing in the cache is trusted on its name alone: an artifact is reused only when it passes
:func:`edgemed.manifest.check_artifact` (every file's recorded size and sha256, the GGUF header's type against the
format); a damaged one is removed with its measurements and built again, and the run says so (``rebuilt`` in its
record, a line on the console).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from edgemed.bench.config import BenchConfig
from edgemed.bench.protocol import runtime_options
from edgemed.bench.tune.space import Candidate
from edgemed.errors import EdgemedError
from edgemed.export.gguf.types import parse_format
from edgemed.fsutil import read_json
from edgemed.manifest import MANIFEST, check_artifact, try_manifest
from edgemed.registry import RUNTIMES, reference_format

MIN_SEQUENCES = 8  # a cluster-robust interval needs a few clusters
# the artifact each runtime's formats build on (the registry's RuntimeSpec.builds_on), by tune's runtime names
BASE_OF = {s.tune_name: s.builds_on for s in RUNTIMES.values() if s.tune_name and s.builds_on}
OPTIONS = runtime_options(BenchConfig())  # the stage-2 bench's default runtime options (llama.cpp decides FA)
SHARED_MATRIX = "gguf-shared-imatrix"  # a calibrated artifact linked in, so its importance matrix is reused


class Stage1:
    """Exports and measurements of one merged model, cached under `cache`."""

    def __init__(self, merged: Path, cache: Path, logs: Path, threads: int, verify: bool, timeout: float):
        from edgemed.export.base import source_fingerprint

        self.merged, self.cache, self.logs = Path(merged), Path(cache), Path(logs)
        self.threads, self.verify, self.timeout = threads, verify, timeout
        self.sha = source_fingerprint(self.merged)["sha256"]
        self.base = self.cache / f"base-{self.sha[:16]}"
        self.reference_dir: Path | None = None
        self.reference_key: str | None = None
        self._verify_reference = None
        self.rebuilt: dict[str, str] = {}  # cache entry -> why it was damaged (it was built again)
        self._checked: set[Path] = set()  # entries checked by this run (the base is reused by every candidate)

    # --- exports ------------------------------------------------------------------------------------------------
    def base_artifact(self, fmt: str) -> Path:
        """The merged model's `fmt` artifact in the base folder (exported and verified once)."""
        from edgemed.export.run import run_export

        self.check_entry(self.base / fmt)
        results = run_export(self.merged, [fmt], self.base, verify=self.verify, threads=self.threads,
                             show_progress=False, reference=self.verify_reference(), replace_stale=True)
        r = results[0]
        if r["status"] not in ("exported", "skipped"):
            raise EdgemedError(f"the {fmt} artifact every {fmt.split('-')[0]} candidate builds on could not be made: "
                               f"{r['reason']}")
        return self.base / fmt

    def export(self, cand: Candidate) -> dict[str, Any]:
        """Export one candidate into its cache folder (or find it there); the record for tune.json."""
        from edgemed.bench.artifacts import weights_record
        from edgemed.export.run import run_export
        from edgemed.fsutil import dir_size
        from edgemed.manifest import read_manifest

        key = cand.key(self.sha)
        folder = self.cache / key
        folder.mkdir(parents=True, exist_ok=True)
        try:
            self._link(folder / BASE_OF[cand.runtime], self.base_artifact(BASE_OF[cand.runtime]))
        except EdgemedError as exc:
            return {"status": "failed", "reason": str(exc), "key": key}
        gguf = parse_format(cand.format)
        if gguf is not None and gguf.calibrated:
            donor = self._matrix_donor(exclude=folder)
            if donor is not None:
                self._link(folder / SHARED_MATRIX, donor)
        settings = {cand.format: cand.settings} if cand.settings else None
        damaged = self.check_entry(folder / cand.format)
        r = run_export(self.merged, [cand.format], folder, verify=self.verify, threads=self.threads,
                       settings=settings, show_progress=False, reference=self.verify_reference(),
                       replace_stale=True)[0]
        if r["status"] not in ("exported", "skipped"):
            return {"status": "failed", "reason": f"export {r['status']}: {r['reason']}", "key": key,
                    **({"rebuilt": damaged} if damaged else {})}
        path = folder / cand.format
        try:
            check_artifact(path)  # what stage 1 and 2 measure is what the manifest says
        except EdgemedError as exc:
            return {"status": "failed", "reason": f"the exported artifact does not check out: {exc}", "key": key}
        self._checked.add(path)
        details = read_manifest(path).get("export", {})
        return {"status": "exported", "key": key, "path": str(path), "cached": r["status"] == "skipped",
                **({"rebuilt": damaged} if damaged else {}),
                "export_seconds": r.get("seconds"), "size_bytes": dir_size(path),
                "weights_sha256": weights_record(path, cand.format).get("sha256"),
                "bits_per_weight": details.get("bits_per_weight"),
                "tensor_types": {k: v.get("tensors") for k, v in (details.get("types") or {}).items()}}

    def check_entry(self, entry: Path) -> str | None:
        """Check a cache entry (an artifact folder) before it is reused: None when it is absent or checks out against
        its manifest (:func:`edgemed.manifest.check_artifact`); else it is removed, with the stage-1 measurements
        made on it, so that it is built again, and the reason is returned (and said on the console)."""
        entry = Path(entry)
        if entry in self._checked or not (entry.exists() or entry.is_symlink()):
            return None
        try:
            if entry.is_symlink() or not entry.is_dir():
                raise EdgemedError(f"{entry} is not an artifact folder")
            if not (entry / MANIFEST).is_file():
                raise EdgemedError(f"{entry} has no {MANIFEST} (an export that never finished, or not edgemed's)")
            manifest = check_artifact(entry)
            if not (manifest or {}).get("files"):
                raise EdgemedError(f"{entry / MANIFEST} lists no files with their sha256, so they cannot be checked")
        except EdgemedError as exc:
            why = str(exc)
            from edgemed.console import err_console

            err_console.print(f"tune: the cached {entry.name} in {entry.parent} is damaged ({why}): removing it "
                              "and building it again", markup=False, highlight=False)
            if entry.is_symlink() or entry.is_file():
                entry.unlink()
            else:
                shutil.rmtree(entry)
            for rows in entry.parent.glob("kld-*.npz"):  # measured on the damaged file
                rows.unlink(missing_ok=True)
            self.rebuilt[str(entry)] = why
            return why
        self._checked.add(entry)
        return None

    def verify_reference(self):
        """The merged model's answers on the verification prompts, computed once per tune (not once per candidate:
        loading the merged model in transformers is most of a GGUF candidate's verification)."""
        if not self.verify:
            return None
        if self._verify_reference is None:
            from edgemed.export.base import source_lineage
            from edgemed.export.verify import Reference

            self._verify_reference = Reference.compute(self.merged, source_lineage(self.merged).prompt_style,
                                                       self.threads)
        return self._verify_reference

    @staticmethod
    def _link(link: Path, target: Path) -> None:
        if link.is_symlink() and link.resolve() == target.resolve():
            return
        if link.is_symlink():
            link.unlink()
        if not link.exists():
            os.symlink(os.path.relpath(target, link.parent), link)

    def _matrix_donor(self, exclude: Path) -> Path | None:
        """A verified calibrated candidate of this model already in the cache (its matrix is reused when its key
        matches; the exporter checks that)."""
        for folder in sorted(self.cache.glob("*/gguf-*-imatrix")):
            if folder.is_symlink() or folder.parent == exclude:
                continue
            m = try_manifest(folder)
            if m is None:
                continue
            try:
                check_artifact(folder)  # a damaged donor gives no matrix
            except EdgemedError:
                continue
            if m.get("status") == "verified" and (m.get("source") or {}).get("sha256") == self.sha:
                return folder
        return None

    # --- the reference ------------------------------------------------------------------------------------------
    def store_reference(self, questions: list, top_k: int = 1024) -> dict[str, Any]:
        """The reference's log-probs over the questions' fidelity sequences, stored once per model and questions."""
        from dataclasses import asdict

        hf = self.base_artifact(reference_format())
        ids = [q.id for q in questions]
        self.reference_key = hashlib.sha256(json.dumps([self.sha, ids, top_k]).encode()).hexdigest()[:16]
        self.reference_dir = self.cache / f"reference-{self.reference_key}"
        damaged = _reference_damage(self.reference_dir) if (self.reference_dir / "self.json").is_file() else None
        if damaged:
            from edgemed.console import err_console

            err_console.print(f"tune: the cached reference {self.reference_dir} is damaged ({damaged}): removing it "
                              "and computing it again", markup=False, highlight=False)
            shutil.rmtree(self.reference_dir)
            for rows in self.cache.glob(f"*/kld-{self.reference_key}.npz"):
                rows.unlink(missing_ok=True)
            self.rebuilt[str(self.reference_dir)] = damaged
        if not (self.reference_dir / "self.json").is_file():
            job = {"mode": "store", "artifact": str(hf), "reference": str(self.reference_dir), "top_k": top_k,
                   "questions": [asdict(q) for q in questions], "threads": self.threads,
                   "options": OPTIONS}
            self._child(job, "reference")
        meta = read_json(self.reference_dir / "meta.json", "reference record",
                         f"delete {self.reference_dir} and re-run edgemed tune", want_object=True)
        return {"path": str(self.reference_dir), "artifact": str(hf), "sequences": len(meta["sequences"]),
                "tokens": meta["rows"], "top_k": meta["top_k"], "key": self.reference_key}

    def _child(self, job: dict[str, Any], name: str) -> None:
        from edgemed.fsutil import atomic_write_json
        from edgemed.process.child import python_module, run_child

        self.logs.mkdir(parents=True, exist_ok=True)
        job_path = atomic_write_json(self.logs / f"{name}.job.json", job)
        outcome = run_child(python_module("edgemed.bench.tune.worker", str(job_path)), self.logs / f"{name}.log",
                            timeout_s=self.timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        if not outcome.ok:
            raise EdgemedError(f"{outcome.why()} (log: {self.logs / f'{name}.log'})")

    # --- KL divergence on a subset ------------------------------------------------------------------------------
    def measure(self, cand: Candidate, path: Path, fraction: float) -> dict[str, Any]:
        """KLD and top-1 agreement of the candidate over (at least) `fraction` of the fidelity sequences, with
        their 95% cluster-robust intervals; sequences measured before are not measured again."""
        from edgemed.bench.measure.fidelity import fidelity_summary, load_reference
        from edgemed.bench.tune.rules import cluster_interval

        assert self.reference_dir is not None, "store_reference first"
        meta, ref = load_reference(self.reference_dir)
        n = len(meta["sequences"])
        order = np.random.default_rng(0).permutation(n)
        want = order[: max(min(n, MIN_SEQUENCES), math.ceil(fraction * n))]
        rows_path = self.cache / cand.key(self.sha) / f"kld-{self.reference_key}.npz"
        have = _load_rows(rows_path)
        missing = sorted(set(int(i) for i in want) - set(int(i) for i in np.unique(have["seq"])))
        if missing:
            part = rows_path.with_name(f".{rows_path.stem}.part.npz")
            job = {"mode": "compare", "artifact": str(path), "reference": str(self.reference_dir),
                   "sequences": missing, "rows": str(part), "threads": self.threads, "options": OPTIONS}
            self._child(job, cand.id)
            new = _load_rows(part)
            have = {k: np.concatenate([have[k], new[k]]) for k in have}
            tmp = rows_path.with_name(f".{rows_path.stem}.tmp.npz")
            np.savez(tmp, **have)
            tmp.replace(rows_path)
            part.unlink(missing_ok=True)
        seq = have["seq"]
        lp_target = np.asarray(ref["target_logp"], dtype=np.float64)[have["row"]]
        s = fidelity_summary(have["kld"], have["same"].astype(bool), have["lq_target"], lp_target, seq,
                             meta["top_k"], float(have["tail"].mean()))
        lo, hi = cluster_interval(have["same"].astype(np.float64), seq)
        return {"fraction": round(len(np.unique(seq)) / n, 4), "sequences": s["sequences"], "tokens": s["tokens"],
                "kld_mean": s["kld_mean"], "kld_ci": s["kld_ci"], "kld_p99": s["kld_p99"],
                "top1": s["top1_agreement"], "top1_ci": [lo, hi], "ppl_ratio": s["ppl_ratio"],
                "measured_now": len(missing)}


def _reference_damage(folder: Path) -> str | None:
    """What is wrong with a stored reference (None: its record and arrays read and agree on the row count)."""
    from edgemed.bench.measure.fidelity import load_reference

    try:
        meta, arrays = load_reference(folder)
        rows = meta["rows"]
        if not isinstance(meta.get("sequences"), list) or not isinstance(rows, int):
            return "its meta.json lacks sequences or rows"
        short = [name for name, a in arrays.items() if name != "tail_idx" and name != "tail_logp" and len(a) != rows]
        if short:
            return f"{', '.join(short)} hold(s) another number of rows than meta.json's {rows}"
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return f"it cannot be read: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return None


_ROW_KEYS = ("seq", "row", "kld", "bound", "same", "lq_target", "tail")


def _load_rows(path: Path) -> dict[str, np.ndarray]:
    empty = {"seq": np.zeros(0, np.int32), "row": np.zeros(0, np.int64), "same": np.zeros(0, bool)}
    if not path.is_file():
        return {k: empty.get(k, np.zeros(0)) for k in _ROW_KEYS}
    try:
        with np.load(path) as data:
            return {k: data[k] for k in _ROW_KEYS}
    except (OSError, ValueError, KeyError):  # a damaged file is measured again
        return {k: empty.get(k, np.zeros(0)) for k in _ROW_KEYS}
