"""Export a merged model to several formats, registry-driven; each artifact placed only once it verified.

For every format: check the exporter can run here, skip it when ``DIR/<format>`` already holds a verified
export of the same source (sha256 over the merged folder's files) with the same settings, else export into
a temp folder beside it, write ``edgemed.json``, verify it with its own runtime, and rename it into place.
A format that fails is recorded and the others go on; ``export.json`` in DIR lists every outcome.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from edgemed.errors import EdgemedError
from edgemed.export.base import Exporter, check_source, source_fingerprint, source_lineage
from edgemed.fsutil import atomic_dir, atomic_write_json, dir_size
from edgemed.manifest import MANIFEST, file_entries, new_manifest, try_manifest
from edgemed.registry import FORMATS, FormatSpec, architecture_limit, expand_formats, get_format, load_object

SUMMARY = "export.json"


class VerificationFailed(EdgemedError):
    exit_code = 1

    def __init__(self, message: str, verification: dict[str, Any]):
        super().__init__(message)
        self.verification = verification


def _order(name: str) -> int:
    names = list(FORMATS)
    return names.index(name) if name in names else len(names)


def _existing(m: dict[str, Any] | None, final: Path, source_sha: str, settings: dict[str, Any],
              verify: bool) -> tuple[bool, str]:
    """(up to date?, why not) for an artifact folder already at `final`, whose manifest is `m` (None: none that
    reads)."""
    if m is None:
        return False, f"{final} exists but is not an edgemed artifact"
    source = m.get("source")
    if not isinstance(source, dict) or source.get("sha256") != source_sha:
        return False, f"{final} was exported from another source"
    if m.get("settings") != json.loads(json.dumps(settings)):
        return False, f"{final} was exported with other settings"
    if verify and m.get("status") != "verified":
        return False, f"{final} was not verified"
    return True, "up to date (same source and settings)"


def _cleanup_partials(out: Path, name: str) -> None:
    """Temp folders left by a killed run (SIGKILL, power loss) never have the final name; remove them."""
    for stale in list(out.glob(f".{name}.*.partial")) + [out / f".{name}.old"]:
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)


class _Run:
    """State shared by the formats of one export run: the source, its prompt style, the lazy reference."""

    def __init__(self, merged: Path, out: Path, verify: bool, threads: int | None, reference=None):
        self.merged, self.out, self.verify, self.threads = merged, out, verify, threads
        self.fingerprint = source_fingerprint(merged)
        self.lineage = source_lineage(merged)
        self.style = self.lineage.prompt_style
        self.results: list[dict[str, Any]] = []
        self._reference = reference if reference is not None and reference.style == self.style else None
        self.workers = None  # the fork server of transformers artifacts' verification workers, while it runs
        self.overlap: dict[str, Any] = {"chains": [], "why": "not decided yet"}  # see run_export(overlap=True)
        self._lock = threading.Lock()  # results, export.json and the reference, shared by the chains' threads

    def reference(self):
        with self._lock:
            if self._reference is None:
                from edgemed.export.verify import Reference

                self._reference = Reference.compute(self.merged, self.style, self.threads)
            return self._reference

    def record(self, spec: FormatSpec, status: str, reason: str = "", **extra: Any) -> dict[str, Any]:
        result = {"format": spec.name, "status": status, "reason": reason, "path": str(self.out / spec.name),
                  "seconds": None, "size_bytes": None, "verification": None, "exit_code": 0, **extra}
        with self._lock:
            self.results.append(result)
            self.results.sort(key=lambda r: _order(r["format"]))  # format order, whichever chain finished first
            atomic_write_json(self.out / SUMMARY, {"source": self.fingerprint, "prompt_style": self.style,
                                                   "overlap": self.overlap, "results": self.results})
        return result

    def precheck(self, spec: FormatSpec, exporter: Exporter, explicit: bool, force: bool,
                 replace_stale: bool = False) -> bool:
        """Record and return False when the format is unavailable, up to date, or in the way (no --force; with
        `replace_stale`, an edgemed artifact of another source or settings is not in the way: it is rebuilt)."""
        reason = exporter.available() or architecture_limit(spec.name, self.merged)
        if reason:
            self.record(spec, "unavailable", reason, exit_code=2 if explicit else 0)
            return False
        final = self.out / spec.name
        _cleanup_partials(self.out, spec.name)
        if not final.exists() or force:
            return True
        manifest = try_manifest(final)
        fresh, why = _existing(manifest, final, self.fingerprint["sha256"], exporter.settings, self.verify)
        if fresh:
            verification = manifest.get("verification")
            self.record(spec, "skipped", why, size_bytes=dir_size(final), verification=verification)
        elif replace_stale and manifest is not None:
            return True  # an edgemed artifact, out of date: replaced (a folder that is not one is never touched)
        else:
            self.record(spec, "failed", f"{why}; pass --force to replace it", exit_code=2)
        return False

    def build(self, spec: FormatSpec, exporter: Exporter, stage) -> None:
        """Export into a temp folder, write the manifest, verify, and only then rename it into place."""
        start = time.perf_counter()
        export_s, verification = None, None
        try:
            with atomic_dir(self.out / spec.name, force=True) as tmp:
                stage("exporting")
                details = exporter.export(self.merged, tmp, exporter.settings)
                export_s = round(time.perf_counter() - start, 3)
                manifest = new_manifest(spec.name, spec.runtime, self.fingerprint, exporter.settings)
                manifest.update(status="unverified", lineage=self.lineage.to_dict(), export=details,
                                export_seconds=export_s, files=file_entries(tmp))
                manifest["size_bytes"] = sum(f["size"] for f in manifest["files"])
                atomic_write_json(tmp / MANIFEST, manifest)
                if self.verify:
                    stage("verifying")
                    verification = self._verify(tmp, spec)
                    manifest.update(status="verified", verification=verification)
                    atomic_write_json(tmp / MANIFEST, manifest)
        except VerificationFailed as exc:
            self.record(spec, "failed", f"verification failed: {exc}", exit_code=1, export_seconds=export_s,
                        seconds=round(time.perf_counter() - start, 3), verification=exc.verification)
            return
        except EdgemedError as exc:
            self.record(spec, "failed", str(exc), exit_code=exc.exit_code,
                        seconds=round(time.perf_counter() - start, 3))
            return
        except Exception as exc:  # one format's bug must not lose the others
            first = str(exc).splitlines()[0] if str(exc) else ""
            self.record(spec, "failed", f"internal error: {type(exc).__name__}: {first}", exit_code=3,
                        seconds=round(time.perf_counter() - start, 3))
            return
        self.record(spec, "exported", "", seconds=round(time.perf_counter() - start, 3), export_seconds=export_s,
                    size_bytes=manifest["size_bytes"], verification=verification)

    def _verify(self, tmp: Path, spec: FormatSpec) -> dict[str, Any]:
        from edgemed.export.verify import verify

        reference = self.reference()
        t0 = time.perf_counter()
        server = self.workers if spec.runtime == "transformers" else None
        verification = verify(tmp, reference, spec.tolerance, self.threads, server)
        verification["seconds"] = round(time.perf_counter() - t0, 3)
        if not verification["passed"]:
            raise VerificationFailed(verification["error"], verification)
        return verification


def run_export(
    merged: Path,
    formats: list[str] | None,
    out: Path,
    force: bool = False,
    verify: bool = True,
    threads: int | None = None,
    settings: dict[str, dict[str, Any]] | None = None,
    show_progress: bool = True,
    reference=None,
    replace_stale: bool = False,
    overlap: bool = False,
) -> list[dict[str, Any]]:
    """Export `merged` to each format into ``out/<format>``; one result dict per format (see module doc).

    reference: `merged`'s verification reference (``export.verify.Reference``) when the caller already holds it
    (edgemed tune verifies dozens of candidates of one source); computed here, once per call, otherwise.
    replace_stale: rebuild an edgemed artifact already in `out` that was exported from another source or with
    other settings (the pipeline, which owns its folder, after it trained again) instead of failing that format;
    `force` rebuilds even up-to-date ones.
    overlap: once the transformers formats are done, export the GGUF formats (llama.cpp's converter, llama-quantize
    and the verification: subprocesses, mostly one core each) in a second thread while the others (ONNX: one core
    for long stretches) export here, where the memory plan says both chains' peaks fit this machine together
    (export.json's ``overlap`` says whether they did and why). Each artifact and its verification are the same.

    Each dict: format, path, status (exported|skipped|unavailable|failed), reason, seconds, export_seconds,
    size_bytes, verification (see edgemed.export.verify), exit_code (0, or what this format alone would exit).
    Bad input (source, format names, settings) raises EdgemedError before anything is written.
    """
    from edgemed.console import progress

    merged, out = Path(merged), Path(out)
    if threads is not None:
        from edgemed.resources import resolve_threads

        resolve_threads(threads)  # at least 1, at most a sane multiple of this machine's CPUs
    from edgemed.fsutil import check_output_dir
    from edgemed.registry import require_train

    require_train("edgemed export (it reads the merged model with transformers)")  # e.g. a board install
    check_source(merged)
    check_output_dir(out, "--out")
    if out.resolve() == merged.resolve() or merged.resolve() in out.resolve().parents:
        raise EdgemedError(f"--out {out} is the merged model folder or inside it; give a separate folder (default: "
                           f"{merged.parent / (merged.name + '-exports')})")
    formats = expand_formats(formats)  # named sets: --formats ladder
    explicit = formats is not None
    default = [n for n, s in FORMATS.items() if s.default]  # the rest only when named
    specs = sorted((get_format(n) for n in dict.fromkeys(formats if explicit else default)),
                   key=lambda s: _order(s.name))
    unknown = set(settings or {}) - {s.name for s in specs}
    if unknown:
        raise EdgemedError(f"settings given for formats not exported: {', '.join(sorted(unknown))}")
    exporters: dict[str, Exporter] = {
        s.name: load_object(s.exporter)(s.name, threads=threads, siblings=out, **(settings or {}).get(s.name, {}))
        for s in specs
    }
    for exporter in exporters.values():
        exporter.check(merged)  # a setting out of range, a matrix for another model: exit 2 before any work
    unavailable = {name: e.available() or architecture_limit(name, merged) for name, e in exporters.items()}
    if all(unavailable.values()):  # nothing can be written here: say what to install
        reasons = "; ".join(f"{name} {why}" for name, why in unavailable.items())
        raise EdgemedError(f"no requested format can be exported with this install ({reasons})")
    from edgemed.memory_plan import check_export

    check_export([s.name for s in specs if not unavailable[s.name]], str(merged))  # exit 2 before any work
    run = _Run(merged, out, verify, threads, reference)
    out.mkdir(parents=True, exist_ok=True)
    forked = [s for s in specs if not unavailable[s.name] and s.runtime == "transformers"]
    with contextlib.ExitStack() as workers, progress() as bar:
        run.workers = workers.enter_context(_workers(verify, forked))
        task = bar.add_task("export", total=len(specs), visible=show_progress)
        from edgemed.process.child import STOP

        def one(spec: FormatSpec) -> None:
            if STOP.is_set():  # the run was interrupted in the other chain's thread
                return
            exporter = exporters[spec.name]
            exporter.source_sha256 = run.fingerprint["sha256"]
            bar.update(task, description=f"{spec.name}: checking")
            if run.precheck(spec, exporter, explicit, force, replace_stale):
                def stage(what: str, name: str = spec.name) -> None:
                    bar.update(task, description=f"{name}: {what}")

                run.build(spec, exporter, stage)
            if forked and spec is forked[-1]:
                workers.close()  # no transformers artifact is left to verify: the server's memory goes back now
                run.workers = None
            bar.advance(task)

        head = [s for s in specs if s.runtime == "transformers"]
        gguf = [s for s in specs if s.runtime == "llama.cpp" and s not in head]
        rest = [s for s in specs if s not in head and s not in gguf]
        for spec in head:
            one(spec)
        run.overlap = _overlap_plan(overlap, gguf, rest, [s.name for s in specs if not unavailable[s.name]], merged)
        if run.overlap["chains"]:
            try:
                with ThreadPoolExecutor(1, thread_name_prefix="edgemed-export-gguf") as pool:
                    background = pool.submit(lambda: [one(s) for s in gguf])
                    try:
                        for spec in rest:
                            one(spec)
                    except BaseException:  # interrupted (Ctrl-C, SIGTERM) or a bug here: the GGUF chain stops too,
                        STOP.set()  # its running subprocess killed at once, its partial folder removed, no next format
                        raise
                    background.result()  # its own bug, raised here
            finally:
                STOP.clear()
        else:
            for spec in specs:
                if spec not in head:
                    one(spec)
        bar.update(task, description="export: done")
    return run.results


def _overlap_plan(asked: bool, gguf: list[FormatSpec], rest: list[FormatSpec], names: list[str],
                  merged: Path) -> dict[str, Any]:
    """Whether the GGUF chain runs beside the other formats (run_export's `overlap`), and why (export.json)."""
    if not asked:
        return {"chains": [], "why": "not asked for"}
    if not gguf or not rest:
        return {"chains": [], "why": "one chain only"}
    from edgemed.memory_plan import exports_fit_together

    chains = [[s.name for s in gguf if s.name in names], [s.name for s in rest if s.name in names]]
    if not all(chains):
        return {"chains": [], "why": "one chain only (the other's formats cannot be exported with this install)"}
    fits, why = exports_fit_together(chains, str(merged))
    return {"chains": chains if fits else [], "why": why}


@contextlib.contextmanager
def _workers(verify: bool, specs: list[FormatSpec]):
    """The fork server (export.verify.transformers_workers) for the verification workers of `specs` (this run's
    transformers formats), or None. On Linux only: elsewhere a fork of a process holding these libraries is not a
    safe one, and each worker starts afresh."""
    import sys

    if sys.platform != "linux" or not verify or not specs:
        yield None
        return
    import tempfile

    from edgemed.export.verify import transformers_workers

    with tempfile.TemporaryDirectory(prefix="edgemed-forkserver-") as tmp, transformers_workers(Path(tmp)) as server:
        yield server


def exit_code(results: list[dict[str, Any]]) -> int:
    """0 when every requested format is in place; else the worst (2 input, 1 verification, 3 bug)."""
    codes = [r["exit_code"] for r in results if r["exit_code"]]
    if not codes:
        return 0
    return 2 if 2 in codes else max(codes)


def summary_table(results: list[dict[str, Any]]):
    """Rich table of the results; long reasons are left to ``problem_lines``."""
    from rich.table import Table

    table = Table(title="export")
    for col in ("format", "status", "size", "s", "max|Δlogp|", "tol", "tokens"):
        table.add_column(col, no_wrap=True, justify="left" if col in ("format", "status", "tokens") else "right")
    table.add_column("note", overflow="fold")
    colors = {"exported": "green", "skipped": "cyan", "unavailable": "yellow", "failed": "red"}
    for r in results:
        v = r.get("verification") or {}
        delta, parity = v.get("max_abs_delta"), v.get("token_parity")
        note = r.get("reason", "")
        table.add_row(
            r["format"],
            f"[{colors[r['status']]}]{r['status']}[/]",
            _size(r.get("size_bytes")),
            f"{r['seconds']:.1f}" if r.get("seconds") is not None else "",
            f"{delta:.2g}" if delta is not None else "",
            f"{v['tolerance']:g}" if "tolerance" in v else "",
            "" if parity is None else ("same" if parity else "[red]differ[/]"),
            "" if r["status"] == "skipped" else ("see below" if len(note) > 40 else note),
        )
    return table


def problem_lines(results: list[dict[str, Any]]) -> list[str]:
    """One line per format that did not end in place (failed or left out)."""
    return [f"{r['format']}: {r['status']}: {r['reason']}" for r in results if r["status"] in ("failed", "unavailable")]


def _size(n: int | None) -> str:
    if n is None:
        return ""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""
