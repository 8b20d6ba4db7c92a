"""What makes LoRA training fast on a CPU: each lever measured by scripts/dev/bench_train_speed.py.

- ``--dtype auto`` is bfloat16 where the CPU multiplies bf16 in hardware (AVX512-BF16 or AMX), else float32
  (resolved with every other device's choice in edgemed.devices).
- CPU bf16 training: the frozen model is loaded in bfloat16 (weights, embeddings, residual stream; the
  norms compute in float32 inside, as the model's own code does), the LoRA weights and AdamW state stay
  float32, and the Trainer runs under CPU bf16 autocast. The attention itself runs in float32
  (:func:`register_fp32_sdpa`): torch's CPU flash attention is slower in bf16 than in float32.
  The LoRA branch takes the layer input as it comes (:func:`lora_inputs_as_is`) instead of peft's cast to
  float32, which autocast would cast straight back to bf16.
- LoRA dropout (:class:`FastDropout`): the same Bernoulli(1 - p) keep mask scaled by 1 / (1 - p), drawn from
  torch's seeded generator, at a third of ``nn.Dropout``'s cost on a CPU (half the random draws: 15 bits
  per element, ``p`` rounded to 1/32768; the mask built with integer ops instead of float Bernoulli
  sampling, and never multiplied in as a bool, which takes torch's slow mixed-dtype path).
"""

from __future__ import annotations

import torch

FP32_SDPA = "edgemed_sdpa_fp32"
_BITS = 15  # random bits per dropout decision


def recipe(device: str, dtype: str) -> dict[str, str]:
    """How a run on `device` in `dtype` computes (written into the run record)."""
    if device != "cpu":
        return {"frozen_weights": dtype, "autocast": dtype if dtype != "float32" else "off",
                "attention": "sdpa", "lora_weights": "float32", "lora_dropout": "torch.nn.Dropout"}
    bf16 = dtype == "bfloat16"
    return {"frozen_weights": dtype, "autocast": "bfloat16" if bf16 else "off",
            "attention": "sdpa in float32" if bf16 else "sdpa", "lora_weights": "float32",
            "lora_dropout": f"edgemed FastDropout ({_BITS}-bit draws)"}


def fp32_sdpa_attention(module, query, key, value, attention_mask, **kwargs):
    """transformers' sdpa attention computed in float32 with autocast off.

    Under CPU bf16 the projections run in bf16 (AMX) but torch's CPU flash attention in bf16 is slower
    than in float32 (SmolLM2 shapes, forward + backward: 18 vs 7.5 ms per layer call, 1 thread on the AMX
    Xeon), so the attention itself stays float32; everything else is as "sdpa".
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if attention_mask is not None and attention_mask.is_floating_point():
        attention_mask = attention_mask.float()
    with torch.autocast(query.device.type, enabled=False):
        return sdpa_attention_forward(module, query.float(), key.float(), value.float(), attention_mask, **kwargs)


def register_fp32_sdpa() -> str:
    """Register :func:`fp32_sdpa_attention` (and sdpa's mask builder) under FP32_SDPA; returns the name to pass
    as ``attn_implementation``."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(FP32_SDPA, fp32_sdpa_attention)
    AttentionMaskInterface.register(FP32_SDPA, sdpa_mask)
    return FP32_SDPA


class _MaskMul(torch.autograd.Function):
    """x * mask with the mask (already in x's dtype) saved for the backward instead of x."""

    @staticmethod
    def forward(ctx, x, mask):
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return grad * mask, None


def keep_mask(shape: torch.Size, p: float, device=None, generator=None) -> torch.Tensor:
    """An int16 tensor of `shape` holding 1 with probability 1 - p (``p`` rounded to 1/32768), else 0.

    One 31-bit draw of torch's generator (``random_`` on int32) gives two 15-bit uniform numbers (the low
    half with its top bit cleared, and the high half); a number below ``round(p * 32768)`` drops."""
    n = shape.numel()
    bits = torch.empty((n + 1) // 2, dtype=torch.int32, device=device).random_(generator=generator)
    halves = bits.bitwise_and_(0x7FFF7FFF).view(torch.int16)[:n]
    threshold = round(p * (1 << _BITS))
    return halves.sub_(threshold - 1).clamp_(0, 1).view(shape)


class FastDropout(torch.nn.Module):
    """``nn.Dropout(p)`` with a cheaper mask (see :func:`keep_mask`); identity in eval mode or when p == 0.

    In float32 the kept values are multiplied by 1 / (1 - p) through the mask; in a 16-bit dtype the mask
    stays 0/1 (exact) and the scale is a separate multiply rounded once, as autocast would round."""

    def __init__(self, p: float):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        mask = keep_mask(x.shape, self.p, x.device).to(x.dtype)
        scale = 1.0 / (1.0 - self.p)
        if x.dtype == torch.float32:
            return _MaskMul.apply(x, mask.mul_(scale))
        return _MaskMul.apply(x, mask).mul(scale)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def fast_lora_dropout(model) -> int:
    """Replace every LoRA dropout (``nn.Dropout`` with p > 0) of a peft `model` with :class:`FastDropout`;
    returns how many. Nothing is saved with the adapter: an adapter trained either way loads the same."""
    from peft.tuners.lora import LoraLayer

    n = 0
    for module in model.modules():
        if isinstance(module, LoraLayer):
            for name, drop in module.lora_dropout.items():
                if type(drop) is torch.nn.Dropout and drop.p > 0:
                    module.lora_dropout[name] = FastDropout(drop.p)
                    n += 1
    return n


def lora_inputs_as_is(model) -> int:
    """Have the LoRA layers of `model` take their input in its own dtype (peft casts it to the LoRA weights'
    float32 by default; under bf16 autocast that cast is undone at once). Only for models run under autocast:
    outside it a bf16 input would meet float32 LoRA weights. Returns how many layers."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    n = 0
    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            module.cast_input_dtype_enabled = False
            n += 1
    return n
