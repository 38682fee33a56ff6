"""Weight-only quantization for inference: bf16, int8 (per-output-channel scales) and int4 (group-wise scales).

Why weight-only: at batch 1 decoding is bound by reading the weights, so fewer bytes per weight is the speed, and
keeping activations in floating point keeps the model's quality (dynamic int8, which also quantizes activations,
costs a small model most of its perplexity). The kernels are the ones PyTorch ships for CPU, measured on our
machine (AVX-512 BF16/VNNI, no AMX): `_weight_int8pack_mm` and `_weight_int4pack_mm_for_cpu` with bf16 activations
beat an fp32 matmul 2-6x on the large matrices; with fp32 activations they are 10x slower, so activations are cast
to bf16 for the matmul only (norms, residual stream, rotary and attention stay in the model's dtype).

Every quantized weight knows its exact dequantized value (scales are stored in bf16 and the integer codes are
computed against the rounded scales), so "the same quantized weights through transformers" is well defined:
`dequantized_copy(model, spec)` builds it.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F

from llmcycle.errors import ConfigError, HardwareError
from llmcycle.quant_spec import DEFAULT_GROUP, INT4_GROUPS, QuantSpec, parse_spec


def check_method(method: str | QuantSpec | None, device: str = "cpu") -> QuantSpec | None:
    """The parsed spec, after checking this torch build and device can run it (one-line errors, no work done)."""
    spec = parse_spec(method)
    if spec is None or spec.method == "bf16":
        return spec
    if not str(device).startswith("cpu"):
        raise HardwareError(f"quantize {spec}: the int8/int4 kernels run on CPU only, not {device} (use bf16)")
    kernel = "_weight_int8pack_mm" if spec.method == "int8" else "_weight_int4pack_mm_for_cpu"
    if not hasattr(torch.ops.aten, kernel) or not _kernel_runs(spec):
        raise HardwareError(f"quantize {spec}: this torch build ({torch.__version__}) cannot run torch.ops.aten."
                            f"{kernel} on this CPU")
    return spec


def _kernel_runs(spec: QuantSpec) -> bool:
    try:
        weight = _WEIGHTS[spec.method](torch.randn(64, 128), None, spec.group)
        return weight(torch.randn(2, 128)).shape == (2, 64)
    except (RuntimeError, NotImplementedError):
        return False


def check_shapes(spec: QuantSpec | None, in_features: dict[str, int]) -> None:
    """Refuse an int4 group size that does not divide every layer's input width (named layer in the message)."""
    if spec is None or spec.group is None:
        return
    for name, width in in_features.items():
        if width % spec.group:
            fits = [g for g in INT4_GROUPS if all(w % g == 0 for w in in_features.values())]
            hint = f"use int4:{fits[-1]}" if fits else "no int4 group size fits this model; use int8"
            raise ConfigError(f"quantize {spec}: group {spec.group} does not divide {name} input width {width} "
                              f"({hint})")


def config_widths(config: Any) -> dict[str, int]:
    """Input widths of a decoder's linear layers, from its config alone (checked before any weights load)."""
    hidden = getattr(config, "hidden_size", None)
    heads = getattr(config, "num_attention_heads", None)
    head_dim = getattr(config, "head_dim", None) or (hidden // heads if hidden and heads else None)
    widths = {"hidden_size": hidden, "intermediate_size": getattr(config, "intermediate_size", None),
              "attention output (heads x head_dim)": heads * head_dim if heads and head_dim else None}
    return {k: int(v) for k, v in widths.items() if isinstance(v, int)}


# ---- quantized weights: callables x [M, K] -> [M, N] in x's dtype ---------------------------------------
class BF16Weight:
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, group: int | None = None):
        self.weight = weight.detach().to(torch.bfloat16).contiguous()
        self.bias = None if bias is None else bias.detach().float()
        self.shape = tuple(self.weight.shape)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x.to(torch.bfloat16), self.weight).to(x.dtype)
        return out if self.bias is None else out + self.bias.to(x.dtype)

    def dequantize(self) -> torch.Tensor:
        return self.weight.float()


class Int8Weight:
    """Symmetric int8 codes with one bf16 scale per output channel."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, group: int | None = None):
        w = weight.detach().float()
        self.scales = (w.abs().amax(dim=1) / 127).clamp(min=1e-8).to(torch.bfloat16)
        self.codes = (w / self.scales.float()[:, None]).round().clamp(-127, 127).to(torch.int8).contiguous()
        self.bias = None if bias is None else bias.detach().float()
        self.shape = tuple(w.shape)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.ops.aten._weight_int8pack_mm(x.to(torch.bfloat16), self.codes, self.scales).to(x.dtype)
        return out if self.bias is None else out + self.bias.to(x.dtype)

    def dequantize(self) -> torch.Tensor:
        return self.codes.float() * self.scales.float()[:, None]


class Int4Weight:
    """Asymmetric 4-bit codes per group of `group` input weights: w = (code - 8) * scale + offset (bf16 each)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, group: int | None = DEFAULT_GROUP):
        w = weight.detach().float()
        n, k = w.shape
        self.group = group or DEFAULT_GROUP
        grouped = w.reshape(n, k // self.group, self.group)
        low, high = grouped.amin(-1), grouped.amax(-1)
        scale = ((high - low) / 15).clamp(min=1e-8).to(torch.bfloat16).float()
        offset = (low + 8 * scale).to(torch.bfloat16).float()
        codes = ((grouped - offset[..., None]) / scale[..., None] + 8).round().clamp(0, 15)
        self.codes_ = codes.to(torch.int32).reshape(n, k)
        self.packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(self.codes_, 1)
        self.scale_offset = torch.stack([scale, offset], dim=-1).transpose(0, 1).contiguous().to(torch.bfloat16)
        self.bias = None if bias is None else bias.detach().float()
        self.shape = (n, k)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.ops.aten._weight_int4pack_mm_for_cpu(x.to(torch.bfloat16), self.packed, self.group,
                                                         self.scale_offset).to(x.dtype)
        return out if self.bias is None else out + self.bias.to(x.dtype)

    def dequantize(self) -> torch.Tensor:
        n, k = self.shape
        scale, offset = self.scale_offset.float().transpose(0, 1).unbind(-1)  # [n, k / group] each
        codes = self.codes_.reshape(n, k // self.group, self.group).float()
        return ((codes - 8) * scale[..., None] + offset[..., None]).reshape(n, k)


_WEIGHTS = {"bf16": BF16Weight, "int8": Int8Weight, "int4": Int4Weight}


def quantize_weight(weight: torch.Tensor, bias: torch.Tensor | None, spec: QuantSpec) -> Any:
    """weight [out, in] (+ bias) as a quantized callable."""
    with torch.no_grad():
        return _WEIGHTS[spec.method](weight, bias, spec.group)


def head_spec(spec: QuantSpec) -> QuantSpec:
    """The output head's format, decided here on its own (it is untied from the embedding either way). Measured on
    SmolLM2-135M (chitchat test text, 8.5k tokens): an int4 head changes perplexity +0.7% against +1.2% with an
    int8 head under int4 layers, and reads half the bytes, so every format quantizes the head like the layers."""
    return spec


# ---- whole models ---------------------------------------------------------------------------------------
class QuantLinear(torch.nn.Module):
    """An nn.Linear stand-in over a quantized weight, so the transformers forward (scoring, beams, fallback)
    runs the same weights as our decode path."""

    def __init__(self, weight: Any, in_features: int, out_features: int):
        super().__init__()
        self.qweight, self.in_features, self.out_features = weight, in_features, out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.qweight(x.reshape(-1, self.in_features)).reshape(*x.shape[:-1], self.out_features)


def _linears(model: Any) -> list[tuple[Any, str, torch.nn.Linear]]:
    found = []
    for parent in model.modules():
        for name, child in parent.named_children():
            if type(child) is torch.nn.Linear:
                found.append((parent, name, child))
    return found


def quantize_model(model: Any, method: str | QuantSpec, device: str = "cpu") -> Any:
    """Every nn.Linear of `model` replaced in place by a QuantLinear (the output head untied from the embedding
    lookup, which stays in full precision: a lookup reads one row, so it costs nothing to keep)."""
    spec = check_method(method, device)
    linears = _linears(model)
    check_shapes(spec, {name: module.in_features for name, module in model.named_modules()
                        if type(module) is torch.nn.Linear})
    head = getattr(model, "lm_head", None)
    for parent, name, child in linears:
        use = head_spec(spec) if child is head else spec
        qweight = quantize_weight(child.weight, child.bias, use)
        setattr(parent, name, QuantLinear(qweight, child.in_features, child.out_features))
    return model


def dequantized_copy(model: Any, method: str | QuantSpec) -> Any:
    """A float copy of `model` whose Linear weights are the exact dequantized values of `quantize_model`'s."""
    spec = parse_spec(method)
    clone = copy.deepcopy(model)
    head = getattr(clone, "lm_head", None)
    with torch.no_grad():
        for _, _, child in _linears(clone):
            use = head_spec(spec) if child is head else spec
            child.weight = torch.nn.Parameter(quantize_weight(child.weight, None, use).dequantize()
                                              .to(child.weight.dtype), requires_grad=False)
    return clone
