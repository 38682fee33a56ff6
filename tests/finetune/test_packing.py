"""Padding-free packing: a packed conversation must see exactly what it sees alone (block-diagonal attention from
position_ids on CPU/SDPA), and the compact labels must line up with the kept logits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tests.conftest import chat_records

from llmcycle.train.batches.sft import batches, collate, make_assistant_logits, pack
from llmcycle.train.sft_data import IGNORE, Example, tokenize_with_mask


def examples_for(tok, n=6):
    return [tokenize_with_mask(tok, r["messages"], f"rec{i}") for i, r in enumerate(chat_records(n))]


def reference_loss(model, examples):
    """Summed next-token loss of each conversation run alone, full logits, ordinary shift."""
    total, count = 0.0, 0
    for ex in examples:
        logits = model(input_ids=torch.tensor([ex.input_ids])).logits[0, :-1]
        targets = torch.tensor(ex.labels[1:])
        total += float(F.cross_entropy(logits, targets, ignore_index=IGNORE, reduction="sum"))
        count += int((targets != IGNORE).sum())
    return total, count


def compact_loss(wrapped, batch):
    logits = wrapped(**{k: v for k, v in batch.items() if k != "labels"}).logits[..., :-1, :]
    targets = batch["labels"][..., 1:]
    return float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum")), \
        int(targets.numel())


@pytest.mark.parametrize("arch", ["llama", "phi3"])
def test_packed_loss_equals_separate_loss(arch, make_tiny_model, our_tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(make_tiny_model(arch)).eval()
    examples = examples_for(our_tokenizer)
    capacity = sum(len(e) for e in examples[:3]) + 5
    packed = list(batches(examples, batch_size=2, max_seq_len=capacity, packing=True, pad_id=0, shuffle_seed=None))
    assert packed[0]["input_ids"].shape[0] == 2 and len(packed) == 1  # 6 chats in 2 rows
    with torch.no_grad():
        want, want_n = reference_loss(model, examples)
        got = [compact_loss(make_assistant_logits(model), b) for b in packed]
    assert sum(n for _, n in got) == want_n
    assert sum(loss for loss, _ in got) == pytest.approx(want, rel=1e-5)


def test_collate_resets_positions_and_keeps_only_trained_positions():
    a = Example([5, 6, 7], [IGNORE, 6, 7])
    b = Example([8, 9], [8, 9])  # a label on a sequence's first token must not leak from the previous sequence
    batch = collate([[a, b], [a]], pad_id=0)
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 1, 2, 0, 1]]
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9], [5, 6, 7, 0, 0]]
    assert batch["keep"].tolist() == [[True, True, False, True, False], [True, True, False, False, False]]
    assert batch["labels"].tolist() == [[IGNORE, 6, 7, 9, 6, 7]]


def test_pack_respects_capacity_and_uses_every_example():
    lengths = [5, 3, 7, 2, 6, 4, 1]
    rows = pack(lengths, list(range(len(lengths))), capacity=8)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 8 for row in rows)
    assert len(rows) == 4


@pytest.mark.parametrize("lora", [False, True])
def test_fused_packed_loss_equals_separate_loss_and_its_gradients(lora, make_tiny_model, our_tokenizer):
    """The training loss of packed SFT batches (projection fused with the loss, no logits) against conversations
    run alone; with a PEFT LoRA inner model too, whose adapters must get the gradients."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from llmcycle.train.objectives import logits_cross_entropy, summed_cross_entropy

    model = AutoModelForCausalLM.from_pretrained(make_tiny_model("llama"))
    if lora:
        model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "down_proj"], init_lora_weights=False))
    examples = examples_for(our_tokenizer)
    capacity = sum(len(e) for e in examples[:3]) + 5
    batch = next(batches(examples, batch_size=2, max_seq_len=capacity, packing=True, pad_id=0, shuffle_seed=None))
    wrapped = make_assistant_logits(model)
    with torch.no_grad():
        want, _ = reference_loss(model, examples)
    fused = summed_cross_entropy(wrapped, batch)
    fused.backward()
    fused_grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]
    model.zero_grad()
    logits_cross_entropy(wrapped, batch).backward()
    plain_grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert float(fused.detach()) == pytest.approx(want, rel=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(fused_grads, plain_grads))
    assert any(float(g.abs().sum()) > 0 for g in fused_grads)
