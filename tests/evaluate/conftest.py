"""Fixtures of the eval tests: models whose next-token distribution we set by hand."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest


@pytest.fixture(scope="session")
def uniform_model_dir(make_tiny_model, tmp_path_factory) -> Path:
    """The tiny Llama with a zero lm_head: every logit is 0, so every next token has probability 1/V."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = make_tiny_model("llama")
    model = AutoModelForCausalLM.from_pretrained(src)
    with torch.no_grad():
        model.lm_head.weight.zero_()
    out = tmp_path_factory.mktemp("uniform_llama")
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(src).save_pretrained(out)
    return out


class CharTokenizer:
    """One token per character (ord), BOS = 0: token counts equal character counts."""

    bos_token_id = 0
    eos_token_id = 1
    pad_token_id = 0

    def __call__(self, text, add_special_tokens=False, verbose=True):
        if isinstance(text, list):
            return {"input_ids": [[ord(c) for c in t] for t in text]}
        return {"input_ids": [ord(c) for c in text]}

    def __len__(self):
        return 128


class FixedDistribution:
    """A context-free 'model': the same next-token log-probabilities at every position."""

    def __init__(self, probs: dict[int, float], vocab: int = 128):
        import torch

        rest = (1 - sum(probs.values())) / (vocab - len(probs))
        self.logp = torch.tensor([math.log(probs.get(i, rest)) for i in range(vocab)])
        self.config = SimpleNamespace(max_position_embeddings=8)
        self.training = False

    def parameters(self):
        yield self.logp

    def eval(self):
        return self

    def __call__(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.logp.expand(*input_ids.shape, -1).clone())


@pytest.fixture
def char_tokenizer():
    return CharTokenizer()


@pytest.fixture
def fixed_distribution():
    return FixedDistribution
