"""Export a merged model to several formats, registry-driven; each artifact placed only once it verified.

For every format: check the exporter can run here, skip it when ``DIR/<format>`` already holds a verified
export of the same source (sha256 over the merged folder's files) with the same settings, else export into
a temp folder beside it, write ``edgemed.json``, verify it with its own runtime, and rename it into place.
A format that fails is recorded and the others go on; ``export.json`` in DIR lists every outcome.

:func:`run_export` checks the request before any work (:mod:`edgemed.export.plan`), then runs the formats in
their export chains (the registry's ``FormatSpec.export_chain``; :func:`_run_chains`). The rendering of the
results is :mod:`edgemed.export.table`'s.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgemed.console import progress
from edgemed.errors import EdgemedError
from edgemed.export.base import Exporter, source_fingerprint, source_lineage
from edgemed.export.config import ExportConfig
from edgemed.export.plan import cleanup_partials, existing, order, overlap_plan, prepare
from edgemed.fsutil import atomic_dir, atomic_write_json, dir_size
from edgemed.manifest import MANIFEST, file_entries, new_manifest, try_manifest
from edgemed.registry import FormatSpec, architecture_limit

SUMMARY = "export.json"


class VerificationFailed(EdgemedError):
    exit_code = 1

    def __init__(self, message: str, verification: dict[str, Any]):
        super().__init__(message)
        self.verification = verification


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
            self.results.sort(key=lambda r: order(r["format"]))  # format order, whichever chain finished first
            atomic_write_json(self.out / SUMMARY, self.document())
        return result

    def document(self) -> dict[str, Any]:
        """What export.json holds."""
        return {"source": self.fingerprint, "prompt_style": self.style, "overlap": self.overlap,
                "results": self.results}

    def precheck(self, spec: FormatSpec, exporter: Exporter, explicit: bool, force: bool,
                 replace_stale: bool = False) -> bool:
        """Record and return False when the format is unavailable, up to date, or in the way (no --force; with
        `replace_stale`, an edgemed artifact of another source or settings is not in the way: it is rebuilt)."""
        reason = exporter.available() or architecture_limit(spec.name, self.merged)
        if reason:
            self.record(spec, "unavailable", reason, exit_code=2 if explicit else 0)
            return False
        final = self.out / spec.name
        cleanup_partials(self.out, spec.name)
        if not final.exists() or force:
            return True
        manifest = try_manifest(final)
        fresh, why = existing(manifest, final, self.fingerprint["sha256"], exporter.settings, self.verify)
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
        server = self.workers if spec.verify_route == "forkserver" else None
        verification = verify(tmp, reference, spec.tolerance, self.threads, server)
        verification["seconds"] = round(time.perf_counter() - t0, 3)
        if not verification["passed"]:
            raise VerificationFailed(verification["error"], verification)
        return verification


def run_export(
    merged: Path,
    formats: ExportConfig | list[str] | None,
    out: Path | None = None,
    force: bool = False,
    verify: bool = True,
    threads: int | None = None,
    settings: dict[str, dict[str, Any]] | None = None,
    show_progress: bool = True,
    reference=None,
    replace_stale: bool = False,
    overlap: bool = False,
) -> dict[str, Any] | list[dict[str, Any]]:
    """Export `merged` to each format into ``out/<format>`` (see module doc).

    Called with an :class:`ExportConfig` (``run_export(merged, config)``: edgemed export, the pipeline), it reads
    everything from the config, its format flags included, and returns the document it wrote (export.json).
    Called with a list of format names (None: the default set) and `out`, it returns the list of results.

    reference: `merged`'s verification reference (``export.verify.Reference``) when the caller already holds it
    (edgemed tune verifies dozens of candidates of one source); computed here, once per call, otherwise.
    replace_stale: rebuild an edgemed artifact already in `out` that was exported from another source or with
    other settings (the pipeline, which owns its folder, after it trained again) instead of failing that format;
    `force` rebuilds even up-to-date ones.
    overlap: once the "first" chain's formats are done (transformers), export the "beside" chain (GGUF: llama.cpp's
    converter, llama-quantize and the verification: subprocesses, mostly one core each) in a second thread while
    the "main" chain (ONNX: one core for long stretches) exports here, where the memory plan says both chains'
    peaks fit this machine together (export.json's ``overlap`` says whether they did and why). Each artifact and
    its verification are the same.

    Each result: format, path, status (exported|skipped|unavailable|failed), reason, seconds, export_seconds,
    size_bytes, verification (see edgemed.export.verify), exit_code (0, or what this format alone would exit).
    Bad input (source, format names, settings) raises EdgemedError before anything is written.
    """
    if isinstance(formats, ExportConfig):
        c = formats
        settings = c.settings()  # the format flags: a flag no requested format takes is refused first
        run = _export(Path(merged), c.formats or None, c.out_for(merged), c.force, c.verify, c.threads, settings,
                      c.show_progress, reference, c.replace_stale, c.overlap)
        return run.document()
    if out is None:
        raise TypeError("run_export(merged, formats, out): give the output folder")
    return _export(Path(merged), formats, Path(out), force, verify, threads, settings, show_progress, reference,
                   replace_stale, overlap).results


def _export(merged: Path, formats: list[str] | None, out: Path, force: bool, verify: bool, threads: int | None,
            settings: dict[str, dict[str, Any]] | None, show_progress: bool, reference, replace_stale: bool,
            overlap: bool) -> _Run:
    specs, exporters, unavailable, explicit = prepare(merged, formats, out, threads, settings)
    run = _Run(merged, out, verify, threads, reference)
    out.mkdir(parents=True, exist_ok=True)
    _run_chains(run, specs, exporters, unavailable, _Choice(explicit, force, replace_stale, overlap), show_progress)
    return run


@dataclass(frozen=True)
class _Choice:
    """What the caller chose for the formats of one run (see run_export)."""

    explicit: bool  # the formats were named (a format that cannot be exported here is then exit 2)
    force: bool
    replace_stale: bool
    overlap: bool


def _run_chains(run: _Run, specs: list[FormatSpec], exporters: dict[str, Exporter],
                unavailable: dict[str, str | None], choice: _Choice, show_progress: bool) -> None:
    """Export every format in its chain: "first" here, then "beside" in a second thread next to "main" where the
    overlap plan allows, else one after the other."""
    from edgemed.process.child import STOP

    forked = [s for s in specs if not unavailable[s.name] and s.verify_route == "forkserver"]
    with contextlib.ExitStack() as workers, progress() as bar:
        run.workers = workers.enter_context(_workers(run.verify, forked))
        task = bar.add_task("export", total=len(specs), visible=show_progress)

        def one(spec: FormatSpec) -> None:
            if STOP.is_set():  # the run was interrupted in the other chain's thread
                return
            exporter = exporters[spec.name]
            exporter.source_sha256 = run.fingerprint["sha256"]
            bar.update(task, description=f"{spec.name}: checking")
            if run.precheck(spec, exporter, choice.explicit, choice.force, choice.replace_stale):
                def stage(what: str, name: str = spec.name) -> None:
                    bar.update(task, description=f"{name}: {what}")

                run.build(spec, exporter, stage)
            if forked and spec is forked[-1]:
                workers.close()  # no artifact is left to verify through the server: its memory goes back now
                run.workers = None
            bar.advance(task)

        first = [s for s in specs if s.export_chain == "first"]
        beside = [s for s in specs if s.export_chain == "beside"]
        main = [s for s in specs if s not in first and s not in beside]
        for spec in first:
            one(spec)
        run.overlap = overlap_plan(choice.overlap, beside, main, [s.name for s in specs if not unavailable[s.name]],
                                    run.merged)
        if run.overlap["chains"]:
            _overlapped(one, beside, main, STOP)
        else:
            for spec in specs:
                if spec not in first:
                    one(spec)
        bar.update(task, description="export: done")


def _overlapped(one: Callable[[FormatSpec], None], beside: list[FormatSpec], main: list[FormatSpec], stop) -> None:
    """The "beside" chain in a second thread while the "main" one runs here."""
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="edgemed-export-gguf") as pool:
            background = pool.submit(lambda: [one(s) for s in beside])
            try:
                for spec in main:
                    one(spec)
            except BaseException:  # interrupted (Ctrl-C, SIGTERM) or a bug here: the other chain stops too,
                stop.set()  # its running subprocess killed at once, its partial folder removed, no next format
                raise
            background.result()  # its own bug, raised here
    finally:
        stop.clear()


@contextlib.contextmanager
def _workers(verify: bool, specs: list[FormatSpec]):
    """The fork server (export.verify.transformers_workers) for the verification workers of `specs` (this run's
    formats whose verify_route is "forkserver": the transformers ones), or None. On Linux only: elsewhere a fork
    of a process holding these libraries is not a safe one, and each worker starts afresh."""
    if sys.platform != "linux" or not verify or not specs:
        yield None
        return
    from edgemed.export.verify import transformers_workers

    with tempfile.TemporaryDirectory(prefix="edgemed-forkserver-") as tmp, transformers_workers(Path(tmp)) as server:
        yield server


def exit_code(results: list[dict[str, Any]]) -> int:
    """0 when every requested format is in place; else the worst (2 input, 1 verification, 3 bug)."""
    codes = [r["exit_code"] for r in results if r["exit_code"]]
    if not codes:
        return 0
    return 2 if 2 in codes else max(codes)

