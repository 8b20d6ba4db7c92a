"""The memory a step will need, estimated from the model's shape before any work, and the refusal (exit 2, with the
estimate and the flag that helps) when this machine cannot give it.

The estimates are sums of parts a user can check: the weights as the step holds them, activations per token, the
largest batch. Their constants come from measured peaks (docs/measurements.md, the 1B-shape scale check:
``scripts/check_1b_scale.sh``); a step is refused only when its estimate is above the machine's memory (RAM, or a
lower memory-cgroup limit), never on a guess near the line. Models whose shape cannot be read (a hub id not cached
here) are not estimated: the step runs, and a kill for memory is reported as such (:mod:`edgemed.process.oom`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgemed.errors import EdgemedError

GB = 1e9
OVERHEAD = 1.0 * GB  # interpreter, torch and transformers, tokenizer, buffers: measured 0.8-1.1 GB at 135M and 1B
# Training, per token of the largest batch and per layer: what autograd keeps for the LoRA backward, in float32
# values per hidden and per intermediate unit. Fitted to two measured peaks of `edgemed train` on the bundled
# sample (batch 8, float32, 2-core Xeon): SmolLM2-135M 5.0 GB (0.54 GB weights, 8 x 142 tokens x 30 layers) and
# llama32-1b-shape 12.0 GB (4.95 GB weights, about 900 tokens x 16 layers): 34 x hidden + 5 x intermediate.
ACT_HIDDEN, ACT_INTERMEDIATE = 34, 5
ACT_CHECKPOINTED = 2  # hidden-sized values per token and layer kept with --gradient-checkpointing (+ one layer's)
MERGE_CHECK_TOKENS = 4 * 256  # the merge check's prompts (4) x a question with its chat template (about 150-250)


@dataclass(frozen=True)
class Shape:
    """What the estimates read of a model: parameters and the sizes activations scale with."""

    params: int
    layers: int
    hidden: int
    intermediate: int
    vocab: int
    stored_bytes: int = 2  # bytes per parameter of the checkpoint on disk (config dtype; bfloat16 for Llama 3.2)

    @property
    def fp32_bytes(self) -> int:
        return 4 * self.params


@dataclass
class Need:
    """A step's estimated peak: its parts (bytes) and the options that lower it."""

    what: str
    parts: dict[str, float] = field(default_factory=dict)
    fix: str = ""

    @property
    def total(self) -> float:
        return sum(self.parts.values())

    def describe(self) -> str:
        parts = ", ".join(f"{k} {v / GB:.1f} GB" for k, v in self.parts.items())
        return f"about {self.total / GB:.1f} GB ({parts})"

    def check(self, available: int | None = None) -> None:
        """Exit 2 when the estimate is above the machine's memory."""
        limit = available if available is not None else machine_bytes()
        if limit and self.total > limit:
            raise EdgemedError(f"{self.what} needs {self.describe()}, more than this machine's {limit / GB:.1f} GB; "
                               f"{self.fix}")


def machine_bytes() -> int | None:
    """The memory this process may use: the machine's RAM, or its memory cgroup's limit where that is lower."""
    from edgemed.process.oom import cgroup_limit_bytes, machine_memory_bytes

    total = machine_memory_bytes()
    limit = cgroup_limit_bytes()
    return min(x for x in (total, limit) if x) if (total or limit) else None


def model_shape(model: str) -> Shape | None:
    """The shape of a model folder, a cached hub id or an alias (built or not) from its config, parameters counted
    on the meta device (no weights read); None when the config cannot be read here."""
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        from edgemed.builtin_models import SHAPES, shape_config
        from edgemed.models import ALIASES, cache_root, is_model_dir

        if model in SHAPES:
            config = shape_config(model)
        elif model in ALIASES:
            if not is_model_dir(cache_root() / "models" / model):
                return None  # the small aliases, not built yet
            config = AutoConfig.from_pretrained(cache_root() / "models" / model)
        else:
            config = AutoConfig.from_pretrained(model, local_files_only=True)
        with torch.device("meta"):
            meta = AutoModelForCausalLM.from_config(config)
    except Exception:  # noqa: BLE001 - best effort: a config this cannot read is judged by the step that loads it
        return None
    params = sum(p.numel() for p in meta.parameters())
    get = lambda *names: next((int(getattr(config, n)) for n in names if getattr(config, n, None)), 0)  # noqa: E731
    dtype = str(getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or "float32")
    return Shape(params=params, layers=get("num_hidden_layers", "n_layer"), hidden=get("hidden_size", "n_embd"),
                 intermediate=get("intermediate_size") or 4 * get("hidden_size", "n_embd"), vocab=get("vocab_size"),
                 stored_bytes=2 if ("16" in dtype) else 4)


def train_need(shape: Shape, dtype_bytes: int, batch_size: int, longest: int, gradient_checkpointing: bool) -> Need:
    """LoRA training: the frozen weights in the training dtype, and the activations of the largest batch (every
    row padded to the longest example: the worst case of length-grouped batches)."""
    need = _train(shape, dtype_bytes, batch_size, longest, gradient_checkpointing)
    limit = machine_bytes()
    fits = [b for b in range(batch_size - 1, 0, -1)
            if limit and _train(shape, dtype_bytes, b, longest, gradient_checkpointing).total <= limit]
    hints = [f"--batch-size {fits[0]} fits (activations scale with it)"] if fits else []
    if not gradient_checkpointing:
        hints.append("--gradient-checkpointing keeps about 1/20 of them")
    hints.append("a lower --max-length skips the longest questions")
    need.fix = "; ".join(hints) + "; or train on a GPU (--qlora holds the base in 4 bits)"
    return need


def _train(shape: Shape, dtype_bytes: int, batch_size: int, longest: int, gradient_checkpointing: bool) -> Need:
    full = (ACT_HIDDEN * shape.hidden + ACT_INTERMEDIATE * shape.intermediate) * 4  # bytes per token and layer
    tokens = batch_size * longest
    acts = tokens * (ACT_CHECKPOINTED * 4 * shape.hidden * shape.layers + full) if gradient_checkpointing \
        else tokens * shape.layers * full
    return Need("training", {"weights": dtype_bytes * shape.params,
                             f"activations ({batch_size} x {longest} tokens)": acts, "runtime": OVERHEAD})


def merge_need(shape: Shape, check_tokens: int = MERGE_CHECK_TOKENS) -> Need:
    """Merge and verify in float32: the float32 weights while the base checkpoint is still mapped (measured on
    llama32-1b-shape: 7.5 GB = 4.95 GB float32 + 2.47 GB bfloat16 file), and the check's logits over the whole
    vocabulary, with and without the adapter, held together (measured on qwen3-0.6b-shape, 151,936 entries: 5.3 GB
    for 2.4 GB float32 + 1.2 GB file); the copy reloaded from disk for the check comes after the merged one is
    freed."""
    return Need("merging", {"float32 weights": shape.fp32_bytes,
                            "base checkpoint mapped while it loads": shape.stored_bytes * shape.params,
                            f"the check's logits ({check_tokens} tokens)": 2 * 4 * check_tokens * shape.vocab,
                            "runtime": OVERHEAD}, "merge on a machine with more memory (the merge runs in float32)")


def export_need(fmt: str, shape: Shape) -> Need:
    """Exporting one format and verifying it: the registry's measured peak per float32 weight byte."""
    from edgemed.registry import get_format

    factor = get_format(fmt).export_memory
    return Need(f"exporting {fmt}", {f"{factor:g} x the float32 weights": factor * shape.fp32_bytes,
                                     "runtime": OVERHEAD},
                f"leave {fmt} out of --formats (the other formats need less), or export it on a larger machine")


def check_export(formats: list[str], model: str, available: int | None = None) -> None:
    """Refuse, before any export, a format whose estimate is above this machine's memory."""
    shape = model_shape(model)
    if shape is not None:
        _check_exports(shape, formats, available)


def exports_fit_together(chains: list[list[str]], model: str, available: int | None = None) -> tuple[bool, str]:
    """(fit?, why) for export chains run at the same time: each chain's largest format estimate, summed, against this
    machine's memory (a model whose shape cannot be read here: not run together)."""
    shape = model_shape(model)
    limit = available if available is not None else machine_bytes()
    if shape is None or not limit:
        return False, "the model's size or this machine's memory is unknown"
    need = sum(max(export_need(f, shape).total for f in chain) for chain in chains if chain)
    if need > limit:
        return False, f"together they need about {need / GB:.1f} GB, more than this machine's {limit / GB:.1f} GB"
    return True, f"together about {need / GB:.1f} GB of this machine's {limit / GB:.1f} GB"


def _check_exports(shape: Shape, formats: list[str], available: int | None = None) -> None:
    for fmt in formats:
        export_need(fmt, shape).check(available)


def check_training(model: str, device: str, dtype: str, batch_size: int, gradient_checkpointing: bool,
                   examples: list[dict[str, Any]]) -> None:
    """Refuse (exit 2) a CPU training run whose estimate is above this machine's memory, before the model loads.
    No estimate for a GPU run (its weights are in GPU memory) or an unreadable shape."""
    shape = model_shape(model) if device == "cpu" and examples else None
    if shape is not None:
        longest = max(len(e["input_ids"]) for e in examples)
        train_need(shape, 4 if dtype == "float32" else 2, batch_size, longest, gradient_checkpointing).check()


def check_pipeline(model: str, formats: list[str]) -> None:
    """The pipeline's steps after training, checked before it trains: the merge and every format's export (the
    training itself is checked at its start, once the questions' lengths are known)."""
    shape = model_shape(model)
    if shape is not None:
        merge_need(shape).check()
        _check_exports(shape, formats)
