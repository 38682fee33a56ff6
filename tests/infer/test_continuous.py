"""Continuous batching: a request decodes to the same tokens alone or joining a running batch; rows free at once
when a client leaves; a full queue refuses."""

from __future__ import annotations

import pytest
import torch

from llmcycle.infer import Engine, GenerationSettings
from llmcycle.infer.continuous import Piece, QueueFull, Scheduler

WORDS = "hello there how are you doing today i went hiking with my friends and we saw a deer".split()


def conversations(n: int) -> list[list[dict]]:
    return [[{"role": "user", "content": " ".join(WORDS[i % 5:(i % 5) + 1 + (i * 7) % 14])}] for i in range(n)]


def greedy(n: int) -> GenerationSettings:
    return GenerationSettings(max_new_tokens=n, min_new_tokens=n, temperature=0)


@pytest.mark.parametrize("fast", [True, False])
def test_batched_requests_decode_as_alone(make_tiny_model, fast):
    engine = Engine.load(make_tiny_model("llama"), fast=fast)
    convos = conversations(7 if fast else 3)
    budgets = [5 + (i * 13) % 40 for i in range(len(convos))]
    alone = [engine.chat([c], greedy(n))[0] for c, n in zip(convos, budgets)]
    # a small context forces the cache to compact and rows to be reused while others run
    scheduler = Scheduler(engine, max_batch=3, max_queue=16, max_context=72)
    padded_prefills = []
    if fast:
        start = engine.backend.start
        engine.backend.start = lambda *a: padded_prefills.append(a[0].shape[0]) or start(*a)
    try:
        with scheduler._cv:  # all queued before the first admission: a burst
            handles = [scheduler.submit(engine.encode_chat(c), engine.chat_settings(greedy(n)))
                       for c, n in zip(convos, budgets)]
        for handle, expected in zip(handles, alone):
            *pieces, done = list(handle)
            assert "".join(p.text for p in pieces) == done.text
            assert done.token_ids == expected.token_ids[:len(done.token_ids)] and done.token_ids
        assert scheduler.continuous is fast
        if fast:
            assert scheduler.steps < sum(budgets)  # rows shared decode steps
            assert padded_prefills and padded_prefills[0] == 3  # the burst was prefilled in one forward
    finally:
        scheduler.close()


def test_cancel_frees_the_row_and_full_queue_refuses(make_tiny_model):
    engine = Engine.load(make_tiny_model("llama"))
    scheduler = Scheduler(engine, max_batch=1, max_queue=0, max_context=200)
    prompt = engine.encode_chat(conversations(1)[0])
    try:
        handle = scheduler.submit(prompt, greedy(150))
        events = iter(handle)
        assert isinstance(next(events), Piece)  # it is running
        with pytest.raises(QueueFull):
            scheduler.submit(prompt, greedy(5))
        handle.cancel()
        done = list(events)[-1]
        assert done.finish_reason == "cancelled" and len(done.token_ids) < 150
        after = scheduler.submit(prompt, greedy(3))  # the row is free again
        assert list(after)[-1].finish_reason == "length"
        assert scheduler.active == 0
    finally:
        scheduler.close()


def test_shared_prefix_cache_serves_joining_requests_exactly(make_tiny_model):
    """A server's requests that share a system prompt prefill only their own tail, with the same tokens."""
    from llmcycle.infer.prefix_cache import PrefixCache

    engine = Engine.load(make_tiny_model("llama"))
    system = {"role": "system", "content": " ".join(WORDS * 2)}
    convos = [[system, *c] for c in conversations(4)]
    alone = [engine.chat([c], greedy(12))[0] for c in convos]
    engine.backend.prefix_cache = cache = PrefixCache(min_tokens=8)
    scheduler = Scheduler(engine, max_batch=2, max_queue=8, max_context=160)
    try:
        for convo, expected in zip(convos, alone):  # one at a time: each prefill can reuse the last
            *_, done = list(scheduler.submit(engine.encode_chat(convo), engine.chat_settings(greedy(12))))
            assert done.token_ids == expected.token_ids
    finally:
        scheduler.close()
    assert cache.hits >= 3 and cache.entries


def test_a_burst_sharing_a_system_prompt_runs_it_once_with_the_same_tokens(make_tiny_model, monkeypatch):
    """Requests that arrive together and share a system prompt: the prompt is run once (then taken from the prefix
    cache), only each request's own tail is packed into one forward, and every request decodes as it would alone."""
    from llmcycle.infer import continuous, row_prefill
    from llmcycle.infer.prefix_cache import PrefixCache

    engine = Engine.load(make_tiny_model("llama"))
    system = {"role": "system", "content": " ".join(WORDS * 2)}
    convos = [[system, *c] for c in conversations(5)]
    alone = [engine.chat([c], greedy(10))[0] for c in convos]
    engine.backend.prefix_cache = PrefixCache(min_tokens=8)
    prompts = [engine.encode_chat(c) for c in convos]
    tails = []
    original = row_prefill.prefill_after

    def spy(backend, keys, values, suffixes):
        tails.append([len(s) for s in suffixes])
        return original(backend, keys, values, suffixes)

    monkeypatch.setattr(continuous, "prefill_after", spy)
    scheduler = Scheduler(engine, max_batch=5, max_queue=8, max_context=200)
    try:
        for _ in range(2):  # the second burst takes the shared prompt from the prefix cache
            with scheduler._cv:  # all queued before the first admission: a burst
                handles = [scheduler.submit(p, engine.chat_settings(greedy(10))) for p in prompts]
            for handle, expected in zip(handles, alone):
                assert list(handle)[-1].token_ids == expected.token_ids
    finally:
        scheduler.close()
    shared = len(prompts[0]) - tails[0][0]
    assert shared > len(engine.encode_chat([system])) // 2  # the system prompt was not run per request
    assert tails == [[len(p) - shared for p in prompts]] * 2
    assert engine.backend.prefix_cache.hits >= 1


@pytest.mark.parametrize("arch,extra", [("llama", {}), ("qwen2", {}), ("mistral", {"sliding_window": 12})])
def test_prefill_after_a_prefix_matches_each_prompt_run_whole(make_tiny_model, arch, extra):
    """Also with biases (qwen2) and a sliding window shorter than prefix + tail (mistral)."""
    from llmcycle.infer.row_prefill import prefill_after

    backend = Engine.load(make_tiny_model(arch, **extra)).backend
    assert backend is not None and backend.windows[0] == extra.get("sliding_window")
    prefix, tails = list(range(3, 23)), [[40, 41, 42], [50], [60, 61, 62, 63, 64, 65, 66]]
    _, past_keys, past_values = backend.prefill_one(torch.tensor([prefix]))
    logits, keys, values = prefill_after(backend, past_keys, past_values, tails)
    for i, tail in enumerate(tails):
        whole_logits, whole_keys, whole_values = backend.prefill_one(torch.tensor([prefix + tail]))
        assert torch.allclose(logits[i:i + 1], whole_logits, atol=1e-4)
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(keys[i] + values[i], whole_keys + whole_values))
