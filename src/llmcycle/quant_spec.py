"""What a `--quantize` value means, parsed without torch.

Why its own module: the server checks its settings before anything loads, and importing the quantization kernels
loads torch, which takes the OpenMP settings as they are at that moment. A bad method must be one line and exit 2
at start, not a server that stays up with "model load failed" in its log.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmcycle.errors import ConfigError

METHODS = ("bf16", "int8", "int4")
INT4_GROUPS = (32, 64, 128)
DEFAULT_GROUP = 32  # 5 bits per weight with its bf16 scale and offset, as llama.cpp's Q4_1


@dataclass(frozen=True)
class QuantSpec:
    method: str
    group: int | None = None

    def __str__(self) -> str:
        return self.method if self.group in (None, DEFAULT_GROUP) else f"{self.method}:{self.group}"


def parse_spec(text: str | QuantSpec | None) -> QuantSpec | None:
    """'bf16', 'int8', 'int4' or 'int4:GROUP' (GROUP one of 32, 64, 128)."""
    if text is None or isinstance(text, QuantSpec):
        return text
    method, _, group = str(text).strip().lower().partition(":")
    if method not in METHODS:
        raise ConfigError(f"quantize: unknown method {text!r} (choose from: bf16, int8, int4, int4:GROUP)")
    if method != "int4":
        if group:
            raise ConfigError(f"quantize: {method} takes no group size (only int4:GROUP does)")
        return QuantSpec(method)
    if not group:
        return QuantSpec("int4", DEFAULT_GROUP)
    if not group.isdigit() or int(group) not in INT4_GROUPS:
        raise ConfigError(f"quantize: int4 group size {group!r} must be one of {', '.join(map(str, INT4_GROUPS))}")
    return QuantSpec("int4", int(group))
