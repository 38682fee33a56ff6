"""Learning-rate schedule: linear warmup, then a decay (cosine, linear or warmup-stable-decay) to `lr * min_lr_ratio`
at the end of the run.

The end of the run is the last step, or — when a wall-clock budget is set (`train.max_minutes`) — the moment the
budget is spent, whichever comes first: the decay follows whichever of steps or time is further along, so a run
that stops on its budget still ends at the low learning rate instead of being cut mid-schedule. This is how a run
is sized to "N minutes on this machine" and stays inside it on a slower one.

A whole run can have a deadline too (`run_deadline`, set by `llmcycle run` for its `budget.stage`): the stage's
budget then also ends when what is left of the run's time is just enough for the stages after it, counted in this
stage's own steps at the speed it measures over its last steps (`later_steps` x seconds per step). On a slower machine every later stage
is slower in the same proportion, so the run keeps its deadline by training a little less rather than ending late.
"""

from __future__ import annotations

import math
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

from torch.optim.lr_scheduler import LambdaLR


WSD_DECAY_SHARE = 0.2  # warmup-stable-decay: the last 20% of the run decays linearly, the rest holds the peak


def lr_factor(step: int, max_steps: int, warmup_steps: int, min_lr_ratio: float, time_fraction: float = 0.0,
              decay: str = "cosine") -> float:
    """Multiplier of the peak lr for optimizer step `step` (0-based), as LambdaLR wants it.

    `time_fraction` is the share of the wall-clock budget already spent (0 without a budget). `decay` is the shape
    after warmup: cosine, linear, or warmup-stable-decay (the peak until the last `WSD_DECAY_SHARE` of the run, then
    linear) -- all end at `min_lr_ratio`.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, max_steps - warmup_steps)
    progress = min(1.0, max((step - warmup_steps) / decay_steps, time_fraction))
    if decay == "linear":
        remaining = 1.0 - progress
    elif decay == "wsd":
        remaining = min(1.0, (1.0 - progress) / WSD_DECAY_SHARE)
    else:
        remaining = 0.5 * (1.0 + math.cos(math.pi * progress))
    return min_lr_ratio + (1.0 - min_lr_ratio) * remaining


@dataclass(frozen=True)
class Deadline:
    """The run must end by `at` (time.time()); after this stage come `later_steps` of its steps' worth of work.
    The stage keeps at least `min_seconds` of steps even when the deadline cannot be met: a base model trained for
    seconds is worth nothing to the stages after it."""

    at: float
    later_steps: int
    min_seconds: float = 0.0


_DEADLINES: list[Deadline] = []
SPEED_WINDOW = 100  # optimizer steps the deadline's speed estimate looks back over: 20 followed the noise of a
# 2-core machine (one run's last 20 steps ran 20% slower than the stage, and the later stages did not)


@contextmanager
def run_deadline(at: float, later_steps: int, min_seconds: float = 0.0) -> Iterator[Deadline]:
    """Within the block, a training loop's budget also ends in time for `later_steps` more steps before `at`."""
    deadline = Deadline(at, later_steps, min_seconds)
    _DEADLINES.append(deadline)
    try:
        yield deadline
    finally:
        _DEADLINES.remove(deadline)


class TimeBudget:
    """Seconds of optimizer steps a run may spend (evaluations and checkpoint writes are not counted): its own
    `max_minutes`, capped by the run's deadline when one is set (`limit`, refreshed after every step)."""

    def __init__(self, minutes: Optional[float], deadline: Optional[Deadline] = None):
        self.seconds = None if minutes is None else minutes * 60.0
        self.deadline = deadline if deadline is not None else (_DEADLINES[-1] if _DEADLINES else None)
        self.limit = self.seconds
        self.spent = 0.0
        self._recent: deque[tuple[int, float]] = deque(maxlen=SPEED_WINDOW + 1)

    def update(self, spent: float, steps: int, now: Optional[float] = None) -> Optional[float]:
        """Record the step seconds spent after `steps` steps; returns the limit now in force."""
        self.spent = spent
        self._recent.append((steps, spent))
        if self.deadline is not None and steps > 0:
            per_step = self.seconds_per_step()
            left = self.deadline.at - (time.time() if now is None else now) - self.deadline.later_steps * per_step
            cap = max(spent + max(0.0, left), self.deadline.min_seconds)
            self.limit = cap if self.seconds is None else min(self.seconds, cap)
        return self.limit

    def seconds_per_step(self) -> float:
        """The pace of the last SPEED_WINDOW steps (all of them before that many): a burst of load early in the
        stage says little about the speed of what follows, and must not keep shortening it once it has passed; a
        window of a hundred steps (about half a minute here) is long enough that a few slow steps at the end do not
        either."""
        (first_steps, first_spent), (steps, spent) = self._recent[0], self._recent[-1]
        if len(self._recent) <= SPEED_WINDOW or steps <= first_steps:
            return spent / max(steps, 1)
        return (spent - first_spent) / (steps - first_steps)

    def cut_by_deadline(self) -> bool:
        """Whether the run's deadline, not the stage's own minutes, set the limit."""
        return self.limit is not None and (self.seconds is None or self.limit < self.seconds)

    def fraction(self) -> float:
        return 0.0 if self.limit is None else min(1.0, self.spent / max(self.limit, 1e-9))

    def exhausted(self) -> bool:
        return self.limit is not None and self.spent >= self.limit


def make_scheduler(optimizer, max_steps: int, warmup_steps: int, min_lr_ratio: float,
                   time_fraction: Optional[Callable[[], float]] = None, decay: str = "cosine"):
    clock = time_fraction or (lambda: 0.0)
    return LambdaLR(optimizer, lambda step: lr_factor(step, max_steps, warmup_steps, min_lr_ratio, clock(), decay))
