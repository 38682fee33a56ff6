"""Learning-rate schedule: linear warmup, then cosine decay to `lr * min_lr_ratio` at the last step."""

from __future__ import annotations

import math

from torch.optim.lr_scheduler import LambdaLR


def lr_factor(step: int, max_steps: int, warmup_steps: int, min_lr_ratio: float) -> float:
    """Multiplier of the peak lr for optimizer step `step` (0-based), as LambdaLR wants it."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, max_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(optimizer, max_steps: int, warmup_steps: int, min_lr_ratio: float):
    return LambdaLR(optimizer, lambda step: lr_factor(step, max_steps, warmup_steps, min_lr_ratio))
