"""How torch's idle OpenMP workers wait, chosen before torch loads (libgomp reads the policy once, at load).

libgomp's default has every worker spin up to 300,000 times after each parallel region, waiting for the next. On a
machine whose cores are shared (our 2-core CPU, other jobs running) a spinning worker holds a core that the main
thread's Python work, or another process, needs. Commands whose work alternates products with Python (the server's
decoding loop, evaluation's many short generation steps and tokenisation) ask for sleeping workers instead. The
server with the 5M model and 2 threads streamed 15-34 tok/s to one client spinning, 310-340 sleeping, while its
decoding loop alone was no slower sleeping (docs/serving.md).
"""

from __future__ import annotations

import os
import sys

WAIT_POLICY_ENV = "OMP_WAIT_POLICY"


def passive_openmp() -> str:
    """Make torch's idle OpenMP threads sleep instead of spinning, before torch loads; returns the policy in effect.

    A process that imported torch already keeps its own; an explicit $OMP_WAIT_POLICY always wins."""
    if "torch" not in sys.modules:
        os.environ.setdefault(WAIT_POLICY_ENV, "PASSIVE")
    return os.environ.get(WAIT_POLICY_ENV, "unset (libgomp spins)")
