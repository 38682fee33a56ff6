"""LoRA / DoRA / QLoRA setup on top of peft: per-architecture target modules and the 4-bit loading QLoRA needs.

Targets cover every linear layer of attention and MLP, which is what works best in practice for LoRA; Phi-3 fuses
q/k/v into `qkv_proj` and gate/up into `gate_up_proj`, so it gets its own list.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Any, Iterator

import torch
from transformers import BitsAndBytesConfig

from llmcycle.building import BUILD_LOCK
from llmcycle.errors import ConfigError, HardwareError

LLAMA_STYLE = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PHI3_STYLE = ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]

TARGETS_BY_MODEL_TYPE: dict[str, list[str]] = {
    "llama": LLAMA_STYLE,
    "mistral": LLAMA_STYLE,
    "mixtral": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qwen2": LLAMA_STYLE,
    "qwen3": LLAMA_STYLE,
    "gemma": LLAMA_STYLE,
    "gemma2": LLAMA_STYLE,
    "phi3": PHI3_STYLE,
    "phi": ["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"],
    "gpt2": ["c_attn", "c_proj", "c_fc"],
}


def target_modules(model_type: str, requested: list[str] | str = "auto") -> list[str] | str:
    """The module names LoRA wraps: the architecture's defaults for "auto", else what was asked for.

    An architecture we have no list for gets peft's "all-linear" (every linear layer but the output head)."""
    if requested != "auto":
        return requested
    return TARGETS_BY_MODEL_TYPE.get(model_type, "all-linear")


def check_targets_exist(model: Any, targets: list[str] | str) -> None:
    """Fail early, naming the missing module, instead of peft's long message."""
    if isinstance(targets, str):
        return
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [t for t in targets if t not in names]
    if missing:
        raise ConfigError(
            f"lora.target_modules: {', '.join(missing)} not found in this {model.config.model_type} model "
            f"(set lora.target_modules to some of its linear layers, or 'auto')"
        )


def peft_config(model: Any, method: str, r: int, alpha: int, dropout: float, targets: list[str] | str):
    """A peft LoraConfig for lora/dora/qlora (DoRA = LoRA with weight-decomposed magnitude).
    peft (half a second to import) is imported here, when an adapter is made: eval, chat and serve need none."""
    from peft import LoraConfig, TaskType

    resolved = target_modules(model.config.model_type, targets)
    check_targets_exist(model, resolved)
    return LoraConfig(
        task_type=TaskType.CAUSAL_LM, r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=resolved,
        use_dora=(method == "dora"), bias="none",
    )


def wrap_with_adapter(model: Any, method: str, r: int, alpha: int, dropout: float, targets: list[str] | str):
    """The base frozen, LoRA/DoRA matrices trainable (QLoRA: after preparing the 4-bit base for training).
    peft is imported on the first adapter made, as in `peft_config`."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    if method == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    config = peft_config(model, method, r, alpha, dropout, targets)
    with quiet_peft(), BUILD_LOCK:
        return get_peft_model(model, config)


@contextmanager
def quiet_peft() -> Iterator[None]:
    """peft calls a transformers method deprecated in v5; its FutureWarning tells a user nothing."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def require_cuda_for_qlora() -> None:
    """QLoRA's 4-bit kernels (bitsandbytes) need a CUDA GPU: say so in one line before loading anything."""
    if not torch.cuda.is_available():
        raise HardwareError("method qlora needs a CUDA GPU (4-bit bitsandbytes); none found: use --tuning lora")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise HardwareError("method qlora needs the bitsandbytes package: pip install bitsandbytes") from None


def quantization_config(compute_dtype: Any):
    """4-bit NF4 with double quantization, computing in `compute_dtype` (the QLoRA recipe)."""
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
    )


def count_parameters(model: Any) -> dict[str, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable_params": trainable, "total_params": total}
