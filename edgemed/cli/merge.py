"""``edgemed merge``: merge a LoRA adapter into its base model and verify the merge."""

from __future__ import annotations

from pathlib import Path

from edgemed.console import console
from edgemed.fsutil import check_output_dir, remove_stale_partials
from edgemed.registry import require_train


def merge(
    adapter: Path = Path("runs/train"),
    out: Path = Path("runs/merged"),
    base: str | None = None,
    max_logit_diff: float = 1e-3,
    device: str = "cpu",
    prompts: int = 4,
    trust_remote_code: bool = False,
    force: bool = False,
) -> int:
    """Merge a LoRA adapter into its base (float32 safetensors + tokenizer) and verify merged vs adapter logits.

    The merged folder appears only when the merged model, reloaded from disk, gives the same logits as
    base+adapter on real eval prompts (attention-masked positions, max abs diff <= --max-logit-diff); otherwise
    the command exits 1 and writes nothing. edgemed-merge.json records the base, the adapter, the prompt
    style of the run and the verification.

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

    require_train("edgemed merge")

    check_output_dir(Path(out), "--out")
    remove_stale_partials(Path(out))  # what a killed earlier merge left beside --out
    from edgemed.merging import merge_adapter

    record = merge_adapter(
        adapter, out, base=base, tolerance=max_logit_diff, force=force, device=device, prompts=prompts,
        trust_remote_code=trust_remote_code,
    )
    v = record["verification"]
    console.print(
        f"merged {record['base_model']['given']} + {record['adapter']} -> {out} "
        f"(prompt style {record['lineage']['prompt_style']}; max |logit diff| {v['max_abs_logit_diff']:.2e} "
        f"<= {v['tolerance']:g}, {v['positions']} positions)"
    )
    return 0
