"""Shared training setup: accelerate state, precision, device placement and the optimizer, for every loop."""

from __future__ import annotations

from typing import Any

import torch
from accelerate import Accelerator
from accelerate import PartialState
from accelerate.state import AcceleratorState

from llmcycle.errors import TrainingError
from llmcycle.infer.threads import use_process_default


def make_accelerator(precision: str):
    """An Accelerator for this run's precision. accelerate keeps one global state per process; it is reset so a
    process (a test, a notebook) can run several loops with different precisions. Training gets every core torch
    would use, whatever a decoding engine earlier in the process chose."""
    use_process_default()
    if precision == "auto":
        if torch.cuda.is_available():
            mixed = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            mixed = "no"
    else:
        mixed = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[precision]
    if mixed == "fp16" and not torch.cuda.is_available():
        raise TrainingError("precision fp16 needs a CUDA GPU (use fp32 or bf16 on CPU)")
    distributed_state()
    AcceleratorState._reset_state()
    return Accelerator(mixed_precision=mixed, cpu=not torch.cuda.is_available())


def distributed_state():
    """accelerate's process state. On a machine without CUDA it is created with cpu=True, which makes processes
    started by `torchrun` or `accelerate launch --multi_gpu` train together over gloo (plain `accelerate launch
    --cpu` fans out only through mpirun)."""
    return PartialState(cpu=not torch.cuda.is_available())


def placed_by_loader(model) -> bool:
    """Quantized (bitsandbytes) or device-mapped models are already where they must be and refuse `.to()`."""
    return bool(getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False)
                or getattr(model, "hf_device_map", None))


def make_optimizer(model, cfg: Any, device):
    """AdamW over trainable parameters (`cfg`: the loop config's lr, betas, weight_decay); matrices decay, norms
    and biases do not."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise TrainingError("the model has no trainable parameters")
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = torch.device(device).type in ("cpu", "cuda") and all(p.is_floating_point() for p in params)
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=tuple(cfg.betas),
                             fused=fused or None)  # one kernel per step instead of one per tensor and op
