"""Grouping sequences of very different lengths into batches that pad little.

A padded batch costs its rows times its longest row, so one long sequence among short ones multiplies the work
(chitchat test conversations run from 50 to 5,000 tokens; PIQA's solutions from 5 to 90). Sorting by length and
cutting where padding would exceed `slack` times the real tokens bounds that waste; a cap on rows keeps each
batch within what the caller asked for.
"""

from __future__ import annotations

from typing import Sequence


def length_groups(lengths: Sequence[int], slack: float = 1.3, min_rows: int = 4,
                  max_rows: int | None = None) -> list[list[int]]:
    """Indices sorted by length, cut where padding to the group's longest would exceed `slack` x the real tokens
    (groups hold at least `min_rows`: every group is a forward through every layer) or at `max_rows`."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    groups: list[list[int]] = []
    current: list[int] = []
    total = 0
    for i in order:
        width = lengths[i]
        full = max_rows is not None and len(current) >= max_rows
        if current and (full or (len(current) >= min_rows and (len(current) + 1) * width > slack * (total + width))):
            groups.append(current)
            current, total = [], 0
        current.append(i)
        total += width
    if current:
        groups.append(current)
    return groups
