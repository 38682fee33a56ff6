"""Learning-rate schedule: linear warmup, then cosine decay to `lr * min_lr_ratio` at the end of the run.

The end of the run is the last step, or — when a wall-clock budget is set (`train.max_minutes`) — the moment the
budget is spent, whichever comes first: the decay follows whichever of steps or time is further along, so a run
that stops on its budget still ends at the low learning rate instead of being cut mid-schedule. This is how a run
is sized to "N minutes on this machine" and stays inside it on a slower one.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

from torch.optim.lr_scheduler import LambdaLR


def lr_factor(step: int, max_steps: int, warmup_steps: int, min_lr_ratio: float, time_fraction: float = 0.0) -> float:
    """Multiplier of the peak lr for optimizer step `step` (0-based), as LambdaLR wants it.

    `time_fraction` is the share of the wall-clock budget already spent (0 without a budget).
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, max_steps - warmup_steps)
    progress = min(1.0, max((step - warmup_steps) / decay_steps, time_fraction))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class TimeBudget:
    """Seconds of optimizer steps a run may spend (evaluations and checkpoint writes are not counted)."""

    def __init__(self, minutes: Optional[float]):
        self.seconds = None if minutes is None else minutes * 60.0
        self.spent = 0.0

    def fraction(self) -> float:
        return 0.0 if self.seconds is None else min(1.0, self.spent / self.seconds)

    def exhausted(self) -> bool:
        return self.seconds is not None and self.spent >= self.seconds


def make_scheduler(optimizer, max_steps: int, warmup_steps: int, min_lr_ratio: float,
                   time_fraction: Optional[Callable[[], float]] = None):
    clock = time_fraction or (lambda: 0.0)
    return LambdaLR(optimizer, lambda step: lr_factor(step, max_steps, warmup_steps, min_lr_ratio, clock()))
