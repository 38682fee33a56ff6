"""int8 dynamic quantization of Linear layers for CPU inference (weights int8, activations quantized per batch)."""

from __future__ import annotations

from typing import Any

from llmcycle.errors import ConfigError, HardwareError

METHODS = ("int8",)


def check_method(method: str | None, device: str = "cpu") -> None:
    if method is None:
        return
    if method not in METHODS:
        raise ConfigError(f"quantize: unknown method {method!r} (choose from: {', '.join(METHODS)})")
    if not str(device).startswith("cpu"):
        raise HardwareError(f"quantize {method}: dynamic int8 quantization runs on CPU only, not {device}")


def quantize_linears(module: Any) -> Any:
    """Every nn.Linear of `module` replaced by its dynamically quantized int8 version (per-output-channel scales,
    which keep small models' perplexity much closer than one scale per matrix)."""
    import warnings

    import torch

    try:
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
    except ImportError as exc:  # pragma: no cover - torch without the ao package
        raise HardwareError(f"quantize int8: this torch build lacks dynamic quantization ({exc})") from None
    engines = torch.backends.quantized.supported_engines
    if torch.backends.quantized.engine == "none" and engines:
        torch.backends.quantized.engine = next(e for e in engines if e != "none")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization announces its own deprecation
        return quantize_dynamic(module, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)


def quantize_model(model: Any, method: str, device: str = "cpu") -> Any:
    check_method(method, device)
    return quantize_linears(model.float())
