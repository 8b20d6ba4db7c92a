"""LoRA target modules read from the model's own modules, per architecture.

The model is built from its config on torch's ``meta`` device (no weights read, no memory), and the targets
are the names of the linear layers inside its decoder blocks: ``q_proj, k_proj, v_proj, o_proj, gate_proj,
up_proj, down_proj`` for Llama, Qwen, Gemma, Mistral and SmolLM; the fused ``qkv_proj, o_proj, gate_up_proj,
down_proj`` for Phi-3. Embeddings and the output head are never targets. ``--target-modules`` overrides.
"""

from __future__ import annotations

from edgemed.errors import EdgemedError


def decoder_linear_names(resolved: str, trust_remote_code: bool = False) -> tuple[str, list[str]]:
    """(architecture, the leaf names of the linear layers inside the decoder blocks, in module order)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(resolved, trust_remote_code=trust_remote_code)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise EdgemedError(f"could not build {resolved} from its config to read its modules: {first}") from None
    arch = (getattr(config, "architectures", None) or [type(model).__name__])[0]
    names: list[str] = []
    for path, module in model.named_modules():
        leaf = path.rsplit(".", 1)[-1]
        in_block = ".layers." in f".{path}." or ".h." in f".{path}." or ".blocks." in f".{path}."
        if isinstance(module, torch.nn.Linear) and in_block and leaf not in names:
            names.append(leaf)
    return arch, names


def lora_targets(resolved: str, given: tuple[str, ...] | None, trust_remote_code: bool = False,
                 ) -> tuple[tuple[str, ...], str]:
    """(target module names, where they came from): `given` (``--target-modules``) or the model's own."""
    if given:
        return tuple(given), "--target-modules"
    arch, names = decoder_linear_names(resolved, trust_remote_code)
    if not names:
        raise EdgemedError(f"{resolved} ({arch}) has no linear layers inside decoder blocks that edgemed can find; "
                           "pass --target-modules with the names of the modules to adapt")
    return tuple(names), f"the linear layers of {arch}'s decoder blocks"
