"""How torch's idle OpenMP workers wait, chosen before torch loads (libgomp reads it once, at load).

libgomp's default has every worker spin up to 300,000 times after each parallel region, waiting for the next, but
only 100 times once the process has more OpenMP threads than cores (each Python thread that runs torch products has
a team of its own). On a machine whose cores are shared a worker spinning long holds a core that the main thread's
Python work, or another process, needs; a worker that sleeps at once must be woken, through the kernel, for every
product. Commands that alternate products with Python choose:
- `llmcycle eval` sleeps (`OMP_WAIT_POLICY=PASSIVE`): its generation and tokenisation run between short products,
  and the SmolLM2 recipe's eval took 357 CPU-s instead of 580 with identical results (docs/benchmarks.md).
- `llmcycle serve` spins briefly (`OMP_WAIT_POLICY=ACTIVE` with `GOMP_SPINCOUNT`, which bounds it: 30,000 spins,
  1,000 once threads outnumber cores). Its decoding thread is not the main thread, so under libgomp's default its
  workers spun 100 times and then slept between products microseconds apart: SmolLM2's int4 step took 12 ms there
  against 6 ms in the main thread. With the bounded spin a worker waits through the gaps inside a decode step and
  sleeps through the event loop's Python between requests (docs/serving.md, "Speed on CPU").
"""

from __future__ import annotations

import os
import sys

WAIT_POLICY_ENV = "OMP_WAIT_POLICY"
SPIN_COUNT_ENV = "GOMP_SPINCOUNT"
SPIN_COUNT = 30_000
PASSIVE = {WAIT_POLICY_ENV: "PASSIVE"}
SHORT_SPIN = {WAIT_POLICY_ENV: "ACTIVE", SPIN_COUNT_ENV: str(SPIN_COUNT)}


def _ask(settings: dict[str, str]) -> str:
    """Set `settings` unless torch is loaded already or the user set either variable; the waiting in effect."""
    if "torch" not in sys.modules and WAIT_POLICY_ENV not in os.environ and SPIN_COUNT_ENV not in os.environ:
        os.environ.update(settings)
    said = [f"{name}={os.environ[name]}" for name in (WAIT_POLICY_ENV, SPIN_COUNT_ENV) if name in os.environ]
    return " ".join(said) or "libgomp default (spins 300,000 times)"


def passive_openmp() -> str:
    """Idle workers sleep at once (eval)."""
    return _ask(PASSIVE)


def short_openmp_spin() -> str:
    """Idle workers spin briefly, then sleep (serve)."""
    return _ask(SHORT_SPIN)
