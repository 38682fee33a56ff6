"""Fixtures for the training tests: a tiny Llama and a batch source over a fixed random corpus."""

from __future__ import annotations

import pytest


def tiny_llama(vocab: int = 96, seed: int = 0, dropout: float = 0.0):
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      attention_dropout=dropout)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(cfg)


def batch_source(rows: int = 48, seq: int = 17, batch: int = 8, vocab: int = 96, masked: bool = False):
    """(train_batches(epoch), val_batches()) over a learnable corpus: each row counts up modulo vocab. `masked`
    ignores the first 0..14 labels of each row (fixed per row), so micro-batches hold unequal label counts and a
    per-micro-batch mean loss differs from the token-weighted one."""
    import torch

    starts = torch.randint(0, vocab, (rows + 16, 1), generator=torch.Generator().manual_seed(1))
    data = (starts + torch.arange(seq)) % vocab
    labels = data.clone()
    if masked:
        cut = torch.randint(0, 15, (rows + 16,), generator=torch.Generator().manual_seed(2))
        labels[torch.arange(seq)[None, :] < cut[:, None]] = -100

    def train(epoch):
        order = torch.randperm(rows, generator=torch.Generator().manual_seed(epoch))
        for i in range(0, rows - batch + 1, batch):
            pick = order[i:i + batch]
            yield {"input_ids": data[pick], "labels": labels[pick]}

    def val():
        ids = data[rows:]
        yield {"input_ids": ids, "labels": ids}

    return train, val


@pytest.fixture
def loop_cfg():
    from llmcycle.train.loop import LoopConfig

    def make(**kw):
        base = dict(max_steps=12, batch_size=8, lr=3e-3, warmup_steps=2, eval_every=4, log_every=1, save_every=4)
        base.update(kw)
        return LoopConfig(**base)

    return make
