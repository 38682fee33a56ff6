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
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F

from llmcycle.errors import ConfigError, HardwareError
from llmcycle.infer.llama_layout import fits_in_memory
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
@lru_cache(maxsize=1)
def native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX-512 BF16 or AMX), where oneDNN's bf16 GEMM beats the
    int8/int4 kernels on many rows; elsewhere bf16 is emulated and the integer kernels stay faster."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):
        return False


class _BatchCopy:
    """An int8/int4 weight's exact dequantized values rounded to bf16, for products of `batch_rows` rows or more.

    Why: the integer kernels unpack the weight again for every few rows, so their cost grows with the rows, while
    a bf16 GEMM reuses each weight across rows but reads 2 bytes a weight. Whole decode steps of SmolLM2-135M
    (30 layers and head, 2 threads of an AVX-512 BF16 EPYC, 91 cached positions), integer kernel against bf16 copy:
    int4 23 / 31 ms at 16 rows, 42 / 43 at 32, 82 / 68 at 64; int8 29 / 31 at 16, 53 / 44 at 32, 93 / 61 at 64;
    a prompt of 16 x 37 tokens prefilled at once, int4: 490 / 275 ms. So each kind switches where its copy pays.
    Only for a model's weights that `allow_batch_copies` enabled (the fast decode backend's, where bf16 is native
    and all the copies together fit in memory); each copy is made on first use, so a model that never multiplies
    that many rows never pays its 2 bytes a weight. Fewer rows keep the integer kernel, so a request decoding
    beside a few others gets the numbers it would get alone; a prompt, or a batch of many rows, rounds each weight
    to bf16 too (about 2^-9 relative, far inside the quantization's own error).
    """

    batch_rows = 1 << 30  # set per kind below
    _batch: Any = False  # False: no copy; None: allowed, not made yet; else the bf16 [out, in] tensor

    def batch_weight(self) -> torch.Tensor | None:
        if self._batch is None:
            self._batch = self.dequantize().to(torch.bfloat16)
        return self._batch if self._batch is not False else None

    def _wide(self, x: torch.Tensor) -> torch.Tensor | None:
        """x @ W through the bf16 copy where it pays, else None."""
        if x.shape[0] < self.batch_rows:
            return None
        copy_ = self.batch_weight()
        return None if copy_ is None else F.linear(x.to(torch.bfloat16), copy_).to(x.dtype)


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


def allow_batch_copies(weights: list[Any]) -> int:
    """Let these int8/int4 weights make their bf16 copies (`_BatchCopy`) where bf16 is native and all the copies
    together fit within half the memory available now; the bytes they may take (0: not allowed)."""
    copyable = [w for w in weights if isinstance(w, _BatchCopy)]
    size = sum(2 * w.shape[0] * w.shape[1] for w in copyable)
    if not size or not native_bf16() or not fits_in_memory(size):
        return 0
    for w in copyable:
        if w._batch is False:
            w._batch = None
    return size


class Int8Weight(_BatchCopy):
    """Symmetric int8 codes with one bf16 scale per output channel."""

    batch_rows = 24

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, group: int | None = None):
        w = weight.detach().float()
        self.scales = (w.abs().amax(dim=1) / 127).clamp(min=1e-8).to(torch.bfloat16)
        self.codes = (w / self.scales.float()[:, None]).round().clamp(-127, 127).to(torch.int8).contiguous()
        self.bias = None if bias is None else bias.detach().float()
        self.shape = tuple(w.shape)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self._wide(x)
        if out is None:
            out = torch.ops.aten._weight_int8pack_mm(x.to(torch.bfloat16), self.codes, self.scales).to(x.dtype)
        return out if self.bias is None else out + self.bias.to(x.dtype)

    def dequantize(self) -> torch.Tensor:
        return self.codes.float() * self.scales.float()[:, None]


class Int4Weight(_BatchCopy):
    """Asymmetric 4-bit codes per group of `group` input weights: w = (code - 8) * scale + offset (bf16 each)."""

    batch_rows = 40

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
        out = self._wide(x)
        if out is None:
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
