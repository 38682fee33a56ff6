"""The before-training val loss runs where the model lives (QLoRA bases live on the GPU from loading on), and the
SFT data budget covers every process's share."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch


class OnMeta(torch.nn.Module):
    """A model whose weights live on another device than the CPU batches (meta stands in for a GPU)."""

    def __init__(self, vocab: int = 10):
        super().__init__()
        self.vocab = vocab
        self.emb = torch.nn.Embedding(vocab, 4, device="meta")

    def get_input_embeddings(self):
        return self.emb

    def forward(self, input_ids, position_ids=None, keep=None, attention_mask=None):
        assert input_ids.device == self.emb.weight.device, "batch not moved to the model's device"
        return SimpleNamespace(logits=torch.zeros(1, input_ids.shape[1], self.vocab))  # gathered on the CPU


def test_before_loss_moves_batches_to_the_model(tmp_path):
    from llmcycle.train.finetune import FinetuneLoopConfig, initial_val_loss

    ids = torch.tensor([[1, 2, 3, 4]])

    def val_batches():
        return iter([{"input_ids": ids, "position_ids": torch.arange(4)[None], "labels": ids}])

    loss, rows = initial_val_loss(OnMeta(), val_batches, FinetuneLoopConfig(eval_batches=1), tmp_path, resume=False)
    assert loss == pytest.approx(math.log(10)) and rows == [[pytest.approx(3 * math.log(10)), 3.0]]
    assert initial_val_loss(None, None, FinetuneLoopConfig(), tmp_path, resume=True) == (loss, rows)  # kept


def test_model_is_placed_before_the_before_loss(make_tiny_model):
    from transformers import AutoModelForCausalLM

    from llmcycle.train.finetune import place_for_training
    from llmcycle.train.setup import distributed_state
    from llmcycle.train.batches.sft import make_assistant_logits

    wrapped = place_for_training(make_assistant_logits(AutoModelForCausalLM.from_pretrained(make_tiny_model())))
    assert {p.device for p in wrapped.parameters()} == {distributed_state().device}


def test_data_budget_scales_with_processes(our_tokenizer, chat_data_dir, small_config, monkeypatch):
    from llmcycle.train import finetune, setup

    cfg = small_config(train={"max_steps": 1, "batch_size": 1}, max_seq_len=64, val_split=None)
    _, _, one = finetune.load_examples(cfg, our_tokenizer, chat_data_dir)
    monkeypatch.setattr(setup, "distributed_state", lambda: SimpleNamespace(num_processes=2))
    _, _, two = finetune.load_examples(cfg, our_tokenizer, chat_data_dir)
    assert one["train"]["tokenized_conversations"] < two["train"]["tokenized_conversations"] < 40
    budget = finetune.TOKEN_BUDGET_SLACK * 64  # one step of one 64-token row, per process
    assert one["train"]["tokens"] >= budget and two["train"]["tokens"] >= 2 * budget
