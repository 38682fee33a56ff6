"""Building an Engine around a model leaves the process's torch threads alone; loading one (an entry point) sets
them for the model it loaded."""

import torch
from transformers import AutoModelForCausalLM

from llmcycle.infer import Engine
from llmcycle.infer.threads import THREADS_ENV
from llmcycle.loading import load_tokenizer_for


def test_engine_leaves_global_threads_alone_and_load_sets_them(make_tiny_model, monkeypatch):
    monkeypatch.delenv(THREADS_ENV, raising=False)
    path = make_tiny_model("llama")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        engine = Engine(AutoModelForCausalLM.from_pretrained(path), load_tokenizer_for(path))
        assert torch.get_num_threads() == 2 and engine.threads == 2  # a small model on CPU would have chosen 1
        loaded = Engine.load(path)
        assert torch.get_num_threads() == 1 and loaded.threads == 1
        assert Engine.load(path, threads=2).threads == 2
    finally:
        torch.set_num_threads(before)


def test_a_servers_small_decode_steps_run_on_one_thread_its_prompts_on_all(make_tiny_model, monkeypatch):
    from llmcycle.infer import GenerationSettings
    from llmcycle.infer.continuous import Scheduler
    from llmcycle.infer.threads import SMALL_FORWARD, forward_threads

    assert forward_threads(1, SMALL_FORWARD - 1, 4) == 1 and forward_threads(2, SMALL_FORWARD // 2, 4) == 4
    before = torch.get_num_threads()
    engine = Engine.load(make_tiny_model("llama"), threads=2)
    seen: dict[str, set[int]] = {"prompt": set(), "step": set()}
    backend = engine.backend
    prefill, step = backend.prefill_one, backend.step_rows
    monkeypatch.setattr(backend, "prefill_one", lambda *a: seen["prompt"].add(torch.get_num_threads()) or prefill(*a))
    monkeypatch.setattr(backend, "step_rows", lambda *a: seen["step"].add(torch.get_num_threads()) or step(*a))
    monkeypatch.setattr(engine, "params", SMALL_FORWARD - 1)  # one row is small; a prompt's tokens are not
    scheduler = Scheduler(engine, max_batch=2)
    try:
        settings = engine.chat_settings(GenerationSettings(max_new_tokens=4, min_new_tokens=4, temperature=0))
        *_, done = list(scheduler.submit(engine.encode_chat([{"role": "user", "content": "hello there"}]), settings))
        assert len(done.token_ids) == 4
        assert seen == {"prompt": {2}, "step": {1}}
    finally:
        scheduler.close()
        torch.set_num_threads(before)
