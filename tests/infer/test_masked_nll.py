"""Perplexity and bias-pair scoring (`masked_nll`, the engine's scoring) give the same numbers whatever the batch
and whichever forward computes them."""

import random

import pytest
import torch
from transformers import AutoModelForCausalLM

from llmcycle.evaluate.perplexity import score_records
from llmcycle.infer import Engine
from llmcycle.loading import load_tokenizer_for


@pytest.fixture(scope="module")
def engines(make_tiny_model):
    path = make_tiny_model("llama")
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tokenizer = load_tokenizer_for(path)
    return Engine(model, tokenizer, fast=True), Engine(model, tokenizer, fast=False)


def rows(n: int = 6) -> list[tuple[list[int], list[bool]]]:
    rng = random.Random(0)
    out = []
    for i in range(n):
        ids = [rng.randrange(3, 200) for _ in range(5 + 3 * i)]
        out.append((ids, [False] + [rng.random() < 0.7 for _ in ids[1:]]))
    return out


def test_batch_one_equals_batch_n(engines):
    fast, _ = engines
    together, counts = fast.masked_nll(rows())
    alone = [fast.masked_nll([row]) for row in rows()]
    assert counts == [c for _, (c,) in alone]
    assert together == pytest.approx([nll for (nll,), _ in alone], abs=1e-5)


def test_fast_backend_and_transformers_score_alike(engines):
    fast, plain = engines
    assert fast.backend_name == "fast" and plain.backend_name == "transformers"
    assert fast.masked_nll(rows()) == plain.masked_nll(rows())
    ids, mask = rows()[3]
    with torch.inference_mode():  # teacher forcing through our own forward: the same NLL to 1e-5
        logits = fast.backend.start(torch.tensor([ids[:1]]), torch.ones(1, 1, dtype=torch.long), len(ids))
        nll = 0.0
        for position, token in enumerate(ids[1:], start=1):
            if mask[position]:
                nll -= float(torch.log_softmax(logits.float(), -1)[0, token])
            logits = fast.backend.step(torch.tensor([token]))
    assert nll == pytest.approx(fast.masked_nll([(ids, mask)])[0][0], abs=1e-5)


def test_perplexity_scores_through_the_same_function(engines):
    fast, _ = engines
    records = [{"text": "hello there friend"}, {"text": "a longer line of text to score here"}]
    one = [score_records(fast.model, fast.tokenizer, [r], batch_size=1).nll_nats for r in records]
    both = score_records(fast.model, fast.tokenizer, records, batch_size=8).nll_nats
    assert both == pytest.approx(sum(one), abs=1e-5)
