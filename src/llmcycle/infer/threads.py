"""CPU thread count for decoding.

A small model decoding at batch 1 does matrix-vector products of a few hundred KB each: extra threads add
synchronisation and, on a shared machine, fight other processes for cores. `bench/decode_bench.py` measured 1 vs 2
threads on our 2-core CPU (see bench/results/decode_bench.json): 1 thread wins, so it is the default for models
under SMALL_MODEL_PARAMS on CPU. Larger models keep torch's choice. $LLMCYCLE_THREADS or an explicit value win.

torch's thread count is one setting for the whole process, and a run's stages share the process: training (batches
of hundreds of tokens) wants every core, so the training loop puts back torch's own choice (`use_process_default`)
that a decoding engine of an earlier step (on-policy sampling, evaluation) narrowed to one thread.

A server asked for several threads still runs a decode step whose products are tiny on one (`one_thread_for`):
with idle OpenMP workers asleep (as `llmcycle serve` makes them), every parallel region of such a step (attention
splits even one row's heads across threads) waits for a worker to be woken and scheduled, which on a busy 2-core
machine costs more than the region's arithmetic, and the other core is the event loop's.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

import torch

THREADS_ENV = "LLMCYCLE_THREADS"
SMALL_MODEL_PARAMS = 50_000_000
SMALL_STEP_WORK = 32_000_000  # rows x weights of a decode step below which one thread runs it (the default preset
# at 16 rows: 29M; SmolLM2-135M at one row: 135M)
PROCESS_DEFAULT = torch.get_num_threads()  # torch's choice ($OMP_NUM_THREADS or the cores), read before any change


def choose_threads(threads: int | None, params: int, device: str) -> int | None:
    """The thread count to set, or None to leave torch's."""
    if threads is not None and threads > 0:
        return threads
    env = os.environ.get(THREADS_ENV, "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    if str(device).startswith("cpu") and params < SMALL_MODEL_PARAMS:
        return 1
    return None


def apply_threads(threads: int | None, params: int = 0, device: str = "cpu") -> int:
    """Set torch's intra-op threads as `choose_threads` decides; returns the count in effect."""
    chosen = choose_threads(threads, params, device)
    if chosen is not None and torch.get_num_threads() != chosen:
        torch.set_num_threads(chosen)
    return torch.get_num_threads()


def use_process_default() -> int:
    """Give torch back its own thread count for this process (for batched work such as training)."""
    if torch.get_num_threads() != PROCESS_DEFAULT:
        torch.set_num_threads(PROCESS_DEFAULT)
    return PROCESS_DEFAULT


@contextmanager
def one_thread_for(work: int) -> Iterator[None]:
    """Run the block on one intra-op thread when `work` (rows x weights) is below SMALL_STEP_WORK, then put the
    count back. Only the count of threads changes, not how a product is split over its output, so the results are
    the same numbers."""
    threads = torch.get_num_threads()
    if threads == 1 or work >= SMALL_STEP_WORK:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
