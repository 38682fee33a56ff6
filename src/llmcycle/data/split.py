"""Seeded, grouped splits: every group (a Cornell movie, a chitchat conversation, a near-duplicate cluster in
"group" mode) lands in exactly one split, so nothing of the train split leaks into val or test."""

from __future__ import annotations

import random
from collections import Counter

from llmcycle.data.config import DataConfig
from llmcycle.data.example import Example
from llmcycle.records import SPLITS


def split_fractions(cfg: DataConfig) -> dict[str, float]:
    return {"train": 1.0 - cfg.val_frac - cfg.test_frac, "val": cfg.val_frac, "test": cfg.test_frac}


def assign_groups(sizes: dict[str, int], fractions: dict[str, float], seed: int) -> dict[str, str]:
    """{group: split}. Groups are shuffled with the seed, then each goes to the split furthest below its target
    share of records (ties: train, val, test), which keeps the fractions close even with uneven group sizes."""
    groups = sorted(sizes)
    random.Random(seed).shuffle(groups)
    total = sum(sizes.values())
    wanted = [s for s in SPLITS if fractions[s] > 0]
    filled = {s: 0 for s in SPLITS}
    assignment = {}
    for group in groups:
        split = min(wanted, key=lambda s: (filled[s] / (fractions[s] * total), SPLITS.index(s)))
        assignment[group] = split
        filled[split] += sizes[group]
    return assignment


def split_examples(examples: list[Example], cfg: DataConfig) -> dict[str, list[Example]]:
    """Split into train/val/test; records keep their source order inside each split."""
    sizes = Counter(example.group for example in examples)
    assignment = assign_groups(dict(sizes), split_fractions(cfg), cfg.seed)
    splits: dict[str, list[Example]] = {s: [] for s in SPLITS}
    for example in examples:
        splits[assignment[example.group]].append(example)
    return splits


def leaked_groups(splits: dict[str, list[Example]]) -> list[str]:
    """Groups found in more than one split (always empty; card.json records the check)."""
    seen: dict[str, str] = {}
    leaked = set()
    for split, examples in splits.items():
        for example in examples:
            if seen.setdefault(example.group, split) != split:
                leaked.add(example.group)
    return sorted(leaked)
