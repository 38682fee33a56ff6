"""Prompts for online methods: the distinct prompts of a data dir, and seeded batches of their indices."""

from __future__ import annotations

import random
from pathlib import Path

import torch

from llmcycle.records import load_split


def prompts_of(data_dir: str | Path, split: str, limit: int | None) -> list[list[dict]]:
    """Distinct prompts: preference records' prompts, or chat records up to their first assistant turn."""
    seen, out = set(), []
    for record in load_split(data_dir, split):
        if "prompt" in record:
            prompt = record["prompt"]
        elif "messages" in record:
            msgs = record["messages"]
            first = next((i for i, m in enumerate(msgs) if m["role"] == "assistant"), None)
            prompt = msgs[:first] if first else None
        else:
            prompt = None
        key = str(prompt)
        if prompt and prompt[-1]["role"] == "user" and key not in seen:
            seen.add(key)
            out.append([{"role": m["role"], "content": m["content"]} for m in prompt])
    if not out:
        raise DataError(f"{data_dir}/{split}.jsonl: no prompts (records ending in a user turn) for GRPO")
    return out[:limit]


def prompt_batches(n: int, per_step: int, group: int, seed: int):
    """Seeded batches of prompt indices (the loop's batches for online methods: rollouts happen in the objective)."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    for start in range(0, n - per_step + 1, per_step):
        idx = order[start:start + per_step]
        yield {"prompt_index": torch.tensor(idx), "n_replies": len(idx) * group, "input_ids": torch.zeros(1, 1)}
