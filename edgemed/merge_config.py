"""``MergeConfig``: the settings of one merge (``edgemed merge``'s flags), passed whole to
:func:`edgemed.merging.run_merge`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class MergeConfig:
    """The settings of one merge.

    Args:
        adapter: the run folder of 'edgemed train' (or its adapter/ folder).
        out: folder for the merged model.
        base: base model (alias, folder or hub id); default: the base recorded in the run.
        max_logit_diff: largest accepted |merged - adapter| logit difference, in logits (float32); the
            earlier spelling --tolerance still works for one release.
        device: device to merge and verify on: cpu, cuda, cuda:N, mps or auto.
        prompts: number of eval questions used for the verification.
        trust_remote_code: allow model code from the hub (off: safe by default).
        force: replace an existing --out folder.
    """

    adapter: Path = Path("runs/train")
    out: Path = Path("runs/merged")
    base: str | None = None
    max_logit_diff: float = 1e-3
    device: str = "cpu"
    prompts: int = 4
    trust_remote_code: bool = False
    force: bool = False
