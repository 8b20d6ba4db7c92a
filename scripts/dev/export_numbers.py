#!/usr/bin/env python
"""Print what an export folder holds, per format: size, export seconds, verification deltas, GGUF type mix.

usage: .venv/bin/python scripts/dev/export_numbers.py EXPORT_DIR [--json]
Reads only the artifacts' edgemed.json manifests (no model is loaded).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path


def rows(folder: Path) -> list[dict]:
    out = []
    from edgemed.manifest import MANIFEST, read_manifest
    from edgemed.registry import FORMATS

    order = {name: i for i, name in enumerate(FORMATS)}
    for manifest in sorted(folder.glob(f"*/{MANIFEST}"), key=lambda p: (order.get(p.parent.name, 99), p)):
        m = read_manifest(manifest.parent)  # the product's reader, with its checks
        v = m.get("verification") or {}
        types = (m.get("export") or {}).get("types")
        out.append({
            "format": m["format"],
            "status": m.get("status"),
            "size_mib": round(m.get("size_bytes", 0) / 2**20, 1),
            "export_s": m.get("export_seconds"),
            "verify_s": v.get("seconds"),
            "max_abs_delta": v.get("max_abs_delta"),
            "mean_abs_delta": v.get("mean_abs_delta"),
            "max_abs_delta_choice": v.get("max_abs_delta_choice"),
            "top_letter_agreement": v.get("top_letter_agreement"),
            "tolerance": v.get("tolerance"),
            "token_parity": v.get("token_parity"),
            "kernel_path": (v.get("runtime") or {}).get("kernel_path"),
            "gguf_mix": {k: t["param_share"] for k, t in types.items()} if types else None,
            "bits_per_weight": (m.get("export") or {}).get("bits_per_weight"),
        })
    return out


def _width(spec: str) -> str:
    return re.match(r"[<>]\d+", spec).group()


def main() -> int:
    folder = Path(sys.argv[1])
    data = rows(folder)
    if "--json" in sys.argv:
        print(json.dumps(data, indent=2))
        return 0
    cols = [("format", "<12", "format"), ("MiB", ">7.1f", "size_mib"), ("export s", ">8.1f", "export_s"),
            ("max|Δ|", ">8.3g", "max_abs_delta"), ("mean|Δ|", ">8.3g", "mean_abs_delta"),
            ("Δ A-D", ">7.3g", "max_abs_delta_choice"), ("tol", ">6g", "tolerance"),
            ("top=", ">5.2f", "top_letter_agreement")]
    print(" ".join(format(name, _width(spec)) for name, spec, _ in cols), "tokens")
    for r in data:
        cells = [format(r[key], spec) if r[key] is not None else format("-", _width(spec))
                 for _, spec, key in cols]
        print(" ".join(cells), "same" if r["token_parity"] else "DIFFER")
        if r["gguf_mix"]:
            mix = ", ".join(f"{k} {v:.1%}" for k, v in r["gguf_mix"].items())
            print(f"{'':<12} mix: {mix}; {r['bits_per_weight']} bits/weight")
    return 0


if __name__ == "__main__":
    sys.exit(main())
