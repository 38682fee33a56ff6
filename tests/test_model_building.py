"""Models built on several threads at once (a `serve --watch` reload beside a request, concurrent `improve` runs in
one process) come out whole, and leave transformers' and torch's process globals as they found them."""

from __future__ import annotations

import threading

import pytest
import torch
from transformers import PreTrainedModel

ROUNDS = 6


def process_globals() -> dict:
    """What transformers patches and restores around each model it builds."""
    return {"tie_weights": PreTrainedModel.tie_weights, "init_weights": PreTrainedModel.init_weights,
            "linspace": torch.linspace, "normal_": torch.nn.init.normal_, "dtype": torch.get_default_dtype()}


@pytest.fixture(scope="module")
def tied_model(make_tiny_model):
    return make_tiny_model("llama", tie_word_embeddings=True)


def build_on_threads(work, threads: int = 3) -> list:
    """Run `work(thread_index)` ROUNDS times on each of `threads` threads at once; every result, or the first
    error."""
    results: list = []
    errors: list = []
    start = threading.Barrier(threads)

    def loop(index: int) -> None:
        start.wait()
        try:
            for _ in range(ROUNDS):
                results.append(work(index))
        except Exception as exc:  # reported on the test's thread
            errors.append(exc)

    pool = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    if errors:
        raise errors[0]
    return results


def test_concurrent_loads_leave_process_globals_and_tie_every_model(tied_model):
    from llmcycle.loading import load_model

    before = process_globals()
    models = build_on_threads(lambda _: load_model(tied_model, dtype="fp32"))
    assert process_globals() == before
    assert len(models) == 3 * ROUNDS
    # a tied checkpoint stores no lm_head: a load that skipped tying would leave it random (or on the meta device)
    assert all(m.lm_head.weight is m.model.embed_tokens.weight for m in models)


def test_building_from_a_preset_beside_loads_ties_its_embeddings(tied_model, tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    from llmcycle.loading import load_model
    from llmcycle.models import build_model

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    before = process_globals()
    built = build_on_threads(lambda i: load_model(tied_model, dtype="fp32") if i % 2 else build_model("tiny", tok))
    assert process_globals() == before
    assert all(m.lm_head.weight is m.model.embed_tokens.weight for m in built)
