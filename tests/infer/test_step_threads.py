"""A server's decode steps whose products are tiny run on one thread, then the thread count is put back; batched
greedy tokens are the same as on several threads."""

from __future__ import annotations

import torch

from llmcycle.infer import Engine, GenerationSettings, threads
from llmcycle.infer.continuous import Scheduler
from llmcycle.infer.threads import one_thread_for


def test_one_thread_for_small_work_and_back():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with one_thread_for(threads.SMALL_STEP_WORK - 1):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with one_thread_for(threads.SMALL_STEP_WORK):
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def _greedy_tokens(engine: Engine, prompts: list[list[int]]) -> tuple[list[list[int]], set[int]]:
    """Each request's tokens from one burst of the scheduler, and the thread counts its decode steps ran on."""
    scheduler = Scheduler(engine, max_batch=4, max_queue=8, max_context=128)
    seen: set[int] = set()
    step = None
    try:
        # the cache is made on the scheduler's thread: wrap the backend's step, which every decode step calls
        step = engine.backend.step_rows
        engine.backend.step_rows = lambda *a: seen.add(torch.get_num_threads()) or step(*a)
        settings = GenerationSettings(max_new_tokens=12, min_new_tokens=12, temperature=0)
        with scheduler._cv:
            handles = [scheduler.submit(ids, settings) for ids in prompts]
        return [list(handle)[-1].token_ids for handle in handles], seen
    finally:
        scheduler.close()
        if step is not None:
            engine.backend.step_rows = step


def test_tiny_steps_on_one_thread_choose_the_same_tokens(make_tiny_model, monkeypatch):
    before = torch.get_num_threads()
    engine = Engine.load(make_tiny_model("llama"), threads=2)
    prompts = [engine.encode_chat([{"role": "user", "content": text}])
               for text in ("hello there", "how are you doing today", "we saw a deer", "i went hiking")]
    try:
        one, one_threads = _greedy_tokens(engine, prompts)
        monkeypatch.setattr(threads, "SMALL_STEP_WORK", 0)  # every step on the process's two threads
        two, two_threads = _greedy_tokens(engine, prompts)
    finally:
        torch.set_num_threads(before)
    assert one_threads == {1} and two_threads == {2}
    assert one == two and all(len(tokens) == 12 for tokens in one)
