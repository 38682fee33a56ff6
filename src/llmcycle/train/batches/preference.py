"""Preference rows: prompt + reply rendered and masked as in SFT, the reply's tokens marked as the completion.

Pairs (chosen, rejected) for DPO/ORPO and the reward model's batches, unpaired rows for KTO, and GRPO's sampled
rows all collate the same way. A row over `max_len` keeps token 0 and loses the prompt's oldest tokens, then the
reply's last (`infer.context.trim_tokens`).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from llmcycle.records import read_preference_split
from llmcycle.errors import DataError
from llmcycle.infer.context import trim_tokens
from llmcycle.progress import bar
from llmcycle.records import read_jsonl, split_path
from llmcycle.modeldir import render_chat
from llmcycle.train.objectives import reference_logps
from llmcycle.train.sft_data import IGNORE, shared_prefix, tokenize_with_mask


@dataclass
class Encoded:
    """One completion: ids of prompt + reply, and which tokens are the reply's (the loss's targets)."""

    input_ids: list[int]
    completion_mask: list[int]


def encode(tokenizer: Any, prompt: list[dict], reply: list[dict], where: str, max_len: int) -> Encoded:
    """Prompt + reply rendered and masked as in SFT; the prompt's own assistant turns are not targets. Too long:
    the prompt loses its oldest tokens first, then the reply its last."""
    ex = tokenize_with_mask(tokenizer, prompt + reply, where)
    head = tokenizer(render_chat(tokenizer, prompt, where, generation_prompt=True), add_special_tokens=False)
    start = shared_prefix(ex.input_ids, head["input_ids"])
    mask = [int(label != IGNORE and t >= start) for t, label in enumerate(ex.labels)]
    ids = ex.input_ids
    if len(ids) > max_len:  # token 0 (bos) stays; the prompt's oldest tokens go, then the reply's last
        ids = trim_tokens(ids, max_len, keep="end", keep_first=True, protect_from=start)
        mask = trim_tokens(mask, max_len, keep="end", keep_first=True, protect_from=start)
    if not any(mask):
        raise DataError(f"{where}: the reply leaves no tokens to train on (empty after the chat template, or cut "
                        f"by max_seq_len={max_len})")
    return Encoded(ids, mask)


def collate(rows: list[Encoded], pad_id: int, extra: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Right-padded tensors for `objectives` (attention_mask marks real tokens)."""
    width = max(len(r.input_ids) for r in rows)
    ids = [r.input_ids + [pad_id] * (width - len(r.input_ids)) for r in rows]
    att = [[1] * len(r.input_ids) + [0] * (width - len(r.input_ids)) for r in rows]
    comp = [r.completion_mask + [0] * (width - len(r.input_ids)) for r in rows]
    batch = {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(att),
             "completion_mask": torch.tensor(comp)}
    batch.update(extra or {})
    return batch


def pair_rows(tokenizer: Any, records: list[dict], max_len: int, where: str) -> list[tuple[Encoded, Encoded]]:
    return [(encode(tokenizer, r["prompt"], r["chosen"], f"{where} record {i + 1} chosen", max_len),
             encode(tokenizer, r["prompt"], r["rejected"], f"{where} record {i + 1} rejected", max_len))
            for i, r in enumerate(records)]


def unpaired_rows(tokenizer: Any, records: list[dict], max_len: int, where: str) -> list[tuple[Encoded, bool]]:
    """KTO rows: unpaired records as they are, a pair as a desirable and an undesirable row (as TRL does)."""
    out = []
    for i, r in enumerate(records):
        sides = [("chosen", True), ("rejected", False)] if "chosen" in r else [("completion", r["label"])]
        for side, label in sides:
            out.append((encode(tokenizer, r["prompt"], r[side], f"{where} record {i + 1} {side}", max_len), label))
    return out


def read_records(data_dir: str | Path, split: str, kinds: tuple[str, ...], limit: Optional[int]) -> list[dict]:
    """A split's preference records of the given kinds (at most `limit`); DataError when none."""
    path = split_path(data_dir, split)
    records = read_preference_split(path, kinds)[:limit]
    if not records:
        wanted = "paired (chosen/rejected)" if kinds == ("paired",) else "preference"
        raise DataError(f"{path}: no {wanted} records to align on")
    return records


class PreferenceData:
    """A split's encoded rows and their reference log-probs; batches in a seeded order per epoch."""

    def __init__(self, method: str, tokenizer: Any, records: list[dict], max_len: int, where: str):
        self.method = method
        if method == "kto":
            rows = unpaired_rows(tokenizer, records, max_len, where)
            self.rows = [[enc] for enc, _ in rows]
            self.labels = [label for _, label in rows]
        else:
            self.rows = [list(pair) for pair in pair_rows(tokenizer, records, max_len, where)]
            self.labels = []
        self.ref: list[list[float]] = [[0.0] * len(r) for r in self.rows]
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def batch(self, indices: list[int]) -> dict[str, Any]:
        cols = list(zip(*[self.rows[i] for i in indices]))  # [chosen...], [rejected...] (KTO: one column)
        refs = list(zip(*[self.ref[i] for i in indices]))
        extra: dict[str, Any] = {"ref_logps": torch.tensor([v for col in refs for v in col])}
        if self.method == "kto":
            extra["label"] = torch.tensor([self.labels[i] for i in indices])
        return collate([enc for col in cols for enc in col], self.pad_id, extra)

    def batches(self, batch_size: int, seed: Optional[int]):
        order = list(range(len(self.rows)))
        if seed is not None:
            random.Random(seed).shuffle(order)
        for start in range(0, len(order), batch_size):
            yield self.batch(order[start:start + batch_size])

    def compute_reference(self, model: Any, batch_size: int, cache: Path) -> None:
        """Reference log-probs of every row, once (kept in `cache`, so a resumed run reuses the same)."""
        if cache.is_file():
            self.ref = json.loads(cache.read_text())
            return
        for start in bar(range(0, len(self.rows), batch_size), desc="align: reference log-probs", unit="batch"):
            indices = list(range(start, min(start + batch_size, len(self.rows))))
            values = reference_logps(model, self.batch(indices)).tolist()
            width = len(self.rows[0])
            for j, i in enumerate(indices):
                self.ref[i] = [values[j + k * len(indices)] for k in range(width)]
        cache.write_text(json.dumps(self.ref))


def has_pairs(data_dir: str | Path, split: str) -> bool:
    """Whether a split holds any paired (chosen/rejected) record."""
    return any("chosen" in row for _, row in read_jsonl(Path(data_dir) / f"{split}.jsonl"))

