"""Edge-board profiles (bundled ``profiles.toml``): would an artifact fit, and a memory-bound tokens/s estimate.

The estimate assumes decode reads every weight byte once per token (memory-bound), so on a board with
sustained bandwidth B an artifact with W weight bytes decodes at most B / W tokens/s; scaled by the share
of this machine's copy bandwidth the artifact actually reached here, it becomes the "expected" estimate.
Both are estimates from rough public figures, not measurements on the board.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Any

from edgemed.bench.results import ArtifactResult
from edgemed.errors import EdgemedError


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    threads: int
    memory_ceiling_gb: float
    bandwidth_gbps: float
    peak_bandwidth_gbps: float | None = None
    aliases: tuple[str, ...] = field(default_factory=tuple)

    @property
    def memory_ceiling_bytes(self) -> int:
        return int(self.memory_ceiling_gb * 1e9)


def load_profiles() -> dict[str, Profile]:
    from edgemed.bench.gate.budget import tomllib_module

    tomllib = tomllib_module()
    text = resources.files("edgemed.bench").joinpath("profiles.toml").read_text(encoding="utf-8")
    return {name: Profile(name=name, **{**table, "aliases": tuple(table.get("aliases", ()))})
            for name, table in tomllib.loads(text).items()}


def get_profile(name: str) -> Profile:
    profiles = load_profiles()
    if name in profiles:
        return profiles[name]
    for p in profiles.values():
        if name in p.aliases:
            return p
    names = list(profiles) + [a for p in profiles.values() for a in p.aliases]
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise EdgemedError(f"--profile: unknown device profile '{name}'{hint} (known: {', '.join(profiles)})")


def estimate(profile: Profile, results: list[ArtifactResult]) -> dict[str, Any]:
    """Per artifact: fits in the board's memory?, memory-bound and expected decode tokens/s (estimates)."""
    rows = []
    for r in results:
        row: dict[str, Any] = {"artifact": r.name, "format": r.format}
        rss = r.memory.peak_rss_bytes if r.ok else None
        weights = r.bandwidth.weight_bytes
        row["peak_rss_bytes"] = rss
        row["fits_memory"] = None if rss is None else rss <= profile.memory_ceiling_bytes
        bound = profile.bandwidth_gbps * 1e9 / weights if weights else None
        row["est_max_decode_tokens_per_s"] = bound
        frac = r.bandwidth.fraction_of_copy
        row["est_decode_tokens_per_s"] = bound * min(frac, 1.0) if bound is not None and frac else None
        if rss is None:
            row["note"] = "not measured"
        elif not row["fits_memory"]:
            row["note"] = (f"does not fit: peak {rss / 1e9:.2f} GB > {profile.memory_ceiling_gb:g} GB "
                           "usable (measured here, with this machine's Python stack)")
        else:
            row["note"] = "fits"
        rows.append(row)
    return {"profile": asdict(profile), "artifacts": rows,
            "caveat": "estimates from rough public board figures and a memory-bound decode model; "
                      "the peak memory was measured on this machine; verify on the board"}
