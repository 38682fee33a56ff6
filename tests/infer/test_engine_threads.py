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
