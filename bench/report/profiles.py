"""A board profile's estimates beside the board's own measurement, with the ratio (``edgemed report``).

``edgemed bench --profile rpi5`` on a laptop estimates what the board would do (a memory-bound decode rate from
the profile's bandwidth, whether the laptop's peak memory fits the board). When a run made on that board is in the
same report, each estimate is put beside what the board measured: estimate / measured, flagged when it is off by
more than :data:`OFF_BY` either way (the memory-bound maximum: when the board measured more than it). That is
how a profile's figures get corrected.

A run is the board of a profile when its recorded board (the device-tree model) is the profile's family and its RAM
the profile's size (:func:`is_board_of`); an emulated run never is.
"""

from __future__ import annotations

from typing import Any

from edgemed.bench.report.runs import Row, Run

OFF_BY = 2.0
# profile name family -> text the board's device-tree model holds
BOARD_FAMILIES = {
    "rpi4": "Raspberry Pi 4", "rpi5": "Raspberry Pi 5", "jetson-nano": "Jetson Nano",
    "jetson-orin-nano": "Orin Nano", "orangepi5": "Orange Pi 5",
}


def _family_and_gb(profile_name: str) -> tuple[str, float | None]:
    head, _, tail = profile_name.rpartition("-")
    if head and tail.endswith("gb") and tail[:-2].replace(".", "", 1).isdigit():
        return head, float(tail[:-2])
    return profile_name, None


def is_board_of(profile: dict[str, Any], fp: dict[str, Any]) -> bool:
    """The run's machine is the board the profile describes (family by board name, size by RAM in GiB)."""
    if fp.get("emulated") or not fp.get("board"):
        return False
    family, gb = _family_and_gb(str(profile.get("name", "")))
    pattern = BOARD_FAMILIES.get(family)
    if pattern is None or pattern.lower() not in str(fp["board"]).lower():
        return False
    ram = fp.get("ram_gb")
    return gb is None or (isinstance(ram, int | float) and 0.75 * gb <= ram <= 1.05 * gb)


def ratio_entry(what: str, estimate: float | None, measured: float | None, unit: str,
                ceiling: bool = False) -> dict[str, Any] | None:
    """estimate, measured, estimate / measured and whether it is off: by more than OFF_BY either way, or for a
    `ceiling` (the memory-bound maximum) when the board measured more than it."""
    if estimate is None or measured is None or measured <= 0:
        return None
    ratio = estimate / measured
    off = ratio < 1 if ceiling else (ratio > OFF_BY or ratio < 1 / OFF_BY)
    return {"what": what, "estimate": estimate, "measured": measured, "unit": unit, "ratio": ratio, "off": off}


def _artifact_ratios(est: dict[str, Any], board: Any, ceiling_gb: float) -> list[dict[str, Any]]:
    out = []
    tg = board.throughput.tg.get("avg_ts") if board.ok else None
    out.append(ratio_entry("decode tokens/s (expected)", est.get("est_decode_tokens_per_s"), tg, "tokens/s"))
    out.append(ratio_entry("decode tokens/s (memory-bound max)", est.get("est_max_decode_tokens_per_s"), tg,
                           "tokens/s", ceiling=True))
    rss_board = board.memory.peak_rss_bytes if board.ok else None
    rss_here = est.get("peak_rss_bytes")
    out.append(ratio_entry("peak memory (MB, measured on the estimating machine)",
                           rss_here / 1e6 if rss_here else None, rss_board / 1e6 if rss_board else None, "MB"))
    entries = [e for e in out if e is not None]
    if rss_board is not None and est.get("fits_memory") is not None:
        fits = rss_board <= ceiling_gb * 1e9
        entries.append({"what": f"fits {ceiling_gb:g} GB", "estimate": est["fits_memory"], "measured": fits,
                        "unit": "", "ratio": None, "off": est["fits_memory"] != fits})
    return entries


def profile_checks(runs: list[Run], rows: list[Row]) -> list[dict[str, Any]]:
    """Per (run that used a profile, other run on that board): bandwidth and per-artifact estimate vs measured."""
    out = []
    by_name = {(label, r.name): row for row in rows for label, r in row.cells.items()}
    for est_run in runs:
        for prof in est_run.doc.get("profiles") or []:
            p = prof.get("profile") or {}
            for board_run in runs:
                if board_run.machine == est_run.machine or not is_board_of(p, board_run.fingerprint):
                    continue
                bw = ratio_entry("copy bandwidth (GB/s)", p.get("bandwidth_gbps"),
                                 board_run.fingerprint.get("copy_bandwidth_gbps"), "GB/s")
                arts = []
                for est in prof.get("artifacts") or []:
                    row = by_name.get((est_run.label, est.get("artifact")))
                    board = row.cells.get(board_run.label) if row else None
                    if row is None or board is None:
                        continue
                    arts.append({"key": row.key, "name": row.name, "format": row.format,
                                 "ratios": _artifact_ratios(est, board, float(p.get("memory_ceiling_gb") or 0))})
                off = [f"{a['name']}: {e['what']}" for a in arts for e in a["ratios"] if e["off"]]
                if bw and bw["off"]:
                    off.insert(0, bw["what"])
                out.append({"profile": p.get("name"), "estimated_in": est_run.label, "board_run": board_run.label,
                            "board": board_run.fingerprint.get("board"), "bandwidth": bw, "artifacts": arts,
                            "off_by_more_than_2x": off})
    return out
