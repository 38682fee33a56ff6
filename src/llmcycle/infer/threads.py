"""CPU thread count for decoding.

A small model decoding at batch 1 does matrix-vector products of a few hundred KB each: extra threads add
synchronisation and, on a shared machine, fight other processes for cores. `bench/decode_bench.py` measured 1 vs 2
threads on our 2-core CPU (see bench/results/decode_bench.json): 1 thread wins, so it is the default for models
under SMALL_MODEL_PARAMS on CPU. Larger models keep torch's choice. $LLMCYCLE_THREADS or an explicit value win.

torch's thread count is one setting for the whole process, and a run's stages share the process: training (batches
of hundreds of tokens) wants every core, so the training loop puts back torch's own choice (`use_process_default`)
that a decoding engine of an earlier step (on-policy sampling, evaluation) narrowed to one thread.

Within a count chosen (or given: `llmcycle serve --threads 2`), a server's decode step that is too small to share
runs on one thread (`forward_threads`): the default preset's one-row step took 349 µs on two threads and 221 on one,
four rows 686 against 568, sixteen 1,233 against 1,255 (best of 5 x 50 steps, decoding thread, idle machine).
"""

from __future__ import annotations

import os

import torch

THREADS_ENV = "LLMCYCLE_THREADS"
SMALL_MODEL_PARAMS = 50_000_000
SMALL_FORWARD = 16_000_000  # tokens x weights of a forward below which one thread is the faster
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
    if chosen is not None:
        use_threads(chosen)
    return torch.get_num_threads()


def use_process_default() -> int:
    """Give torch back its own thread count for this process (for batched work such as training)."""
    use_threads(PROCESS_DEFAULT)
    return PROCESS_DEFAULT


def forward_threads(tokens: int, params: int, threads: int) -> int:
    """Threads for one forward of `tokens` tokens through a model of `params` weights, at most `threads`."""
    return 1 if tokens * params < SMALL_FORWARD else threads


def use_threads(count: int) -> None:
    """Set torch's intra-op threads to `count` (a no-op when they are already)."""
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
