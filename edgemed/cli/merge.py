"""``edgemed merge``: merge a LoRA adapter into its base model and verify the merge."""

from __future__ import annotations

from edgemed.console import console
from edgemed.merge_config import MergeConfig


def merge(config: MergeConfig) -> int:
    """Merge a LoRA adapter into its base (float32 safetensors + tokenizer) and verify merged vs adapter logits.

    The merged folder appears only when the merged model, reloaded from disk, gives the same logits as
    base+adapter on real eval prompts (attention-masked positions, max abs diff <= --max-logit-diff); otherwise
    the command exits 1 and writes nothing. edgemed-merge.json records the base, the adapter, the prompt
    style of the run and the verification.
    """
    from edgemed.merging import run_merge

    record = run_merge(config)
    v = record["verification"]
    console.print(
        f"merged {record['base_model']['given']} + {record['adapter']} -> {config.out} "
        f"(prompt style {record['lineage']['prompt_style']}; max |logit diff| {v['max_abs_logit_diff']:.2e} "
        f"<= {v['tolerance']:g}, {v['positions']} positions)"
    )
    return 0
