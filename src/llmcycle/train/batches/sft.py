"""Batches for SFT: padding-free packing and logits computed only where a token is trained.

Packing puts several conversations in one row and restarts `position_ids` at each of them, with no attention mask:
transformers then builds a block-diagonal causal mask (`find_packed_sequence_indices`), so a packed conversation
sees exactly what it would see alone, on CPU/SDPA and on GPU alike.

Most tokens of a chat (user turns, headers) carry no loss, so projecting them onto the vocabulary is wasted work.
`AssistantLogits` asks the model for logits only at positions whose next token is trained (a boolean
`logits_to_keep`), and the batch carries its labels in the matching compact form: `labels[0, 1 + j]` is the target
of the j-th kept position (`labels[0, 0]` is -100). A loop that computes shifted next-token cross-entropy from
`model(**inputs).logits` and `batch["labels"]` therefore gets exactly the assistant-only loss.
"""

from __future__ import annotations

import random
from typing import Any, Iterator

import torch
from transformers.modeling_outputs import CausalLMOutputWithPast

from llmcycle.train.linear_ce import decoder_hidden, plain_head, summed_rows_cross_entropy, unwrapped
from llmcycle.train.sft_data import IGNORE, Example

LOOKAHEAD_BINS = 16


def pack(lengths: list[int], order: list[int], capacity: int) -> list[list[int]]:
    """Example indices grouped into rows of at most `capacity` tokens, in `order`, filling the first of the last
    few open rows that fits (near first-fit density at next-fit cost)."""
    rows: list[list[int]] = []
    room: list[int] = []
    open_from = 0
    for i in order:
        n = lengths[i]
        placed = False
        for r in range(max(open_from, len(rows) - LOOKAHEAD_BINS), len(rows)):
            if room[r] >= n:
                rows[r].append(i)
                room[r] -= n
                placed = True
                break
        if not placed:
            rows.append([i])
            room.append(capacity - n)
    return rows


def collate(examples: list[list[Example]], pad_id: int) -> dict[str, Any]:
    """Rows of packed examples -> input_ids, position_ids, keep (bool) and compact labels (see module doc)."""
    width = max(sum(len(e) for e in row) for row in examples)
    ids, pos, labels = [], [], []
    for row in examples:
        r_ids, r_pos, r_lab = [], [], []
        for ex in row:
            r_ids += ex.input_ids
            r_pos += range(len(ex))
            r_lab += [IGNORE] + ex.labels[1:]  # a sequence's first token is never predicted from the previous one
        pad = width - len(r_ids)
        ids.append(r_ids + [pad_id] * pad)
        pos.append(r_pos + list(range(pad)))
        labels.append(r_lab + [IGNORE] * pad)
    labels_t = torch.tensor(labels, dtype=torch.long)
    keep = torch.zeros_like(labels_t, dtype=torch.bool)
    keep[:, :-1] = labels_t[:, 1:] != IGNORE
    targets = labels_t[:, 1:][keep[:, :-1]]
    compact = torch.cat([torch.tensor([IGNORE]), targets])[None]
    return {
        "input_ids": torch.tensor(ids, dtype=torch.long),
        "position_ids": torch.tensor(pos, dtype=torch.long),
        "keep": keep,
        "labels": compact,
    }


def batches(examples: list[Example], batch_size: int, max_seq_len: int, packing: bool, pad_id: int,
            shuffle_seed: int | None) -> Iterator[dict[str, Any]]:
    """All examples once, as batches of `batch_size` rows (shuffled by `shuffle_seed`, or in order if None)."""
    order = list(range(len(examples)))
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(order)
    if packing:
        rows = pack([len(e) for e in examples], order, max_seq_len)
    else:
        rows = [[i] for i in order]
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        yield collate([[examples[i] for i in row] for row in chunk], pad_id)


def count_batches(examples: list[Example], batch_size: int, max_seq_len: int, packing: bool) -> int:
    rows = pack([len(e) for e in examples], list(range(len(examples))), max_seq_len) if packing else examples
    return -(-len(rows) // batch_size)


def make_assistant_logits(model: Any):
    """Wrap a causal LM so `forward(input_ids, position_ids, keep)` returns logits at kept positions only."""
    class AssistantLogits(torch.nn.Module):
        def __init__(self, inner: Any):
            super().__init__()
            self.inner = inner
            self.config = inner.config

        def get_input_embeddings(self):
            return self.inner.get_input_embeddings()

        def get_output_embeddings(self):
            return self.inner.get_output_embeddings()

        def forward(self, input_ids, position_ids, keep, attention_mask=None):
            out = self.inner(input_ids=input_ids, position_ids=position_ids, attention_mask=attention_mask,
                             logits_to_keep=keep, use_cache=False)
            logits = out.logits
            if logits.dim() == 3:  # a model that ignores a boolean logits_to_keep returns every position
                logits = logits[keep]
            dummy = logits.new_zeros((1, logits.shape[-1]))
            return CausalLMOutputWithPast(logits=torch.cat([logits, dummy])[None])

        def fused_cross_entropy(self, inputs: dict[str, Any], labels: torch.Tensor):
            """The assistant-only summed loss with the output projection fused into it (`linear_ce.py`): no logits
            at all, not even at the kept positions. None when the inner model is not a plain causal LM."""
            base = unwrapped(self.inner)
            head = plain_head(base)
            if head is None:
                return None
            keep = inputs["keep"]
            hidden = decoder_hidden(base, {k: v for k, v in inputs.items() if k != "keep"})
            return summed_rows_cross_entropy(hidden[keep], head.weight, labels[0, 1:])

    return AssistantLogits(model)
